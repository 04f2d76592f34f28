//! Checking a parsed config: names unique, every model's provider declared, prices exact
//! decimals, simulator knobs in range, the router's candidates and splits real models.
//!
//! Every problem is reported at once (one per provider, per model and per section: a model
//! with two problems shows the first), so `switchyard config check` lists them all in one run.
//! A provider with a problem still counts as declared, so its models are not refused for it.

use std::collections::BTreeMap;

use switchyard_actors::billing::ModelPrice;
use switchyard_actors::router::policy::Policy;

use super::{
    Abilities, Config, ModelConfig, ProviderConfig, ProviderKind, SimModel, default_answer_tokens,
    deployments, half, usd_to_micros,
};
use crate::error::{ConfigContext as _, Error, Result, config_bail as bail};

impl Config {
    /// Parses and checks a config text (see [`Config::checked`]).
    pub fn parse(text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.checked()
    }

    /// Checks a config and fills in what follows from it (prices in micro-dollars, the
    /// simulator's defaults, deployment variants, the serving policy). Every problem found is
    /// in the error, one per line.
    pub fn checked(mut self) -> Result<Self> {
        let problems = self.settle();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(Error::Config(problems.join("\n")))
        }
    }

    /// Adds the model or provider entry of a verified manifest file (`[registry] manifests`).
    fn add_manifest(&mut self, trust: &switchyard_manifests::Trust, path: &str) -> Result<()> {
        use switchyard_manifests::Kind;
        let refused = |e: String| Error::Config(format!("registry.manifests {path}: {e}"));
        let (manifest, verified) = trust
            .load_file(
                std::path::Path::new(path),
                &[Kind::Model, Kind::Provider],
                time::OffsetDateTime::now_utc(),
            )
            .map_err(|e| refused(format!("{}: {e}", e.code())))?;
        let named = |name: &str| {
            if name == manifest.name {
                Ok(())
            } else {
                Err(refused(format!(
                    "the body names {name}, the manifest {}",
                    manifest.name
                )))
            }
        };
        match manifest.kind {
            Kind::Provider => {
                let provider: ProviderConfig = serde_json::from_value(manifest.body.clone())
                    .map_err(|e| refused(format!("not a provider entry: {e}")))?;
                named(&provider.name)?;
                self.providers.push(provider);
            }
            _ => {
                let model: ModelConfig = serde_json::from_value(manifest.body.clone())
                    .map_err(|e| refused(format!("not a model entry: {e}")))?;
                named(&model.name)?;
                self.models.push(model);
            }
        }
        tracing::info!(
            path,
            kind = manifest.kind.as_str(),
            name = %manifest.name,
            version = manifest.version,
            key_id = verified.key_id.as_deref().unwrap_or("unsigned"),
            "config entry loaded from a manifest"
        );
        Ok(())
    }

    fn settle(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut note = |outcome: Result<()>| {
            if let Err(error) = outcome {
                problems.push(match error {
                    Error::Config(message) => message,
                    other => other.to_string(),
                });
            }
        };
        note(self.cache.validate().map_err(Error::Config));
        match switchyard_manifests::Trust::compile(&self.registry) {
            Err(keys) => {
                for problem in keys {
                    note(Err(Error::Config(problem)));
                }
            }
            Ok(trust) => {
                // Loaded once: the paths are taken, so a config checked again does not add them twice.
                for path in std::mem::take(&mut self.registry.manifests) {
                    note(self.add_manifest(&trust, &path));
                }
            }
        }
        let mut providers = BTreeMap::new();
        for provider in &self.providers {
            note(check_provider(provider));
            if providers
                .insert(provider.name.clone(), provider.kind)
                .is_some()
            {
                note(Err(Error::Config(format!(
                    "provider {} is declared twice",
                    provider.name
                ))));
            }
        }
        note(self.retrieval.validate().map_err(Error::Config));
        if let Some(model) = &self.retrieval.embedding_model
            && !self.models.iter().any(|m| &m.name == model)
        {
            note(Err(Error::Config(format!(
                "retrieval.embedding_model {model} is not a configured model"
            ))));
        }
        if let Some(semantic) = &self.cache.semantic_model
            && !self.models.iter().any(|m| &m.name == semantic)
        {
            note(Err(Error::Config(format!(
                "cache.semantic_model {semantic} is not a configured model"
            ))));
        }
        let mut names = BTreeMap::new();
        for model in &mut self.models {
            if names.insert(model.name.clone(), ()).is_some() {
                note(Err(Error::Config(format!(
                    "model {} is declared twice",
                    model.name
                ))));
                continue;
            }
            note(check_model(model, &providers));
        }
        for model in &self.models {
            for fallback in &model.fallbacks {
                if fallback == &model.name || !names.contains_key(fallback) {
                    note(Err(Error::Config(format!(
                        "model {}: fallback {fallback} must be another declared model",
                        model.name
                    ))));
                }
            }
        }
        if self.default_output_reservation == 0 {
            note(Err(Error::Config(
                "default_output_reservation must be above 0".into(),
            )));
        }
        if self.tenant_max_concurrency == 0 || self.providers.iter().any(|p| p.max_concurrency == 0)
        {
            note(Err(Error::Config(
                "concurrency limits must be above 0".into(),
            )));
        }
        if let Some(default) = &self.default_model
            && !names.contains_key(default)
        {
            note(Err(Error::Config(format!(
                "default_model {default} is not a declared model"
            ))));
        }
        self.router.serving = match (&self.router.policy, &self.default_model) {
            (Some(policy), _) => policy.clone(),
            (None, Some(model)) => {
                // `auto` is pinned: the only candidate, so no exploration moves it.
                if self.router.candidates.is_empty() {
                    self.router.candidates = vec![model.clone()];
                }
                Policy::Static {
                    model: model.clone(),
                }
            }
            (None, None) => Policy::Thompson,
        };
        note(self.router.validate(&self.models).map_err(Error::Config));
        problems
    }
}

