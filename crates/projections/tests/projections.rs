//! The projector runtime against real SQLite files and a real PostgreSQL server: exact totals,
//! a worker killed between applying and committing, concurrent workers, rebuilds, the late-commit
//! gap, poison events, and row-level security.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::{Connection, Row};
use switchyard_events::store::faulty::{Fault, FaultyStore};
use switchyard_events::{
    Event, EventId, EventStore, ExpectedVersion, GlobalPosition, Metadata, NewEvent,
    PostgresOptions, PostgresStore, Scope, SqliteStore, StreamId, TenantId,
};
use switchyard_projections::projectors::{self, INFERENCES, USAGE};
use switchyard_projections::query::{Group, InferenceQuery, SpendGroup, Window};
use switchyard_projections::testkit::{Totals, inference_events, inference_events_v1, traffic};
use switchyard_projections::{
    Error, Projections, ReadDb, RunnerConfig, rebuild, retry_dead_letter,
};

fn database_url() -> String {
    std::env::var("SWITCHYARD_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://switchyard:switchyard@127.0.0.1:5432/switchyard_test".into()
    })
}

fn test_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("switchyard-tests")
        .join(uuid::Uuid::now_v7().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Env {
    store: Arc<dyn EventStore>,
    pg: Option<PostgresStore>,
    db: ReadDb,
    schema: String,
}

async fn env(backend: Backend) -> Env {
    match backend {
        Backend::Sqlite => {
            let dir = test_dir();
            let store = SqliteStore::open(dir.join("events.db")).await.unwrap();
            let db = ReadDb::open_sqlite(dir.join("read.db")).await.unwrap();
            Env {
                store: Arc::new(store),
                pg: None,
                db,
                schema: String::new(),
            }
        }
        Backend::Postgres => {
            let schema = format!("p_{}", uuid::Uuid::now_v7().simple());
            let store =
                PostgresStore::connect(PostgresOptions::new(database_url()).schema(schema.clone()))
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL at {} is required (run scripts/services.sh): {e}",
                            database_url()
                        )
                    });
            let db = ReadDb::postgres(store.pool().clone()).await.unwrap();
            Env {
                store: Arc::new(store.clone()),
                pg: Some(store),
                db,
                schema,
            }
        }
    }
}

fn fast() -> RunnerConfig {
    RunnerConfig {
        batch: 64,
        backoff: (Duration::from_millis(20), Duration::from_millis(200)),
        standby_poll: Duration::from_millis(50),
        linger: Duration::from_millis(5),
    }
}

async fn caught_up(projections: &Projections, store: &dyn EventStore, names: &[&str]) {
    let head = store.head().await.unwrap().0;
    for name in names {
        let at = projections
            .wait_for(name, head, Duration::from_secs(30))
            .await;
        assert!(at >= head, "{name} at {at}, head {head}");
    }
}

const ALL_TIME: Window = Window {
    from: 0,
    to: i64::MAX,
};

async fn usage_total(db: &ReadDb, tenant: TenantId) -> Totals {
    let rows = db
        .usage(*tenant.as_uuid(), ALL_TIME, &[], None)
        .await
        .unwrap();
    let row = &rows[0];
    Totals {
        requests: row.requests,
        failures: row.failures,
        tokens_in: row.tokens_in,
        tokens_out: row.tokens_out,
        cost_micros: row.cost_micros,
    }
}

async fn check_usage(db: &ReadDb, expected: &HashMap<TenantId, Totals>) {
    for (tenant, totals) in expected {
        assert_eq!(usage_total(db, *tenant).await, *totals, "tenant {tenant}");
    }
}

async fn totals_match_the_log(backend: Backend) {
    let env = env(backend).await;
    let tenants = [TenantId::new(), TenantId::new(), TenantId::new()];
    let expected = traffic(env.store.as_ref(), &tenants, 150).await.unwrap();
    let projections = Projections::start(env.store.clone(), env.db.clone(), fast());
    caught_up(&projections, env.store.as_ref(), &["usage", "inferences"]).await;
    check_usage(&env.db, &expected).await;

    // Grouping by model splits the same totals; latency counts every completed inference.
    let tenant = tenants[0];
    let by_model = env
        .db
        .usage(
            *tenant.as_uuid(),
            ALL_TIME,
            &[Group::Day, Group::Model],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        by_model.iter().map(|r| r.requests).sum::<i64>(),
        expected[&tenant].requests
    );
    assert!(
        by_model
            .iter()
            .all(|r| r.day.is_some() && r.model.is_some())
    );
    let latency = env
        .db
        .latency(*tenant.as_uuid(), ALL_TIME, None)
        .await
        .unwrap();
    let completed = expected[&tenant].requests - expected[&tenant].failures;
    assert_eq!(latency.iter().map(|r| r.count).sum::<i64>(), completed);
    for row in &latency {
        assert!(
            row.p50_ms <= row.p90_ms && row.p90_ms <= row.p99_ms,
            "{row:?}"
        );
    }
    let router = env.db.router(*tenant.as_uuid(), ALL_TIME).await.unwrap();
    assert_eq!(
        router.iter().map(|r| r.decisions).sum::<i64>(),
        expected[&tenant].requests
    );

    // The inference log pages through every inference exactly once, newest first.
    let mut query = InferenceQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        limit: 7,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let (page, next) = env.db.inferences(*tenant.as_uuid(), &query).await.unwrap();
        seen.extend(page);
        match next {
            Some(cursor) => query.after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, expected[&tenant].requests);
    assert!(
        seen.windows(2)
            .all(|w| (w[0].started_ms, w[0].inference_id) > (w[1].started_ms, w[1].inference_id))
    );
    assert!(
        seen.iter()
            .all(|row| row.status == "completed" || row.status == "failed")
    );
    assert!(
        seen.iter()
            .all(|row| row.policy == "thompson" && !row.model.is_empty())
    );
    let failed = InferenceQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        limit: 500,
        status: Some("failed".into()),
        ..Default::default()
    };
    let (page, _) = env.db.inferences(*tenant.as_uuid(), &failed).await.unwrap();
    assert_eq!(page.len() as i64, expected[&tenant].failures);
}

