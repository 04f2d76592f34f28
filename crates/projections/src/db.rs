//! The read-model database: SQLite (embedded) or PostgreSQL (production, with row-level
//! security and monthly partitions), behind one type.
//!
//! Everything above this module speaks [`Op`]s and [`Val`]s; the SQL here is the same text for
//! both backends (`$n` placeholders, `INSERT … ON CONFLICT … DO UPDATE`), except for DDL.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Postgres, Row, Sqlite, Transaction};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::model::{Col, Op, Table, Val};
use crate::projectors::Projector;

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

/// A poison event: recorded in the dead-letter queue with the error, and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub position: u64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub stream_id: String,
    pub tenant_id: uuid::Uuid,
    pub error: String,
}

/// A dead-letter queue entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DlqEntry {
    pub id: i64,
    pub projector: String,
    pub position: i64,
    pub event_id: String,
    pub event_type: String,
    pub stream_id: String,
    pub tenant_id: String,
    pub error: String,
    pub recorded_at_us: i64,
    pub resolved_at_us: Option<i64>,
}

/// An open transaction on either backend.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tx::Sqlite(_) => "Tx::Sqlite",
            Tx::Postgres(_) => "Tx::Postgres",
        })
    }
}

macro_rules! bind_all {
    ($query:expr, $params:expr, $native_uuid:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                Val::Int(value) => query.bind(*value),
                Val::Text(value) => query.bind(value.clone()),
                Val::Uuid(value) if $native_uuid => query.bind(*value),
                Val::Uuid(value) => query.bind(value.to_string()),
            };
        }
        query
    }};
}

macro_rules! decode_row {
    ($row:expr, $cols:expr, $native_uuid:expr) => {{
        let row = $row;
        let mut out = Vec::with_capacity($cols.len());
        for (index, col) in $cols.iter().enumerate() {
            out.push(match col {
                Col::Int => Val::Int(row.try_get::<Option<i64>, _>(index)?.unwrap_or(0)),
                Col::Text => {
                    Val::Text(row.try_get::<Option<String>, _>(index)?.unwrap_or_default())
                }
                Col::Uuid if $native_uuid => Val::Uuid(row.try_get::<uuid::Uuid, _>(index)?),
                Col::Uuid => {
                    let text: String = row.try_get(index)?;
                    Val::Uuid(uuid::Uuid::from_str(&text).map_err(|error| {
                        Error::Invalid(format!("stored uuid {text:?}: {error}"))
                    })?)
                }
            });
        }
        out
    }};
}

