//! Event-log throughput against plain `INSERT`s of the same rows, in one run:
//! - append, batched: 1,000 events per append vs one transaction of plain multi-row INSERTs;
//! - append, single events from 64 concurrent writers (group commit) vs 64 concurrent
//!   single-row INSERTs, each its own transaction, on one connection (what the store's writer
//!   uses) and, for PostgreSQL, on 64 connections;
//! - read_all: pages of 1,000 decoded into envelopes and catalog events.
//!
//! Run: `bash scripts/services.sh && cargo bench -p switchyard-benches`. Figures go to
//! docs/BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use sqlx::postgres::PgPoolOptions;
use switchyard_benches::{
    create_raw_postgres, database_url, events, insert_raw_postgres, insert_raw_sqlite, raw_sqlite,
};
use switchyard_events::{
    Event, EventStore, ExpectedVersion, GlobalPosition, PostgresOptions, PostgresStore, Scope,
    SqliteStore, StreamId, TenantId,
};
use tokio::runtime::Runtime;
use tokio::sync::Mutex;

const BATCH: usize = 1_000;
const WRITERS: usize = 64;
const PER_WRITER: usize = 16;
const READ_EVENTS: usize = 100_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn stream(name: &str) -> StreamId {
    StreamId::parse(format!("bench-{name}")).unwrap_or_else(|e| panic!("{e}"))
}

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn sqlite_file(name: &str) -> std::path::PathBuf {
    let dir = tempfile::tempdir()
        .map(tempfile::TempDir::keep)
        .unwrap_or_else(|e| panic!("{e}"));
    dir.join(name)
}

/// Runs `WRITERS` tasks at once, task `w` running `writer(w)`, and waits for all of them.
async fn concurrently<F, Fut>(writer: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tasks: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(writer(w))).collect();
    for task in tasks {
        ok(task.await);
    }
}

/// 64 tasks, each appending `PER_WRITER` single events one after the other.
async fn concurrent_single_appends(store: Arc<dyn EventStore>) {
    let tenant = TenantId::new();
    concurrently(|w| {
        let store = store.clone();
        async move {
            let s = stream(&format!("{}-w{w}", tenant.as_uuid().simple()));
            for event in events(PER_WRITER) {
                ok(store
                    .append(tenant, &s, ExpectedVersion::Any, vec![event])
                    .await);
            }
        }
    })
    .await;
}

/// The store's batched append, measured the same way on every backend.
fn bench_store_batched(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    store: &Arc<dyn EventStore>,
) {
    let tenant = TenantId::new();
    group.bench_function("store_append_1000", |b| {
        b.to_async(rt).iter(|| async {
            ok(store
                .append(
                    tenant,
                    &stream("batched"),
                    ExpectedVersion::Any,
                    events(BATCH),
                )
                .await);
        });
    });
}

