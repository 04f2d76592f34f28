//! The [`EventStore`] port and its backends.
//!
//! Every backend gives the same guarantees, proven by one [`conformance`] suite:
//! - `append` checks the expected version before it allocates any position, so a losing writer
//!   leaves no hole; an append of event ids that are already stored is a no-op that returns the
//!   original positions;
//! - `read_all` returns events in one global order in which an event that commits late can never
//!   appear *behind* a position a reader has already passed (see ARCHITECTURE.md, "global order");
//! - `subscribe_all` catches up from a position and then follows new commits, each event once.
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

use std::fmt;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::envelope::{NewEvent, RecordedEvent, Snapshot};
use crate::error::Result;
use crate::ids::{GlobalPosition, StreamId, StreamVersion, TenantId};

mod blobs; // the SQL backends' blob statements
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
#[cfg(any(test, feature = "test-util"))]
pub mod faulty; // a store that fails or stalls on command, for fault-injection tests
mod group_commit;
pub mod lease; // named leases: one holder among every process on the log
pub mod memory;
pub(crate) mod metrics;
mod plan;
pub mod postgres;
mod sql;
pub mod sqlite;
mod sqlite_read;
mod subscribe;

/// What a writer believes about the stream it appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// No check (the append still refuses another tenant's stream).
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be exactly at this version.
    Exact(StreamVersion),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// The global position of each appended event, in order.
    pub positions: Vec<GlobalPosition>,
    /// The stream's version after the append (the version of its last event).
    pub stream_version: StreamVersion,
    /// True when every event id was already stored by an earlier identical append: nothing was
    /// written and the original positions are returned.
    pub deduplicated: bool,
}

impl AppendResult {
    /// The position of the last appended event: a read-your-writes token for projections.
    pub fn last_position(&self) -> GlobalPosition {
        self.positions.last().copied().unwrap_or_default()
    }
}

/// Which tenant's events a read may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant: projectors, relays and operators.
    All,
    /// One tenant: anything a tenant's request reads.
    Tenant(TenantId),
}

impl Scope {
    pub(crate) fn admits(&self, tenant: TenantId) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenant(scoped) => *scoped == tenant,
        }
    }

    /// The tenant to filter on in SQL (`NULL` = all).
    pub(crate) fn tenant_filter(&self) -> Option<uuid::Uuid> {
        match self {
            Scope::All => None,
            Scope::Tenant(tenant) => Some(*tenant.as_uuid()),
        }
    }
}

/// What the store keeps about a stream besides its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamMetadata {
    pub tenant_id: TenantId,
    pub version: StreamVersion,
}

/// A live, catch-up-then-follow stream of events.
pub type EventStream = BoxStream<'static, Result<RecordedEvent>>;

/// The event log port. Backends: [`memory::MemoryStore`] (tests),
/// [`sqlite::SqliteStore`] (embedded default) and [`postgres::PostgresStore`] (production).
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug + 'static {
    /// Appends `events` to `stream` (owned by `tenant`) if the stream is at `expected`.
    ///
    /// Errors: [`crate::Error::WrongExpectedVersion`] on a lost race,
    /// [`crate::Error::IdempotencyConflict`] when some event ids were stored before in another
    /// append, [`crate::Error::WrongTenant`], [`crate::Error::InvalidEvent`] (also for an empty
    /// append).
    async fn append(
        &self,
        tenant: TenantId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult>;

    /// Events of one stream with a version after `after`, at most `limit`. A stream that does
    /// not exist, or that the scope does not admit, reads as empty.
    async fn read_stream(
        &self,
        scope: Scope,
        stream: &StreamId,
        after: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Events of every stream in global order with a position after `after`, at most `limit`.
    async fn read_all(
        &self,
        scope: Scope,
        after: GlobalPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Every event after `after`, then every event committed later, each exactly once, in
    /// global order. The stream ends only with an error.
    fn subscribe_all(&self, scope: Scope, after: GlobalPosition) -> EventStream;

    /// The stream's tenant and version, or `None` if it has no events or the scope does not
    /// admit it.
    async fn stream_metadata(
        &self,
        scope: Scope,
        stream: &StreamId,
    ) -> Result<Option<StreamMetadata>>;

    /// The position of the last committed event (0 for an empty log).
    async fn head(&self) -> Result<GlobalPosition>;

    /// Takes the lease `name` if no process on this log holds it; `None` when another does.
    /// Held until dropped or until the holder dies (see [`lease`]).
    async fn try_lease(&self, name: &str) -> Result<Option<lease::Lease>>;

    /// Whether the store can take appends now: its writer is running and the database answers.
    /// Returns the head position. For readiness probes.
    async fn ready(&self) -> Result<GlobalPosition> {
        self.head().await
    }

    /// Stores a snapshot of the stream's state (the stream must belong to `tenant` and have
    /// the events the snapshot covers); one older than the stored one is ignored.
    async fn save_snapshot(
        &self,
        tenant: TenantId,
        stream: &StreamId,
        snapshot: Snapshot,
    ) -> Result<()>;

    /// The latest snapshot of the stream, if any and if the scope admits the stream.
    async fn load_snapshot(&self, scope: Scope, stream: &StreamId) -> Result<Option<Snapshot>>;

    /// Keeps a blob beside the log ([`Blob`]); the same tenant and hash again keeps the first.
    async fn put_blob(&self, _blob: Blob) -> Result<()> {
        Err(crate::Error::Unavailable(
            "this store keeps no blobs".into(),
        ))
    }

    /// One of `tenant`'s blobs, if it is (still) kept.
    async fn get_blob(&self, _tenant: TenantId, _hash: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Deletes `tenant`'s blobs created before `before_us` (every one without it); how many.
    async fn delete_blobs(&self, _tenant: TenantId, _before_us: Option<i64>) -> Result<u64> {
        Ok(0)
    }

    /// Deletes every blob whose expiry is at or before `now_us`; how many, per tenant.
    async fn expire_blobs(&self, _now_us: i64) -> Result<Vec<(TenantId, u64)>> {
        Ok(Vec::new())
    }
}

/// Bytes kept beside the log rather than in it, so that they can be deleted: the log is
/// append-only, and a tenant's captured prompts and answers must go when it asks or when their
/// retention ends. Keyed by the tenant and the body's content hash (never shared across
/// tenants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub tenant: TenantId,
    /// The body's content hash, as the caller computed it (BLAKE3, hex).
    pub hash: String,
    pub body: Vec<u8>,
    pub created_at_us: i64,
    /// When retention deletes it (`None`: kept until deleted).
    pub expires_at_us: Option<i64>,
}

/// Converts a store integer (signed in SQL) to an unsigned position or version.
pub(crate) fn from_sql(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| crate::Error::decode(what, format!("negative value {value}")))
}

/// Converts a position or version to the store's signed integer.
pub(crate) fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Clamps a caller's `limit` to what one query may return.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit.min(100_000)).unwrap_or(100_000)
}