impl Tx {
    /// Runs a statement; returns the rows it changed.
    pub(crate) async fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let sql = AssertSqlSafe(sql.to_owned());
        Ok(match self {
            Tx::Sqlite(tx) => bind_all!(sqlx::query(sql), params, false)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Tx::Postgres(tx) => bind_all!(sqlx::query(sql), params, true)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    /// Runs a query and decodes each row's columns as `cols` (NULL reads as 0 or '').
    pub(crate) async fn rows(
        &mut self,
        sql: &str,
        params: &[Val],
        cols: &[Col],
    ) -> Result<Vec<Vec<Val>>> {
        let sql = AssertSqlSafe(sql.to_owned());
        let mut out = Vec::new();
        match self {
            Tx::Sqlite(tx) => {
                for row in bind_all!(sqlx::query(sql), params, false)
                    .fetch_all(&mut **tx)
                    .await?
                {
                    out.push(decode_row!(&row, cols, false));
                }
            }
            Tx::Postgres(tx) => {
                for row in bind_all!(sqlx::query(sql), params, true)
                    .fetch_all(&mut **tx)
                    .await?
                {
                    out.push(decode_row!(&row, cols, true));
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        match self {
            Tx::Sqlite(tx) => tx.rollback().await?,
            Tx::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }
}

/// Microseconds since the epoch, now.
pub(crate) fn now_us() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// A held lease: the one active worker of a projector. In PostgreSQL a session advisory lock on
/// a connection of its own (released when the connection closes, also on a crash); in SQLite
/// the file has one writer process, so the lease is implicit.
#[derive(Debug)]
pub struct Lease {
    connection: Option<PgConnection>,
}

impl Lease {
    /// Whether the lease is still held (its connection answers).
    pub async fn alive(&mut self) -> bool {
        match &mut self.connection {
            None => true,
            Some(connection) => connection.ping().await.is_ok(),
        }
    }
}

const LOCK_KEY: &str =
    "hashtextextended('switchyard.projector.' || current_schema() || '.' || $1, 0)";

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

    /// Creates what is missing: the checkpoint and dead-letter tables and every projector's
    /// tables (with their row-level security policies in PostgreSQL).
    pub async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        let (serial, int) = if tx.is_postgres() {
            ("BIGSERIAL PRIMARY KEY", "BIGINT")
        } else {
            ("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER")
        };
        tx.exec(
            &format!(
                "CREATE TABLE IF NOT EXISTS proj_checkpoints (projector TEXT PRIMARY KEY, \
                 position {int} NOT NULL, updated_at_us {int} NOT NULL)"
            ),
            &[],
        )
        .await?;
        tx.exec(
            &format!(
                "CREATE TABLE IF NOT EXISTS proj_dlq (id {serial}, projector TEXT NOT NULL, \
                 position {int} NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL, \
                 stream_id TEXT NOT NULL, tenant_id TEXT NOT NULL, error TEXT NOT NULL, \
                 recorded_at_us {int} NOT NULL, resolved_at_us {int}, \
                 UNIQUE (projector, event_id))"
            ),
            &[],
        )
        .await?;
        for projector in crate::projectors::ALL {
            for table in projector.tables {
                create_table(&mut tx, table, table.name).await?;
            }
        }
        tx.commit().await
    }

    /// The projector's checkpoint (0 before its first batch), creating its row.
    pub async fn checkpoint(&self, projector: &str) -> Result<u64> {
        let mut tx = self.begin().await?;
        tx.exec(
            "INSERT INTO proj_checkpoints (projector, position, updated_at_us) VALUES ($1, 0, $2) \
             ON CONFLICT (projector) DO NOTHING",
            &[Val::from(projector), Val::Int(now_us())],
        )
        .await?;
        let rows = tx
            .rows(
                "SELECT position FROM proj_checkpoints WHERE projector = $1",
                &[Val::from(projector)],
                &[Col::Int],
            )
            .await?;
        tx.commit().await?;
        Ok(first_int(&rows).map_or(0, |p| u64::try_from(p).unwrap_or(0)))
    }

    /// Every checkpoint: `(projector, position, updated_at_us)`.
    pub async fn checkpoints(&self) -> Result<Vec<(String, u64, i64)>> {
        let mut tx = self.begin().await?;
        let rows = tx
            .rows(
                "SELECT projector, position, updated_at_us FROM proj_checkpoints ORDER BY projector",
                &[],
                &[Col::Text, Col::Int, Col::Int],
            )
            .await?;
        tx.rollback().await?;
        Ok(rows
            .into_iter()
            .map(|row| match row.as_slice() {
                [Val::Text(name), Val::Int(position), Val::Int(at)] => {
                    (name.clone(), u64::try_from(*position).unwrap_or(0), *at)
                }
                _ => (String::new(), 0, 0),
            })
            .collect())
    }

    /// Moves a checkpoint from `from` to `to` (compare-and-set; [`Error::Fenced`] if it was not
    /// at `from`). For consumers whose effect is outside this database (the NATS relay).
    pub async fn advance(&self, name: &str, from: u64, to: u64) -> Result<()> {
        let mut tx = self.begin().await?;
        let moved = tx
            .exec(
                "UPDATE proj_checkpoints SET position = $1, updated_at_us = $2 \
                 WHERE projector = $3 AND position = $4",
                &[
                    Val::from(to),
                    Val::Int(now_us()),
                    Val::from(name),
                    Val::from(from),
                ],
            )
            .await?;
        if moved != 1 {
            tx.rollback().await?;
            return Err(Error::Fenced(name.into()));
        }
        tx.commit().await
    }

    /// Takes the projector's lease, or `None` if another worker holds it.
    pub async fn try_lease(&self, projector: &str) -> Result<Option<Lease>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Some(Lease { connection: None })),
            Backend::Postgres { pool, .. } => {
                let mut connection = PgConnection::connect_with(&pool.connect_options()).await?;
                let held: bool = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT pg_try_advisory_lock({LOCK_KEY})"
                )))
                .bind(projector)
                .fetch_one(&mut connection)
                .await?;
                if held {
                    Ok(Some(Lease {
                        connection: Some(connection),
                    }))
                } else {
                    connection.close().await?;
                    Ok(None)
                }
            }
        }
    }

    /// Applies one batch: advances the checkpoint from `from` to `to` (compare-and-set: if it is
    /// not at `from`, nothing is written and the result is [`Error::Fenced`]), writes the ops to
    /// the tables with `suffix` ("" for the live tables) and records the dead letters, all in
    /// one transaction. `checkpoint: None` writes without a checkpoint (a rebuild's shadow).
    pub(crate) async fn apply(
        &self,
        projector: &Projector,
        checkpoint: Option<(u64, u64)>,
        suffix: &str,
        ops: &[Op],
        dead: &[DeadLetter],
    ) -> Result<()> {
        self.ensure_partitions(ops, suffix).await?;
        let mut tx = self.begin().await?;
        if tx.is_postgres() {
            // The checkpoint commits with the rows, and PostgreSQL never commits a transaction
            // partially: a crash can lose the last batches (re-applied from the older
            // checkpoint), never split them. So the batch does not wait for its WAL flush.
            tx.exec("SET LOCAL synchronous_commit = off", &[]).await?;
        }
        if let Some((from, to)) = checkpoint {
            // The write comes first, so that SQLite takes its write lock at once.
            let moved = tx
                .exec(
                    "UPDATE proj_checkpoints SET position = $1, updated_at_us = $2 \
                     WHERE projector = $3 AND position = $4",
                    &[
                        Val::from(to),
                        Val::Int(now_us()),
                        Val::from(projector.name),
                        Val::from(from),
                    ],
                )
                .await?;
            if moved != 1 {
                tx.rollback().await?;
                return Err(Error::Fenced(projector.name.into()));
            }
        }
        let limit = max_params(tx.is_postgres());
        for (sql, params) in render_batch(ops, suffix, limit)? {
            tx.exec(&sql, &params).await?;
        }
        for letter in dead {
            tx.exec(
                "INSERT INTO proj_dlq (projector, position, event_id, event_type, stream_id, \
                 tenant_id, error, recorded_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (projector, event_id) DO NOTHING",
                &[
                    Val::from(projector.name),
                    Val::from(letter.position),
                    Val::Text(letter.event_id.to_string()),
                    Val::Text(letter.event_type.clone()),
                    Val::Text(letter.stream_id.clone()),
                    Val::Text(letter.tenant_id.to_string()),
                    Val::Text(letter.error.chars().take(4000).collect()),
                    Val::Int(now_us()),
                ],
            )
            .await?;
        }
        tx.commit().await
    }

    /// Forgets which partitions exist (after a failed batch, which may have raced a rebuild).
    pub(crate) fn forget_partitions(&self) {
        if let Ok(mut known) = self.partitions.lock() {
            known.clear();
        }
    }

    /// Creates the monthly partitions the ops write to (PostgreSQL), outside the batch's
    /// transaction so that a concurrent creator cannot abort it.
    async fn ensure_partitions(&self, ops: &[Op], suffix: &str) -> Result<()> {
        let Backend::Postgres { pool, .. } = &self.backend else {
            return Ok(());
        };
        let mut wanted = Vec::new();
        for op in ops {
            let Some((column, units)) = op.table.partition else {
                continue;
            };
            let Some(Val::Int(value)) = op.key.iter().find(|(c, _)| *c == column).map(|(_, v)| v)
            else {
                continue;
            };
            let (name, from, to) = month_partition(op.table.name, suffix, *value, units);
            let known = self
                .partitions
                .lock()
                .map(|k| k.contains(&name))
                .unwrap_or(false);
            if !known && !wanted.iter().any(|(n, _, _, _)| *n == name) {
                wanted.push((name, format!("{}{suffix}", op.table.name), from, to));
            }
        }
        for (name, parent, from, to) in wanted {
            let created = sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {parent} FOR VALUES FROM ({from}) TO ({to})"
            )))
            .execute(pool)
            .await;
            match created {
                Ok(_) => {}
                // 42P17: the range is covered by a partition of another name (a rebuild's).
                // 42P07/23505: a concurrent creator won.
                Err(sqlx::Error::Database(db))
                    if matches!(db.code().as_deref(), Some("42P17" | "42P07" | "23505")) => {}
                Err(error) => return Err(error.into()),
            }
            if let Ok(mut known) = self.partitions.lock() {
                known.insert(name);
            }
        }
        Ok(())
    }

    /// Drops any leftover shadow tables of the projector and creates fresh ones.
    pub(crate) async fn create_shadow(&self, projector: &Projector) -> Result<()> {
        let mut tx = self.begin().await?;
        for table in projector.tables {
            tx.exec(&format!("DROP TABLE IF EXISTS {}{SHADOW}", table.name), &[])
                .await?;
            create_table(&mut tx, table, &format!("{}{SHADOW}", table.name)).await?;
        }
        tx.commit().await?;
        self.forget_partitions();
        Ok(())
    }

    /// Swaps a rebuild's shadow tables in if the live projector has not passed `shadow_at`;
    /// returns false (nothing changed) if it has, so the caller catches the shadow up and tries
    /// again. The swap sets the checkpoint to `shadow_at`, which fences a live worker's batch.
    pub(crate) async fn swap_shadow(&self, projector: &Projector, shadow_at: u64) -> Result<bool> {
        let mut tx = self.begin().await?;
        // Locks the checkpoint row (and, in SQLite, the file) before reading it.
        tx.exec(
            "UPDATE proj_checkpoints SET updated_at_us = updated_at_us WHERE projector = $1",
            &[Val::from(projector.name)],
        )
        .await?;
        let live = tx
            .rows(
                "SELECT position FROM proj_checkpoints WHERE projector = $1",
                &[Val::from(projector.name)],
                &[Col::Int],
            )
            .await?;
        let live = first_int(&live).unwrap_or(0);
        if live > crate::model::sat(shadow_at) {
            tx.rollback().await?;
            return Ok(false);
        }
        let postgres = tx.is_postgres();
        for table in projector.tables {
            let shadow = format!("{}{SHADOW}", table.name);
            let partitions = if postgres && table.partition.is_some() {
                tx.rows(
                    "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                     WHERE i.inhparent = to_regclass($1)",
                    &[Val::Text(shadow.clone())],
                    &[Col::Text],
                )
                .await?
            } else {
                Vec::new()
            };
            tx.exec(&format!("DROP TABLE IF EXISTS {}", table.name), &[])
                .await?;
            tx.exec(
                &format!("ALTER TABLE {shadow} RENAME TO {}", table.name),
                &[],
            )
            .await?;
            for row in partitions {
                if let [Val::Text(partition)] = row.as_slice() {
                    let renamed = partition.replacen(&shadow, table.name, 1);
                    tx.exec(&format!("ALTER TABLE {partition} RENAME TO {renamed}"), &[])
                        .await?;
                }
            }
        }
        tx.exec(
            "INSERT INTO proj_checkpoints (projector, position, updated_at_us) VALUES ($1, $2, $3) \
             ON CONFLICT (projector) DO UPDATE SET position = excluded.position, updated_at_us = excluded.updated_at_us",
            &[Val::from(projector.name), Val::from(shadow_at), Val::Int(now_us())],
        )
        .await?;
        tx.commit().await?;
        self.forget_partitions();
        Ok(true)
    }

    /// Dead letters, newest first; unresolved only unless `all`.
    pub async fn dead_letters(
        &self,
        projector: Option<&str>,
        all: bool,
        limit: i64,
    ) -> Result<Vec<DlqEntry>> {
        let mut tx = self.begin().await?;
        let rows = tx
            .rows(
                &format!(
                    "SELECT {DLQ_SELECT} FROM proj_dlq \
                     WHERE ($1 = '' OR projector = $1) {} ORDER BY id DESC LIMIT $2",
                    if all {
                        ""
                    } else {
                        "AND resolved_at_us IS NULL"
                    }
                ),
                &[Val::from(projector.unwrap_or("")), Val::Int(limit)],
                &DLQ_COLUMNS,
            )
            .await?;
        tx.rollback().await?;
        Ok(rows.into_iter().filter_map(dlq_entry).collect())
    }

    /// One dead letter, resolved or not.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<DlqEntry>> {
        let mut tx = self.begin().await?;
        let rows = tx
            .rows(
                &format!("SELECT {DLQ_SELECT} FROM proj_dlq WHERE id = $1"),
                &[Val::Int(id)],
                &DLQ_COLUMNS,
            )
            .await?;
        tx.rollback().await?;
        Ok(rows.into_iter().find_map(dlq_entry))
    }

    /// Marks a dead letter resolved in the same transaction as the ops of its retry.
    pub(crate) async fn resolve_dead_letter(
        &self,
        projector: &Projector,
        id: i64,
        ops: &[Op],
    ) -> Result<bool> {
        self.ensure_partitions(ops, "").await?;
        let mut tx = self.begin().await?;
        let marked = tx
            .exec(
                "UPDATE proj_dlq SET resolved_at_us = $1 WHERE id = $2 AND projector = $3 AND resolved_at_us IS NULL",
                &[Val::Int(now_us()), Val::Int(id), Val::from(projector.name)],
            )
            .await?;
        if marked != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        for op in ops {
            let (sql, params) = render(op, "")?;
            tx.exec(&sql, &params).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes read-model data older than `cutoff_unix` seconds: whole monthly partitions in
    /// PostgreSQL (those that end before it), rows in SQLite and in unpartitioned hourly tables.
    /// Returns what it dropped or deleted.
    pub async fn retention(&self, cutoff_unix: i64) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let mut tx = self.begin().await?;
        let postgres = tx.is_postgres();
        for projector in crate::projectors::ALL {
            for table in projector.tables {
                let (column, units) = match (table.partition, table.has("hour")) {
                    (Some(partition), _) => partition,
                    (None, true) => ("hour", 1),
                    (None, false) => continue,
                };
                let cutoff = cutoff_unix.saturating_mul(units);
                if postgres && table.partition.is_some() {
                    let parts = tx
                        .rows(
                            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                             WHERE i.inhparent = to_regclass($1)",
                            &[Val::from(table.name)],
                            &[Col::Text],
                        )
                        .await?;
                    for row in parts {
                        let [Val::Text(partition)] = row.as_slice() else {
                            continue;
                        };
                        let Some(end) = partition_end(partition, units) else {
                            continue;
                        };
                        if end <= cutoff {
                            tx.exec(&format!("DROP TABLE {partition}"), &[]).await?;
                            done.push(format!("dropped partition {partition}"));
                        }
                    }
                } else {
                    let deleted = tx
                        .exec(
                            &format!("DELETE FROM {} WHERE {column} < $1", table.name),
                            &[Val::Int(cutoff)],
                        )
                        .await?;
                    if deleted > 0 {
                        done.push(format!("deleted {deleted} rows of {}", table.name));
                    }
                }
            }
        }
        tx.commit().await?;
        self.forget_partitions();
        Ok(done)
    }
}