fn check_provider(provider: &ProviderConfig) -> Result<()> {
    check_name("provider", &provider.name)?;
    if provider.region.is_some() != (provider.kind == ProviderKind::Bedrock) {
        bail!(
            "provider {}: region is for kind = \"bedrock\", and needed there",
            provider.name
        );
    }
    if let Some(region) = &provider.region
        && (region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    {
        bail!(
            "provider {}: region {region:?} is not an AWS region name",
            provider.name
        );
    }
    if provider.model_dir.is_some() != (provider.kind == ProviderKind::Local) {
        bail!(
            "provider {}: model_dir is for kind = \"local\", and needed there",
            provider.name
        );
    }
    if !matches!(
        provider.kind,
        ProviderKind::Sim | ProviderKind::Bedrock | ProviderKind::Local
    ) && provider.base_url.is_none()
    {
        bail!("provider {} needs a base_url", provider.name);
    }
    if provider.api_version.is_some() && provider.kind != ProviderKind::Azure {
        bail!(
            "provider {}: api_version is for kind = \"azure\"",
            provider.name
        );
    }
    if provider.first_token_timeout_ms == 0 || provider.timeout_ms == 0 {
        bail!("provider {}: timeouts must be above 0 ms", provider.name);
    }
    Ok(())
}

fn check_model(model: &mut ModelConfig, providers: &BTreeMap<String, ProviderKind>) -> Result<()> {
    check_name("model", &model.name)?;
    if model.name == "auto" {
        bail!("`auto` is the router's name and cannot be a model");
    }
    if model
        .embedding_dimensions
        .is_some_and(|d| d == 0 || d > 4_096)
    {
        bail!("model {}: embedding_dimensions must be 1-4096", model.name);
    }
    let kind = providers.get(&model.provider).with_context(|| {
        format!(
            "model {}: provider {} is not declared",
            model.name, model.provider
        )
    })?;
    model.price = ModelPrice {
        input_per_million_tokens: usd_to_micros(&model.input_usd_per_million)
            .with_context(|| format!("model {}: input_usd_per_million", model.name))?,
        output_per_million_tokens: usd_to_micros(&model.output_usd_per_million)
            .with_context(|| format!("model {}: output_usd_per_million", model.name))?,
        per_request: 0,
    };
    model.embedding_only = *kind == ProviderKind::Local;
    match (kind, &model.sim) {
        (ProviderKind::Sim, None) => {
            model.sim = Some(SimModel {
                latency_ms: 0,
                jitter_ms: 0,
                failure_rate: 0.0,
                quality: half(),
                max_answer_tokens: default_answer_tokens(),
                min_answer_tokens: 1,
                ability: Abilities::default(),
            });
        }
        (ProviderKind::Sim, Some(sim)) => {
            if !(0.0..=1.0).contains(&sim.failure_rate) || !(0.0..=1.0).contains(&sim.quality) {
                bail!(
                    "model {}: failure_rate and quality must be between 0 and 1",
                    model.name
                );
            }
            if sim
                .ability
                .all()
                .iter()
                .flatten()
                .any(|a| !(-20.0..=20.0).contains(a))
            {
                bail!("model {}: abilities must be between -20 and 20", model.name);
            }
            if sim.min_answer_tokens == 0 || sim.max_answer_tokens < sim.min_answer_tokens {
                bail!(
                    "model {}: answers need 1 <= min_answer_tokens <= max_answer_tokens",
                    model.name
                );
            }
        }
        (_, Some(_)) => bail!(
            "model {}: `sim` settings only apply to a sim provider",
            model.name
        ),
        (_, None) => {}
    }
    deployments::expand(model, providers)
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@".contains(&b))
    {
        bail!("{what} name {name:?} must be 1-128 characters of letters, digits and -_.:/@");
    }
    Ok(())
}
