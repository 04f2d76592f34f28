//! The tenant settings read on the request path, folded from the log with the key index:
//! `cors_origins` (browsers that may read a tenant's answers), `allowed_models` (the models it
//! may list and call), `guardrails` (its checks before and after the model, compiled once
//! here, not per request), `capture` (whether its prompts and answers are kept, and how
//! long), `spend_limits` (budgets per key, user and tag), `semantic_cache` (whether its
//! questions are answered from the cache by meaning, and how close is close enough) and
//! `require_signatures` (whether its registry takes signed manifests only). [`check`] is what the admin API runs before it writes one.

use std::sync::Arc;

use dashmap::DashMap;
use switchyard_events::TenantId;
use switchyard_inference::admission::below::{SPEND_LIMITS_SETTING, SpendLimits};
use switchyard_inference::admission::{ALLOWED_MODELS_SETTING, parse_allowed_models};
use switchyard_inference::cache::semantic::{SEMANTIC_CACHE_SETTING, SemanticPolicy};
use switchyard_inference::capture::{CAPTURE_SETTING, CapturePolicy};
use switchyard_inference::guard::{GUARDRAILS_SETTING, Guard};

/// The tenant setting that lists the origins allowed by CORS.
pub const CORS_SETTING: &str = "cors_origins";
/// The tenant setting that makes its registry take signed manifests only (`true`/`false`).
pub const REQUIRE_SIGNATURES_SETTING: &str = "require_signatures";

/// Each tenant's request-path settings.
#[derive(Debug, Default)]
pub struct TenantSettings {
    /// Origins whose browsers may read each tenant's answers (setting `cors_origins`).
    cors: DashMap<TenantId, Vec<String>>,
    /// The models each tenant may use, where it is limited (setting `allowed_models`).
    allowed: DashMap<TenantId, Vec<String>>,
    /// Each tenant's compiled guardrail policy (setting `guardrails`).
    guards: DashMap<TenantId, Arc<Guard>>,
    /// Each capturing tenant's policy (setting `capture`).
    captures: DashMap<TenantId, CapturePolicy>,
    /// Budgets below each tenant (setting `spend_limits`).
    spend: DashMap<TenantId, Arc<SpendLimits>>,
    /// Each tenant's semantic cache (setting `semantic_cache`).
    semantic: DashMap<TenantId, SemanticPolicy>,
    /// The tenants whose registries take signed manifests only (setting `require_signatures`).
    signed_only: DashMap<TenantId, ()>,
}

impl TenantSettings {
    /// Applies a `TenantSettingSet` (`None`: removed). Values were checked when they were set;
    /// one that no longer parses (a rule removed from a later version) is dropped, logged.
    pub fn apply(&self, tenant: TenantId, key: &str, value: Option<&str>) {
        match key {
            ALLOWED_MODELS_SETTING => match value.map(|v| parse_allowed_models(v, &|_| true)) {
                Some(Ok(Some(models))) => {
                    self.allowed.insert(tenant, models);
                }
                _ => {
                    self.allowed.remove(&tenant);
                }
            },
            CORS_SETTING => match value.map(parse_origins) {
                Some(Ok(origins)) => {
                    self.cors.insert(tenant, origins);
                }
                _ => {
                    self.cors.remove(&tenant);
                }
            },
            GUARDRAILS_SETTING => match value.map(Guard::compile) {
                Some(Ok(guard)) => {
                    self.guards.insert(tenant, Arc::new(guard));
                }
                Some(Err(problem)) => {
                    tracing::error!(%tenant, %problem, "a tenant's guardrails no longer compile; none apply");
                    self.guards.remove(&tenant);
                }
                None => {
                    self.guards.remove(&tenant);
                }
            },
            SPEND_LIMITS_SETTING => match value.map(SpendLimits::parse) {
                Some(Ok(limits)) => {
                    self.spend.insert(tenant, Arc::new(limits));
                }
                _ => {
                    self.spend.remove(&tenant);
                }
            },
            SEMANTIC_CACHE_SETTING => match value.map(SemanticPolicy::parse) {
                Some(Ok(policy)) => {
                    self.semantic.insert(tenant, policy);
                }
                _ => {
                    self.semantic.remove(&tenant);
                }
            },
            REQUIRE_SIGNATURES_SETTING => match value.map(parse_switch) {
                Some(Ok(true)) => {
                    self.signed_only.insert(tenant, ());
                }
                _ => {
                    self.signed_only.remove(&tenant);
                }
            },
            CAPTURE_SETTING => match value.map(CapturePolicy::parse) {
                Some(Ok(policy)) => {
                    self.captures.insert(tenant, policy);
                }
                _ => {
                    self.captures.remove(&tenant);
                }
            },
            _ => {}
        }
    }