/// The columns `dlq_entry` reads, and their types.
const DLQ_SELECT: &str = "id, projector, position, event_id, event_type, stream_id, tenant_id, error, \
     recorded_at_us, COALESCE(resolved_at_us, -1)";
const DLQ_COLUMNS: [Col; 10] = [
    Col::Int,
    Col::Text,
    Col::Int,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Int,
];

fn first_int(rows: &[Vec<Val>]) -> Option<i64> {
    match rows.first().and_then(|row| row.first()) {
        Some(Val::Int(value)) => Some(*value),
        _ => None,
    }
}

fn dlq_entry(row: Vec<Val>) -> Option<DlqEntry> {
    let mut cells = row.into_iter();
    let mut int = || match cells.next() {
        Some(Val::Int(v)) => Some(Val::Int(v)),
        other => other,
    };
    let (
        Some(Val::Int(id)),
        Some(Val::Text(projector)),
        Some(Val::Int(position)),
        Some(Val::Text(event_id)),
        Some(Val::Text(event_type)),
        Some(Val::Text(stream_id)),
        Some(Val::Text(tenant_id)),
        Some(Val::Text(error)),
        Some(Val::Int(recorded_at_us)),
        Some(Val::Int(resolved)),
    ) = (
        int(),
        int(),
        int(),
        int(),
        int(),
        int(),
        int(),
        int(),
        int(),
        int(),
    )
    else {
        return None;
    };
    Some(DlqEntry {
        id,
        projector,
        position,
        event_id,
        event_type,
        stream_id,
        tenant_id,
        error,
        recorded_at_us,
        resolved_at_us: (resolved >= 0).then_some(resolved),
    })
}

