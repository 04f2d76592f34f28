//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! One writer connection, fed by group commit, takes `BEGIN IMMEDIATE` (the file's single write
//! lock) for each batch on the writer's own thread; readers use their own read-only connections
//! (`sqlite_read`) and never block it. The schema is migrated with sqlx's migrator at open.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, TransactionBehavior};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use tokio::sync::watch;

use super::metrics::{self, StoreMetrics};
use crate::envelope::{NewEvent, RecordedEvent, Snapshot, now_micros};
use crate::error::{Error, Result};
use crate::ids::{GlobalPosition, StreamId, StreamVersion, TenantId};
use crate::store::group_commit::{self, BatchWriter, GroupCommit};
use crate::store::plan::{self, Known, Pending};
use crate::store::sql::EVENT_COLUMNS;
use crate::store::sqlite_read::{self as read, Readers};
use crate::store::{
    AppendResult, Blob, EventStore, EventStream, ExpectedVersion, Scope, StreamMetadata, subscribe,
    to_sql,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a subscriber waits before looking for commits made by another process.
const POLL: Duration = Duration::from_millis(500);

/// The embedded event store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    readers: Arc<Readers>,
    writer_conn: Arc<Mutex<Connection>>,
    writer: GroupCommit,
    head: Arc<watch::Sender<GlobalPosition>>,
    feed: group_commit::Feed,
    metrics: StoreMetrics,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in the file at `path` and brings its schema up to
    /// date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let mut migrations = sqlx::ConnectOptions::connect(&options).await?;
        MIGRATOR.run(&mut migrations).await?;
        sqlx::Connection::close(migrations).await?;

        let writer_path = path.clone();
        let writer_conn = tokio::task::spawn_blocking(move || open_writer(&writer_path))
            .await
            .map_err(|e| Error::Unavailable(format!("open task failed: {e}")))??;
        let writer_conn = Arc::new(Mutex::new(writer_conn));
        let readers = Readers::new(path.clone());
        let head = Arc::new(watch::channel(readers.run(read::head).await?).0);
        let feed = group_commit::feed();
        let writer = GroupCommit::spawn_dedicated(
            SqliteWriter {
                conn: writer_conn.clone(),
            },
            head.clone(),
            feed.clone(),
            "sqlite",
        )?;
        tracing::info!(path = %path.display(), "opened SQLite event store");
        let metrics = metrics::store("sqlite");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                readers,
                writer_conn,
                writer,
                head,
                feed,
                metrics,
            }),
        })
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `write` on the writer's connection on a blocking thread (between group commits).
    async fn with_writer<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.inner.writer_conn.clone();
        tokio::task::spawn_blocking(move || write(&mut lock(&conn)))
            .await
            .map_err(|e| Error::Unavailable(format!("write task failed: {e}")))?
    }
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open_writer(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // WAL lets readers run beside the writer. NORMAL may lose the last commits on power loss;
    // an acknowledged append must not, hence FULL.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    super::sqlite_read::stable_plans(&conn)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

#[derive(Debug)]
struct SqliteWriter {
    conn: Arc<Mutex<Connection>>,
}

#[async_trait]
impl BatchWriter for SqliteWriter {
    async fn write(
        &mut self,
        batch: Vec<Arc<Pending>>,
        recorded_at: i64,
    ) -> Result<(Vec<Result<AppendResult>>, Option<GlobalPosition>)> {
        // On the writer's own thread (`GroupCommit::spawn_dedicated`): blocking here blocks
        // nothing else. A panic fails this batch, as it did on the blocking pool, instead of
        // ending the thread (the transaction rolls back as it unwinds; the lock ignores poison).
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write_batch(&mut lock(&self.conn), &batch, recorded_at)
        }))
        .unwrap_or_else(|_| Err(Error::Unavailable("the log writer panicked".into())))
    }
}

/// One group commit: lock the file, read what the batch touches, decide, insert, commit.
fn write_batch(
    conn: &mut Connection,
    batch: &[Arc<Pending>],
    recorded_at: i64,
) -> Result<(Vec<Result<AppendResult>>, Option<GlobalPosition>)> {
    let batch: Vec<&Pending> = batch.iter().map(|p| &**p).collect();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let known = load_known(&tx, &batch)?;
    let plan = plan::plan(&batch, known);
    {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO events ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ))?;
        for row in &plan.rows {
            let e = row.event;
            insert.execute(rusqlite::params![
                to_sql(row.position.0),
                e.event_id.as_uuid().as_bytes(),
                row.tenant.as_uuid().as_bytes(),
                row.stream.as_str(),
                to_sql(row.version.0),
                e.event_type,
                e.schema_version,
                recorded_at,
                e.metadata.correlation_id,
                e.metadata.causation_id.as_ref().map(|id| id.as_bytes()),
                e.metadata.traceparent,
                e.metadata.tracestate,
                &e.payload[..],
                e.metadata
                    .actor
                    .as_ref()
                    .map(crate::envelope::Actor::to_json),
            ])?;
        }
        let mut upsert = tx.prepare_cached(
            "INSERT INTO streams (stream_id, tenant_id, version) VALUES (?1, ?2, ?3) \
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version",
        )?;
        for (stream, meta) in &plan.streams {
            upsert.execute(rusqlite::params![
                stream.as_str(),
                meta.tenant_id.as_uuid().as_bytes(),
                to_sql(meta.version.0)
            ])?;
        }
    }
    tx.commit()?;
    let head = plan.head();
    Ok((plan.outcomes, head))
}