#[tokio::test]
async fn sqlite_totals_match_the_log() {
    totals_match_the_log(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_totals_match_the_log() {
    totals_match_the_log(Backend::Postgres).await;
}

async fn rows_of(db: &ReadDb, tenant: TenantId) -> (Vec<String>, Vec<String>) {
    let usage = db
        .usage(
            *tenant.as_uuid(),
            ALL_TIME,
            &[Group::Hour, Group::Model],
            None,
        )
        .await
        .unwrap();
    let query = InferenceQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        limit: 500,
        ..Default::default()
    };
    let (log, _) = db.inferences(*tenant.as_uuid(), &query).await.unwrap();
    (
        usage.iter().map(|r| format!("{r:?}")).collect(),
        log.iter().map(|r| format!("{r:?}")).collect(),
    )
}

async fn rebuild_equals_incremental(backend: Backend) {
    let env = env(backend).await;
    let tenants = [TenantId::new(), TenantId::new()];
    let expected = traffic(env.store.as_ref(), &tenants, 80).await.unwrap();
    let projections = Projections::start(env.store.clone(), env.db.clone(), fast());
    caught_up(&projections, env.store.as_ref(), &["usage", "inferences"]).await;
    let before = rows_of(&env.db, tenants[0]).await;

    // Another tenant's traffic, projected live before the rebuild.
    let stray = TenantId::new();
    let stray_events = traffic(env.store.as_ref(), &[stray], 1).await.unwrap();
    caught_up(&projections, env.store.as_ref(), &["usage"]).await;
    assert_eq!(
        usage_total(&env.db, stray).await.requests,
        stray_events[&stray].requests
    );

    // Rebuild while the live projector keeps running and more traffic arrives.
    let writer = {
        let store = env.store.clone();
        tokio::spawn(async move { traffic(store.as_ref(), &tenants, 40).await.unwrap() })
    };
    let report = rebuild(env.store.as_ref(), &env.db, &USAGE, 50, &|_, _| {})
        .await
        .unwrap();
    assert!(report.events > 0);
    rebuild(env.store.as_ref(), &env.db, &INFERENCES, 50, &|_, _| {})
        .await
        .unwrap();
    let added = writer.await.unwrap();
    caught_up(&projections, env.store.as_ref(), &["usage", "inferences"]).await;
    for (tenant, totals) in &expected {
        let extra = added.get(tenant).copied().unwrap_or_default();
        let want = Totals {
            requests: totals.requests + extra.requests,
            failures: totals.failures + extra.failures,
            tokens_in: totals.tokens_in + extra.tokens_in,
            tokens_out: totals.tokens_out + extra.tokens_out,
            cost_micros: totals.cost_micros + extra.cost_micros,
        };
        assert_eq!(usage_total(&env.db, *tenant).await, want, "after rebuild");
    }
    drop(projections);

    // A second, quiet rebuild gives exactly the rows the incremental projector had.
    let incremental = rows_of(&env.db, tenants[0]).await;
    assert!(incremental.1.len() > before.1.len());
    rebuild(env.store.as_ref(), &env.db, &USAGE, 1000, &|_, _| {})
        .await
        .unwrap();
    rebuild(env.store.as_ref(), &env.db, &INFERENCES, 7, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(rows_of(&env.db, tenants[0]).await, incremental);
}

#[tokio::test]
async fn sqlite_rebuild_equals_incremental() {
    rebuild_equals_incremental(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_rebuild_equals_incremental() {
    rebuild_equals_incremental(Backend::Postgres).await;
}

/// An inference is one event since v2 (its outcome carries the request and the route); a log
/// from before holds three. The same inferences in either form fill the same rows: usage,
/// router decisions, the inference log and spend by key, user and tag.
async fn both_event_forms_project_alike(backend: Backend) {
    let env = env(backend).await;
    let (now, before) = (TenantId::new(), TenantId::new());
    for n in 0..40 {
        let (model, failed) = (
            if n % 3 == 0 { "sim-large" } else { "sim-small" },
            n % 5 == 4,
        );
        for (tenant, events) in [
            (now, inference_events(model, n, failed)),
            (before, inference_events_v1(model, n, failed)),
        ] {
            let stream = StreamId::of("inference", uuid::Uuid::now_v7()).unwrap();
            env.store
                .append(tenant, &stream, ExpectedVersion::NoStream, events)
                .await
                .unwrap();
        }
    }
    let projections = Projections::start(env.store.clone(), env.db.clone(), fast());
    caught_up(
        &projections,
        env.store.as_ref(),
        &["usage", "inferences", "spend"],
    )
    .await;
    let seen = |tenant: TenantId| {
        let db = env.db.clone();
        async move {
            let tenant = *tenant.as_uuid();
            let usage = db
                .usage(tenant, ALL_TIME, &[Group::Model], None)
                .await
                .unwrap();
            let router = db.router(tenant, ALL_TIME).await.unwrap();
            let query = InferenceQuery {
                from_ms: 0,
                to_ms: i64::MAX,
                limit: 500,
                ..Default::default()
            };
            let (log, _) = db.inferences(tenant, &query).await.unwrap();
            let mut log: Vec<_> = log
                .into_iter()
                .map(|r| {
                    let figures = (
                        r.tokens_in,
                        r.tokens_out,
                        r.cost_micros,
                        r.latency_us,
                        r.ttft_us,
                    );
                    let names = (r.endpoint, r.model_requested, r.model, r.provider, r.policy);
                    (names, r.status, r.stream, figures, r.error_code)
                })
                .collect();
            log.sort();
            let mut spend = Vec::new();
            for group in [SpendGroup::Key, SpendGroup::User, SpendGroup::Tag] {
                spend.push(db.spend(tenant, ALL_TIME, group).await.unwrap());
            }
            let decisions: i64 = router.iter().map(|r| r.decisions).sum();
            (
                format!("{usage:?}"),
                format!("{router:?}"),
                log,
                spend,
                decisions,
            )
        }
    };
    let (current, older) = (seen(now).await, seen(before).await);
    assert_eq!(
        current.2.len(),
        40,
        "every inference has its row: {:?}",
        current.2
    );
    assert!(
        current.2.iter().all(|row| row.1 != "pending"),
        "{:?}",
        current.2
    );
    assert_eq!(
        current.4, 40,
        "one routing decision per inference: {}",
        current.1
    );
    assert_eq!(
        current.3[2].len(),
        2,
        "both tags are projected: {:?}",
        current.3[2]
    );
    assert_eq!(current, older);
    drop(projections);
}

#[tokio::test]
async fn sqlite_both_event_forms_project_alike() {
    both_event_forms_project_alike(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_both_event_forms_project_alike() {
    both_event_forms_project_alike(Backend::Postgres).await;
}

#[tokio::test]
async fn rebuild_removes_rows_no_event_produces() {
    let env = env(Backend::Postgres).await;
    let tenant = TenantId::new();
    traffic(env.store.as_ref(), &[tenant], 5).await.unwrap();
    let projections = Projections::start(env.store.clone(), env.db.clone(), fast());
    caught_up(&projections, env.store.as_ref(), &["usage"]).await;
    let pool = env.db.pg_pool().unwrap();
    sqlx::query("INSERT INTO usage_hourly (tenant_id, hour, model, requests) SELECT $1, MAX(hour), 'ghost', 99 FROM usage_hourly")
        .bind(tenant.as_uuid())
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(usage_total(&env.db, tenant).await.requests, 5 + 99);
    rebuild(env.store.as_ref(), &env.db, &USAGE, 100, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(usage_total(&env.db, tenant).await.requests, 5);
    let ghosts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_hourly WHERE model = 'ghost'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(ghosts, 0);
}

/// The projector takes its checkpoint (first statement of the batch) and then blocks on a table
/// the test has locked: it has applied part of the batch and not committed. The process "dies"
/// (its tasks are aborted, the transaction rolls back); a new one replays to the same totals.
#[tokio::test]
async fn a_projector_killed_between_applying_and_committing_replays_to_the_same_totals() {
    let env = env(Backend::Postgres).await;
    let tenant = TenantId::new();
    let expected = traffic(env.store.as_ref(), &[tenant], 30).await.unwrap();

    let mut locker = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {}.usage_hourly IN ACCESS EXCLUSIVE MODE",
        env.schema
    )))
    .execute(&mut *lock)
    .await
    .unwrap();
    let first = Projections::start_some(env.store.clone(), env.db.clone(), fast(), &[&USAGE]);
    // Wait until the projector's transaction is blocked on our lock, past its checkpoint update.
    let pool = env.db.pg_pool().unwrap();
    let mut blocked = false;
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE NOT l.granted AND c.relname = 'usage_hourly'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            blocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(blocked, "the projector never reached the locked table");
    drop(first); // the crash: tasks aborted mid-transaction
    lock.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        env.db.checkpoint("usage").await.unwrap(),
        0,
        "nothing was committed"
    );

    let second = Projections::start_some(env.store.clone(), env.db.clone(), fast(), &[&USAGE]);
    caught_up(&second, env.store.as_ref(), &["usage"]).await;
    check_usage(&env.db, &expected).await;
}

/// Two processes' workers on one database: the lease makes one the standby, and the checkpoint's
/// compare-and-set fences a batch that raced anyway.
#[tokio::test]
async fn concurrent_workers_never_double_apply() {
    let env = env(Backend::Postgres).await;
    let tenants = [TenantId::new(), TenantId::new()];
    let a = Projections::start(env.store.clone(), env.db.clone(), fast());
    let b = Projections::start(env.store.clone(), env.db.clone(), fast());
    let expected = traffic(env.store.as_ref(), &tenants, 120).await.unwrap();
    // One of them leads (projects to the head); the other stays a standby at 0.
    let head = env.store.head().await.unwrap().0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (leader, standby) = loop {
        match (a.position("usage"), b.position("usage")) {
            (at, 0) if at >= head => break (a, b),
            (0, at) if at >= head => break (b, a),
            (x, y) => assert!(
                x == 0 || y == 0,
                "both workers projected: {x} and {y} (the lease let two lead)"
            ),
        }
        assert!(std::time::Instant::now() < deadline, "no worker caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(standby.position("usage"), 0, "the standby projected");
    drop(leader); // the leader dies; the standby takes over from the checkpoint
    let more = traffic(env.store.as_ref(), &tenants, 30).await.unwrap();
    caught_up(&standby, env.store.as_ref(), &["usage"]).await;
    let b = standby;
    for tenant in tenants {
        let (x, y) = (expected[&tenant], more[&tenant]);
        assert_eq!(
            usage_total(&env.db, tenant).await.requests,
            x.requests + y.requests
        );
        assert_eq!(
            usage_total(&env.db, tenant).await.cost_micros,
            x.cost_micros + y.cost_micros
        );
    }
    drop(b);

    // Without leases: two racing batches from the same checkpoint, exactly one commits.
    let env = self::env(Backend::Postgres).await;
    let tenant = TenantId::new();
    let expected = traffic(env.store.as_ref(), &[tenant], 20).await.unwrap();
    env.db.checkpoint("usage").await.unwrap();
    let batch = env
        .store
        .read_all(Scope::All, GlobalPosition(0), 1000)
        .await
        .unwrap();
    let (x, y) = tokio::join!(
        switchyard_projections::runner::project(&env.db, &USAGE, 0, &batch),
        switchyard_projections::runner::project(&env.db, &USAGE, 0, &batch),
    );
    let outcomes = [x.is_ok(), y.is_ok()];
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{outcomes:?}");
    assert!(matches!(
        if x.is_ok() { y } else { x },
        Err(Error::Fenced(_))
    ));
    check_usage(&env.db, &expected).await;
}

/// The store's own appends cannot commit out of position order: an append waits for the
/// advisory lock of an open one (seen waiting in `pg_locks`), so it takes its position only after
/// the open one commits.
#[tokio::test]
async fn an_append_waits_on_the_lock_of_an_open_one_and_takes_the_next_position() {
    let env = env(Backend::Postgres).await;
    let pg = env.pg.clone().unwrap();
    let tenant = TenantId::new();
    let mut a = pg.pool().begin().await.unwrap();
    let stream_a = StreamId::of("inference", uuid::Uuid::now_v7()).unwrap();
    let at_a = pg
        .append_in(
            &mut a,
            tenant,
            &stream_a,
            ExpectedVersion::NoStream,
            inference_events("sim-small", 1, false),
        )
        .await
        .unwrap();
    let b = {
        let store = env.store.clone();
        tokio::spawn(async move {
            let stream = StreamId::of("inference", uuid::Uuid::now_v7()).unwrap();
            store
                .append(
                    tenant,
                    &stream,
                    ExpectedVersion::NoStream,
                    inference_events("sim-small", 2, false),
                )
                .await
                .unwrap()
        })
    };
    // B is blocked on this store's advisory lock, not merely slow.
    let mut watcher = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second append never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!b.is_finished(), "B committed while A held the lock");
    a.commit().await.unwrap();
    let at_b = b.await.unwrap();
    assert!(at_b.positions[0] > at_a.last_position());
}

/// Inserts one event at `position` the way a writer that ignores the store's lock would.
async fn insert_raw(
    tx: &mut sqlx::PgConnection,
    schema: &str,
    position: u64,
    tenant: TenantId,
    stream: &StreamId,
    version: u64,
    event: &NewEvent,
) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.events (global_position, event_id, tenant_id, stream_id, \
         stream_version, event_type, schema_version, recorded_at_us, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)"
    )))
    .bind(i64::try_from(position).unwrap())
    .bind(*event.event_id.as_uuid())
    .bind(*tenant.as_uuid())
    .bind(stream.as_str())
    .bind(i64::try_from(version).unwrap())
    .bind(&event.event_type)
    .bind(i32::from(event.schema_version))
    .bind(&event.payload[..])
    .execute(tx)
    .await
    .unwrap();
}

