//! The engine end to end on a real (SQLite) log with a scripted executor: every node kind,
//! retries, sagas, cancellation, continue-as-new, recovery after a crash, tenant isolation, and
//! exact replay of what each run recorded. The golden episodes under
//! `tests/episodes/engine-<N>/` were recorded by engine version N and are replayed with the
//! current code; they are never re-recorded (`SWITCHYARD_UPDATE_EPISODES=1` only writes the
//! episodes the current engine version lacks).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use switchyard_events::{Event, SqliteStore, TenantId};
use switchyard_workflows::replay::{episode_text, parse_episode, replay_exact};
use switchyard_workflows::run::{self, RunStatus};
use switchyard_workflows::spec::LoadOptions;
use switchyard_workflows::{
    Engine, Error, Executor, StartOptions, StepCall, StepError, StepOutput,
};

/// Tools and a model, scripted: effects are counted per idempotency key.
struct Script {
    /// Every call: (tool or model, idempotency key).
    calls: Mutex<Vec<(String, String)>>,
    /// Effects applied, once per idempotency key (what a well-behaved tool does).
    effects: Mutex<HashMap<String, String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// `slow` blocks until this many permits are added.
    gate: tokio::sync::Semaphore,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            calls: Mutex::default(),
            effects: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        }
    }
}

#[async_trait]
impl Executor for Script {
    async fn call(&self, call: &StepCall) -> Result<StepOutput, StepError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let result = self.answer(call).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

impl Script {
    async fn answer(&self, call: &StepCall) -> Result<StepOutput, StepError> {
        let r = &call.request;
        let name = match r["kind"].as_str() {
            Some("llm") => r["model"].as_str().unwrap().to_owned(),
            _ => r["tool"].as_str().unwrap().to_owned(),
        };
        self.calls
            .lock()
            .unwrap()
            .push((name.clone(), call.idempotency_key.clone()));
        let ok = |output: Value| {
            Ok(StepOutput {
                output,
                inference_id: None,
                cost_micros: 10,
            })
        };
        let args = &r["args"];
        match name.as_str() {
            "sim-small" | "sim-large" => {
                let prompt = r["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or_default();
                ok(json!(format!("{name}: {prompt}")))
            }
            "add" => ok(json!(
                args["a"].as_i64().unwrap() + args["b"].as_i64().unwrap()
            )),
            "double" => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ok(json!(args["x"].as_i64().unwrap() * 2))
            }
            "flaky" => {
                if call.attempt < 3 {
                    Err(StepError {
                        message: format!("flaky attempt {}", call.attempt),
                        retryable: true,
                    })
                } else {
                    ok(json!("steady"))
                }
            }
            "huge" => ok(json!("x".repeat(600 * 1024))),
            "broken" => Err(StepError {
                message: "broken for good".into(),
                retryable: false,
            }),
            "slow" => {
                let _permit = self.gate.acquire().await.unwrap();
                self.effects
                    .lock()
                    .unwrap()
                    .entry(call.idempotency_key.clone())
                    .or_insert_with(|| "slow".into());
                ok(json!("slow done"))
            }
            effect => {
                self.effects
                    .lock()
                    .unwrap()
                    .entry(call.idempotency_key.clone())
                    .or_insert_with(|| effect.to_owned());
                ok(json!({"done": effect, "args": args}))
            }
        }
    }

    fn called(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    script: Arc<Script>,
    engine: Arc<Engine>,
    tenant: TenantId,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("events.db"))
            .await
            .unwrap(),
    );
    let script = Arc::new(Script::default());
    let engine = Engine::new(store.clone(), script.clone());
    let tenant = TenantId::new();
    for tool in [
        "add", "double", "flaky", "broken", "slow", "reserve", "release", "charge", "refund",
        "notify", "huge",
    ] {
        engine
            .register_tool(
                tenant,
                &format!("name: {tool}\nurl: http://127.0.0.1:9/{tool}\ntimeout_ms: 60000\n"),
            )
            .await
            .unwrap();
    }
    Setup {
        _dir: dir,
        script,
        engine,
        tenant,
    }
}

impl Setup {
    async fn register(&self, spec: &str) -> String {
        let (name, _, _) = self
            .engine
            .register_workflow(self.tenant, spec, LoadOptions::default())
            .await
            .unwrap();
        name
    }

