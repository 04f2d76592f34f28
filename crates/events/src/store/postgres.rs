//! The production backend: PostgreSQL through sqlx.
//!
//! **Global order.** Every append transaction first takes one transaction-scoped advisory lock
//! (per store schema), then reads the stream versions, checks them, and only then assigns global
//! positions as `max + 1`. PostgreSQL releases the lock after the commit is visible, so
//! transactions become visible in position order: a reader that sees position n sees every
//! position below it, and no later commit can land behind it. A rolled-back or losing append
//! allocates nothing, so positions have no holes either. Group commit makes each locked
//! transaction carry every append waiting in this process. See ARCHITECTURE.md for the
//! alternatives (xid8 horizon, gap timers) and why this one was chosen.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::metrics::{self, StoreMetrics};
use crate::envelope::{NewEvent, RecordedEvent, Snapshot, now_micros};
use crate::error::{Error, Result};
use crate::ids::{GlobalPosition, StreamId, StreamVersion, TenantId};
use crate::store::group_commit::{self, BatchWriter, GroupCommit};
use crate::store::plan::{self, Known, Pending};
use crate::store::sql::{
    EVENT_COLUMNS, decode_event, decode_snapshot, decode_stored_at, decode_stream_metadata,
};
use crate::store::{
    AppendResult, Blob, EventStore, EventStream, ExpectedVersion, Scope, StreamMetadata, from_sql,
    sql_limit, subscribe, to_sql,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How to reach the store.
/// How to reach the store.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// The schema that holds the log's tables (created if missing). Separate schemas are
    /// separate stores, with separate write locks.
    pub schema: String,
    /// Connections for reads and for callers of [`PostgresStore::append_in`]; the writer and
    /// the change listener take one more each.
    pub max_connections: u32,
    /// How often a subscriber looks for commits it was not notified of (a notification lost while
    /// the listener reconnects). Correctness never depends on it, only latency.
    pub poll: Duration,
    /// How long an append waits for the write lock before it fails (a leaked transaction of an
    /// `append_in` caller must not freeze every writer for ever).
    pub lock_timeout: Duration,
}

impl PostgresOptions {
    /// Options for the `public` schema of the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            schema: "public".into(),
            max_connections: 8,
            poll: Duration::from_secs(1),
            lock_timeout: Duration::from_secs(30),
        }
    }

    /// The same options with another schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
}

const HEAD: &str = "SELECT COALESCE(MAX(global_position), 0) FROM events";