/// The monthly partition that holds `value` (a unix time in `1/units` seconds):
/// its name and its bounds.
fn month_partition(table: &str, suffix: &str, value: i64, units: i64) -> (String, i64, i64) {
    let seconds = value.div_euclid(units.max(1));
    let date = OffsetDateTime::from_unix_timestamp(seconds)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date();
    let (year, month) = (date.year(), date.month());
    let start = time::Date::from_calendar_date(year, month, 1)
        .unwrap_or(date)
        .midnight()
        .assume_utc();
    let next_month = month.next();
    let next_year = if next_month == time::Month::January {
        year + 1
    } else {
        year
    };
    let end = time::Date::from_calendar_date(next_year, next_month, 1)
        .unwrap_or(date)
        .midnight()
        .assume_utc();
    (
        format!("{table}{suffix}_p{:04}{:02}", year, u8::from(month)),
        start.unix_timestamp().saturating_mul(units),
        end.unix_timestamp().saturating_mul(units),
    )
}

/// The upper bound of a partition from its name's `_pYYYYMM` suffix.
fn partition_end(name: &str, units: i64) -> Option<i64> {
    let stamp = name.rsplit_once("_p")?.1;
    if stamp.len() != 6 {
        return None;
    }
    let year: i32 = stamp[..4].parse().ok()?;
    let month: u8 = stamp[4..].parse().ok()?;
    let month = time::Month::try_from(month).ok()?;
    let first = time::Date::from_calendar_date(year, month, 1).ok()?;
    let (_, _, end) = month_partition(
        "",
        "",
        first.midnight().assume_utc().unix_timestamp() * units,
        units,
    );
    Some(end)
}

