//! Helpers of the event-log benchmarks: the events they append and the plain-`INSERT` baselines
//! (the same rows, into a table with the same columns, constraints and indexes, without the
//! store's checks), measured in the same run as the limit to compare with.

use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::PgPool;
use switchyard_events::{Event, EventId, Metadata, NewEvent, TenantRenamed};

/// The `q` quantile (0..=1) of sorted values, nearest-rank; NaN when there are none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// The test database for PostgreSQL benchmarks.
pub fn database_url() -> String {
    std::env::var("SWITCHYARD_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("SWITCHYARD_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| {
            "postgres://switchyard:switchyard@127.0.0.1:5432/switchyard_test".into()
        })
}

/// `n` catalog events with a payload of about 160 bytes, each with a fresh id.
pub fn events(n: usize) -> Vec<NewEvent> {
    let event = Event::TenantRenamed(TenantRenamed {
        name: "benchmark tenant ".repeat(9),
    });
    let template = event
        .to_new_event(Metadata::default())
        .unwrap_or_else(|e| panic!("encode: {e}"));
    (0..n)
        .map(|_| NewEvent {
            event_id: EventId::new(),
            ..template.clone()
        })
        .collect()
}

const RAW_TABLE: &str = "CREATE TABLE raw_events (
    global_position BIGINT PRIMARY KEY, event_id {uuid} NOT NULL UNIQUE, tenant_id {uuid} NOT NULL,
    stream_id TEXT NOT NULL, stream_version BIGINT NOT NULL, event_type TEXT NOT NULL,
    schema_version INTEGER NOT NULL, recorded_at_us BIGINT NOT NULL, correlation_id TEXT,
    causation_id {uuid}, traceparent TEXT, tracestate TEXT, payload {bytes} NOT NULL,
    UNIQUE (stream_id, stream_version));
    CREATE INDEX raw_events_by_tenant ON raw_events (tenant_id, global_position)";

const RAW_COLUMNS: &str = "global_position, event_id, tenant_id, stream_id, stream_version, event_type, \
    schema_version, recorded_at_us, correlation_id, causation_id, traceparent, tracestate, payload";

/// Positions and versions for baseline rows (unique across a whole benchmark run).
pub static NEXT: AtomicI64 = AtomicI64::new(1);

/// Opens the SQLite baseline file with the store's settings (WAL, `synchronous=FULL`) and
/// creates the baseline table. Same driver as the store (rusqlite), so the ratio measures the
/// store, not the driver.
pub fn raw_sqlite(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("{e}"));
    conn.pragma_update(None, "journal_mode", "WAL")
        .unwrap_or_else(|e| panic!("{e}"));
    conn.pragma_update(None, "synchronous", "FULL")
        .unwrap_or_else(|e| panic!("{e}"));
    let ddl = RAW_TABLE
        .replace("{uuid}", "BLOB")
        .replace("{bytes}", "BLOB");
    conn.execute_batch(&ddl).unwrap_or_else(|e| panic!("{e}"));
    conn
}

/// Plain single-row `INSERT`s (a prepared statement, as the store uses) of `rows` on `conn`.
pub fn insert_raw_sqlite(conn: &rusqlite::Connection, rows: &[NewEvent]) {
    let tenant = *switchyard_events::TenantId::SYSTEM.as_uuid();
    let mut insert = conn
        .prepare_cached(&format!(
            "INSERT INTO raw_events ({RAW_COLUMNS}) VALUES (?1, ?2, ?3, 'bench-raw', ?1, ?4, ?5, 0, NULL, NULL, NULL, NULL, ?6)"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    for e in rows {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        insert
            .execute(rusqlite::params![
                n,
                e.event_id.as_uuid().as_bytes(),
                tenant.as_bytes(),
                e.event_type,
                e.schema_version,
                &e.payload[..]
            ])
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Creates the PostgreSQL baseline table in the pool's schema.
pub async fn create_raw_postgres(pool: &PgPool) {
    let ddl = RAW_TABLE
        .replace("{uuid}", "UUID")
        .replace("{bytes}", "BYTEA");
    for statement in ddl.split(';') {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// One plain `INSERT … SELECT FROM UNNEST` of `rows` (the same statement shape the store uses).
pub async fn insert_raw_postgres<'c, E: sqlx::PgExecutor<'c>>(executor: E, rows: &[NewEvent]) {
    let tenant = *switchyard_events::TenantId::SYSTEM.as_uuid();
    let mut positions = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    let mut payloads = Vec::with_capacity(rows.len());
    for e in rows {
        positions.push(NEXT.fetch_add(1, Ordering::Relaxed));
        ids.push(*e.event_id.as_uuid());
        payloads.push(&e.payload[..]);
    }
    let n = rows.len();
    sqlx::query(
        "INSERT INTO raw_events (global_position, event_id, tenant_id, stream_id, stream_version, event_type, \
         schema_version, recorded_at_us, payload) \
         SELECT p, i, $3, 'bench-raw', p, $4, 1, 0, pl FROM UNNEST($1::bigint[], $2::uuid[], $5::bytea[]) AS x(p, i, pl)",
    )
    .bind(positions)
    .bind(ids)
    .bind(tenant)
    .bind(rows.first().map_or("TenantRenamed", |e| e.event_type.as_str()))
    .bind(payloads)
    .execute(executor)
    .await
    .unwrap_or_else(|e| panic!("insert of {n} rows: {e}"));
}
