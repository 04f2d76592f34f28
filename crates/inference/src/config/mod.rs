//! The TOML configuration (`SWITCHYARD_CONFIG`): providers, the models they serve and their
//! prices. Without a file the server serves the two simulated models, `sim-small` and
//! `sim-large`, so a fresh `switchyard serve` answers at once.
//!
//! ```toml
//! default_model = "local-llama"
//!
//! [[providers]]
//! name = "local"
//! kind = "openai"                         # openai | azure | mistral | gemini | anthropic | bedrock | sim
//! base_url = "http://127.0.0.1:11434/v1"  # any OpenAI-compatible server
//! api_key_env = "LOCAL_LLM_KEY"           # or api_key_file = "/run/secrets/local"
//!
//! [[models]]
//! name = "local-llama"                    # what clients send as `model`
//! provider = "local"
//! upstream = "llama3.1:8b"                # what the provider calls it
//! input_usd_per_million = "0.10"          # exact decimals, never floats
//! output_usd_per_million = "0.30"
//! ```

use std::path::Path;
use std::time::Duration;

use crate::error::{ConfigContext as _, Result, config_bail as bail};
use serde::{Deserialize, Serialize};
use switchyard_actors::billing::ModelPrice;

mod cache;
/// Checking a parsed config: every problem at once.
mod check;
mod deployments;
mod retrieval;
mod router;

pub use cache::CacheConfig;
pub use deployments::{Balance, Deployment};
pub use retrieval::RetrievalConfig;
pub use router::{RewardWeights, RouterConfig, Routing, Split};

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// With no `[router]` policy, `auto` always serves this model (a static policy).
    #[serde(default)]
    pub default_model: Option<String>,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// How `auto` is routed (Thompson sampling over every model by default).
    #[serde(default)]
    pub router: RouterConfig,
    /// Most requests one tenant may have in flight at once (its bulkhead).
    #[serde(default = "default_tenant_concurrency")]
    pub tenant_max_concurrency: usize,
    /// Output tokens reserved from the budget for a request that sets no `max_tokens` (a stream
    /// that outgrows it extends its reservation as it goes).
    #[serde(default = "default_output_reservation")]
    pub default_output_reservation: u64,
    /// The exact response cache (`[cache]`; off unless enabled).
    #[serde(default)]
    pub cache: CacheConfig,
    /// Signed registries (`[registry]`): this environment's trusted keys and whether every
    /// manifest must be signed.
    #[serde(default)]
    pub registry: switchyard_manifests::TrustConfig,
    /// Document ingestion and retrieval (`[retrieval]`).
    #[serde(default)]
    pub retrieval: RetrievalConfig,
}

fn default_output_reservation() -> u64 {
    1_024
}

fn default_tenant_concurrency() -> usize {
    256
}

/// Which adapter speaks to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible HTTP endpoint (OpenAI, vLLM, Ollama, llama.cpp server, ...).
    Openai,
    /// Azure OpenAI: a model's `upstream` is its deployment; `api_version`, the `api-key` header.
    Azure,
    /// Mistral's API (OpenAI-shaped, with its own field names).
    Mistral,
    /// Google Gemini's generateContent API.
    Gemini,
    /// Anthropic's Messages API.
    Anthropic,
    /// AWS Bedrock's Converse API, signed with SigV4 (or a Bedrock API key); needs `region`.
    Bedrock,
    /// The built-in simulator (deterministic text; for demos, tests and benchmarks).
    Sim,
    /// A sentence-embedding model run in this process on the CPU (`model_dir`: its
    /// `config.json`, `model.safetensors` and `tokenizer.json`); embeddings only.
    Local,
}

/// One provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Base URL of the API, e.g. `http://127.0.0.1:8000/v1` (not for `sim`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Azure OpenAI's `api-version` (only for `azure`; 2024-10-21 when unset).
    #[serde(default)]
    pub api_version: Option<String>,
    /// The AWS region of a `bedrock` provider (`us-east-1`); its `base_url` defaults to
    /// `https://bedrock-runtime.{region}.amazonaws.com`.
    #[serde(default)]
    pub region: Option<String>,
    /// File holding the API key (a mounted secret).
    #[serde(default)]
    pub api_key_file: Option<String>,
    /// Longest wait for the response headers or the first streamed token.
    #[serde(default = "default_first_token_ms")]
    pub first_token_timeout_ms: u64,
    /// Longest wait between two streamed chunks, and for a whole non-streamed answer.
    #[serde(default = "default_total_ms")]
    pub timeout_ms: u64,
    /// Most calls in flight to this provider at once (its bulkhead); more are refused at once
    /// (`provider_busy`, and the fallback is tried) rather than queued.
    #[serde(default = "default_provider_concurrency")]
    pub max_concurrency: usize,
    /// The folder of a `local` provider's model.
    #[serde(default)]
    pub model_dir: Option<String>,
}

