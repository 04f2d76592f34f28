//! The embedded store's queries through rusqlite, run on blocking threads: the read-only
//! connection pool, the read queries, and the row decoders the writer shares.
//!
//! sqlx-sqlite runs each connection on a worker thread and hands every row across a channel as
//! owned values, which costs about 6 µs per row (see docs/BENCHMARKS.md). Here a page of rows is
//! read and decoded where SQLite produces it, in one blocking task, and handed over whole.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use uuid::Uuid;

use crate::envelope::{Metadata, RecordedEvent, Snapshot, timestamp_from_micros};
use crate::error::{Error, Result};
use crate::ids::{EventId, GlobalPosition, StreamId, StreamVersion, TenantId};
use crate::store::plan::StoredAt;
use crate::store::sql::EVENT_COLUMNS;
use crate::store::{Scope, StreamMetadata, from_sql, sql_limit, to_sql};

/// Idle read connections kept open.
const IDLE: usize = 4;

/// A small pool of read-only connections to one SQLite file.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(Readers {
            path,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Runs `read` on a read connection, on a blocking thread.
    pub async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let result = read(&conn);
            readers.give_back(conn);
            result
        })
        .await
        .map_err(|e| Error::Unavailable(format!("read task failed: {e}")))?
    }

    fn take(&self) -> Result<Connection> {
        if let Some(conn) = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
        {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        stable_plans(&conn)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE {
            idle.push(conn);
        }
    }
}

fn blob<'r>(row: &'r rusqlite::Row<'_>, index: usize, what: &str) -> Result<Option<&'r [u8]>> {
    row.get_ref(index)?
        .as_blob_or_null()
        .map_err(|e| Error::decode(what, e))
}

fn uuid(row: &rusqlite::Row<'_>, index: usize, what: &str) -> Result<Uuid> {
    let bytes = blob(row, index, what)?.ok_or_else(|| Error::decode(what, "NULL"))?;
    Uuid::from_slice(bytes).map_err(|e| Error::decode(what, e))
}

fn event(row: &rusqlite::Row<'_>) -> Result<RecordedEvent> {
    let schema_version: i64 = row.get(6)?;
    let causation = match blob(row, 9, "causation_id")? {
        Some(bytes) => Some(Uuid::from_slice(bytes).map_err(|e| Error::decode("causation_id", e))?),
        None => None,
    };
    Ok(RecordedEvent {
        global_position: GlobalPosition(from_sql(row.get(0)?, "global_position")?),
        event_id: EventId::from_uuid(uuid(row, 1, "event_id")?),
        tenant_id: TenantId::from_uuid(uuid(row, 2, "tenant_id")?),
        stream_id: StreamId::from_stored(row.get(3)?),
        stream_version: StreamVersion(from_sql(row.get(4)?, "stream_version")?),
        event_type: row.get(5)?,
        schema_version: u16::try_from(schema_version)
            .map_err(|_| Error::decode("schema_version", schema_version))?,
        recorded_at: timestamp_from_micros(row.get(7)?)?,
        metadata: Metadata {
            correlation_id: row.get(8)?,
            causation_id: causation,
            traceparent: row.get(10)?,
            tracestate: row.get(11)?,
            actor: crate::store::sql::actor(row.get(13)?)?,
        },
        payload: Bytes::copy_from_slice(blob(row, 12, "payload")?.unwrap_or_default()),
    })
}

fn events(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        events.push(event(row)?);
    }
    Ok(events)
}

pub(crate) fn tenant_blob(scope: Scope) -> Option<Vec<u8>> {
    scope.tenant_filter().map(|t| t.as_bytes().to_vec())
}

pub(crate) fn read_stream(
    conn: &Connection,
    scope: Scope,
    stream: &str,
    after: StreamVersion,
    limit: usize,
) -> Result<Vec<RecordedEvent>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND stream_version > ?2 \
         AND (?3 IS NULL OR tenant_id = ?3) ORDER BY stream_version LIMIT ?4"
    );
    events(
        conn,
        &sql,
        (
            stream,
            to_sql(after.0),
            tenant_blob(scope),
            sql_limit(limit),
        ),
    )
}

