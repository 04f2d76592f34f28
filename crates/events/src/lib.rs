//! The event log of Switchyard: ids, the envelope, the codec and event catalog, the
//! [`EventStore`] port and its backends (memory, SQLite, PostgreSQL).
//!
//! ```
//! use switchyard_events::{
//!     Event, EventStore, ExpectedVersion, GlobalPosition, MemoryStore, Metadata, Scope, StreamId,
//!     StreamVersion, TenantCreated, TenantId,
//! };
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let tenant = TenantId::new();
//! let stream = StreamId::of("tenant", tenant)?;
//! let created = Event::TenantCreated(TenantCreated { name: "acme".into(), plan: "pro".into() });
//! let new_event = created.to_new_event(Metadata::default())?;
//!
//! // The first append creates the stream; a second writer expecting the same is refused.
//! let appended = store.append(tenant, &stream, ExpectedVersion::NoStream, vec![new_event.clone()]).await?;
//! assert_eq!(appended.stream_version, StreamVersion(1));
//! let retry = store.append(tenant, &stream, ExpectedVersion::NoStream, vec![new_event]).await?;
//! assert!(retry.deduplicated); // same event id: the original positions come back
//!
//! let read = store.read_all(Scope::Tenant(tenant), GlobalPosition::START, 100).await?;
//! assert_eq!(Event::from_recorded(&read[0])?, created);
//! # Ok::<(), switchyard_events::Error>(())
//! # }).unwrap();
//! ```

mod catalog; // every stored event type and version, with upcasters
pub mod codec; // binary (postcard + version byte) and JSON forms of payloads
mod envelope; // what writers hand in and readers get back
mod error; // the crate's one error type
mod ids; // tenant, stream, event ids; stream versions; global positions
mod metrics; // Prometheus metrics of the store
pub mod store; // the EventStore port, group commit, subscriptions and the backends

pub use catalog::{
    ApiKeyIssued, ApiKeyRevoked, CircuitChanged, Event, FragmentRegistered, IdempotencyKeyClaimed,
    IdempotencyKeyReleased, IdempotentResponseRecorded, InferenceCompleted, InferenceFailed,
    InferenceRequested, InvoiceFinalized, InvoicePaid, JsonEvent, LimitScope, QuotaReleased,
    QuotaReserved, QuotaSettled, RateLimitSet, RewardRecorded, RouteChosen, RunCancelRequested,
    RunCancelled, RunCompleted, RunContinued, RunFailed, RunStarted, SegmentStarted, ShadowChoice,
    SignalReceived, StepCompleted, StepFailed, StepStarted, TenantCreated, TenantFlagSet,
    TenantLimitsSet, TenantRenamed, TenantResumed, TenantSettingSet, TenantSuspended, TimerFired,
    TimerStarted, ToolRegistered, UsageRecorded, WorkflowRegistered,
};
pub use codec::EventPayload;
pub use envelope::{MAX_PAYLOAD_BYTES, Metadata, NewEvent, RecordedEvent, Snapshot};
pub use error::{Error, Result};
pub use ids::{EventId, GlobalPosition, StreamId, StreamVersion, TenantId};
pub use store::memory::MemoryStore;
pub use store::postgres::{PostgresOptions, PostgresStore};
pub use store::sqlite::SqliteStore;
pub use store::{AppendResult, EventStore, EventStream, ExpectedVersion, Scope, StreamMetadata};