fn default_provider_concurrency() -> usize {
    1_024
}

fn default_first_token_ms() -> u64 {
    30_000
}

fn default_total_ms() -> u64 {
    120_000
}

impl ProviderConfig {
    pub fn first_token_timeout(&self) -> Duration {
        Duration::from_millis(self.first_token_timeout_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The API key from the environment or the secrets file (never from the config text
    /// itself, so the file can be committed and logged).
    pub fn api_key(&self) -> Result<Option<String>> {
        if let Some(var) = &self.api_key_env {
            let key = std::env::var(var).with_context(|| {
                format!(
                    "provider {}: environment variable {var} is not set",
                    self.name
                )
            })?;
            return Ok(Some(key));
        }
        if let Some(path) = &self.api_key_file {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("provider {}: cannot read {path}", self.name))?;
            return Ok(Some(key.trim().to_owned()));
        }
        Ok(None)
    }
}

/// One model clients can name.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    pub provider: String,
    /// The provider's name for it (defaults to `name`).
    #[serde(default)]
    pub upstream: Option<String>,
    /// USD per million input tokens, as a decimal string ("0.15").
    #[serde(default = "zero")]
    pub input_usd_per_million: String,
    /// USD per million output tokens.
    #[serde(default = "zero")]
    pub output_usd_per_million: String,
    /// Largest context the model accepts, in tokens.
    #[serde(default = "default_context")]
    pub context_tokens: u64,
    /// How the simulator behaves for this model (only for `sim` providers).
    #[serde(default)]
    pub sim: Option<SimModel>,
    /// Models tried in order when this one fails (after its retries) or its circuit is open,
    /// before the first byte reaches the client.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// An embedding model's own dimensions (1-4096): a request may ask for fewer, never more,
    /// and gets these when it asks for none. Unset: up to 4096, 64 by default.
    #[serde(default)]
    pub embedding_dimensions: Option<u32>,
    /// More deployments of this model; its own `provider` and `upstream` are the first.
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    /// How a request picks among the deployments (`weighted`, `least_busy`, `latency`).
    #[serde(default)]
    pub balance: Balance,
    /// The own deployment's share of `weighted` traffic.
    #[serde(default = "deployments::one")]
    pub weight: u32,
    #[serde(skip)]
    pub price: ModelPrice,
    /// One model per deployment, built from `deployments` (empty without them).
    #[serde(skip)]
    pub variants: Vec<ModelConfig>,
    /// A deployment variant's circuit-breaker key (`None`: the model's name).
    #[serde(skip)]
    pub circuit: Option<String>,
    /// Served by a provider that only embeds (`local`): never a chat candidate.
    #[serde(skip)]
    pub embedding_only: bool,
}

fn zero() -> String {
    "0".into()
}

fn default_context() -> u64 {
    128_000
}

impl ModelConfig {
    pub fn upstream_name(&self) -> &str {
        self.upstream.as_deref().unwrap_or(&self.name)
    }

    /// The key of this model's (or deployment's) circuit breaker.
    pub fn circuit(&self) -> &str {
        self.circuit.as_deref().unwrap_or(&self.name)
    }
}

/// The simulator's knobs for one model. `quality` is hidden from the router: it is the chance
/// that an answer is judged good, which only feedback reveals.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimModel {
    /// Median latency of a whole answer.
    #[serde(default)]
    pub latency_ms: u64,
    /// Spread: each answer takes `latency_ms` ± up to this much (uniform).
    #[serde(default)]
    pub jitter_ms: u64,
    /// Share of calls that fail with a retryable 503, 0–1.
    #[serde(default)]
    pub failure_rate: f64,
    /// Chance an answer is good, 0–1: an arithmetic question is answered right with this
    /// probability (what an exact-scored eval measures), and simulated feedback draws from it.
    #[serde(default = "half")]
    pub quality: f64,
    /// Most tokens an answer has.
    #[serde(default = "default_answer_tokens")]
    pub max_answer_tokens: u64,
    /// Fewest tokens an answer has.
    #[serde(default = "one_token")]
    pub min_answer_tokens: u64,
    /// Ability per family of verifiable task (item-response model): a task of difficulty d is
    /// answered right with probability σ(ability − d). A family without one is answered right
    /// with probability `quality`, whatever its difficulty.
    #[serde(default)]
    pub ability: Abilities,
}