/// Creates a table (and its indexes, policies and grants) named `physical` if it is missing.
async fn create_table(tx: &mut Tx, table: &Table, physical: &str) -> Result<()> {
    let postgres = tx.is_postgres();
    let exists = if postgres {
        tx.rows(
            "SELECT COUNT(*) FROM pg_class WHERE oid = to_regclass($1)",
            &[Val::from(physical)],
            &[Col::Int],
        )
        .await?
    } else {
        tx.rows(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
            &[Val::from(physical)],
            &[Col::Int],
        )
        .await?
    };
    if first_int(&exists).unwrap_or(0) > 0 {
        return Ok(());
    }
    let mut columns: Vec<String> = table
        .columns
        .iter()
        .map(|(name, col)| match (col, postgres) {
            (Col::Int, true) => format!("{name} BIGINT NOT NULL DEFAULT 0"),
            (Col::Int, false) => format!("{name} INTEGER NOT NULL DEFAULT 0"),
            (Col::Text, _) => format!("{name} TEXT NOT NULL DEFAULT ''"),
            (Col::Uuid, true) => format!("{name} UUID NOT NULL"),
            (Col::Uuid, false) => format!("{name} TEXT NOT NULL"),
        })
        .collect();
    if table.versioned {
        columns.push(if postgres {
            "version BIGINT NOT NULL DEFAULT 0".into()
        } else {
            "version INTEGER NOT NULL DEFAULT 0".into()
        });
    }
    columns.push(format!("PRIMARY KEY ({})", table.key.join(", ")));
    let partition = match (table.partition, postgres) {
        (Some((column, _)), true) => format!(" PARTITION BY RANGE ({column})"),
        _ => String::new(),
    };
    tx.exec(
        &format!(
            "CREATE TABLE {physical} ({}){partition}",
            columns.join(", ")
        ),
        &[],
    )
    .await?;
    let generation = now_us();
    for (i, index) in table.indexes.iter().enumerate() {
        tx.exec(
            &format!(
                "CREATE INDEX idx_{physical}_{i}_{generation} ON {physical} ({})",
                index.join(", ")
            ),
            &[],
        )
        .await?;
    }
    if postgres {
        tx.exec(
            &format!("ALTER TABLE {physical} ENABLE ROW LEVEL SECURITY"),
            &[],
        )
        .await?;
        tx.exec(
            &format!(
                "CREATE POLICY tenant_isolation ON {physical} FOR SELECT \
                 USING (tenant_id = NULLIF(current_setting('switchyard.tenant', true), '')::uuid)"
            ),
            &[],
        )
        .await?;
        // The analytics role may read through the policy; it is created by the deployment (or
        // here, when this role may create roles).
        tx.exec(
            &format!(
                "DO $$ BEGIN \
                   IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ANALYTICS_ROLE}') \
                      AND (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN \
                     CREATE ROLE {ANALYTICS_ROLE} NOLOGIN NOBYPASSRLS; \
                   END IF; \
                   IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ANALYTICS_ROLE}') THEN \
                     EXECUTE format('GRANT USAGE ON SCHEMA %I TO {ANALYTICS_ROLE}', current_schema()); \
                     EXECUTE 'GRANT SELECT ON {physical} TO {ANALYTICS_ROLE}'; \
                   END IF; \
                 END $$"
            ),
            &[],
        )
        .await?;
    }
    Ok(())
}

