//! The one error type of the inference pipeline, and the rate-limit status that answers carry.
//!
//! Every refusal says which rule refused (a stable `code`, the status an OpenAI client expects,
//! and the message a person reads); the HTTP surface turns it into the JSON error shape and the
//! workflow executor into a step failure. Nothing here knows HTTP.

use std::borrow::Cow;
use std::fmt::Display;

use crate::admission::RateStatus;
use crate::providers::ProviderError;

/// Why an inference was refused or failed, or why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request breaks a rule of the OpenAI API (`code` is `invalid_request` and the like).
    #[error("{message}")]
    Invalid {
        code: Cow<'static, str>,
        message: String,
    },

    /// The named model is not served here.
    #[error("the model `{0}` does not exist; GET /v1/models lists them")]
    ModelNotFound(String),

    /// No model is configured for `auto`.
    #[error("no model is configured")]
    NoModels,

    /// The prompt is longer than the model's context.
    #[error("about {estimate} prompt tokens; {model} accepts at most {limit}")]
    ContextLength {
        estimate: u64,
        model: String,
        limit: u64,
    },

    /// A request or token limit refused it; `rate` says how long to wait.
    #[error("{message}")]
    RateLimited {
        message: String,
        rate: Box<RateStatus>,
        /// Whole seconds until a retry may pass (at least 1).
        retry_after_secs: u64,
    },

    /// A tenant's guardrail blocked the prompt or the answer (`rule` names it).
    #[error("{message}")]
    ContentBlocked { rule: String, message: String },

    /// A money or token budget cannot cover the request.
    #[error("{message}")]
    BudgetExhausted {
        message: String,
        rate: Box<RateStatus>,
    },

    /// The tenant already has its most requests in flight (its bulkhead).
    #[error("this tenant has its most requests in flight; retry when one finishes")]
    TooManyConcurrent,

    /// The provider (and every fallback) failed.
    #[error(transparent)]
    Provider(ProviderError),

    /// The event log cannot be written, so the inference cannot be recorded.
    #[error("the event log cannot be written; retry shortly")]
    Unavailable,

    /// The configuration is invalid (the message says where).
    #[error("{0}")]
    Config(String),

    /// The event log failed while the pipeline was being built.
    #[error(transparent)]
    Store(#[from] switchyard_events::Error),

    /// Redis, which holds the shared rate limits, failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),

    /// Redis did not answer in time, or failed a moment ago and is not asked again yet.
    #[error("redis: {0}")]
    RedisDown(&'static str),

    /// A billing command was refused: no such invoice (404), the invoice's state (409), or a
    /// bad value (422); `code` names the rule.
    #[error("{message}")]
    Billing {
        status: u16,
        code: &'static str,
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An `invalid_request` refusal.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            code: Cow::Borrowed("invalid_request"),
            message: message.into(),
        }
    }

    /// The stable, machine-readable code an API client sees.
    pub fn code(&self) -> &str {
        match self {
            Error::Invalid { code, .. } => code,
            Error::ModelNotFound(_) => "model_not_found",
            Error::NoModels => "no_models",
            Error::ContextLength { .. } => "context_length_exceeded",
            Error::RateLimited { .. } => "rate_limited",
            Error::BudgetExhausted { .. } => "budget_exhausted",
            Error::ContentBlocked { .. } => "content_blocked",
            Error::TooManyConcurrent => "too_many_concurrent_requests",
            Error::Provider(error) => error.code,
            Error::Unavailable | Error::Store(_) | Error::Redis(_) | Error::RedisDown(_) => {
                "unavailable"
            }
            Error::Config(_) => "invalid_config",
            Error::Billing { code, .. } => code,
        }
    }

    /// The HTTP status an OpenAI-compatible client expects for it.
    pub fn status(&self) -> u16 {
        match self {
            Error::Invalid { .. } | Error::ContextLength { .. } | Error::ContentBlocked { .. } => {
                400
            }
            Error::ModelNotFound(_) => 404,
            Error::RateLimited { .. } | Error::TooManyConcurrent => 429,
            Error::BudgetExhausted { .. } => 402,
            Error::Provider(error) => error.status,
            Error::NoModels
            | Error::Unavailable
            | Error::Store(_)
            | Error::Redis(_)
            | Error::RedisDown(_) => 503,
            Error::Config(_) => 500,
            Error::Billing { status, .. } => *status,
        }
    }

    /// Whether the same request may succeed later (limits, concurrency, outages).
    pub fn retryable(&self) -> bool {
        let status = self.status();
        status == 429 || status >= 500
    }

    /// The rate-limit status to show with the refusal (`x-ratelimit-*`).
    pub fn rate(&self) -> Option<&RateStatus> {
        match self {
            Error::RateLimited { rate, .. } | Error::BudgetExhausted { rate, .. } => Some(rate),
            _ => None,
        }
    }

    /// Whole seconds the client should wait before trying again (`Retry-After`).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Error::TooManyConcurrent => Some(1),
            Error::Provider(error) => error.retry_after.map(|after| after.as_secs().max(1)),
            _ => None,
        }
    }
}

/// Adds a "where" to configuration errors, as `anyhow::Context` would (for `?` in config code).
pub(crate) trait ConfigContext<T> {
    fn context(self, what: &str) -> Result<T>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Display> ConfigContext<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::Config(format!("{what}: {e}")))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Config(format!("{}: {e}", what())))
    }
}

impl<T> ConfigContext<T> for Option<T> {
    fn context(self, what: &str) -> Result<T> {
        self.ok_or_else(|| Error::Config(what.to_owned()))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| Error::Config(what()))
    }
}

/// `return Err(Error::Config(format!(…)))`.
macro_rules! config_bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Config(format!($($arg)*)))
    };
}
pub(crate) use config_bail;