/// The PostgreSQL event store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    writer: GroupCommit,
    head: Arc<watch::Sender<GlobalPosition>>,
    lock_key: i64,
    channel: String,
    poll: Duration,
    listener: JoinHandle<()>,
    feed: group_commit::Feed,
    /// A standby's lease connection, kept between tries (see `lease::Lease::postgres`).
    lease_spare: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
    metrics: StoreMetrics,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Connects, creates the schema if needed and brings it up to date.
    pub async fn connect(options: PostgresOptions) -> Result<Self> {
        let schema = options.schema.clone();
        let valid = !schema.is_empty()
            && schema.len() <= 48
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(Error::InvalidEvent(format!(
                "schema name {schema:?} must be 1-48 lower-case ASCII letters, digits and '_'"
            )));
        }
        let base: PgConnectOptions = options.url.parse()?;
        let mut setup = PgConnection::connect_with(&base).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&mut setup)
        .await?;
        setup.close().await?;

        let lock_timeout = format!("{}ms", options.lock_timeout.as_millis());
        let connect = base.options([
            ("search_path", schema.as_str()),
            ("lock_timeout", lock_timeout.as_str()),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections + 2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;

        let key = super::sql::fnv1a(format!("switchyard.events.{schema}").as_bytes());
        let lock_key = i64::from_ne_bytes(key.to_ne_bytes());
        let channel = format!("switchyard_events_{key:016x}");
        let head = GlobalPosition(from_sql(
            sqlx::query_scalar(HEAD).fetch_one(&pool).await?,
            "head",
        )?);
        let head = Arc::new(watch::channel(head).0);
        let listener = tokio::spawn(listen(pool.clone(), channel.clone(), head.clone()));
        let feed = group_commit::feed();
        let writer = GroupCommit::spawn(
            PgWriter {
                pool: pool.clone(),
                lock_key,
                channel: channel.clone(),
            },
            head.clone(),
            feed.clone(),
            "postgres",
        );
        tracing::info!(schema, "connected to PostgreSQL event store");
        let metrics = metrics::store("postgres");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                writer,
                head,
                lock_key,
                channel,
                poll: options.poll,
                listener,
                feed,
                lease_spare: tokio::sync::Mutex::new(None),
                metrics,
            }),
        })
    }

    /// The connection pool (its connections have the store's schema on their search path).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The advisory lock every append of this store takes, as `pg_locks` shows it
    /// (`locktype = 'advisory'`, `classid` = high 32 bits, `objid` = low 32 bits, `objsubid = 1`):
    /// for operators looking for a writer that holds the log.
    pub fn write_lock_key(&self) -> i64 {
        self.inner.lock_key
    }

    /// Appends inside a transaction the caller owns, so that the events commit (or roll back)
    /// together with the caller's own writes.
    ///
    /// The store's write lock is held from here until the caller's transaction ends: keep it
    /// short, and do not call [`EventStore::append`] of the same store before it ends (that
    /// append would wait for this transaction's lock). The transaction must run at READ
    /// COMMITTED (PostgreSQL's default): under a snapshot taken before the lock, the version
    /// checks would read stale data.
    pub async fn append_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        tenant: TenantId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let pending = Pending::new(tenant, stream, expected, events)?;
        let isolation: String =
            sqlx::query_scalar("SELECT current_setting('transaction_isolation')")
                .fetch_one(&mut **tx)
                .await?;
        if isolation != "read committed" {
            return Err(Error::Transaction(format!(
                "isolation level is {isolation}, appends need read committed"
            )));
        }
        let (mut outcomes, _head) = write_batch(
            tx,
            &[&pending],
            self.inner.lock_key,
            &self.inner.channel,
            now_micros(),
        )
        .await?;
        outcomes.pop().unwrap_or(Err(Error::Closed))
    }
}

/// Follows commits made by any node (`NOTIFY` is sent inside each append transaction and
/// delivered at commit) and moves the local head.
async fn listen(pool: PgPool, channel: String, head: Arc<watch::Sender<GlobalPosition>>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "event listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(&channel).await {
            tracing::warn!(%error, "event listener cannot LISTEN; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(notification) => {
                    if let Ok(position) = notification.payload().parse::<u64>() {
                        head.send_if_modified(|current| {
                            let advanced = position > current.0;
                            if advanced {
                                *current = GlobalPosition(position);
                            }
                            advanced
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "event listener lost its connection; reconnecting");
                    break;
                }
            }
        }
    }
}

#[derive(Debug)]
struct PgWriter {
    pool: PgPool,
    lock_key: i64,
    channel: String,
}

#[async_trait]
impl BatchWriter for PgWriter {
    async fn write(
        &mut self,
        batch: Vec<Arc<Pending>>,
        recorded_at: i64,
    ) -> Result<(Vec<Result<AppendResult>>, Option<GlobalPosition>)> {
        let batch: Vec<&Pending> = batch.iter().map(|p| &**p).collect();
        let mut conn = self.pool.acquire().await?;
        // Pinned, whatever the database's default: the version checks must see what committed
        // before the lock was granted.
        let mut tx = conn
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        let written =
            write_batch(&mut tx, &batch, self.lock_key, &self.channel, recorded_at).await?;
        tx.commit().await?;
        Ok(written)
    }
}