fn sqlite(c: &mut Criterion) {
    let rt = runtime();
    let store: Arc<dyn EventStore> =
        Arc::new(ok(rt.block_on(SqliteStore::open(sqlite_file("events.db")))));
    let raw = Arc::new(Mutex::new(raw_sqlite(&sqlite_file("raw.db"))));

    let mut group = c.benchmark_group("sqlite_batched");
    group
        .throughput(Throughput::Elements(BATCH as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    bench_store_batched(&mut group, &rt, &store);
    group.bench_function("plain_insert_1000", |b| {
        b.to_async(&rt).iter(|| async {
            let rows = events(BATCH);
            let mut conn = raw.lock().await;
            let tx = ok(conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate));
            insert_raw_sqlite(&tx, &rows);
            ok(tx.commit());
        });
    });
    group.finish();

    let mut group = c.benchmark_group("sqlite_single_64_writers");
    group
        .throughput(Throughput::Elements((WRITERS * PER_WRITER) as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("store_append_group_commit", |b| {
        b.to_async(&rt)
            .iter(|| concurrent_single_appends(store.clone()));
    });
    group.bench_function("plain_insert_autocommit_1_conn", |b| {
        b.to_async(&rt).iter(|| async {
            concurrently(|_| {
                let raw = raw.clone();
                async move {
                    for event in events(PER_WRITER) {
                        let conn = raw.lock().await;
                        insert_raw_sqlite(&conn, std::slice::from_ref(&event));
                    }
                }
            })
            .await;
        });
    });
    group.finish();

    read_all_group(c, &rt, "sqlite_read_all", store);
}

/// `read_all` of 100k events in pages of 1,000: the whole log from where a fresh tenant's events
/// start (`Scope::All`, what projectors and the relay read), and the same tenant's events alone
/// (`Scope::Tenant`, an index lookup per row); each as envelopes only and with payload decode.
fn read_all_group(c: &mut Criterion, rt: &Runtime, name: &str, store: Arc<dyn EventStore>) {
    let tenant = TenantId::new();
    let start = rt.block_on(async {
        let start = ok(store.head().await);
        for chunk in 0..READ_EVENTS / BATCH {
            let s = stream(&format!("read{}", chunk % 10));
            ok(store
                .append(tenant, &s, ExpectedVersion::Any, events(BATCH))
                .await);
        }
        start
    });
    let mut group = c.benchmark_group(name);
    group
        .throughput(Throughput::Elements(READ_EVENTS as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (scope_label, scope) in [("all", Scope::All), ("tenant", Scope::Tenant(tenant))] {
        for decode in [false, true] {
            let label = format!(
                "{scope_label}_{}",
                if decode {
                    "envelope_and_payload"
                } else {
                    "envelope"
                }
            );
            group.bench_with_input(
                BenchmarkId::new("pages_of_1000", label),
                &decode,
                |b, &decode| {
                    b.to_async(rt).iter(|| {
                        let store = store.clone();
                        async move {
                            let mut after = if scope == Scope::All {
                                start
                            } else {
                                GlobalPosition::START
                            };
                            let mut read = 0;
                            while read < READ_EVENTS {
                                let page = ok(store.read_all(scope, after, BATCH).await);
                                let Some(last) = page.last() else { break };
                                after = last.global_position;
                                if decode {
                                    for event in &page {
                                        std::hint::black_box(ok(Event::from_recorded(event)));
                                    }
                                }
                                read += page.len();
                            }
                            assert_eq!(read, READ_EVENTS);
                        }
                    });
                },
            );
        }
    }
    group.finish();
}

fn postgres(c: &mut Criterion) {
    let rt = runtime();
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let store = ok(rt.block_on(PostgresStore::connect(
        PostgresOptions::new(database_url()).schema(schema.clone()),
    )));
    let one = ok(rt.block_on(
        PgPoolOptions::new().max_connections(1).connect_with(
            ok(database_url().parse::<sqlx::postgres::PgConnectOptions>())
                .options([("search_path", schema.as_str())]),
        ),
    ));
    let many = ok(rt.block_on(
        PgPoolOptions::new()
            .max_connections(WRITERS as u32)
            .connect_with(
                ok(database_url().parse::<sqlx::postgres::PgConnectOptions>())
                    .options([("search_path", schema.as_str())]),
            ),
    ));
    rt.block_on(create_raw_postgres(&one));
    let store: Arc<dyn EventStore> = Arc::new(store);

    let mut group = c.benchmark_group("postgres_batched");
    group
        .throughput(Throughput::Elements(BATCH as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    bench_store_batched(&mut group, &rt, &store);
    group.bench_function("plain_insert_1000", |b| {
        b.to_async(&rt).iter(|| async {
            let rows = events(BATCH);
            let mut tx = ok(one.begin().await);
            insert_raw_postgres(&mut *tx, &rows).await;
            ok(tx.commit().await);
        });
    });
    group.finish();

    let mut group = c.benchmark_group("postgres_single_64_writers");
    group
        .throughput(Throughput::Elements((WRITERS * PER_WRITER) as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("store_append_group_commit", |b| {
        b.to_async(&rt)
            .iter(|| concurrent_single_appends(store.clone()));
    });
    for (label, pool) in [
        ("plain_insert_autocommit_1_conn", &one),
        ("plain_insert_autocommit_64_conns", &many),
    ] {
        group.bench_function(label, |b| {
            b.to_async(&rt).iter(|| async {
                concurrently(|_| {
                    let pool = pool.clone();
                    async move {
                        for event in events(PER_WRITER) {
                            insert_raw_postgres(&pool, std::slice::from_ref(&event)).await;
                        }
                    }
                })
                .await;
            });
        });
    }
    group.finish();

    read_all_group(c, &rt, "postgres_read_all", store);
    let started = Instant::now();
    ok(rt.block_on(
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&one),
    ));
    eprintln!("dropped benchmark schema in {:?}", started.elapsed());
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
