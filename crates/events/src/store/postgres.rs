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
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::envelope::{NewEvent, RecordedEvent, Snapshot, now_micros};
use crate::error::{Error, Result};
use crate::ids::{EventId, GlobalPosition, StreamId, StreamVersion, TenantId};
use crate::metrics::{self, StoreMetrics};
use crate::store::group_commit::{BatchWriter, GroupCommit};
use crate::store::plan::{self, Known, Pending, StoredAt};
use crate::store::sql::{EVENT_COLUMNS, decode_event};
use crate::store::{
    AppendResult, EventStore, EventStream, ExpectedVersion, Scope, StreamMetadata, from_sql,
    sql_limit, subscribe, to_sql,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How to reach the store.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// The schema that holds the log's tables (created if missing). Separate schemas are
    /// separate stores, with separate write locks.
    pub schema: String,
    /// Connections for reads (the writer and the change listener take one more each).
    pub max_connections: u32,
    /// How often a subscriber looks for commits it was not notified of (a notification lost while
    /// the listener reconnects). Correctness never depends on it, only latency.
    pub poll: Duration,
}

impl PostgresOptions {
    /// Options for the `public` schema of the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            schema: "public".into(),
            max_connections: 8,
            poll: Duration::from_secs(1),
        }
    }

    /// The same options with another schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
}

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
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(Error::InvalidEvent(format!(
                "schema name {schema:?} must be lower-case ASCII, digits and '_'"
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

        let connect = base.options([("search_path", schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections + 1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;

        let key = fnv1a(format!("switchyard.events.{schema}").as_bytes());
        let lock_key = i64::from_ne_bytes(key.to_ne_bytes());
        let channel = format!("switchyard_events_{:016x}", key);
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
            .fetch_one(&pool)
            .await?;
        let head = Arc::new(watch::channel(GlobalPosition(from_sql(last, "head")?)).0);
        let listener = tokio::spawn(listen(pool.clone(), channel.clone(), head.clone()));
        let writer = GroupCommit::spawn(
            PgWriter {
                pool: pool.clone(),
                lock_key,
                channel: channel.clone(),
            },
            head.clone(),
            "postgres",
        );
        tracing::info!(schema, "connected to PostgreSQL event store");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                writer,
                head,
                lock_key,
                channel,
                poll: options.poll,
                listener,
                metrics: metrics::store("postgres"),
            }),
        })
    }

    /// The connection pool (its connections have the store's schema on their search path).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Appends inside a transaction the caller owns, so that the events commit (or roll back)
    /// together with the caller's own writes. The store's write lock is held from here until the
    /// caller's transaction ends: keep it short.
    pub async fn append_in(
        &self,
        tx: &mut PgConnection,
        tenant: TenantId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let pending = Pending::new(tenant, stream, expected, events)?;
        let (mut outcomes, _head) =
            write_batch(tx, &[&pending], self.inner.lock_key, &self.inner.channel).await?;
        outcomes.pop().unwrap_or(Err(Error::Closed))
    }
}