/// Two transactions that commit out of position order for real: they write past the store's
/// lock (raw SQL, as a foreign writer would), A takes the next two positions, B the two after,
/// and B commits first. The projector does not pass the hole while A is open, and ends with
/// both inferences once A commits.
#[tokio::test]
async fn a_reader_waits_for_a_transaction_that_commits_behind_a_later_one() {
    let env = env(Backend::Postgres).await;
    let pg = env.pg.clone().unwrap();
    let tenant = TenantId::new();
    traffic(env.store.as_ref(), &[tenant], 1).await.unwrap();
    let projections = Projections::start_some(env.store.clone(), env.db.clone(), fast(), &[&USAGE]);
    caught_up(&projections, env.store.as_ref(), &["usage"]).await;
    let before = projections.position("usage");
    let head = env.store.head().await.unwrap().0;

    let write = |n: u64| {
        let events = inference_events("sim-small", n, false);
        let stream = StreamId::of("inference", uuid::Uuid::now_v7()).unwrap();
        (stream, events)
    };
    let (stream_a, events_a) = write(1);
    let (stream_b, events_b) = write(2);
    let mut a = pg.pool().begin().await.unwrap();
    let mut b = pg.pool().begin().await.unwrap();
    let mut position = head;
    for (version, event) in events_a.iter().enumerate() {
        position += 1;
        insert_raw(
            &mut a,
            &env.schema,
            position,
            tenant,
            &stream_a,
            version as u64 + 1,
            event,
        )
        .await;
    }
    for (version, event) in events_b.iter().enumerate() {
        position += 1;
        insert_raw(
            &mut b,
            &env.schema,
            position,
            tenant,
            &stream_b,
            version as u64 + 1,
            event,
        )
        .await;
    }
    b.commit().await.unwrap();
    // B is readable past a hole where A's positions are.
    let visible = env
        .store
        .read_all(Scope::All, GlobalPosition(head), 100)
        .await
        .unwrap();
    assert_eq!(
        visible.first().map(|e| e.global_position.0),
        Some(head + events_a.len() as u64 + 1),
        "B is not visible past the hole"
    );
    // Over two of the store's poll intervals, the projector does not pass the hole.
    let until = std::time::Instant::now() + Duration::from_millis(2_500);
    while std::time::Instant::now() < until {
        assert_eq!(
            projections.position("usage"),
            before,
            "projected past an uncommitted position"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.commit().await.unwrap();
    caught_up(&projections, env.store.as_ref(), &["usage"]).await;
    assert_eq!(usage_total(&env.db, tenant).await.requests, 3);
}

fn garbage(event_type: &str) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: event_type.into(),
        schema_version: 1,
        payload: Bytes::from_static(b"\x01\xff\xff\xff\xff\xff"),
        metadata: Metadata::default(),
    }
}