    async fn run(
        &self,
        spec: &str,
        input: Value,
    ) -> (uuid::Uuid, switchyard_workflows::run::RunState) {
        let name = self.register(spec).await;
        let run = self
            .engine
            .start(self.tenant, &name, input, StartOptions::default())
            .await
            .unwrap();
        let state = self
            .engine
            .wait(self.tenant, run, Duration::from_secs(20))
            .await
            .unwrap();
        (run, state)
    }

    /// The run's recorded events, decoded.
    async fn events(&self, run: uuid::Uuid) -> Vec<Event> {
        self.engine
            .events(self.tenant, run)
            .await
            .unwrap()
            .iter()
            .map(|r| Event::from_recorded(r).unwrap())
            .collect()
    }

    /// Replays the run exactly and saves it as a golden episode when asked to.
    async fn replays_exactly(&self, run: uuid::Uuid, golden: Option<&str>) {
        let events = self.events(run).await;
        let report = replay_exact(&events);
        assert!(
            report.divergence.is_none(),
            "replay diverged: {:?}",
            report.divergence
        );
        assert!(report.decisions > 0);
        if let Some(name) = golden
            && std::env::var_os("SWITCHYARD_UPDATE_EPISODES").is_some()
        {
            // A recorded episode protects the runs of its engine version: it is written once,
            // never over. A change of decision logic is a new version (`run::ENGINE`).
            let dir = episodes().join(format!("engine-{}", run::ENGINE));
            let path = dir.join(format!("{name}.jsonl"));
            if !path.exists() {
                let recorded = self.engine.events(self.tenant, run).await.unwrap();
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, episode_text(&recorded).unwrap()).unwrap();
            }
        }
    }
}

fn episodes() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/episodes")
}

/// Every golden episode: (engine version of its folder, path).
fn golden_episodes() -> Vec<(u32, PathBuf)> {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(episodes()).unwrap() {
        let dir = dir.unwrap().path();
        let Some(version) = dir
            .file_name()
            .and_then(|n| n.to_str()?.strip_prefix("engine-")?.parse().ok())
        else {
            continue;
        };
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                found.push((version, path));
            }
        }
    }
    found.sort();
    found
}

const THREE_STEPS: &str = r#"
name: triage
inputs:
  question: {type: string}
outputs:
  answer: {value: steps.polish.output, type: string}
  sum: {value: steps.lookup.output, type: integer}
nodes:
  - id: draft
    kind: llm
    model: sim-small
    prompt: "Q: {{ input.question }}"
  - id: lookup
    kind: tool
    tool: add
    args: {a: 2, b: "{{ input.question | length }}"}
  - id: polish
    kind: llm
    model: sim-large
    system: "Be brief."
    prompt: "Polish ({{ steps.lookup.output }}): {{ steps.draft.output }}"
"#;

#[tokio::test]
async fn three_steps_run_in_order_and_replay_exactly() {
    let s = setup().await;
    let (run, state) = s.run(THREE_STEPS, json!({"question": "why?"})).await;
    assert_eq!(state.status, RunStatus::Completed, "{:?}", state.error);
    assert_eq!(
        state.output.unwrap(),
        json!({"answer": "sim-large: Polish (6): sim-small: Q: why?", "sum": 6})
    );
    assert_eq!(s.script.called(), ["sim-small", "add", "sim-large"]);
    assert_eq!(state.cost_micros, 30);
    s.replays_exactly(run, Some("three-steps")).await;
}

#[tokio::test]
async fn a_wrong_input_is_refused_before_anything_is_recorded() {
    let s = setup().await;
    let name = s.register(THREE_STEPS).await;
    let refused = s
        .engine
        .start(
            s.tenant,
            &name,
            json!({"question": 5}),
            StartOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Schema { .. }), "{refused}");
    let missing = s
        .engine
        .start(s.tenant, &name, json!({}), StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("`question` is required"),
        "{missing}"
    );
}