/// Most parameters in one statement. PostgreSQL allows 65,535. SQLite allows 32,766, but the
/// driver looks each parameter's name up with `sqlite3_bind_parameter_name`, a linear scan, so
/// binding n parameters costs O(n²): a profile of a rebuild spent 89% there with 30,000 per
/// statement. A few hundred keeps that negligible and still saves most round trips.
fn max_params(postgres: bool) -> usize {
    if postgres { 30_000 } else { 400 }
}

/// Renders a batch's (merged) ops as few statements: ops of the same shape (table and columns)
/// become one multi-row `INSERT … VALUES (…), (…) ON CONFLICT …`, so a batch costs a round trip
/// per table rather than per row. The ops must not repeat a key (PostgreSQL refuses to update a
/// row twice in one statement): [`crate::model::merge`] guarantees it.
pub(crate) fn render_batch(
    ops: &[Op],
    suffix: &str,
    max_params: usize,
) -> Result<Vec<(String, Vec<Val>)>> {
    type Shape = (
        &'static str,
        Vec<&'static str>,
        Vec<&'static str>,
        Vec<&'static str>,
        bool,
    );
    let mut groups: Vec<(Shape, Vec<&Op>)> = Vec::new();
    for op in ops {
        let shape: Shape = (
            op.table.name,
            op.key.iter().map(|(c, _)| *c).collect(),
            op.add.iter().map(|(c, _)| *c).collect(),
            op.set.iter().map(|(c, _)| *c).collect(),
            op.version.is_some(),
        );
        match groups.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, members)) => members.push(op),
            None => groups.push((shape, vec![op])),
        }
    }
    let mut out = Vec::new();
    for (_, members) in groups {
        let Some(first) = members.first() else {
            continue;
        };
        let (single, _) = render(first, suffix)?;
        let width = first.key.len()
            + first.add.len()
            + first.set.len()
            + usize::from(first.version.is_some());
        let rows_per_statement = (max_params / width.max(1)).max(1);
        let (head, tail) = single
            .split_once(" VALUES (")
            .and_then(|(head, rest)| {
                rest.split_once(") ON CONFLICT")
                    .map(|(_, tail)| (head.to_owned(), tail.to_owned()))
            })
            .ok_or_else(|| Error::Invalid(format!("unexpected statement {single}")))?;
        for chunk in members.chunks(rows_per_statement) {
            let mut params = Vec::with_capacity(chunk.len() * width);
            let mut rows = Vec::with_capacity(chunk.len());
            for op in chunk {
                let (_, values) = render(op, suffix)?;
                let start = params.len();
                rows.push(format!(
                    "({})",
                    (start + 1..=start + values.len())
                        .map(|i| format!("${i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                params.extend(values);
            }
            out.push((
                format!("{head} VALUES {} ON CONFLICT{tail}", rows.join(", ")),
                params,
            ));
        }
    }
    Ok(out)
}

/// Renders an op as one `INSERT … ON CONFLICT` statement on `table{suffix}`.
pub(crate) fn render(op: &Op, suffix: &str) -> Result<(String, Vec<Val>)> {
    let table = op.table;
    let physical = format!("{}{suffix}", table.name);
    let mut columns: Vec<&str> = Vec::new();
    let mut params: Vec<Val> = Vec::new();
    for (column, value) in &op.key {
        columns.push(column);
        params.push(value.clone());
    }
    for (column, amount) in &op.add {
        columns.push(column);
        params.push(Val::Int(*amount));
    }
    for (column, value) in &op.set {
        columns.push(column);
        params.push(value.clone());
    }
    if let Some(version) = op.version {
        columns.push("version");
        params.push(Val::Int(version));
    }
    for column in &columns {
        if !table.has(column) {
            return Err(Error::Invalid(format!(
                "table {} has no column {column}",
                table.name
            )));
        }
    }
    let placeholders: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
    let mut updates: Vec<String> = Vec::new();
    for (column, _) in &op.add {
        updates.push(format!(
            "{column} = {physical}.{column} + excluded.{column}"
        ));
    }
    for (column, _) in &op.set {
        updates.push(format!("{column} = excluded.{column}"));
    }
    if op.version.is_some() {
        updates.push("version = excluded.version".into());
    }
    let conflict = if updates.is_empty() {
        "DO NOTHING".to_owned()
    } else if op.version.is_some() {
        format!(
            "DO UPDATE SET {} WHERE {physical}.version < excluded.version",
            updates.join(", ")
        )
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    Ok((
        format!(
            "INSERT INTO {physical} ({}) VALUES ({}) ON CONFLICT ({}) {conflict}",
            columns.join(", "),
            placeholders.join(", "),
            table.key.join(", ")
        ),
        params,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{INFERENCE_LOG, USAGE_HOURLY};

    #[test]
    fn renders_a_guarded_upsert() {
        let op = Op::upsert(&INFERENCE_LOG, vec![("tenant_id", Val::Int(1))])
            .set("status", "completed")
            .version(3);
        let (sql, params) = render(&op, "").unwrap_or_default();
        assert_eq!(
            sql,
            "INSERT INTO inference_log (tenant_id, status, version) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, started_ms, inference_id) DO UPDATE SET status = excluded.status, \
             version = excluded.version WHERE inference_log.version < excluded.version"
        );
        assert_eq!(params.len(), 3);
    }

    #[test]
    fn batches_ops_of_one_shape_into_one_statement() {
        let row = |n: i64| {
            Op::upsert(
                &USAGE_HOURLY,
                vec![
                    ("tenant_id", Val::Int(n)),
                    ("hour", Val::Int(0)),
                    ("model", Val::from("m")),
                ],
            )
            .add("requests", 1)
        };
        let other = Op::upsert(&INFERENCE_LOG, vec![("tenant_id", Val::Int(1))])
            .set("status", "failed")
            .version(2);
        let statements =
            render_batch(&[row(1), other, row(2), row(3)], "", 400).unwrap_or_default();
        assert_eq!(statements.len(), 2);
        assert!(
            statements[0].0.contains(
                "VALUES ($1, $2, $3, $4), ($5, $6, $7, $8), ($9, $10, $11, $12) ON CONFLICT"
            ),
            "{}",
            statements[0].0
        );
        assert_eq!(statements[0].1.len(), 12);
        assert!(
            statements[1]
                .0
                .ends_with("WHERE inference_log.version < excluded.version")
        );
    }

    #[test]
    fn splits_a_shape_into_statements_under_the_parameter_limit() {
        let rows: Vec<Op> = (0..5)
            .map(|n| {
                Op::upsert(
                    &USAGE_HOURLY,
                    vec![
                        ("tenant_id", Val::Int(n)),
                        ("hour", Val::Int(0)),
                        ("model", Val::from("m")),
                    ],
                )
                .add("requests", 1)
            })
            .collect();
        let statements = render_batch(&rows, "", 8).unwrap_or_default();
        assert_eq!(
            statements.iter().map(|(_, p)| p.len()).collect::<Vec<_>>(),
            [8, 8, 4]
        );
    }

    #[test]
    fn refuses_an_unknown_column() {
        let op = Op::upsert(&USAGE_HOURLY, vec![]).add("tokens; DROP TABLE x", 1);
        assert!(matches!(render(&op, ""), Err(Error::Invalid(_))));
    }

    #[test]
    fn monthly_partitions_cover_their_value() {
        for value in [0_i64, 1_764_460_800, 1_767_225_599, 1_767_225_600, -5] {
            let (name, from, to) = month_partition("usage_hourly", "", value, 1);
            assert!(
                from <= value && value < to,
                "{name}: {from} <= {value} < {to}"
            );
            assert_eq!(partition_end(&name, 1), Some(to));
        }
        let (name, _, _) = month_partition("inference_log", SHADOW, 1_764_460_800_000, 1000);
        assert_eq!(name, "inference_log__rebuild_p202511");
    }
}
