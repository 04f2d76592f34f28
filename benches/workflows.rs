//! Durable workflows under load (run: `bash scripts/services.sh && cargo bench -p
//! switchyard-benches --bench workflows -- [start] [steps] [recovery] [replay] [sqlite|postgres]`;
//! all of them on both stores without arguments). Prints Markdown; figures go to
//! docs/BENCHMARKS.md. The executor answers every call at once, so what is measured is the
//! engine and the log, not a model or a tool.
//!
//! - `start`: latency of `Engine::start` (the run's `RunStarted` durable), one start at a time,
//!   against one single-event append to a new stream in the same run (the durable-write floor).
//! - `steps`: step throughput: 64 runs at once, each a chain of 10 tool steps; steps per second,
//!   against single-event appends per second from 64 concurrent writers in the same run (each
//!   step needs two appends: its start and its result).
//! - `recovery`: 10,000 runs left in flight by a process that stopped mid-step; a new engine's
//!   `recover()` (a full read of the log) and the time until every run has completed.
//! - `replay`: recorded episodes re-scored offline: each episode's events replayed exactly (the
//!   determinism check) and its output scored against a golden answer; episodes per second,
//!   against reading and decoding the same events alone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark binary: a panic is the failure report, stdout the report"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::join_all;
use serde_json::{Value, json};
use switchyard_benches::{database_url, percentile};
use switchyard_events::{
    Event, EventStore, ExpectedVersion, GlobalPosition, PostgresOptions, PostgresStore, Scope,
    SqliteStore, StreamId, TenantId,
};
use switchyard_workflows::eval::{Scorer, Task, score_output};
use switchyard_workflows::replay::replay_exact;
use switchyard_workflows::run::RunStatus;
use switchyard_workflows::spec::LoadOptions;
use switchyard_workflows::{Engine, Executor, StartOptions, StepCall, StepError, StepOutput};

/// Answers every call at once with its arguments (or never, to leave runs in flight).
struct Answer {
    hang: bool,
}

#[async_trait]
impl Executor for Answer {
    async fn call(&self, call: &StepCall) -> Result<StepOutput, StepError> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Ok(StepOutput {
            output: call.request["args"].clone(),
            inference_id: None,
            cost_micros: 1,
        })
    }
}