    /// The tenant's budgets below it, if it set any.
    pub fn spend_limits(&self, tenant: TenantId) -> Option<Arc<SpendLimits>> {
        self.spend.get(&tenant).map(|l| l.clone())
    }

    /// The tenant's semantic cache, if it opted in.
    pub fn semantic_cache(&self, tenant: TenantId) -> Option<SemanticPolicy> {
        self.semantic.get(&tenant).map(|p| *p)
    }

    /// Whether the tenant's registry takes signed manifests only.
    pub fn requires_signatures(&self, tenant: TenantId) -> bool {
        self.signed_only.contains_key(&tenant)
    }

    /// The tenant's capture policy, if it captures.
    pub fn capture(&self, tenant: TenantId) -> Option<CapturePolicy> {
        self.captures.get(&tenant).map(|p| *p)
    }

    /// Whether a browser on `origin` may read `tenant`'s answers.
    pub fn cors_allows(&self, tenant: TenantId, origin: &str) -> bool {
        self.cors
            .get(&tenant)
            .is_some_and(|origins| origins.iter().any(|o| o == "*" || o == origin))
    }

    /// The models the tenant may use (`None`: every one).
    pub fn allowed_models(&self, tenant: TenantId) -> Option<Vec<String>> {
        self.allowed.get(&tenant).map(|m| m.clone())
    }

    /// The tenant's guardrails, if it has any.
    pub fn guardrails(&self, tenant: TenantId) -> Option<Arc<Guard>> {
        self.guards.get(&tenant).map(|g| g.clone())
    }
}

/// Checks a setting's new value before it is written (`known_model`: whether a model is
/// configured here).
pub fn check(key: &str, value: &str, known_model: &dyn Fn(&str) -> bool) -> Result<(), String> {
    match key {
        ALLOWED_MODELS_SETTING => parse_allowed_models(value, known_model).map(|_| ()),
        CORS_SETTING => parse_origins(value).map(|_| ()),
        GUARDRAILS_SETTING => Guard::compile(value).map(|_| ()),
        CAPTURE_SETTING => CapturePolicy::parse(value).map(|_| ()),
        SPEND_LIMITS_SETTING => SpendLimits::parse(value).map(|_| ()),
        SEMANTIC_CACHE_SETTING => SemanticPolicy::parse(value).map(|_| ()),
        REQUIRE_SIGNATURES_SETTING => parse_switch(value).map(|_| ()),
        _ => Ok(()),
    }
}

/// Parses `require_signatures`: `true` or `false`.
fn parse_switch(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!(
            "require_signatures is true or false, not {other:?}"
        )),
    }
}

/// Parses `cors_origins`: `*`, or origins (`scheme://host[:port]`) separated by commas.
pub fn parse_origins(value: &str) -> Result<Vec<String>, String> {
    let origins: Vec<String> = value
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() || origins.len() > 50 {
        return Err("cors_origins must list 1-50 origins, or *".into());
    }
    for origin in &origins {
        let valid = origin == "*"
            || ((origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.is_empty() || rest.contains('/'))
                && origin.bytes().all(|b| b.is_ascii_graphic()));
        if !valid {
            return Err(format!(
                "{origin:?} is not an origin (scheme://host[:port], no path)"
            ));
        }
    }
    Ok(origins)
}