#[tokio::test]
async fn branch_map_and_timer() {
    let s = setup().await;
    let spec = r#"
name: fan
inputs:
  items: {type: array}
nodes:
  - id: size
    kind: branch
    cases:
      - when: "input['items'] | length > 3"
        goto: many
    default: few
  - id: few
    kind: tool
    tool: notify
    next: end
  - id: many
    kind: map
    over: "input['items']"
    concurrency: 2
    node: {kind: tool, tool: double, args: {x: "{{ item }}"}}
  - id: pause
    kind: wait
    duration_ms: 30
"#;
    let (run, state) = s.run(spec, json!({"items": [1, 2, 3, 4, 5]})).await;
    assert_eq!(state.status, RunStatus::Completed, "{:?}", state.error);
    assert_eq!(state.outputs["many"], json!([2, 4, 6, 8, 10]));
    assert_eq!(state.output.unwrap(), json!({"waited_ms": 30}));
    assert_eq!(s.script.max_in_flight.load(Ordering::SeqCst), 2);
    assert!(!s.script.called().contains(&"notify".to_owned()));
    s.replays_exactly(run, Some("branch-map-timer")).await;

    let (_, state) = s.run(spec, json!({"items": [1]})).await;
    assert_eq!(state.status, RunStatus::Completed);
    assert!(state.outputs.contains_key("few"));
    assert!(!state.outputs.contains_key("many"));
}

#[tokio::test]
async fn retries_then_succeeds_or_fails_for_good() {
    let s = setup().await;
    let spec = r#"
name: retry
defaults:
  retry: {max_attempts: 3, backoff_ms: 5}
nodes:
  - id: shaky
    kind: tool
    tool: flaky
"#;
    let (run, state) = s.run(spec, Value::Null).await;
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(state.steps["shaky"].attempt, 3);
    s.replays_exactly(run, None).await;

    let spec = spec
        .replace("max_attempts: 3", "max_attempts: 2")
        .replace("name: retry", "name: retry2");
    let (_, state) = s.run(&spec, Value::Null).await;
    assert_eq!(state.status, RunStatus::Failed);
    assert!(
        state
            .error
            .as_deref()
            .unwrap()
            .contains("after 2 attempt(s): flaky attempt 2"),
        "{:?}",
        state.error
    );
}

const SAGA: &str = r#"
name: trip
nodes:
  - id: reserve
    kind: tool
    tool: reserve
    compensate: {kind: tool, tool: release, args: {what: "{{ output.done }}"}}
  - id: charge
    kind: tool
    tool: charge
    compensate: {kind: tool, tool: refund}
  - id: confirm
    kind: tool
    tool: broken
"#;

#[tokio::test]
async fn a_failed_saga_compensates_completed_steps_in_reverse_order() {
    let s = setup().await;
    let (run, state) = s.run(SAGA, Value::Null).await;
    assert_eq!(state.status, RunStatus::Failed);
    assert_eq!(
        s.script.called(),
        ["reserve", "charge", "broken", "refund", "release"]
    );
    assert_eq!(
        state.compensations,
        ["charge~compensate", "reserve~compensate"]
    );
    // The compensation saw the output of the step it undoes.
    assert_eq!(
        state.steps["reserve~compensate"].request["args"],
        json!({"what": "reserve"})
    );
    let events = s.events(run).await;
    let Some(Event::RunFailed(failed)) = events.last() else {
        panic!("the run should end failed")
    };
    assert_eq!(failed.step.as_deref(), Some("confirm"));
    assert_eq!(
        failed.compensated,
        ["charge~compensate", "reserve~compensate"]
    );
    s.replays_exactly(run, Some("saga")).await;
}

const APPROVAL: &str = r#"
name: approval
nodes:
  - id: reserve
    kind: tool
    tool: reserve
    compensate: {kind: tool, tool: release}
  - id: approve
    kind: human_input
    question: "Approve {{ steps.reserve.output.done }}?"
    schema:
      type: object
      required: [ok]
      properties: {ok: {type: boolean}}
  - id: decide
    kind: branch
    cases:
      - when: steps.approve.output.ok
        goto: charge
    default: end
  - id: charge
    kind: tool
    tool: charge
"#;

#[tokio::test]
async fn human_input_waits_for_a_valid_signal() {
    let s = setup().await;
    let name = s.register(APPROVAL).await;
    let run = s
        .engine
        .start(s.tenant, &name, Value::Null, StartOptions::default())
        .await
        .unwrap();
    let waiting = s
        .engine
        .wait(s.tenant, run, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(waiting.status, RunStatus::Running);
    assert_eq!(waiting.cursor.as_deref(), Some("approve"));
    let refused = s
        .engine
        .signal(s.tenant, run, "approve", json!({"ok": "yes"}))
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Schema { .. }), "{refused}");
    s.engine
        .signal(s.tenant, run, "approve", json!({"ok": true}))
        .await
        .unwrap();
    let state = s
        .engine
        .wait(s.tenant, run, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(state.status, RunStatus::Completed, "{:?}", state.error);
    assert_eq!(s.script.called(), ["reserve", "charge"]);
    s.replays_exactly(run, Some("approval")).await;
}