/// The body of every append transaction: lock, read, decide, insert, notify.
async fn write_batch(
    conn: &mut PgConnection,
    batch: &[&Pending],
    lock_key: i64,
    channel: &str,
    recorded_at: i64,
) -> Result<(Vec<Result<AppendResult>>, Option<GlobalPosition>)> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key)
        .execute(&mut *conn)
        .await?;
    let known = load_known(conn, batch).await?;
    let plan = plan::plan(batch, known);
    if let Some(head) = plan.head() {
        insert_rows(conn, &plan.rows, recorded_at).await?;
        let stream_ids: Vec<&str> = plan.streams.iter().map(|(s, _)| s.as_str()).collect();
        let tenant_ids: Vec<Uuid> = plan
            .streams
            .iter()
            .map(|(_, m)| *m.tenant_id.as_uuid())
            .collect();
        let versions: Vec<i64> = plan
            .streams
            .iter()
            .map(|(_, m)| to_sql(m.version.0))
            .collect();
        sqlx::query(
            "INSERT INTO streams (stream_id, tenant_id, version) \
             SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::bigint[]) \
             ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version",
        )
        .bind(stream_ids)
        .bind(tenant_ids)
        .bind(versions)
        .execute(&mut *conn)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(head.0.to_string())
            .execute(&mut *conn)
            .await?;
    }
    let head = plan.head();
    Ok((plan.outcomes, head))
}