pub(crate) fn read_all(
    conn: &Connection,
    scope: Scope,
    after: GlobalPosition,
    limit: usize,
) -> Result<Vec<RecordedEvent>> {
    // Two statements rather than `?3 IS NULL OR …`, so that a tenant's read uses its index.
    match tenant_blob(scope) {
        None => events(
            conn,
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE global_position > ?1 ORDER BY global_position LIMIT ?2"
            ),
            (to_sql(after.0), sql_limit(limit)),
        ),
        Some(tenant) => events(
            conn,
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE global_position > ?1 AND tenant_id = ?3 \
                 ORDER BY global_position LIMIT ?2"
            ),
            (to_sql(after.0), sql_limit(limit), tenant),
        ),
    }
}

pub(crate) fn head(conn: &Connection) -> Result<GlobalPosition> {
    let last: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(global_position), 0) FROM events")?
        .query_row([], |r| r.get(0))?;
    Ok(GlobalPosition(from_sql(last, "head")?))
}

pub(crate) fn stream_metadata(
    conn: &Connection,
    scope: Scope,
    stream: &str,
) -> Result<Option<StreamMetadata>> {
    let mut statement = conn
        .prepare_cached("SELECT tenant_id, version FROM streams WHERE stream_id = ?1 AND (?2 IS NULL OR tenant_id = ?2)")?;
    let row = statement
        .query_row((stream, tenant_blob(scope)), |row| {
            let tenant = row.get_ref(0)?.as_blob()?.to_vec();
            let version: i64 = row.get(1)?;
            Ok((tenant, version))
        })
        .optional()?;
    row.map(|(tenant, version)| {
        Ok(StreamMetadata {
            tenant_id: TenantId::from_uuid(
                Uuid::from_slice(&tenant).map_err(|e| Error::decode("tenant_id", e))?,
            ),
            version: StreamVersion(from_sql(version, "version")?),
        })
    })
    .transpose()
}

pub(crate) fn load_snapshot(
    conn: &Connection,
    scope: Scope,
    stream: &str,
) -> Result<Option<Snapshot>> {
    let mut statement = conn.prepare_cached(
        "SELECT s.version, s.schema_version, s.payload FROM snapshots s JOIN streams t ON t.stream_id = s.stream_id \
         WHERE s.stream_id = ?1 AND (?2 IS NULL OR t.tenant_id = ?2)",
    )?;
    let row = statement
        .query_row((stream, tenant_blob(scope)), |row| {
            let version: i64 = row.get(0)?;
            let schema_version: i64 = row.get(1)?;
            Ok((
                version,
                schema_version,
                Bytes::copy_from_slice(row.get_ref(2)?.as_blob()?),
            ))
        })
        .optional()?;
    row.map(|(version, schema_version, payload)| {
        Ok(Snapshot {
            version: StreamVersion(from_sql(version, "snapshot version")?),
            schema_version: u16::try_from(schema_version)
                .map_err(|_| Error::decode("snapshot schema_version", schema_version))?,
            payload,
        })
    })
    .transpose()
}

/// Where the stored event with this id is, if it is stored.
pub(crate) fn stored_at(conn: &Connection, id: EventId) -> Result<Option<StoredAt>> {
    let mut statement = conn.prepare_cached(
        "SELECT tenant_id, stream_id, stream_version, global_position FROM events WHERE event_id = ?1",
    )?;
    let mut rows = statement.query([id.as_uuid().as_bytes()])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some(StoredAt {
        tenant: TenantId::from_uuid(uuid(row, 0, "tenant_id")?),
        stream: StreamId::from_stored(row.get(1)?),
        version: StreamVersion(from_sql(row.get(2)?, "stream_version")?),
        position: GlobalPosition(from_sql(row.get(3)?, "global_position")?),
    }))
}

/// The query planner stability guarantee: plans do not depend on bound values. Without it,
/// SQLite re-prepares a cached statement whenever a binding could change its plan (our
/// `?2 IS NULL OR tenant_id = ?2` filters), which profiling showed costing about a tenth of the
/// server's CPU under load.
pub(crate) fn stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}
