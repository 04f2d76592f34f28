//! The event log of Switchyard: ids, the envelope, the codec and event catalog, the
//! [`EventStore`] port and its backends (memory, SQLite, PostgreSQL); an example of appending
//! and reading is in [`store`].

mod catalog; // every stored event type and version, with upcasters
pub mod codec; // binary (postcard + version byte) and JSON forms of payloads
mod envelope; // what writers hand in and readers get back
mod error; // the crate's one error type
#[cfg(test)]
mod fuzz; // fuzz target: event payload decoding
#[cfg(feature = "fuzzing")]
pub mod fuzzing; // the fuzz targets' seed corpus and input mutator
mod ids; // tenant, stream, event ids; stream versions; global positions
pub mod store; // the EventStore port, group commit, subscriptions and the backends
pub mod trace; // the trace context events carry: hooks the binary installs when it exports traces

pub use catalog::{
    ApiKeyIssued, ApiKeyRevoked, ApiKeyRotated, BillingDaySet, CapturesDeleted, CircuitChanged,
    CreditNoteIssued, DocumentAdded, DocumentChunk, DocumentChunked, DocumentDeleted,
    DocumentIndexed, Event, FeatureFlagSet, FragmentRegistered, GuardrailChecked, GuardrailHit,
    IdempotencyKeyClaimed, IdempotencyKeyReleased, IdempotentResponseRecorded, InferenceCaptured,
    InferenceCompleted, InferenceFailed, InferenceRequested, InvoiceFinalized, InvoiceLine,
    InvoicePaid, JsonEvent, LimitScope, ManifestSigned, ModelRate, PlanPrices, PriceBookPublished,
    PromptRegistered, QuotaReleased, QuotaReserved, QuotaSettled, RateLimitSet, RewardRecorded,
    RouteChosen, RouterConfigured, RunCancelRequested, RunCancelled, RunCompleted, RunContinued,
    RunFailed, RunStarted, SegmentStarted, ShadowChoice, SignalReceived, StepCompleted, StepFailed,
    StepStarted, StorageMetered, TenantCreated, TenantDeleted, TenantFlagSet, TenantLimitsSet,
    TenantRenamed, TenantResumed, TenantSettingSet, TenantSuspended, TimerFired, TimerStarted,
    ToolRegistered, UsageRecorded, WorkflowRegistered,
};
pub use codec::EventPayload;
pub use envelope::{Actor, MAX_PAYLOAD_BYTES, Metadata, NewEvent, RecordedEvent, Snapshot};
pub use error::{Error, Result};
pub use ids::{EventId, GlobalPosition, StreamId, StreamVersion, TenantId};
pub use store::memory::MemoryStore;
pub use store::postgres::{PostgresOptions, PostgresStore};
pub use store::sqlite::SqliteStore;
pub use store::{AppendResult, EventStore, EventStream, ExpectedVersion, Scope, StreamMetadata};