/// Where a store lives: a SQLite file, or a PostgreSQL schema.
#[derive(Clone)]
enum Location {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

/// A fresh location: SQLite in a temp dir, or a fresh PostgreSQL schema.
fn location(kind: &str, dir: &std::path::Path) -> Location {
    match kind {
        "sqlite" => Location::Sqlite(dir.join("events.db")),
        _ => Location::Postgres(format!("bench_wf_{}", uuid::Uuid::now_v7().simple())),
    }
}

/// Opens (or reopens, as a restarted process would) the store at `location`.
async fn open(location: &Location) -> Arc<dyn EventStore> {
    match location {
        Location::Sqlite(path) => Arc::new(SqliteStore::open(path).await.unwrap()),
        Location::Postgres(schema) => {
            let mut options = PostgresOptions::new(database_url()).schema(schema.clone());
            options.max_connections = 16;
            Arc::new(
                PostgresStore::connect(options)
                    .await
                    .expect("PostgreSQL (scripts/services.sh)"),
            )
        }
    }
}

/// A fresh store.
async fn store(kind: &str, dir: &std::path::Path) -> Arc<dyn EventStore> {
    open(&location(kind, dir)).await
}

const CHAIN: usize = 10;

fn chain_spec(name: &str, steps: usize) -> String {
    let mut spec = format!("name: {name}\nnodes:\n");
    for i in 0..steps {
        spec.push_str(&format!(
            "  - id: s{i}\n    kind: tool\n    tool: echo\n    args: {{n: {i}, run: \"{{{{ run.id }}}}\"}}\n"
        ));
    }
    spec
}

async fn engine(store: Arc<dyn EventStore>, tenant: TenantId, hang: bool) -> Arc<Engine> {
    let engine = Engine::new(store, Arc::new(Answer { hang }));
    engine
        .register_tool(tenant, "name: echo\nurl: http://127.0.0.1:9/echo\n")
        .await
        .unwrap();
    engine
}

async fn start(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(kind, dir.path()).await;
    let tenant = TenantId::new();
    let engine = engine(store.clone(), tenant, false).await;
    engine
        .register_workflow(tenant, &chain_spec("one", 1), LoadOptions::default())
        .await
        .unwrap();
    let n = 2_000;
    let mut starts = Vec::with_capacity(n);
    let mut appends = Vec::with_capacity(n);
    let payload = Event::TenantRenamed(switchyard_events::TenantRenamed {
        name: "x".repeat(200),
    });
    for i in 0..n {
        let t = Instant::now();
        engine
            .start(tenant, "one", Value::Null, StartOptions::default())
            .await
            .unwrap();
        starts.push(t.elapsed().as_secs_f64() * 1e3);
        let stream = StreamId::of("bench", format!("a{i}")).unwrap();
        let event = payload
            .to_new_event(switchyard_events::Metadata::default())
            .unwrap();
        let t = Instant::now();
        store
            .append(tenant, &stream, ExpectedVersion::NoStream, vec![event])
            .await
            .unwrap();
        appends.push(t.elapsed().as_secs_f64() * 1e3);
    }
    starts.sort_by(f64::total_cmp);
    appends.sort_by(f64::total_cmp);
    let (s50, s99) = (percentile(&starts, 0.5), percentile(&starts, 0.99));
    let (a50, a99) = (percentile(&appends, 0.5), percentile(&appends, 0.99));
    println!("| {kind} | run start | {s50:.3} ms | {s99:.3} ms | {n} sequential starts |");
    println!("| {kind} | single-event append (floor) | {a50:.3} ms | {a99:.3} ms | same run |");
    println!(
        "| {kind} | ratio start / append | {:.2}× | {:.2}× | |",
        s50 / a50,
        s99 / a99
    );
}

async fn steps(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(kind, dir.path()).await;
    let tenant = TenantId::new();
    let engine = engine(store.clone(), tenant, false).await;
    engine
        .register_workflow(tenant, &chain_spec("chain", CHAIN), LoadOptions::default())
        .await
        .unwrap();
    let runs = 64;
    let rounds = 4;
    let started = Instant::now();
    for _ in 0..rounds {
        let ids = join_all((0..runs).map(|_| {
            let engine = engine.clone();
            async move {
                engine
                    .start(tenant, "chain", Value::Null, StartOptions::default())
                    .await
                    .unwrap()
            }
        }))
        .await;
        for id in ids {
            let state = engine
                .wait(tenant, id, Duration::from_secs(600))
                .await
                .unwrap();
            assert_eq!(state.status, RunStatus::Completed);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = (runs * rounds * CHAIN) as f64;
    let step_rate = total / elapsed;

    // The floor: single-event appends from 64 concurrent writers, as many as the steps wrote.
    let appends_each = rounds * CHAIN * 2;
    let payload = Event::TenantRenamed(switchyard_events::TenantRenamed {
        name: "x".repeat(200),
    });
    let started = Instant::now();
    join_all((0..runs).map(|w| {
        let store = store.clone();
        let payload = payload.clone();
        async move {
            let stream = StreamId::of("bench", format!("w{w}")).unwrap();
            for v in 0..appends_each {
                let event = payload
                    .to_new_event(switchyard_events::Metadata::default())
                    .unwrap();
                let expected = if v == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(switchyard_events::StreamVersion(v as u64))
                };
                store
                    .append(tenant, &stream, expected, vec![event])
                    .await
                    .unwrap();
            }
        }
    }))
    .await;
    let append_rate = (runs * appends_each) as f64 / started.elapsed().as_secs_f64();
    println!(
        "| {kind} | {total} steps ({runs} runs at once × {CHAIN} steps × {rounds} rounds) | {step_rate:.0} steps/s | {append_rate:.0} appends/s from {runs} writers | {:.2} (a step = 2 appends: ≤ 0.5) |",
        step_rate / append_rate
    );
}

async fn recovery(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let at = location(kind, dir.path());
    let tenant = TenantId::new();
    let n = 10_000;
    // The first process (a runtime of its own, on a thread of its own, shut down at the end):
    // every run's first step starts and never answers.
    let stopped = {
        let at = at.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let ids = runtime.block_on(async move {
                let engine = engine(open(&at).await, tenant, true).await;
                engine
                    .register_workflow(tenant, &chain_spec("inflight", 3), LoadOptions::default())
                    .await
                    .unwrap();
                let mut ids = Vec::with_capacity(n);
                for _ in 0..(n / 500) {
                    let batch = join_all((0..500).map(|_| {
                        let engine = engine.clone();
                        async move {
                            engine
                                .start(tenant, "inflight", Value::Null, StartOptions::default())
                                .await
                                .unwrap()
                        }
                    }))
                    .await;
                    ids.extend(batch);
                }
                // Until every run's first step has started.
                for id in &ids {
                    loop {
                        let state = engine.state(tenant, *id).await.unwrap();
                        if state.steps.contains_key("s0") {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                ids
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
            ids
        })
        .join()
        .unwrap()
    };
    // The second process: the store opened again.
    let store = open(&at).await;
    let head = store.head().await.unwrap();
    let engine = Engine::new(store.clone(), Arc::new(Answer { hang: false }));
    let started = Instant::now();
    let found = engine.recover().await.unwrap();
    let recovered = started.elapsed().as_secs_f64();
    assert_eq!(found, n);
    for id in &stopped {
        let state = engine
            .wait(tenant, *id, Duration::from_secs(600))
            .await
            .unwrap();
        assert_eq!(state.status, RunStatus::Completed, "{:?}", state.error);
    }
    let finished = started.elapsed().as_secs_f64();
    println!(
        "| {kind} | {n} runs in flight, {} events in the log | recover() found them in {:.2} s | all {n} completed {:.2} s after the restart | {:.0} runs/s |",
        head.0,
        recovered,
        finished,
        n as f64 / finished
    );
}

async fn replay(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(kind, dir.path()).await;
    let tenant = TenantId::new();
    let engine = engine(store.clone(), tenant, false).await;
    engine
        .register_workflow(tenant, &chain_spec("episode", 3), LoadOptions::default())
        .await
        .unwrap();
    let n = 10_000;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..(n / 500) {
        let batch = join_all((0..500).map(|_| {
            let engine = engine.clone();
            async move {
                let id = engine
                    .start(tenant, "episode", Value::Null, StartOptions::default())
                    .await
                    .unwrap();
                engine
                    .wait(tenant, id, Duration::from_secs(600))
                    .await
                    .unwrap();
                id
            }
        }))
        .await;
        ids.extend(batch);
    }
    // The golden answer of every episode: the last step's output.
    let task = Task::new(
        "episode",
        Value::Null,
        Some(json!({"n": 2})),
        Scorer::JsonSchema {
            schema: switchyard_workflows::eval::Schema::new(json!({
                "type": "object", "required": ["n", "run"],
                "properties": {"n": {"const": 2}}
            }))
            .unwrap(),
        },
    )
    .unwrap();

    // Read every event once (the floor), grouped into episodes.
    let started = Instant::now();
    let mut episodes: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    let mut after = GlobalPosition::START;
    loop {
        let page = store.read_all(Scope::All, after, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.global_position;
        for recorded in &page {
            if recorded.stream_id.category() == switchyard_workflows::run::CATEGORY {
                episodes
                    .entry(recorded.stream_id.as_str().to_owned())
                    .or_default()
                    .push(Event::from_recorded(recorded).unwrap());
            }
        }
    }
    let read = started.elapsed().as_secs_f64();
    assert_eq!(episodes.len(), n);

    // Re-scored offline: exact replay (determinism check) and the scorer on its output.
    let started = Instant::now();
    let mut passed = 0;
    for events in episodes.values() {
        let report = replay_exact(events);
        assert!(report.divergence.is_none());
        let output = report.output.unwrap_or(Value::Null);
        if score_output(&task, &output, None).await.unwrap().passed {
            passed += 1;
        }
    }
    let rescored = started.elapsed().as_secs_f64();
    assert_eq!(passed, n);
    let events: usize = episodes.values().map(Vec::len).sum();
    println!(
        "| {kind} | {n} episodes ({events} events) | {:.0} episodes/s re-scored (replay + score) | {:.0} episodes/s read and decoded | target ≥ 1,000/s: {:.1}× |",
        n as f64 / rescored,
        n as f64 / read,
        n as f64 / rescored / 1_000.0
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let modes: Vec<&String> = args
        .iter()
        .filter(|a| ["start", "steps", "recovery", "replay"].contains(&a.as_str()))
        .collect();
    let wants = |name: &str| modes.is_empty() || modes.iter().any(|a| *a == name);
    let stores: Vec<&str> = ["sqlite", "postgres"]
        .into_iter()
        .filter(|s| {
            !args.iter().any(|a| a == "sqlite" || a == "postgres") || args.iter().any(|a| a == s)
        })
        .collect();
    for kind in &stores {
        if wants("start") {
            start(kind).await;
        }
        if wants("steps") {
            steps(kind).await;
        }
        if wants("recovery") {
            recovery(kind).await;
        }
        if wants("replay") {
            replay(kind).await;
        }
    }
}
