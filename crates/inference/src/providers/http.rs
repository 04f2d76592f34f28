//! What the HTTP provider adapters share: one provider's client, base URL, credential and two
//! timeouts, and a whole answer read within them.

use std::time::Duration;

use serde_json::Value;

use super::ProviderError;
use crate::config::ProviderConfig;

/// Largest upstream answer read whole (non-streaming), and largest single SSE event.
pub const MAX_UPSTREAM_BODY: usize = 16 * 1024 * 1024;

/// An answer that does not parse: retryable, the provider may answer well next time.
pub fn malformed(what: impl std::fmt::Display) -> ProviderError {
    ProviderError::retryable(
        "upstream_malformed",
        format!("the provider's answer is not valid: {what}"),
    )
}

/// One provider's HTTP endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pub client: reqwest::Client,
    /// Without a trailing `/`.
    pub base_url: String,
    pub api_key: Option<String>,
    /// Longest wait for the response head or the first streamed event.
    pub first_token_timeout: Duration,
    /// Longest wait between two streamed events, and for a whole answer's body.
    pub timeout: Duration,
}

impl Endpoint {
    pub fn new(config: &ProviderConfig) -> crate::Result<Self> {
        let base_url = config.base_url.clone().ok_or_else(|| {
            crate::Error::Config(format!("provider {} needs a base_url", config.name))
        })?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| crate::Error::Config(format!("provider {}: {e}", config.name)))?;
        Ok(Endpoint {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: config.api_key()?,
            first_token_timeout: config.first_token_timeout(),
            timeout: config.timeout(),
        })
    }

    /// A whole answer's JSON body, read within the timeout and the size bound.
    pub async fn json(&self, response: reqwest::Response) -> Result<Value, ProviderError> {
        let bytes = tokio::time::timeout(self.timeout, response.bytes())
            .await
            .map_err(|_| ProviderError::timeout("the provider's answer did not finish in time"))?
            .map_err(|e| ProviderError::retryable("upstream_unavailable", e.to_string()))?;
        if bytes.len() > MAX_UPSTREAM_BODY {
            return Err(malformed("the answer is too large"));
        }
        serde_json::from_slice(&bytes).map_err(malformed)
    }
}
