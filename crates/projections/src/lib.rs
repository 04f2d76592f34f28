//! The read side of Switchyard: projectors that fold the global log into read models with the
//! checkpoint written in the same transaction, the tenant-scoped analytics queries, and the relay
//! that publishes the log to NATS JetStream. Data flow: `EventStore::subscribe_all` → [`runner`] (one leased worker per projector) →
//! [`projectors`] (event → [`model::Op`]s, pure) → [`db::ReadDb`] (SQLite or PostgreSQL; one
//! transaction per batch with the checkpoint's compare-and-set) → [`query`] (analytics, under
//! row-level security in PostgreSQL).

pub mod db; // the read-model database: DDL, batches with checkpoints, DLQ, shadow swap, retention
mod error; // the crate's one error type
mod metrics; // Prometheus metrics of projectors and the relay
pub mod model; // tables and the writes projectors ask for
pub mod projectors; // event → ops, one pure function per projector
pub mod query; // tenant-scoped analytics queries
pub mod relay; // the NATS JetStream relay
pub mod runner; // leased workers, rebuilds, dead-letter retries
#[cfg(any(test, feature = "test-util"))]
pub mod testkit; // inference traffic with known totals, for tests and benchmarks

pub use db::{ANALYTICS_ROLE, DeadLetter, DlqEntry, Lease, ReadDb};
pub use error::{Error, Result};
pub use runner::{Projections, Rebuilt, RunnerConfig, rebuild, retry_dead_letter};