async fn poison_events_go_to_the_dlq(backend: Backend) {
    let env = env(backend).await;
    let tenant = TenantId::new();
    traffic(env.store.as_ref(), &[tenant], 3).await.unwrap();
    let stream = StreamId::of("inference", uuid::Uuid::now_v7()).unwrap();
    env.store
        .append(
            tenant,
            &stream,
            ExpectedVersion::Any,
            vec![garbage("InferenceCompleted")],
        )
        .await
        .unwrap();
    traffic(env.store.as_ref(), &[tenant], 2).await.unwrap();
    let projections = Projections::start(env.store.clone(), env.db.clone(), fast());
    caught_up(&projections, env.store.as_ref(), &["usage", "inferences"]).await;
    assert_eq!(
        usage_total(&env.db, tenant).await.requests,
        5,
        "the projector moved on"
    );
    let letters = env.db.dead_letters(Some("usage"), false, 10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].event_type, "InferenceCompleted");
    assert!(!letters[0].error.is_empty());
    assert_eq!(
        env.db
            .dead_letters(Some("inferences"), false, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        env.db.dead_letter(letters[0].id).await.unwrap().as_ref(),
        Some(&letters[0])
    );
    assert_eq!(env.db.dead_letter(i64::MAX).await.unwrap(), None);
    // Retrying cannot fix an undecodable event: the entry stays unresolved.
    assert!(
        retry_dead_letter(env.store.as_ref(), &env.db, letters[0].id)
            .await
            .is_err()
    );
    // One entry per projector that reads the event: usage, inferences and spend.
    assert_eq!(env.db.dead_letters(None, false, 10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn sqlite_poison_events_go_to_the_dlq() {
    poison_events_go_to_the_dlq(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_poison_events_go_to_the_dlq() {
    poison_events_go_to_the_dlq(Backend::Postgres).await;
}

/// An event that decodes but that PostgreSQL refuses to store: a token count that, added to the
/// count already stored in its row, overflows `BIGINT` ("bigint out of range"). The batch fails,
/// its events are applied one by one, and only that one is dead-lettered.
#[tokio::test]
async fn an_event_the_database_refuses_is_dead_lettered_alone() {
    let env = env(Backend::Postgres).await;
    let tenant = TenantId::new();
    let append = |events: Vec<NewEvent>| {
        let store = env.store.clone();
        async move {
            let stream = StreamId::of("inference", uuid::Uuid::now_v7()).unwrap();
            store
                .append(tenant, &stream, ExpectedVersion::NoStream, events)
                .await
                .unwrap();
            stream
        }
    };
    // A model of its own, projected in a batch before the bad event: its row holds tokens.
    append(inference_events("overflow-model", 1, false)).await;
    traffic(env.store.as_ref(), &[tenant], 4).await.unwrap();
    let projections = Projections::start_some(env.store.clone(), env.db.clone(), fast(), &[&USAGE]);
    caught_up(&projections, env.store.as_ref(), &["usage"]).await;
    assert_eq!(usage_total(&env.db, tenant).await.requests, 5);

    // The same model with u64::MAX tokens (stored as i64::MAX): the stored count plus it does
    // not fit, whatever batch it lands in.
    let mut bad = inference_events("overflow-model", 2, false);
    let last = bad.len() - 1;
    bad[last] = Event::InferenceCompleted(switchyard_events::InferenceCompleted {
        model: "overflow-model".into(),
        provider: "sim".into(),
        tokens_in: u64::MAX,
        tokens_out: 1,
        cost_micros: 1,
        latency_us: 1000,
        ttft_us: 100,
        finish_reason: "stop".into(),
        attempts: 1,
        request: None,
        route: None,
    })
    .to_new_event(Metadata::default())
    .unwrap();
    let stream = append(bad).await;
    traffic(env.store.as_ref(), &[tenant], 4).await.unwrap();
    caught_up(&projections, env.store.as_ref(), &["usage"]).await;
    assert_eq!(usage_total(&env.db, tenant).await.requests, 9);
    let letters = env.db.dead_letters(Some("usage"), false, 10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].event_type, "InferenceCompleted");
    assert_eq!(letters[0].stream_id, stream.as_str());
    assert!(letters[0].error.contains("out of range"), "{letters:?}");
}

/// PostgreSQL refuses NUL in text; a tool or a tenant can put one in any string an event
/// carries (a tool's 400 body in a run's error, a model name, a tenant's name). Every projector
/// stores such events (the NUL replaced), none is dead-lettered, and a failed run reads
/// `failed`, not `running` for ever.
async fn text_with_nul_bytes_is_projected(backend: Backend) {
    let env = env(backend).await;
    let tenant = TenantId::new();
    let append = |stream: StreamId, events: Vec<Event>| {
        let store = env.store.clone();
        async move {
            let events = events
                .iter()
                .map(|e| e.to_new_event(Metadata::default()).unwrap())
                .collect();
            store
                .append(tenant, &stream, ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
    };
    let nul = "bad\0model";
    let inference = StreamId::of("inference", uuid::Uuid::now_v7()).unwrap();
    let mut events = inference_events_v1(nul, 1, true);
    events[2] = Event::InferenceFailed(switchyard_events::InferenceFailed {
        model: nul.into(),
        provider: "p\0".into(),
        code: "upstream\0rejected".into(),
        message: "the tool answered 400: \0\0\0".into(),
        tokens_in: 3,
        tokens_out: 0,
        cost_micros: 0,
        latency_us: 1000,
        attempts: 1,
        request: None,
        route: None,
    })
    .to_new_event(Metadata::default())
    .unwrap();
    env.store
        .append(tenant, &inference, ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    // The current form: NULs in the request and the route that the outcome carries.
    let request = switchyard_events::InferenceRequested {
        endpoint: "chat\0".into(),
        model_requested: "auto\0".into(),
        key_id: uuid::Uuid::nil(),
        stream: false,
        messages: 1,
        prompt_tokens_estimate: 3,
        max_tokens: None,
        user: Some("al\0ice".into()),
        tags: vec!["team\0a".into()],
    };
    let route = switchyard_events::RouteChosen {
        policy: "thomp\0son".into(),
        model: nul.into(),
        provider: "p\0".into(),
        candidates: vec![nul.into()],
        propensity_ppb: 1_000_000_000,
        feature_set: 1,
        features_milli: Vec::new(),
        shadow: Vec::new(),
    };
    append(
        StreamId::of("inference", uuid::Uuid::now_v7()).unwrap(),
        vec![Event::InferenceCompleted(
            switchyard_events::InferenceCompleted {
                model: nul.into(),
                provider: "p\0".into(),
                tokens_in: 3,
                tokens_out: 4,
                cost_micros: 5,
                latency_us: 1000,
                ttft_us: 500,
                finish_reason: "st\0op".into(),
                attempts: 1,
                request: Some(request),
                route: Some(route),
            },
        )],
    )
    .await;
    let run = uuid::Uuid::now_v7();
    append(
        StreamId::of("workflow_run", run).unwrap(),
        vec![
            Event::RunStarted(switchyard_events::RunStarted {
                run_id: run,
                workflow: "wf\0".into(),
                version: 1,
                spec: "{}".into(),
                input: "{}".into(),
                parent_run: None,
                parent_step: None,
                replay_of: None,
                overrides: "{}".into(),
                seed: 1,
                at_ms: 1_000,
                engine: 1,
            }),
            Event::RunFailed(switchyard_events::RunFailed {
                error: "tool answered 400: \0\0 body".into(),
                step: Some("call\0".into()),
                compensated: Vec::new(),
                at_ms: 2_000,
            }),
        ],
    )
    .await;
    append(
        StreamId::of("tenant", tenant.as_uuid()).unwrap(),
        vec![
            Event::TenantCreated(switchyard_events::TenantCreated {
                name: "Acme\0".into(),
                plan: "pro\0".into(),
            }),
            Event::ApiKeyIssued(switchyard_events::ApiKeyIssued {
                key_id: uuid::Uuid::now_v7(),
                name: "k\0".into(),
                key_hash: "00".into(),
                prefix: "sy_\0".into(),
                scopes: vec!["inference\0".into()],
                expires_at_unix: None,
            }),
        ],
    )
    .await;
    append(
        StreamId::of("billing", tenant.as_uuid()).unwrap(),
        vec![Event::UsageRecorded(switchyard_events::UsageRecorded {
            usage_id: uuid::Uuid::now_v7(),
            period: "2026-11".into(),
            model: nul.into(),
            requests: 1,
            tokens_in: 3,
            tokens_out: 0,
            tool_calls: 0,
            cost_micros: 7,
        })],
    )
    .await;

    let projections = Projections::start(env.store.clone(), env.db.clone(), fast());
    let names: Vec<&str> = projectors::ALL.iter().map(|p| p.name).collect();
    caught_up(&projections, env.store.as_ref(), &names).await;
    assert_eq!(
        env.db.dead_letters(None, true, 10).await.unwrap(),
        Vec::new(),
        "{backend:?}"
    );
    let me = *tenant.as_uuid();
    let runs = env.db.workflows(me, 0, i64::MAX, None).await.unwrap();
    assert_eq!(runs.len(), 1, "{backend:?}: {runs:?}");
    assert_eq!((runs[0].failed, runs[0].running), (1, 0), "{runs:?}");
    assert_eq!(runs[0].workflow, "wf\u{fffd}");
    // A filter carrying the NUL finds the row too: parameters are cleaned the same way.
    assert_eq!(
        env.db
            .workflows(me, 0, i64::MAX, Some("wf\0"))
            .await
            .unwrap(),
        runs
    );
    let usage = usage_total(&env.db, tenant).await;
    assert_eq!((usage.requests, usage.failures), (2, 1), "{backend:?}");
    let all = InferenceQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        limit: 10,
        ..Default::default()
    };
    let (log, _) = env.db.inferences(me, &all).await.unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    let failed = log.iter().find(|row| row.status == "failed").unwrap();
    assert_eq!(failed.error_code, "upstream\u{fffd}rejected");
    assert_eq!(failed.model, "bad\u{fffd}model");
    let completed = log.iter().find(|row| row.status == "completed").unwrap();
    assert_eq!(
        (completed.endpoint.as_str(), completed.policy.as_str()),
        ("chat\u{fffd}", "thomp\u{fffd}son")
    );
    let users = env.db.spend(me, ALL_TIME, SpendGroup::User).await.unwrap();
    assert!(
        users
            .iter()
            .any(|row| row.user.as_deref() == Some("al\u{fffd}ice")),
        "{users:?}"
    );
    let tags = env.db.spend(me, ALL_TIME, SpendGroup::Tag).await.unwrap();
    assert!(
        tags.iter()
            .any(|row| row.tag.as_deref() == Some("team\u{fffd}a")),
        "{tags:?}"
    );
    let billed = env.db.billing_usage(me, None).await.unwrap();
    assert_eq!(billed.len(), 1);
    assert_eq!(billed[0].model, "bad\u{fffd}model");
}

#[tokio::test]
async fn postgres_text_with_nul_bytes_is_projected_not_dead_lettered() {
    text_with_nul_bytes_is_projected(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite_text_with_nul_bytes_is_projected_not_dead_lettered() {
    text_with_nul_bytes_is_projected(Backend::Sqlite).await;
}

/// Events for `tenant` that put a row in every projector's table: inferences (usage_hourly,
/// latency_hist, router_stats, inference_log), a billed month invoiced and paid (billing_usage,
/// invoices, ledger), the tenant and a key (tenants, api_keys), a workflow run (workflow_runs).
async fn a_row_in_every_table(store: &dyn EventStore, tenant: TenantId) {
    traffic(store, &[tenant], 5).await.unwrap();
    let append = |stream: StreamId, events: Vec<Event>| async move {
        let events = events
            .iter()
            .map(|e| e.to_new_event(Metadata::default()).unwrap())
            .collect();
        store
            .append(tenant, &stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    };
    append(
        StreamId::of("tenant", tenant.as_uuid()).unwrap(),
        vec![
            Event::TenantCreated(switchyard_events::TenantCreated {
                name: "Acme".into(),
                plan: "pro".into(),
            }),
            Event::ApiKeyIssued(switchyard_events::ApiKeyIssued {
                key_id: uuid::Uuid::now_v7(),
                name: "app".into(),
                key_hash: "00".into(),
                prefix: "sy_0000".into(),
                scopes: Vec::new(),
                expires_at_unix: None,
            }),
        ],
    )
    .await;
    append(
        StreamId::of("billing", tenant.as_uuid()).unwrap(),
        vec![
            Event::UsageRecorded(switchyard_events::UsageRecorded {
                usage_id: uuid::Uuid::now_v7(),
                period: "2026-01".into(),
                model: "sim-small".into(),
                requests: 1,
                tokens_in: 3,
                tokens_out: 4,
                tool_calls: 0,
                cost_micros: 7,
            }),
            Event::InvoiceFinalized(switchyard_events::InvoiceFinalized {
                period: "2026-01".into(),
                total_micros: 7,
                plan: "pro".into(),
                book_version: None,
                lines: Vec::new(),
                subtotal_micros: 7,
                discount_micros: 0,
                included_micros: 0,
                records: 1,
            }),
            Event::InvoicePaid(switchyard_events::InvoicePaid {
                period: "2026-01".into(),
            }),
        ],
    )
    .await;
    let run = uuid::Uuid::now_v7();
    append(
        StreamId::of("workflow_run", run).unwrap(),
        vec![Event::RunStarted(switchyard_events::RunStarted {
            run_id: run,
            workflow: "wf".into(),
            version: 1,
            spec: "{}".into(),
            input: "{}".into(),
            parent_run: None,
            parent_step: None,
            replay_of: None,
            overrides: "{}".into(),
            seed: 1,
            at_ms: 1_000,
            engine: 1,
        })],
    )
    .await;
}

/// Connected as the analytics role, a query that forgets `WHERE tenant_id` still sees only the
/// tenant set for the transaction, and nothing without one. The tables checked are read from
/// the schema: every relation the analytics role may read (so a new read model is covered
/// as soon as it is granted), which must be at least every projector's table.
#[tokio::test]
async fn row_level_security_hides_other_tenants_rows() {
    let env = env(Backend::Postgres).await;
    let (a, b) = (TenantId::new(), TenantId::new());
    for tenant in [a, b] {
        a_row_in_every_table(env.store.as_ref(), tenant).await;
    }
    let projections = Projections::start(env.store.clone(), env.db.clone(), fast());
    let names: Vec<&str> = projectors::ALL.iter().map(|p| p.name).collect();
    caught_up(&projections, env.store.as_ref(), &names).await;
    assert_eq!(
        env.db.dead_letters(None, true, 10).await.unwrap(),
        Vec::new()
    );

    // As the owner: every relation of the schema (tables, partitioned tables and their
    // partitions, views) the analytics role may read, in whole or in part.
    let mut owner = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let readable: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
           AND (has_table_privilege('switchyard_analytics', c.oid, 'SELECT') \
                OR has_any_column_privilege('switchyard_analytics', c.oid, 'SELECT')) \
         ORDER BY 1",
    )
    .bind(&env.schema)
    .fetch_all(&mut owner)
    .await
    .unwrap();
    let mut tables: Vec<&str> = projectors::ALL
        .iter()
        .flat_map(|p| p.tables.iter().map(|t| t.name))
        .collect();
    tables.sort_unstable();
    for table in &tables {
        assert!(
            readable.iter().any(|r| r == table),
            "the analytics role cannot read {table}: {readable:?}"
        );
    }
    // Each holds rows of both tenants, so hiding one of them is a real check.
    for table in &readable {
        let tenants: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(DISTINCT tenant_id) FROM {}.{table} WHERE tenant_id IN ($1, $2)",
            env.schema
        )))
        .bind(*a.as_uuid())
        .bind(*b.as_uuid())
        .fetch_one(&mut owner)
        .await
        .unwrap_or_else(|e| panic!("{table} has no tenant_id to filter on: {e}"));
        assert_eq!(tenants, 2, "{table} holds rows of both tenants");
    }

    let url = std::env::var("SWITCHYARD_TEST_ANALYTICS_URL").unwrap_or_else(|_| {
        "postgres://switchyard_analytics:switchyard_analytics@127.0.0.1:5432/switchyard_test".into()
    });
    let mut reader = sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!("the analytics role must log in at {url} (scripts/services.sh creates it): {e}")
    });
    let is_owner_or_bypass: bool = sqlx::query_scalar(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut reader)
    .await
    .unwrap();
    assert!(!is_owner_or_bypass);
    for table in &readable {
        for tenant in [a, b] {
            let mut tx = reader.begin().await.unwrap();
            sqlx::query("SELECT set_config('switchyard.tenant', $1, true)")
                .bind(tenant.to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT DISTINCT tenant_id FROM {}.{table}",
                env.schema
            )))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
            let seen: Vec<uuid::Uuid> = rows.iter().map(|row| row.get(0)).collect();
            assert_eq!(seen, vec![*tenant.as_uuid()], "{table} as {tenant}");
            tx.rollback().await.unwrap();
        }
        let none: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}.{table}",
            env.schema
        )))
        .fetch_one(&mut reader)
        .await
        .unwrap();
        assert_eq!(none, 0, "{table} without a tenant set");
        // Writing is not allowed at all.
        let write = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {}.{table}",
            env.schema
        )))
        .execute(&mut reader)
        .await;
        assert!(write.is_err(), "the analytics role deleted from {table}");
    }
    // The API path runs as the same role.
    assert_eq!(usage_total(&env.db, b).await.requests, 5);
}