/// Inserts the new rows with one `INSERT … SELECT FROM UNNEST` (one round trip per batch).
async fn insert_rows(
    conn: &mut PgConnection,
    rows: &[plan::Row<'_>],
    recorded_at: i64,
) -> Result<()> {
    let n = rows.len();
    let mut positions = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut tenants = Vec::with_capacity(n);
    let mut streams = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut schemas = Vec::with_capacity(n);
    let mut correlations = Vec::with_capacity(n);
    let mut causations = Vec::with_capacity(n);
    let mut parents = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut actors = Vec::with_capacity(n);
    for row in rows {
        let e = row.event;
        positions.push(to_sql(row.position.0));
        ids.push(*e.event_id.as_uuid());
        tenants.push(*row.tenant.as_uuid());
        streams.push(row.stream.as_str());
        versions.push(to_sql(row.version.0));
        types.push(e.event_type.as_str());
        schemas.push(i32::from(e.schema_version));
        correlations.push(e.metadata.correlation_id.as_deref());
        causations.push(e.metadata.causation_id);
        parents.push(e.metadata.traceparent.as_deref());
        states.push(e.metadata.tracestate.as_deref());
        payloads.push(&e.payload[..]);
        actors.push(
            e.metadata
                .actor
                .as_ref()
                .map(crate::envelope::Actor::to_json),
        );
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO events ({EVENT_COLUMNS}) \
         SELECT p, i, t, s, v, ty, sv, $13, c, ca, tp, ts, pl, ac FROM UNNEST(\
         $1::bigint[], $2::uuid[], $3::uuid[], $4::text[], $5::bigint[], $6::text[], $7::int[], \
         $8::text[], $9::uuid[], $10::text[], $11::text[], $12::bytea[], $14::text[]) \
         AS x(p, i, t, s, v, ty, sv, c, ca, tp, ts, pl, ac)"
    )))
    .bind(positions)
    .bind(ids)
    .bind(tenants)
    .bind(streams)
    .bind(versions)
    .bind(types)
    .bind(schemas)
    .bind(correlations)
    .bind(causations)
    .bind(parents)
    .bind(states)
    .bind(payloads)
    .bind(recorded_at)
    .bind(actors)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn load_known(conn: &mut PgConnection, batch: &[&Pending]) -> Result<Known> {
    let ids: Vec<Uuid> = plan::event_ids(batch)
        .iter()
        .map(|id| *id.as_uuid())
        .collect();
    let streams: Vec<&str> = plan::stream_ids(batch).iter().map(|s| s.as_str()).collect();
    let mut known = Known::default();
    let rows = sqlx::query(
        "SELECT event_id, tenant_id, stream_id, stream_version, global_position FROM events WHERE event_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let (id, at) = decode_stored_at(row)?;
        known.events.insert(id, at);
    }
    let rows =
        sqlx::query("SELECT stream_id, tenant_id, version FROM streams WHERE stream_id = ANY($1)")
            .bind(streams)
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

#[async_trait]
impl EventStore for PostgresStore {
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
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $2 \
             AND ($3::uuid IS NULL OR tenant_id = $3) ORDER BY stream_version LIMIT $4"
        )))
        .bind(stream.as_str())
        .bind(to_sql(after.0))
        .bind(scope.tenant_filter())
        .bind(sql_limit(limit))
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(decode_event).collect()
    }

    async fn read_all(
        &self,
        scope: Scope,
        after: GlobalPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let _timer = self.inner.metrics.read_timer("read_all");
        // Two statements rather than `$3 IS NULL OR …`, so that a tenant's read uses its index.
        let query = match scope {
            Scope::All => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2"
            ))),
            Scope::Tenant(_) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE global_position > $1 AND tenant_id = $3 \
                 ORDER BY global_position LIMIT $2"
            ))),
        };
        let query = query.bind(to_sql(after.0)).bind(sql_limit(limit));
        let query = match scope.tenant_filter() {
            Some(tenant) => query.bind(tenant),
            None => query,
        };
        let rows = query.fetch_all(&self.inner.pool).await?;
        rows.iter().map(decode_event).collect()
    }

    fn subscribe_all(&self, scope: Scope, after: GlobalPosition) -> EventStream {
        subscribe::subscribe(
            self.clone(),
            self.inner.head.subscribe(),
            (scope == Scope::All).then(|| self.inner.feed.subscribe()),
            scope,
            after,
            Some(self.inner.poll),
        )
    }

    async fn stream_metadata(
        &self,
        scope: Scope,
        stream: &StreamId,
    ) -> Result<Option<StreamMetadata>> {
        let row = sqlx::query(
            "SELECT tenant_id, version FROM streams WHERE stream_id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
        )
        .bind(stream.as_str())
        .bind(scope.tenant_filter())
        .fetch_optional(&self.inner.pool)
        .await?;
        row.map(|row| decode_stream_metadata(&row, 0)).transpose()
    }

    async fn head(&self) -> Result<GlobalPosition> {
        let last: i64 = sqlx::query_scalar(HEAD).fetch_one(&self.inner.pool).await?;
        Ok(GlobalPosition(from_sql(last, "head")?))
    }

    async fn try_lease(&self, name: &str) -> Result<Option<super::lease::Lease>> {
        let options = self.inner.pool.connect_options();
        super::lease::Lease::postgres(&options, &self.inner.lease_spare, self.inner.lock_key, name)
            .await
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
        sqlx::query(
            "INSERT INTO snapshots (stream_id, version, schema_version, payload, saved_at_us) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, \
             schema_version = EXCLUDED.schema_version, payload = EXCLUDED.payload, saved_at_us = EXCLUDED.saved_at_us \
             WHERE EXCLUDED.version >= snapshots.version",
        )
        .bind(stream.as_str())
        .bind(to_sql(snapshot.version.0))
        .bind(i32::from(snapshot.schema_version))
        .bind(&snapshot.payload[..])
        .bind(now_micros())
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    async fn load_snapshot(&self, scope: Scope, stream: &StreamId) -> Result<Option<Snapshot>> {
        let row = sqlx::query(
            "SELECT s.version, s.schema_version, s.payload FROM snapshots s JOIN streams t ON t.stream_id = s.stream_id \
             WHERE s.stream_id = $1 AND ($2::uuid IS NULL OR t.tenant_id = $2)",
        )
        .bind(stream.as_str())
        .bind(scope.tenant_filter())
        .fetch_optional(&self.inner.pool)
        .await?;
        row.map(|row| decode_snapshot(&row)).transpose()
    }

    async fn put_blob(&self, blob: Blob) -> Result<()> {
        super::blobs::pg_put(&self.inner.pool, &blob).await
    }

    async fn get_blob(&self, tenant: TenantId, hash: &str) -> Result<Option<Vec<u8>>> {
        super::blobs::pg_get(&self.inner.pool, tenant, hash).await
    }

    async fn delete_blobs(&self, tenant: TenantId, before_us: Option<i64>) -> Result<u64> {
        super::blobs::pg_delete(&self.inner.pool, tenant, before_us).await
    }

    async fn expire_blobs(&self, now_us: i64) -> Result<Vec<(TenantId, u64)>> {
        super::blobs::pg_expire(&self.inner.pool, now_us).await
    }
}