/// Reads what the store holds for the batch's event ids and streams, and the next position.
fn load_known(conn: &Connection, batch: &[&Pending]) -> Result<Known> {
    let mut known = Known::default();
    for id in plan::event_ids(batch) {
        if let Some(at) = read::stored_at(conn, id)? {
            known.events.insert(id, at);
        }
    }
    for stream in plan::stream_ids(batch) {
        if let Some(meta) = read::stream_metadata(conn, Scope::All, stream.as_str())? {
            known.streams.insert(stream.clone(), meta);
        }
    }
    known.next_position = read::head(conn)?.0 + 1;
    Ok(known)
}

#[async_trait]
impl EventStore for SqliteStore {
    #[tracing::instrument(level = "debug", skip_all, fields(%stream, events = events.len()))]
    async fn append(
        &self,
        tenant: TenantId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let pending = Pending::new(tenant, stream, expected, events)?;
        self.inner.writer.append(pending).await
    }

    async fn read_stream(
        &self,
        scope: Scope,
        stream: &StreamId,
        after: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let _timer = self.inner.metrics.read_timer("read_stream");
        let stream = stream.as_str().to_owned();
        self.inner
            .readers
            .run(move |conn| read::read_stream(conn, scope, &stream, after, limit))
            .await
    }

    async fn read_all(
        &self,
        scope: Scope,
        after: GlobalPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let _timer = self.inner.metrics.read_timer("read_all");
        self.inner
            .readers
            .run(move |conn| read::read_all(conn, scope, after, limit))
            .await
    }

    fn subscribe_all(&self, scope: Scope, after: GlobalPosition) -> EventStream {
        subscribe::subscribe(
            self.clone(),
            self.inner.head.subscribe(),
            (scope == Scope::All).then(|| self.inner.feed.subscribe()),
            scope,
            after,
            Some(POLL),
        )
    }

    async fn stream_metadata(
        &self,
        scope: Scope,
        stream: &StreamId,
    ) -> Result<Option<StreamMetadata>> {
        let stream = stream.as_str().to_owned();
        self.inner
            .readers
            .run(move |conn| read::stream_metadata(conn, scope, &stream))
            .await
    }

    async fn head(&self) -> Result<GlobalPosition> {
        self.inner.readers.run(read::head).await
    }

    async fn try_lease(&self, name: &str) -> Result<Option<super::lease::Lease>> {
        super::lease::Lease::file(&self.inner.path, name)
    }

    async fn ready(&self) -> Result<GlobalPosition> {
        if self.inner.writer.is_closed() {
            return Err(Error::Closed);
        }
        self.head().await
    }

    async fn save_snapshot(
        &self,
        tenant: TenantId,
        stream: &StreamId,
        snapshot: Snapshot,
    ) -> Result<()> {
        let stream = stream.clone();
        // On the writer's connection, between two group commits, so the checks and the write see
        // the same state.
        self.with_writer(move |conn| {
            let current = read::stream_metadata(conn, Scope::All, stream.as_str())?;
            plan::check_snapshot(tenant, &stream, &snapshot, current)?;
            conn.prepare_cached(
                "INSERT INTO snapshots (stream_id, version, schema_version, payload, saved_at_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, \
                 schema_version = excluded.schema_version, payload = excluded.payload, \
                 saved_at_us = excluded.saved_at_us WHERE excluded.version >= snapshots.version",
            )?
            .execute(rusqlite::params![
                stream.as_str(),
                to_sql(snapshot.version.0),
                snapshot.schema_version,
                &snapshot.payload[..],
                now_micros(),
            ])?;
            Ok(())
        })
        .await
    }

    async fn load_snapshot(&self, scope: Scope, stream: &StreamId) -> Result<Option<Snapshot>> {
        let stream = stream.as_str().to_owned();
        self.inner
            .readers
            .run(move |conn| read::load_snapshot(conn, scope, &stream))
            .await
    }

    async fn put_blob(&self, blob: Blob) -> Result<()> {
        self.with_writer(move |conn| super::blobs::sqlite_put(conn, &blob))
            .await
    }

    async fn get_blob(&self, tenant: TenantId, hash: &str) -> Result<Option<Vec<u8>>> {
        let hash = hash.to_owned();
        self.inner
            .readers
            .run(move |conn| super::blobs::sqlite_get(conn, tenant, &hash))
            .await
    }

    async fn delete_blobs(&self, tenant: TenantId, before_us: Option<i64>) -> Result<u64> {
        self.with_writer(move |conn| super::blobs::sqlite_delete(conn, tenant, before_us))
            .await
    }

    async fn expire_blobs(&self, now_us: i64) -> Result<Vec<(TenantId, u64)>> {
        self.with_writer(move |conn| super::blobs::sqlite_expire(conn, now_us))
            .await
    }
}