/// 64-bit FNV-1a: a stable hash for lock keys and channel names (the same on every node and build).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
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
        batch: &[&Pending],
    ) -> Result<(Vec<Result<AppendResult>>, Option<GlobalPosition>)> {
        let mut tx = self.pool.begin().await?;
        let written = write_batch(&mut tx, batch, self.lock_key, &self.channel).await?;
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
) -> Result<(Vec<Result<AppendResult>>, Option<GlobalPosition>)> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key)
        .execute(&mut *conn)
        .await?;
    let known = load_known(conn, batch).await?;
    let plan = plan::plan(batch, known);
    if let Some(head) = plan.head() {
        let recorded_at = now_micros();
        let n = plan.rows.len();
        let (mut positions, mut ids, mut tenants, mut streams, mut versions) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (
            mut types,
            mut schemas,
            mut correlations,
            mut causations,
            mut parents,
            mut states,
            mut payloads,
        ) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for row in &plan.rows {
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
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO events ({EVENT_COLUMNS}) \
             SELECT p, i, t, s, v, ty, sv, $13, c, ca, tp, ts, pl FROM UNNEST(\
             $1::bigint[], $2::uuid[], $3::uuid[], $4::text[], $5::bigint[], $6::text[], $7::int[], \
             $8::text[], $9::uuid[], $10::text[], $11::text[], $12::bytea[]) AS x(p, i, t, s, v, ty, sv, c, ca, tp, ts, pl)"
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
        .execute(&mut *conn)
        .await?;

        let stream_ids: Vec<&str> = plan.streams.iter().map(|(s, _)| s.as_str()).collect();
        let tenant_ids: Vec<Uuid> = plan
            .streams
            .iter()
            .map(|(_, m)| *m.tenant_id.as_uuid())
            .collect();
        let stream_versions: Vec<i64> = plan
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
        .bind(stream_versions)
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

async fn load_known(conn: &mut PgConnection, batch: &[&Pending]) -> Result<Known> {
    let ids: Vec<Uuid> = plan::event_ids(batch)
        .iter()
        .map(|id| *id.as_uuid())
        .collect();
    let rows = sqlx::query(
        "SELECT event_id, stream_id, stream_version, global_position FROM events WHERE event_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut known = Known::default();
    for row in rows {
        known.events.insert(
            EventId::from_uuid(row.try_get(0)?),
            StoredAt {
                stream: StreamId::from_stored(row.try_get(1)?),
                version: StreamVersion(from_sql(row.try_get(2)?, "stream_version")?),
                position: GlobalPosition(from_sql(row.try_get(3)?, "global_position")?),
            },
        );
    }
    let streams: Vec<&str> = plan::stream_ids(batch).iter().map(|s| s.as_str()).collect();
    let rows =
        sqlx::query("SELECT stream_id, tenant_id, version FROM streams WHERE stream_id = ANY($1)")
            .bind(streams)
            .fetch_all(&mut *conn)
            .await?;
    for row in rows {
        known.streams.insert(
            StreamId::from_stored(row.try_get(0)?),
            StreamMetadata {
                tenant_id: TenantId::from_uuid(row.try_get(1)?),
                version: StreamVersion(from_sql(row.try_get(2)?, "version")?),
            },
        );
    }
    let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
        .fetch_one(&mut *conn)
        .await?;
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
        let tenant = match scope {
            Scope::All => None,
            Scope::Tenant(tenant) => Some(*tenant.as_uuid()),
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $2 \
             AND ($3::uuid IS NULL OR tenant_id = $3) ORDER BY stream_version LIMIT $4"
        )))
        .bind(stream.as_str())
        .bind(to_sql(after.0))
        .bind(tenant)
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
        let query = match scope {
            Scope::All => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2"
            )))
            .bind(to_sql(after.0))
            .bind(sql_limit(limit)),
            Scope::Tenant(tenant) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE global_position > $1 AND tenant_id = $3 \
                 ORDER BY global_position LIMIT $2"
            )))
            .bind(to_sql(after.0))
            .bind(sql_limit(limit))
            .bind(*tenant.as_uuid()),
        };
        let rows = query.fetch_all(&self.inner.pool).await?;
        rows.iter().map(decode_event).collect()
    }

    fn subscribe_all(&self, scope: Scope, after: GlobalPosition) -> EventStream {
        subscribe::subscribe(
            self.clone(),
            self.inner.head.subscribe(),
            scope,
            after,
            Some(self.inner.poll),
        )
    }

    async fn stream_metadata(&self, stream: &StreamId) -> Result<Option<StreamMetadata>> {
        let row = sqlx::query("SELECT tenant_id, version FROM streams WHERE stream_id = $1")
            .bind(stream.as_str())
            .fetch_optional(&self.inner.pool)
            .await?;
        row.map(|row| {
            Ok(StreamMetadata {
                tenant_id: TenantId::from_uuid(row.try_get(0)?),
                version: StreamVersion(from_sql(row.try_get(1)?, "version")?),
            })
        })
        .transpose()
    }

    async fn head(&self) -> Result<GlobalPosition> {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
            .fetch_one(&self.inner.pool)
            .await?;
        Ok(GlobalPosition(from_sql(last, "head")?))
    }

    async fn save_snapshot(&self, stream: &StreamId, snapshot: Snapshot) -> Result<()> {
        let actual = self
            .stream_metadata(stream)
            .await?
            .map_or(StreamVersion::NONE, |meta| meta.version);
        if snapshot.version > actual {
            return Err(Error::SnapshotAhead {
                stream: stream.clone(),
                version: snapshot.version,
                actual,
            });
        }
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

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let row = sqlx::query(
            "SELECT version, schema_version, payload FROM snapshots WHERE stream_id = $1",
        )
        .bind(stream.as_str())
        .fetch_optional(&self.inner.pool)
        .await?;
        row.map(|row| {
            let schema_version: i32 = row.try_get(1)?;
            Ok(Snapshot {
                version: StreamVersion(from_sql(row.try_get(0)?, "version")?),
                schema_version: u16::try_from(schema_version)
                    .map_err(|_| Error::decode("snapshot schema_version", schema_version))?,
                payload: bytes::Bytes::copy_from_slice(row.try_get::<&[u8], _>(2)?),
            })
        })
        .transpose()
    }
}
