//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! One writer connection, fed by group commit, takes `BEGIN IMMEDIATE` (the file's single write
//! lock) for each batch; readers use their own read-only connections (`sqlite_read`) and never
//! block it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};
use tokio::sync::watch;

use crate::envelope::{NewEvent, RecordedEvent, Snapshot, now_micros};
use crate::error::{Error, Result};
use crate::ids::{GlobalPosition, StreamId, StreamVersion, TenantId};
use crate::metrics::{self, StoreMetrics};
use crate::store::group_commit::{BatchWriter, GroupCommit};
use crate::store::plan::{self, Known, Pending, Row as NewRow};
use crate::store::sql::{EVENT_COLUMNS, decode_stored_at, decode_stream_metadata};
use crate::store::sqlite_read::{self as read, Readers};
use crate::store::{
    AppendResult, EventStore, EventStream, ExpectedVersion, Scope, StreamMetadata, from_sql,
    subscribe, to_sql,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a subscriber waits before looking for commits made by another process.
const POLL: Duration = Duration::from_millis(500);

const HEAD: &str = "SELECT COALESCE(MAX(global_position), 0) FROM events";

/// The embedded event store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    readers: Arc<Readers>,
    writer_pool: SqlitePool,
    writer: GroupCommit,
    head: Arc<watch::Sender<GlobalPosition>>,
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
            // NORMAL may lose the last commits on power loss; an acknowledged append must not.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer_pool).await?;
        let readers = Readers::new(path.clone());
        let head = readers.run(read::head).await?;
        let head = Arc::new(watch::channel(head).0);
        let writer = GroupCommit::spawn(
            SqliteWriter {
                pool: writer_pool.clone(),
            },
            head.clone(),
            "sqlite",
        );
        tracing::info!(path = %path.display(), "opened SQLite event store");
        let metrics = metrics::store("sqlite");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                readers,
                writer_pool,
                writer,
                head,
                metrics,
            }),
        })
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

#[derive(Debug)]
struct SqliteWriter {
    pool: SqlitePool,
}

#[async_trait]
impl BatchWriter for SqliteWriter {
    async fn write(
        &mut self,
        batch: &[&Pending],
    ) -> Result<(Vec<Result<AppendResult>>, Option<GlobalPosition>)> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let known = load_known(&mut tx, batch).await?;
        let plan = plan::plan(batch, known);
        insert_rows(&mut tx, &plan.rows, now_micros()).await?;
        upsert_streams(&mut tx, &plan.streams).await?;
        tx.commit().await?;
        let head = plan.head();
        Ok((plan.outcomes, head))
    }
}

/// A JSON array for `json_each(?)`: one fixed statement, whatever the number of values.
fn json_array<T: serde::Serialize>(values: &[T], what: &str) -> Result<String> {
    serde_json::to_string(values).map_err(|e| Error::Encode {
        what: what.into(),
        reason: e.to_string(),
    })
}

/// Reads what the store holds for the batch's event ids and streams, and the next position.
async fn load_known(conn: &mut SqliteConnection, batch: &[&Pending]) -> Result<Known> {
    let ids: Vec<String> = plan::event_ids(batch)
        .iter()
        .map(|id| id.as_uuid().simple().to_string())
        .collect();
    let streams: Vec<&str> = plan::stream_ids(batch).iter().map(|s| s.as_str()).collect();
    let mut known = Known::default();
    let rows = sqlx::query(
        "SELECT event_id, tenant_id, stream_id, stream_version, global_position FROM events \
         WHERE event_id IN (SELECT unhex(value) FROM json_each(?))",
    )
    .bind(json_array(&ids, "event ids")?)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let (id, at) = decode_stored_at(row)?;
        known.events.insert(id, at);
    }
    let rows = sqlx::query(
        "SELECT stream_id, tenant_id, version FROM streams WHERE stream_id IN (SELECT value FROM json_each(?))",
    )
    .bind(json_array(&streams, "stream ids")?)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let stream = StreamId::from_stored(sqlx::Row::try_get(row, 0)?);
        known
            .streams
            .insert(stream, decode_stream_metadata(row, 1)?);
    }
    let last: i64 = sqlx::query_scalar(HEAD).fetch_one(&mut *conn).await?;
    known.next_position = from_sql(last, "global_position")? + 1;
    Ok(known)
}

/// Splits `items` into chunks of power-of-two sizes (64, then 32, 16, …), so that a handful of
/// prepared multi-row statements serve every batch size.
fn power_of_two_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    const LARGEST: usize = 64;
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = if rest.len() >= LARGEST {
            LARGEST
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// Inserts the new event rows with multi-row `INSERT`s.
async fn insert_rows(
    conn: &mut SqliteConnection,
    rows: &[NewRow<'_>],
    recorded_at: i64,
) -> Result<()> {
    for chunk in power_of_two_chunks(rows) {
        let mut insert =
            QueryBuilder::<Sqlite>::new(format!("INSERT INTO events ({EVENT_COLUMNS}) "));
        insert.push_values(chunk, |mut values, row| {
            let e = row.event;
            values
                .push_bind(to_sql(row.position.0))
                .push_bind(*e.event_id.as_uuid())
                .push_bind(*row.tenant.as_uuid())
                .push_bind(row.stream.as_str())
                .push_bind(to_sql(row.version.0))
                .push_bind(e.event_type.as_str())
                .push_bind(i32::from(e.schema_version))
                .push_bind(recorded_at)
                .push_bind(e.metadata.correlation_id.as_deref())
                .push_bind(e.metadata.causation_id)
                .push_bind(e.metadata.traceparent.as_deref())
                .push_bind(e.metadata.tracestate.as_deref())
                .push_bind(&e.payload[..]);
        });
        insert.build().persistent(true).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Records the new version (and, for a new stream, its tenant) of every stream the batch wrote.
async fn upsert_streams(
    conn: &mut SqliteConnection,
    streams: &[(&StreamId, StreamMetadata)],
) -> Result<()> {
    for chunk in power_of_two_chunks(streams) {
        let mut upsert =
            QueryBuilder::<Sqlite>::new("INSERT INTO streams (stream_id, tenant_id, version) ");
        upsert.push_values(chunk, |mut values, (stream, meta)| {
            values
                .push_bind(stream.as_str())
                .push_bind(*meta.tenant_id.as_uuid())
                .push_bind(to_sql(meta.version.0));
        });
        upsert.push(" ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version");
        upsert.build().persistent(true).execute(&mut *conn).await?;
    }
    Ok(())
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
        let current = self.stream_metadata(Scope::All, stream).await?;
        plan::check_snapshot(tenant, stream, &snapshot, current)?;
        // Snapshots are a cache beside the log: one short statement on the writer's connection,
        // between two group commits.
        sqlx::query(
            "INSERT INTO snapshots (stream_id, version, schema_version, payload, saved_at_us) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, \
             schema_version = excluded.schema_version, payload = excluded.payload, saved_at_us = excluded.saved_at_us \
             WHERE excluded.version >= snapshots.version",
        )
        .bind(stream.as_str())
        .bind(to_sql(snapshot.version.0))
        .bind(i32::from(snapshot.schema_version))
        .bind(&snapshot.payload[..])
        .bind(now_micros())
        .execute(&self.inner.writer_pool)
        .await?;
        Ok(())
    }

    async fn load_snapshot(&self, scope: Scope, stream: &StreamId) -> Result<Option<Snapshot>> {
        let stream = stream.as_str().to_owned();
        self.inner
            .readers
            .run(move |conn| read::load_snapshot(conn, scope, &stream))
            .await
    }
}
