//! Providers behind one trait: the simulator, any OpenAI-compatible HTTP endpoint (Azure
//! OpenAI and Mistral in their dialects), Anthropic's Messages API, Gemini's generateContent
//! and AWS Bedrock's Converse. A provider
//! answers in OpenAI's shape (choices as JSON, usage counted), whole or as a stream of chunks;
//! the gateway adds ids, events, billing and the client-facing framing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde_json::Value;

use crate::config::{Config, ModelConfig, ProviderKind};
use crate::openai::ChatRequest;

pub mod anthropic;
pub mod bedrock;
pub mod dialect;
pub mod framed;
pub mod gemini;
pub mod http;
pub mod local;
pub mod openai_compat;
pub mod sim;
pub mod verifiable;

/// Tokens counted by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Completion {
    /// OpenAI `choices`: `{index, message, finish_reason}`.
    pub choices: Vec<Value>,
    pub usage: Usage,
}

/// One piece of a streamed answer.
#[derive(Debug, Clone)]
pub enum StreamEvent {
    /// OpenAI chunk `choices`: `{index, delta, finish_reason}`.
    Choices(Vec<Value>),
    /// The stream's token counts (sent once, at the end).
    Usage(Usage),
}

/// A stream of chunks; ends with `Ok` items only when the provider finished cleanly.
pub type ChunkStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

/// Why a provider call failed, and whether trying again (here or on a fallback) may help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProviderError {
    /// Stable code answered to the client (`upstream_unavailable`, `upstream_timeout`, ...).
    pub code: &'static str,
    pub message: String,
    pub retryable: bool,
    /// The upstream's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The HTTP status for the client when no fallback answers.
    pub status: u16,
}

impl ProviderError {
    /// The error with the provider's credential cut out of its message: a provider may quote
    /// the key it was sent ("Incorrect API key provided: sk-..."), and the message goes to the
    /// tenant, the log and the event log.
    pub fn redact(mut self, secret: Option<&str>) -> Self {
        if let Some(secret) = secret.filter(|s| !s.is_empty())
            && self.message.contains(secret)
        {
            self.message = self.message.replace(secret, "[redacted]");
        }
        self
    }

    /// `stream` with [`ProviderError::redact`] applied to each error it yields.
    pub fn redact_stream(stream: ChunkStream, secret: Option<Arc<str>>) -> ChunkStream {
        match secret {
            None => stream,
            Some(secret) => stream
                .map(move |item| item.map_err(|e| e.redact(Some(&secret))))
                .boxed(),
        }
    }
    /// A refusal by this model that another may not make (a prompt over its context window, a
    /// prompt its content policy flags): not retried, but the fallback chain is tried.
    pub fn falls_back(&self) -> bool {
        matches!(self.code, "context_length_exceeded" | "content_policy")
    }

    pub fn retryable(code: &'static str, message: impl Into<String>) -> Self {
        ProviderError {
            code,
            message: message.into(),
            retryable: true,
            retry_after: None,
            status: 502,
        }
    }

    pub fn fatal(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        ProviderError {
            code,
            message: message.into(),
            retryable: false,
            retry_after: None,
            status,
        }
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        ProviderError {
            status: 504,
            ..ProviderError::retryable("upstream_timeout", message)
        }
    }
}

/// One embedding per input, with the tokens counted.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u64,
}

/// What every provider adapter does.
pub trait Provider: Send + Sync {
    /// A whole chat completion.
    fn chat<'a>(
        &'a self,
        model: &'a ModelConfig,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>>;

    /// A streamed chat completion: the future resolves when the provider has accepted the
    /// request (before the first chunk), so a failure there can still fall back.
    fn chat_stream<'a>(
        &'a self,
        model: &'a ModelConfig,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChunkStream, ProviderError>>;

    /// Embeddings of `inputs`.
    fn embed<'a>(
        &'a self,
        model: &'a ModelConfig,
        inputs: &'a [String],
        dimensions: Option<u32>,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>>;
}

/// The providers of a config, by name.
pub struct Providers {
    by_name: BTreeMap<String, Arc<dyn Provider>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

impl Providers {
    /// Builds every declared provider (reads API keys from the environment or secret files).
    pub fn build(config: &Config) -> crate::Result<Self> {
        let mut by_name: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        for provider in &config.providers {
            let built: Arc<dyn Provider> = match provider.kind {
                ProviderKind::Sim => Arc::new(sim::Simulator),
                ProviderKind::Openai | ProviderKind::Azure | ProviderKind::Mistral => {
                    Arc::new(openai_compat::OpenAiCompatible::new(provider)?)
                }
                ProviderKind::Gemini => Arc::new(gemini::Gemini::new(provider)?),
                ProviderKind::Anthropic => Arc::new(anthropic::Anthropic::new(provider)?),
                ProviderKind::Bedrock => Arc::new(bedrock::Bedrock::new(provider)?),
                ProviderKind::Local => Arc::new(local::Local::new(provider)?),
            };
            by_name.insert(provider.name.clone(), built);
        }
        Ok(Providers { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.by_name.get(name)
    }
}
