//! `[cache]`: the response cache's settings (see [`crate::cache`]).

use serde::{Deserialize, Serialize};

/// `[cache]` in the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether answers are cached at all (off by default: a cached answer is not a fresh
    /// sample, which a caller of a sampling model may not expect).
    #[serde(default)]
    pub enabled: bool,
    /// How long an answer is kept (seconds).
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
    /// The share of the first answer's cost a hit is billed (0: free, 1: full price).
    #[serde(default)]
    pub hit_price: f64,
    /// The most bytes the in-process cache holds (entries are evicted past it).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// The largest answer kept (bytes of its JSON); larger ones are not cached.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: usize,
    /// The embedding model of the semantic cache (a configured model, e.g. the local
    /// `all-minilm-l6-v2`); tenants opt in with the setting `semantic_cache`. Unset: exact only.
    #[serde(default)]
    pub semantic_model: Option<String>,
}

fn default_ttl() -> u64 {
    3_600
}

fn default_max_bytes() -> u64 {
    64 << 20
}

fn default_max_entry_bytes() -> usize {
    256 << 10
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            ttl_seconds: default_ttl(),
            hit_price: 0.0,
            max_bytes: default_max_bytes(),
            max_entry_bytes: default_max_entry_bytes(),
            semantic_model: None,
        }
    }
}

impl CacheConfig {
    /// The checks `serve` makes at start.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(0.0..=1.0).contains(&self.hit_price) {
            return Err(format!(
                "cache.hit_price must be between 0 and 1, not {}",
                self.hit_price
            ));
        }
        if !(1..=30 * 86_400).contains(&self.ttl_seconds) {
            return Err("cache.ttl_seconds must be between 1 and 2592000 (30 days)".into());
        }
        Ok(())
    }
}