/// A simulated model's ability per family of verifiable task (logits; `None`: use `quality`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Abilities {
    pub arithmetic: Option<f64>,
    pub extraction: Option<f64>,
    pub classification: Option<f64>,
}

impl Abilities {
    /// Every ability given.
    pub fn all(&self) -> [Option<f64>; 3] {
        [self.arithmetic, self.extraction, self.classification]
    }
}

fn one_token() -> u64 {
    1
}

fn half() -> f64 {
    0.5
}

fn default_answer_tokens() -> u64 {
    64
}

/// The name the built-in config gives the local embedding model.
pub const LOCAL_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

impl Config {
    /// The built-in config with the local embedding model of `dir` as `all-minilm-l6-v2` (free,
    /// embeddings only): what `serve` runs without a config file when
    /// `SWITCHYARD_EMBEDDING_MODEL_DIR` is set.
    pub fn default_with_local_embeddings(dir: &str) -> Result<Self> {
        let mut config = Config::default();
        let extra: Config = Config::parse(&format!(
            "[[providers]]\nname = \"local\"\nkind = \"local\"\nmodel_dir = {}\n\n\
             [[models]]\nname = \"{LOCAL_EMBEDDING_MODEL}\"\nprovider = \"local\"\nembedding_dimensions = 384\n",
            toml_string(dir)
        ))?;
        config.providers.extend(extra.providers);
        config.models.extend(extra.models);
        config.retrieval.embedding_model = Some(LOCAL_EMBEDDING_MODEL.to_owned());
        Ok(config)
    }
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Default for Config {
    /// The simulated models: a cheap, fast, middling `sim-small` and a dearer, slower, better
    /// `sim-large`.
    fn default() -> Self {
        let text = r#"
            [[providers]]
            name = "sim"
            kind = "sim"

            [[models]]
            name = "sim-small"
            provider = "sim"
            input_usd_per_million = "0.15"
            output_usd_per_million = "0.60"
            sim = { latency_ms = 40, jitter_ms = 20, failure_rate = 0.0, quality = 0.55 }

            [[models]]
            name = "sim-large"
            provider = "sim"
            input_usd_per_million = "2.50"
            output_usd_per_million = "10.00"
            sim = { latency_ms = 150, jitter_ms = 60, failure_rate = 0.0, quality = 0.85 }
        "#;
        // The built-in text is checked by a test; a failure here is a bug, not input.
        Config::parse(text).unwrap_or(Config {
            default_model: None,
            providers: Vec::new(),
            models: Vec::new(),
            router: RouterConfig::default(),
            tenant_max_concurrency: default_tenant_concurrency(),
            default_output_reservation: default_output_reservation(),
            cache: CacheConfig::default(),
            registry: Default::default(),
            retrieval: RetrievalConfig::default(),
        })
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The models `auto` chooses among by the server's routing, in config order.
    pub fn candidates(&self) -> Vec<&ModelConfig> {
        self.candidates_among(&self.router.candidates)
    }

    /// The models `auto` chooses among by `routing` (a tenant's own, or the server's).
    pub fn candidates_of(&self, routing: &Routing) -> Vec<&ModelConfig> {
        self.candidates_among(&routing.candidates)
    }

    fn candidates_among(&self, names: &[String]) -> Vec<&ModelConfig> {
        if names.is_empty() {
            self.models.iter().filter(|m| !m.embedding_only).collect()
        } else {
            names
                .iter()
                .filter_map(|name| self.model(name))
                .filter(|m| !m.embedding_only)
                .collect()
        }
    }
}

/// "2.50" → 2_500_000 micro-dollars, exactly; more than six decimals is refused.
pub fn usd_to_micros(text: &str) -> Result<u64> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole)
        || whole.len() > 12
        || (!fraction.is_empty() && !digits(fraction))
        || fraction.len() > 6
    {
        bail!("{text:?} is not a USD amount with at most six decimals");
    }
    let whole: u64 = whole.parse().context("amount too large")?;
    let fraction: u64 = format!("{fraction:0<6}").parse().context("bad decimals")?;
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(fraction))
        .context("amount too large")
}

#[cfg(test)]
mod tests;
