//! The one error type of the event log.

use crate::ids::{EventId, StreamId, StreamVersion, TenantId};
use crate::store::ExpectedVersion;

/// Everything that can go wrong in the event log.
///
/// The variants above [`Error::Database`] are the caller's fault or a lost race and are safe to
/// show to a client; the rest are infrastructure failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stream name that does not follow `category-id` (see [`StreamId`]).
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidStreamName { name: String, reason: &'static str },

    /// An event that cannot be stored as given (empty append, bad type name, oversized payload…).
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    /// Optimistic concurrency: the stream is not at the version the writer expected.
    #[error("wrong expected version on {stream}: expected {expected}, stream is at {actual}")]
    WrongExpectedVersion {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: StreamVersion,
    },

    /// Some, but not all, of the event ids of an append were stored before, or they were stored
    /// in another stream: this is not a retry of an earlier append but a different one.
    #[error(
        "event {event_id} was already appended, but not as part of this same append to {stream}"
    )]
    IdempotencyConflict { stream: StreamId, event_id: EventId },

    /// The stream belongs to another tenant; a stream has exactly one tenant for its whole life.
    #[error("stream {stream} does not belong to tenant {tenant}")]
    WrongTenant { stream: StreamId, tenant: TenantId },

    /// A snapshot claims to cover events the stream does not have.
    #[error("snapshot of {stream} at version {version} is ahead of the stream (at {actual})")]
    SnapshotAhead {
        stream: StreamId,
        version: StreamVersion,
        actual: StreamVersion,
    },

    /// A payload or row that cannot be decoded: unknown type/version, corrupt bytes, bad JSON.
    #[error("cannot decode {what}: {reason}")]
    Decode { what: String, reason: String },

    /// An event payload that cannot be encoded.
    #[error("cannot encode {what}: {reason}")]
    Encode { what: String, reason: String },

    /// The database failed or refused (connection, I/O, constraint we did not expect).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// The embedded store's read path (rusqlite) failed.
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// Schema migration failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// A transaction handed in by the caller cannot carry an append (see
    /// [`crate::PostgresStore::append_in`]).
    #[error("unsuitable transaction: {0}")]
    Transaction(String),

    /// The database could not be reached or dropped the connection; nothing was acknowledged.
    /// Appends are idempotent by event id, so retrying the same events is safe.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),

    /// The store's writer task has stopped (the store is shutting down or crashed).
    #[error("the event store is closed")]
    Closed,
}

impl Error {
    /// True when the error is a lost optimistic-concurrency race that a caller may resolve by
    /// reloading the stream and deciding again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::WrongExpectedVersion { .. })
    }

    /// True when the failure is the infrastructure's (connection lost, pool exhausted, database
    /// restarting) and the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
                failure.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::SystemIoFailure
            ),
            Error::Database(error) => matches!(
                error,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ),
            _ => false,
        }
    }

    pub(crate) fn decode(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Decode {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
