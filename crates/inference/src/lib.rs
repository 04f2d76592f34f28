//! The inference pipeline of Switchyard, with no HTTP in it: a chat or embeddings request in
//! the OpenAI wire format goes through admission (limits, budgets), routing, the providers
//! behind the resilience layer, and settlement, and comes out as an answer plus the
//! `inference-<id>` events in the log. The HTTP surface (`switchyard-gateway`) and the workflow
//! executor both call [`Pipeline`]; this crate depends on `events` and `actors` only.

/// Who asks and what they may still take: principals, request and token limits (GCRA, local
/// or Redis), the budget meter.
pub mod admission;
/// The order a request tries a model's deployments in: weighted, least busy, lowest latency.
pub mod balance;
/// Every inference outcome with a cost, billed to its tenant's billing actor in batches.
pub mod billing_feed;
/// The exact response cache: per tenant, in this process or in the shared Redis.
pub mod cache;
/// Request capture: opted-in tenants' prompts and answers kept beside the log for replay.
pub mod capture;
/// The TOML configuration: providers, models, exact prices, simulator knobs.
pub mod config;
/// The crate's error type (a stable code, a status and a message for every refusal).
pub mod error;
/// The server's one log subscription and the [`follow::Folder`]s it feeds.
pub mod follow;
#[cfg(test)]
mod fuzz; // fuzz targets: the OpenAI request parser and the SSE reader
/// Guardrails: PII redaction, blocked topics, prompt size and output schema, per tenant.
pub mod guard;
/// Closing, drafting and re-pricing invoices on each tenant's plan.
pub mod invoicing;
/// Prometheus metrics of inferences and circuit breakers.
pub mod metrics;
/// The OpenAI wire format of chat completions and embeddings, and its checks.
pub mod openai;
/// `complete`, `stream` and `embed`: one inference from admission to its events.
pub mod pipeline;
/// The `Provider` trait and its adapters: the simulator, OpenAI-compatible, Anthropic.
pub mod providers;
/// The Redis connection the shared limits and caches use: a time bound per call, a cool-off
/// after a failure.
pub mod redis_link;
/// Circuit breakers, bulkheads, retries with backoff and jitter, fallbacks.
pub mod resilience;
/// The feature store and the choice for `auto` over the policies of `switchyard-actors`.
pub mod router;

pub use admission::{Accounts, Principal, RateStatus};
pub use error::{Error, Result};
pub use pipeline::{CacheStatus, ChatStream, Completed, Frame, Pipeline};
