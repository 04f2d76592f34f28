//! The read side under load, against PostgreSQL (run: `bash scripts/services.sh && cargo bench
//! -p switchyard-benches --bench read_side -- [lag] [rebuild] [rebuild-pg] [query]`; all without
//! arguments). Prints Markdown; figures go to docs/BENCHMARKS.md.
//!
//! - `lag`: inferences appended at a sustained 5,000 events/s (three events per append: the form
//!   of logs written before the outcome events' v2, kept so that the figures stay comparable; the
//!   gateway now writes one event per inference) while the four projectors run; for every append, the time from its
//!   acknowledgement to the moment every projector had committed it.
//! - `rebuild` / `rebuild-pg`: 1M events in an embedded (SQLite) / PostgreSQL log; `rebuild` of
//!   each projector, in events/s, against `read_all` of the same log in the same run (the rate at which the events
//!   can be read at all).
//! - `query`: 10M rows in the inference log (100 tenants, 60 days) and their rollups; latency of
//!   the analytics queries, against the same usage question answered by scanning the raw rows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark binary: a panic is the failure report, stdout the report"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_benches::{database_url, percentile};
use switchyard_events::{
    EventStore, ExpectedVersion, GlobalPosition, PostgresOptions, PostgresStore, Scope, StreamId,
    TenantId,
};
use switchyard_projections::projectors::ALL;
use switchyard_projections::query::{Group, InferenceQuery, Window};
use switchyard_projections::testkit::inference_events_v1;
use switchyard_projections::{Projections, ReadDb, RunnerConfig, rebuild};
use tokio::sync::Mutex;

async fn fresh(label: &str) -> (PostgresStore, ReadDb, String) {
    let schema = format!("bench_{label}_{}", uuid::Uuid::now_v7().simple());
    let mut options = PostgresOptions::new(database_url()).schema(schema.clone());
    options.max_connections = 16;
    let store = PostgresStore::connect(options)
        .await
        .expect("PostgreSQL (scripts/services.sh)");
    let db = ReadDb::connect_postgres(&database_url(), &schema, 8)
        .await
        .unwrap();
    (store, db, schema)
}

async fn drop_schema(schema: &str) {
    let pool = sqlx::PgPool::connect(&database_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&pool)
        .await
        .unwrap();
}