#[tokio::test]
async fn cancelling_a_waiting_run_compensates_then_ends_cancelled() {
    let s = setup().await;
    let name = s.register(APPROVAL).await;
    let run = s
        .engine
        .start(s.tenant, &name, Value::Null, StartOptions::default())
        .await
        .unwrap();
    let waiting = s
        .engine
        .wait(s.tenant, run, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(waiting.cursor.as_deref(), Some("approve"));
    s.engine
        .cancel(s.tenant, run, "changed my mind")
        .await
        .unwrap();
    let state = s
        .engine
        .wait(s.tenant, run, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(state.status, RunStatus::Cancelled);
    assert_eq!(s.script.called(), ["reserve", "release"]);
    assert_eq!(state.compensations, ["reserve~compensate"]);
    s.replays_exactly(run, None).await;
}

#[tokio::test]
async fn a_subworkflow_runs_as_a_child_run() {
    let s = setup().await;
    s.register(
        r#"
name: child
inputs: {n: {type: integer}}
outputs: {doubled: {value: steps.twice.output}}
nodes:
  - id: twice
    kind: tool
    tool: double
    args: {x: "{{ input.n }}"}
"#,
    )
    .await;
    let (run, state) = s
        .run(
            r#"
name: parent
nodes:
  - id: call
    kind: subworkflow
    workflow: child
    input: {n: 21}
"#,
            Value::Null,
        )
        .await;
    assert_eq!(state.status, RunStatus::Completed, "{:?}", state.error);
    let output = state.output.unwrap();
    assert_eq!(output["output"], json!({"doubled": 42}));
    let child: uuid::Uuid = serde_json::from_value(output["run_id"].clone()).unwrap();
    let child_state = s.engine.state(s.tenant, child).await.unwrap();
    assert_eq!(child_state.parent, Some((run, "call".to_owned())));
    s.replays_exactly(run, None).await;
}

#[tokio::test]
async fn a_long_run_continues_as_new_and_replays_across_segments() {
    let s = setup().await;
    let spec = r#"
name: long
limits: {segment_events: 16}
nodes:
  - id: many
    kind: map
    over: "range(20) | list"
    concurrency: 3
    node: {kind: tool, tool: double, args: {x: "{{ item }}"}}
  - id: sum
    kind: tool
    tool: add
    args: {a: "{{ steps.many.output | sum }}", b: 0}
"#;
    let (run, state) = s.run(spec, Value::Null).await;
    assert_eq!(state.status, RunStatus::Completed, "{:?}", state.error);
    assert!(state.segment >= 2, "segment {}", state.segment);
    assert_eq!(state.outputs["sum"], json!(380));
    let events = s.events(run).await;
    assert!(events.iter().any(|e| matches!(e, Event::SegmentStarted(_))));
    s.replays_exactly(run, Some("continue-as-new")).await;
}

#[tokio::test]
async fn another_tenant_cannot_see_or_signal_a_run() {
    let s = setup().await;
    let name = s.register(APPROVAL).await;
    let run = s
        .engine
        .start(s.tenant, &name, Value::Null, StartOptions::default())
        .await
        .unwrap();
    let other = TenantId::new();
    assert!(matches!(
        s.engine.state(other, run).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.engine.events(other, run).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.engine
            .signal(other, run, "approve", json!({"ok": true}))
            .await,
        Err(Error::NotFound(_))
    ));
}

#[test]
fn after_a_crash_the_interrupted_step_is_carried_out_again_under_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let tenant = TenantId::new();
    let spec = r#"
name: crashy
nodes:
  - id: first
    kind: tool
    tool: reserve
  - id: slow
    kind: tool
    tool: slow
  - id: last
    kind: tool
    tool: notify
"#;
    let script = Arc::new(Script::default());
    // The first process: its own runtime, shut down while `slow` is in flight.
    let crashed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (run, store) = {
        let script = script.clone();
        let path = path.clone();
        crashed.block_on(async move {
            let store = Arc::new(SqliteStore::open(&path).await.unwrap());
            let engine = Engine::new(store.clone(), script.clone());
            for tool in ["reserve", "slow", "notify"] {
                engine
                    .register_tool(
                        tenant,
                        &format!("name: {tool}\nurl: http://127.0.0.1:9/x\n"),
                    )
                    .await
                    .unwrap();
            }
            engine
                .register_workflow(tenant, spec, LoadOptions::default())
                .await
                .unwrap();
            let run = engine
                .start(tenant, "crashy", Value::Null, StartOptions::default())
                .await
                .unwrap();
            // Until `slow` has started (and blocks on the gate).
            for _ in 0..200 {
                if script.called().contains(&"slow".to_owned()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (run, store)
        })
    };
    assert_eq!(script.called(), ["reserve", "slow"]);
    drop(store);
    crashed.shutdown_timeout(Duration::from_secs(1));

    // The second process recovers the run; `slow` may now finish.
    script.gate.add_permits(100);
    let restarted = tokio::runtime::Runtime::new().unwrap();
    let state = restarted.block_on(async {
        let store = Arc::new(SqliteStore::open(&path).await.unwrap());
        let engine = Engine::new(store, script.clone());
        assert_eq!(engine.recover().await.unwrap(), 1);
        engine
            .wait(tenant, run, Duration::from_secs(10))
            .await
            .unwrap()
    });
    assert_eq!(state.status, RunStatus::Completed, "{:?}", state.error);
    let calls = script.calls.lock().unwrap().clone();
    let slow: Vec<&String> = calls
        .iter()
        .filter(|(n, _)| n == "slow")
        .map(|(_, k)| k)
        .collect();
    assert_eq!(
        slow.len(),
        2,
        "carried out again after the crash: {calls:?}"
    );
    assert_eq!(slow[0], slow[1], "under the same idempotency key");
    let effects = script.effects.lock().unwrap();
    assert_eq!(effects.values().filter(|e| *e == "slow").count(), 1);
    assert_eq!(effects.values().filter(|e| *e == "reserve").count(), 1);
    assert_eq!(effects.values().filter(|e| *e == "notify").count(), 1);
    // The first attempt's record is the one recovered: no second attempt was started.
    assert_eq!(state.steps["slow"].attempt, 1);
}

#[tokio::test]
async fn a_changed_decision_is_reported_as_a_divergence() {
    let s = setup().await;
    let (run, _) = s.run(THREE_STEPS, json!({"question": "why?"})).await;
    let mut events = s.events(run).await;
    // The recording says `polish` asked sim-small; the code asks sim-large.
    let at = events
        .iter()
        .position(|e| matches!(e, Event::StepStarted(s) if s.step == "polish"))
        .unwrap();
    if let Event::StepStarted(started) = &mut events[at] {
        started.request = started.request.replace("sim-large", "sim-small");
    }
    let report = replay_exact(&events);
    let divergence = report.divergence.expect("a divergence");
    assert_eq!(divergence.at, at);
}

#[test]
fn golden_episodes_replay_exactly_with_the_current_code() {
    let episodes = golden_episodes();
    for (version, path) in &episodes {
        let events = parse_episode(&std::fs::read_to_string(path).unwrap()).unwrap();
        // The folder says which engine recorded it, and so does the run.
        let Some(Event::RunStarted(started)) = events.first() else {
            panic!("{}: no RunStarted first", path.display());
        };
        assert_eq!(started.engine, *version, "{}", path.display());
        let report = replay_exact(&events);
        assert!(
            report.divergence.is_none(),
            "{} diverged: {:?}",
            path.display(),
            report.divergence
        );
        assert!(
            report.status.is_final(),
            "{}: {:?}",
            path.display(),
            report.status
        );
        assert!(report.decisions > 0);
    }
    assert!(episodes.len() >= 5, "golden episodes found: {episodes:?}");
    // Every engine version this build knows has its episodes.
    for version in run::ENGINES {
        assert!(
            episodes.iter().any(|(v, _)| *v == version),
            "no golden episodes of engine version {version}"
        );
    }
}

/// A run recorded by an engine version this build does not know is neither replayed under the
/// current logic nor driven by it: replay names the version, and the run refuses to advance.
#[test]
fn a_run_of_an_unknown_engine_version_is_neither_replayed_nor_driven() {
    let path = episodes().join("engine-1/three-steps.jsonl");
    let mut events = parse_episode(&std::fs::read_to_string(path).unwrap()).unwrap();
    let Some(Event::RunStarted(started)) = events.first_mut() else {
        panic!("no RunStarted first");
    };
    started.engine = run::ENGINE + 1;
    let report = replay_exact(&events);
    let divergence = report.divergence.expect("a divergence");
    assert!(
        divergence
            .message
            .contains(&format!("engine version {}", run::ENGINE + 1)),
        "{}",
        divergence.message
    );
    let state = run::fold(&events[..1]);
    assert_eq!(
        run::decide(&state, run::Command::Advance { now_ms: 1 }).unwrap_err(),
        run::Rejection::Engine(run::ENGINE + 1)
    );
    assert!(run::advance(&state, 1).is_empty());
}

#[test]
fn a_hostile_episode_file_is_refused_with_its_line() {
    let error = parse_episode("{\"type\": \"RunStarted\", \"schema_version\": 1, \"data\": {}}\n")
        .unwrap_err();
    assert!(error.to_string().contains("line 1"), "{error}");
    let error = parse_episode("\n\nnot json\n").unwrap_err();
    assert!(error.to_string().contains("line 3"), "{error}");
    let error = parse_episode("{\"type\": \"NoSuchEvent\", \"schema_version\": 1, \"data\": {}}")
        .unwrap_err();
    assert!(error.to_string().contains("NoSuchEvent"), "{error}");
}

#[tokio::test]
async fn guards_fail_a_run_cleanly_instead_of_stranding_it() {
    let s = setup().await;
    // An output too large to record fails its step (not the log), and compensation runs.
    let (_, state) = s
        .run(
            r#"
name: big
nodes:
  - id: reserve
    kind: tool
    tool: reserve
    compensate: {kind: tool, tool: release}
  - id: fetch
    kind: tool
    tool: huge
"#,
            Value::Null,
        )
        .await;
    assert_eq!(state.status, RunStatus::Failed);
    assert!(
        state
            .error
            .as_deref()
            .unwrap()
            .contains("a step may record at most"),
        "{:?}",
        state.error
    );
    assert_eq!(state.compensations, ["reserve~compensate"]);

    // A workflow that calls itself stops at the nesting limit.
    let (_, state) = s
        .run(
            "name: again\nnodes:\n  - id: call\n    kind: subworkflow\n    workflow: again\n",
            Value::Null,
        )
        .await;
    assert_eq!(state.status, RunStatus::Failed);
    assert!(
        state
            .error
            .as_deref()
            .unwrap()
            .contains("nested deeper than 8"),
        "{:?}",
        state.error
    );

    // The step budget: the third step is refused, and the first is compensated.
    let (_, state) = s
        .run(
            r#"
name: budget
limits: {max_steps: 2}
nodes:
  - id: a
    kind: tool
    tool: reserve
    compensate: {kind: tool, tool: release}
  - id: b
    kind: tool
    tool: notify
  - id: c
    kind: tool
    tool: notify
"#,
            Value::Null,
        )
        .await;
    assert_eq!(state.status, RunStatus::Failed);
    assert!(
        state.error.as_deref().unwrap().contains("used its 2 steps"),
        "{:?}",
        state.error
    );
    assert_eq!(state.compensations, ["a~compensate"]);
}

#[tokio::test]
async fn cancelling_a_parent_cancels_its_child_run() {
    let s = setup().await;
    s.register("name: waits\nnodes:\n  - id: answer\n    kind: human_input\n")
        .await;
    let name = s
        .register("name: outer\nnodes:\n  - id: call\n    kind: subworkflow\n    workflow: waits\n")
        .await;
    let run = s
        .engine
        .start(s.tenant, &name, Value::Null, StartOptions::default())
        .await
        .unwrap();
    let child = switchyard_workflows::engine::child_id(run, "call", 1);
    for _ in 0..100 {
        if s.engine.state(s.tenant, child).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.engine
        .cancel(s.tenant, run, "no longer needed")
        .await
        .unwrap();
    let parent = s
        .engine
        .wait(s.tenant, run, Duration::from_secs(10))
        .await
        .unwrap();
    let child = s
        .engine
        .wait(s.tenant, child, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(child.status, RunStatus::Cancelled);
    assert_eq!(parent.status, RunStatus::Cancelled);
}
