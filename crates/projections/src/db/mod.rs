//! The read-model database: SQLite (embedded) or PostgreSQL (production, with row-level
//! security and monthly partitions), behind one type.
//!
//! Everything above this module speaks [`Op`]s and [`Val`]s; the SQL here is the same text for
//! both backends (`$n` placeholders, `INSERT … ON CONFLICT … DO UPDATE`), except for DDL.
//!
//! [`Op`]: crate::model::Op

/// The checkpoints, the projectors' leases, and the batches that advance a checkpoint.
mod checkpoints;
/// The dead-letter queue: poison events recorded, listed, and resolved by a retry.
mod dlq;
/// Monthly partitions (PostgreSQL) and the retention that drops or deletes old data.
mod partitions;
/// Ops rendered as `INSERT … ON CONFLICT` statements, batched by shape.
mod render;
/// The DDL: the checkpoint, dead-letter and projector tables, with row-level security.
mod schema;
/// A rebuild's shadow tables and their swap for the live ones.
mod shadow;
/// Unit tests of rendering and of monthly partitions.
#[cfg(test)]
mod tests;
/// An open transaction on either backend, and how rows are bound and decoded.
mod tx;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::model::Val;

pub use checkpoints::Lease;
pub(crate) use checkpoints::Part;
pub use dlq::{DeadLetter, DlqEntry};
pub(crate) use tx::Tx;

/// The suffix of a rebuild's shadow tables.
pub const SHADOW: &str = "__rebuild";

/// The role analytics queries run as in PostgreSQL: it may only `SELECT`, and row-level security
/// applies to it (it neither owns the tables nor has `BYPASSRLS`).
pub const ANALYTICS_ROLE: &str = "switchyard_analytics";

/// A read-model database.
#[derive(Debug, Clone)]
pub struct ReadDb {
    backend: Backend,
    partitions: Arc<Mutex<HashSet<String>>>,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres {
        pool: PgPool,
        analytics_role: String,
    },
}

/// Microseconds since the epoch, now.
pub(crate) fn now_us() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn first_int(rows: &[Vec<Val>]) -> Option<i64> {
    match rows.first().and_then(|row| row.first()) {
        Some(Val::Int(value)) => Some(*value),
        _ => None,
    }
}

impl ReadDb {
    /// Opens (creating) an embedded read-model database file and brings its tables up to date.
    pub async fn open_sqlite(path: impl AsRef<Path>) -> Result<ReadDb> {
        let options = SqliteConnectOptions::new()
            .filename(path.as_ref())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The checkpoint commits with the rows: a power loss rolls both back together and
            // the projector replays, so NORMAL loses nothing that matters.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let db = ReadDb {
            backend: Backend::Sqlite(pool),
            partitions: Arc::default(),
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Uses a PostgreSQL pool (whose connections have the schema on their search path) and
    /// brings the tables, row-level security policies and grants up to date.
    pub async fn postgres(pool: PgPool) -> Result<ReadDb> {
        let db = ReadDb {
            backend: Backend::Postgres {
                pool,
                analytics_role: ANALYTICS_ROLE.into(),
            },
            partitions: Arc::default(),
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Connects to PostgreSQL at `url` with `schema` on the search path (created if missing).
    pub async fn connect_postgres(url: &str, schema: &str, max_connections: u32) -> Result<ReadDb> {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(Error::Invalid(format!(
                "schema name {schema:?} must be lower-case ASCII letters, digits and '_'"
            )));
        }
        let base: sqlx::postgres::PgConnectOptions = url.parse()?;
        let mut setup = PgConnection::connect_with(&base).await?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&mut setup)
        .await?;
        setup.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(base.options([("search_path", schema)]))
            .await?;
        ReadDb::postgres(pool).await
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// The PostgreSQL pool, if this is PostgreSQL.
    pub fn pg_pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Postgres { pool, .. } => Some(pool),
            Backend::Sqlite(_) => None,
        }
    }

    /// A transaction that writes. In SQLite it takes the write lock at `BEGIN` (`IMMEDIATE`):
    /// a deferred one that upgrades from a stale read snapshot fails with `SQLITE_BUSY_SNAPSHOT`
    /// instead of waiting.
    pub(crate) async fn begin(&self) -> Result<Tx> {
        Ok(match &self.backend {
            Backend::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres { pool, .. } => Tx::Postgres(pool.begin().await?),
        })
    }

    /// A read-only transaction over every tenant's rows, for the platform's own views (the
    /// audit log): in PostgreSQL it runs as the owner, whom row-level security does not
    /// filter, so its queries must say which tenants they read.
    pub(crate) async fn begin_platform(&self) -> Result<Tx> {
        let mut tx = match &self.backend {
            Backend::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Backend::Postgres { pool, .. } => Tx::Postgres(pool.begin().await?),
        };
        if tx.is_postgres() {
            tx.exec("SET TRANSACTION READ ONLY", &[]).await?;
        }
        Ok(tx)
    }

    /// A read-only transaction scoped to one tenant. In PostgreSQL it runs as the analytics
    /// role with `switchyard.tenant` set for this transaction only, so row-level security hides
    /// every other tenant's rows even from a query that forgets its `WHERE tenant_id`.
    pub(crate) async fn begin_tenant(&self, tenant: uuid::Uuid) -> Result<Tx> {
        let mut tx = match &self.backend {
            Backend::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Backend::Postgres { pool, .. } => Tx::Postgres(pool.begin().await?),
        };
        if let Backend::Postgres { analytics_role, .. } = &self.backend {
            tx.exec(&format!("SET LOCAL ROLE {analytics_role}"), &[])
                .await?;
            tx.exec(
                "SELECT set_config('switchyard.tenant', $1, true)",
                &[Val::Text(tenant.to_string())],
            )
            .await?;
        }
        Ok(tx)
    }
}