#[tokio::test]
async fn retention_drops_old_partitions_and_rows() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let env = env(backend).await;
        let tenant = TenantId::new();
        traffic(env.store.as_ref(), &[tenant], 3).await.unwrap();
        let projections = Projections::start(env.store.clone(), env.db.clone(), fast());
        caught_up(&projections, env.store.as_ref(), &["usage", "inferences"]).await;
        let kept = env.db.retention(0).await.unwrap();
        assert!(
            kept.is_empty(),
            "{backend:?}: nothing is older than 1970: {kept:?}"
        );
        assert_eq!(usage_total(&env.db, tenant).await.requests, 3);
        let far_future = 4_102_444_800; // 2100-01-01
        let dropped = env.db.retention(far_future).await.unwrap();
        assert!(!dropped.is_empty(), "{backend:?}");
        assert_eq!(
            env.db
                .usage(*tenant.as_uuid(), ALL_TIME, &[], None)
                .await
                .unwrap()[0]
                .requests,
            0
        );
        drop(projections);
    }
}

#[test]
fn every_projector_is_listed() {
    let names: Vec<_> = projectors::ALL.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "usage",
            "inferences",
            "spend",
            "billing",
            "directory",
            "workflows",
            "audit"
        ]
    );
}

/// The projectors over a log that fails on command (`FaultyStore`): their subscription breaks
/// and every read fails while more traffic is written; they do not move, then resubscribe from
/// their checkpoints once the log heals and end with the exact totals (nothing lost, nothing
/// applied twice).
#[tokio::test]
async fn projectors_resubscribe_after_the_log_fails_and_end_exact() {
    let env = env(Backend::Sqlite).await;
    let faulty = FaultyStore::new(env.store.clone());
    let faults = faulty.faults();
    let store: Arc<dyn EventStore> = Arc::new(faulty);
    let tenants = [TenantId::new(), TenantId::new()];
    let first = traffic(env.store.as_ref(), &tenants, 40).await.unwrap();
    let projections = Projections::start(store.clone(), env.db.clone(), fast());
    caught_up(&projections, env.store.as_ref(), &["usage", "inferences"]).await;
    let before = projections.position("usage");

    faults.set(Fault::FailSubscriptions, true);
    faults.set(Fault::FailReads, true);
    let second = traffic(env.store.as_ref(), &tenants, 40).await.unwrap();
    // While the log fails the projectors stay where they were, over several backoffs.
    let until = std::time::Instant::now() + Duration::from_millis(600);
    while std::time::Instant::now() < until {
        assert_eq!(projections.position("usage"), before);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    faults.heal();
    caught_up(&projections, env.store.as_ref(), &["usage", "inferences"]).await;
    let expected: HashMap<TenantId, Totals> = tenants
        .iter()
        .map(|t| {
            let (a, b) = (&first[t], &second[t]);
            let sum = Totals {
                requests: a.requests + b.requests,
                failures: a.failures + b.failures,
                tokens_in: a.tokens_in + b.tokens_in,
                tokens_out: a.tokens_out + b.tokens_out,
                cost_micros: a.cost_micros + b.cost_micros,
            };
            (*t, sum)
        })
        .collect();
    check_usage(&env.db, &expected).await;
}