async fn lag(seconds: u64, rate: u64) {
    let (store, db, schema) = fresh("lag").await;
    let store: Arc<dyn EventStore> = Arc::new(store);
    let projections = Projections::start(store.clone(), db, RunnerConfig::default());
    let watchers: Vec<_> = ALL
        .iter()
        .map(|p| projections.watch(p.name).unwrap())
        .collect();
    // When each minimum position across the projectors was reached.
    let reached: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    // Sampled every 0.5 ms (the resolution of the figures below).
    let watcher = {
        let reached = reached.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_micros(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let min = watchers.iter().map(|w| *w.borrow()).min().unwrap_or(0);
                if min > last {
                    last = min;
                    reached.lock().await.push((min, Instant::now()));
                }
            }
        })
    };
    let tenants: Vec<TenantId> = (0..50).map(|_| TenantId::new()).collect();
    let acks: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let appends_per_second = rate / 3;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    let mut sent = 0_u64;
    let mut tasks = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * appends_per_second as f64) as u64;
        while sent < due {
            let (store, acks) = (store.clone(), acks.clone());
            let tenant = tenants[(sent % 50) as usize];
            let n = sent;
            tasks.push(tokio::spawn(async move {
                let stream = StreamId::of("inference", uuid::Uuid::now_v7()).unwrap();
                let model = if n.is_multiple_of(3) {
                    "sim-large"
                } else {
                    "sim-small"
                };
                let done = store
                    .append(
                        tenant,
                        &stream,
                        ExpectedVersion::NoStream,
                        inference_events_v1(model, n, n % 5 == 4),
                    )
                    .await
                    .unwrap();
                acks.lock()
                    .await
                    .push((done.last_position().0, Instant::now()));
            }));
            sent += 1;
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let head = store.head().await.unwrap().0;
    for name in ALL.iter().map(|p| p.name) {
        projections
            .wait_for(name, head, Duration::from_secs(60))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    watcher.abort();
    let reached = reached.lock().await.clone();
    let acks = acks.lock().await.clone();
    let warmup = Duration::from_secs(2);
    let mut delays: Vec<f64> = acks
        .iter()
        .filter(|(_, at)| at.duration_since(started) > warmup)
        .filter_map(|(position, acked)| {
            reached
                .iter()
                .find(|(min, _)| min >= position)
                .map(|(_, when)| when.saturating_duration_since(*acked).as_secs_f64() * 1000.0)
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    println!("## Projection lag, PostgreSQL, 4 projectors\n");
    println!(
        "{} events in {:.1} s ({:.0} events/s offered, target {rate}); lag from append acknowledged to committed by every projector, over {} appends after a {} s warm-up:\n",
        head,
        elapsed,
        head as f64 / elapsed,
        delays.len(),
        warmup.as_secs()
    );
    println!("| p50 | p90 | p99 | max | limit (spec) |");
    println!("|---|---|---|---|---|");
    println!(
        "| {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | p99 < 200 ms |\n",
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or(f64::NAN)
    );
    drop(projections);
    drop_schema(&schema).await;
}

async fn fill(store: &Arc<dyn EventStore>, inferences: u64, writers: usize) {
    let tenants: Vec<TenantId> = (0..100).map(|_| TenantId::new()).collect();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (store, next, tenants) = (store.clone(), next.clone(), tenants.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= inferences {
                    return;
                }
                let stream = StreamId::of("inference", uuid::Uuid::now_v7()).unwrap();
                let model = if n.is_multiple_of(3) {
                    "sim-large"
                } else {
                    "sim-small"
                };
                store
                    .append(
                        tenants[(n % 100) as usize],
                        &stream,
                        ExpectedVersion::NoStream,
                        inference_events_v1(model, n, n % 5 == 4),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

async fn rebuild_rate(events: u64, postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (store, db, schema): (Arc<dyn EventStore>, ReadDb, Option<String>) = if postgres {
        let (store, db, schema) = fresh("rebuild").await;
        (Arc::new(store), db, Some(schema))
    } else {
        let store = switchyard_events::SqliteStore::open(dir.path().join("events.db"))
            .await
            .unwrap();
        let db = ReadDb::open_sqlite(dir.path().join("read.db"))
            .await
            .unwrap();
        (Arc::new(store), db, None)
    };
    let writers = 256;
    let started = Instant::now();
    fill(&store, events.div_ceil(3), writers).await;
    let head = store.head().await.unwrap().0;
    let backend = if postgres { "PostgreSQL" } else { "SQLite" };
    println!("## Rebuild, {backend}\n");
    println!(
        "{head} events appended in {:.0} s ({writers} concurrent writers, 3 events per append, one stream per inference).\n",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let mut at = GlobalPosition(0);
    let mut read = 0;
    loop {
        let page = store.read_all(Scope::All, at, 5000).await.unwrap();
        let Some(last) = page.last() else { break };
        at = last.global_position;
        read += page.len();
    }
    let read_rate = read as f64 / started.elapsed().as_secs_f64();
    println!("| what | events | seconds | events/s | vs read_all |");
    println!("|---|---|---|---|---|");
    println!(
        "| read_all (the limit) | {read} | {:.1} | {read_rate:.0} | 1.00 |",
        started.elapsed().as_secs_f64()
    );
    for projector in ALL {
        let report = rebuild(store.as_ref(), &db, projector, 5000, &|_, _| {})
            .await
            .unwrap();
        let rate = report.events as f64 / report.seconds;
        println!(
            "| rebuild `{}` | {} | {:.1} | {rate:.0} | {:.2} |",
            projector.name,
            report.events,
            report.seconds,
            rate / read_rate
        );
    }
    println!();
    if let Some(schema) = schema {
        drop_schema(&schema).await;
    }
}

async fn query_latency(rows: u64) {
    let (_store, db, schema) = fresh("query").await;
    let pool = db.pg_pool().unwrap().clone();
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let span_ms: i64 = 60 * 86_400_000;
    let tenants: Vec<uuid::Uuid> = (0..100).map(|_| uuid::Uuid::now_v7()).collect();
    // Monthly partitions for the span (what the projector creates on demand).
    for table in ["inference_log", "usage_hourly"] {
        let units = if table == "inference_log" { 1000 } else { 1 };
        let mut month = time::OffsetDateTime::from_unix_timestamp((now_ms - span_ms) / 1000)
            .unwrap()
            .date()
            .replace_day(1)
            .unwrap();
        let end = time::OffsetDateTime::from_unix_timestamp(now_ms / 1000 + 86_400)
            .unwrap()
            .date();
        while month <= end {
            let next = if month.month() == time::Month::December {
                time::Date::from_calendar_date(month.year() + 1, time::Month::January, 1).unwrap()
            } else {
                time::Date::from_calendar_date(month.year(), month.month().next(), 1).unwrap()
            };
            let from = month.midnight().assume_utc().unix_timestamp() * units;
            let to = next.midnight().assume_utc().unix_timestamp() * units;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS {table}_p{:04}{:02} PARTITION OF {table} FOR VALUES FROM ({from}) TO ({to})",
                month.year(),
                u8::from(month.month())
            )))
            .execute(&pool)
            .await
            .unwrap();
            month = next;
        }
    }
    let started = Instant::now();
    let chunk = 1_000_000_u64;
    let tenant_list: Vec<String> = tenants.iter().map(|t| format!("'{t}'::uuid")).collect();
    for offset in (0..rows).step_by(chunk as usize) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO inference_log (tenant_id, started_ms, inference_id, endpoint, model_requested, model, provider, policy, status, \
             tokens_in, tokens_out, cost_micros, latency_us, ttft_us, position, version) \
             SELECT (ARRAY[{}])[1 + i % 100], {} + (i * 7919) % {span_ms}, gen_random_uuid(), 'chat', 'auto', \
             CASE WHEN i % 3 = 0 THEN 'sim-large' ELSE 'sim-small' END, 'sim', 'thompson', \
             CASE WHEN i % 20 = 0 THEN 'failed' ELSE 'completed' END, 10 + i % 7, 20 + i % 13, 30 + i % 11, 1000 + (i * 31) % 200000, 100, i, 3 \
             FROM generate_series({}::bigint, {}::bigint) AS i",
            tenant_list.join(","),
            now_ms - span_ms,
            offset + 1,
            (offset + chunk).min(rows)
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    let inserted = started.elapsed().as_secs_f64();
    sqlx::query(
        "INSERT INTO usage_hourly (tenant_id, hour, model, requests, failures, tokens_in, tokens_out, cost_micros) \
         SELECT tenant_id, (started_ms / 1000) - (started_ms / 1000) % 3600, model, COUNT(*), \
         COUNT(*) FILTER (WHERE status = 'failed'), SUM(tokens_in), SUM(tokens_out), SUM(cost_micros) \
         FROM inference_log GROUP BY 1, 2, 3",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO latency_hist (tenant_id, hour, model, bucket, count, sum_us) \
         SELECT tenant_id, (started_ms / 1000) - (started_ms / 1000) % 3600, model, \
         CASE WHEN latency_us < 1000 THEN 0 ELSE LEAST(100, floor(4 * log(2, latency_us / 1000.0))::int + 1) END, COUNT(*), SUM(latency_us) \
         FROM inference_log WHERE status = 'completed' GROUP BY 1, 2, 3, 4",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    println!("## Analytics queries on {rows} inference rows, PostgreSQL\n");
    println!(
        "Rows generated in SQL in {inserted:.0} s (100 tenants, 60 days, monthly partitions), rollups filled from them, ANALYZE; each query 200 times for random tenants, through `ReadDb` (a transaction under RLS as the analytics role).\n"
    );
    println!("| query | p50 | p99 |");
    println!("|---|---|---|");
    let last_30_days =
        Window::new((now_ms - 30 * 86_400_000) / 1000, now_ms / 1000 + 3600).unwrap();
    let run = async |label: &str, which: u8| {
        let mut times = Vec::new();
        for i in 0..200_usize {
            let tenant = tenants[(i * 37) % 100];
            let started = Instant::now();
            match which {
                0 => {
                    db.usage(tenant, last_30_days, &[Group::Day, Group::Model], None)
                        .await
                        .unwrap();
                }
                1 => {
                    db.latency(tenant, last_30_days, None).await.unwrap();
                }
                2 => {
                    let query = InferenceQuery {
                        from_ms: 0,
                        to_ms: i64::MAX,
                        limit: 50,
                        ..Default::default()
                    };
                    db.inferences(tenant, &query).await.unwrap();
                }
                3 => {
                    let query = InferenceQuery {
                        from_ms: now_ms - 7 * 86_400_000,
                        to_ms: now_ms,
                        limit: 50,
                        model: Some("sim-large".into()),
                        status: Some("failed".into()),
                        ..Default::default()
                    };
                    db.inferences(tenant, &query).await.unwrap();
                }
                _ => {
                    // The naive answer to query 0: scan the raw rows of the window.
                    let window_ms = (last_30_days.from * 1000, last_30_days.to * 1000);
                    sqlx::query(
                        "SELECT (started_ms / 86400000), model, COUNT(*), SUM(tokens_in), SUM(tokens_out), SUM(cost_micros) \
                         FROM inference_log WHERE tenant_id = $1 AND started_ms >= $2 AND started_ms < $3 GROUP BY 1, 2",
                    )
                    .bind(tenant)
                    .bind(window_ms.0)
                    .bind(window_ms.1)
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                }
            }
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {label} | {:.2} ms | {:.2} ms |",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    };
    run("usage, 30 days by day and model (rollup)", 0).await;
    run("latency p50/p90/p99, 30 days (histograms)", 1).await;
    run("inference log, newest page of 50", 2).await;
    run(
        "inference log, 7 days, model + status filter, page of 50",
        3,
    )
    .await;
    run(
        "(peer) usage, 30 days by day and model, scanning raw rows",
        4,
    )
    .await;
    println!();
    drop_schema(&schema).await;
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = args.is_empty();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if all || args.iter().any(|a| a == "lag") {
            lag(20, 5000).await;
        }
        if all || args.iter().any(|a| a == "rebuild") {
            rebuild_rate(1_000_000, false).await;
        }
        if all || args.iter().any(|a| a == "rebuild-pg") {
            rebuild_rate(1_000_000, true).await;
        }
        if all || args.iter().any(|a| a == "query") {
            query_latency(10_000_000).await;
        }
    });
}
