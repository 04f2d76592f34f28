//! Durable workflows through the real binary: a three-step workflow (LLM → tool → LLM) over
//! HTTP with the server SIGKILLed while its slow tool runs, then restarted: the run finishes and
//! every step's effect is applied once. Then the recorded episode is replayed exactly and
//! re-executed against `sim-large`, the same spec runs with `switchyard run`, and an eval set
//! whose scores on the simulated models are known runs on two models and is compared.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

/// What the tool server saw: every call (path, idempotency key). A tool that applies its effect
/// once per idempotency key (as the `Idempotency-Key` contract asks) applies each step once when
/// every repeated call carries the same key.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) calls: Vec<(String, String)>,
}

/// A tool server on a random port: `/record` answers at once; `/slow` takes `slow_ms` the first
/// time it is called.
async fn tool_server(slow_ms: u64) -> (String, Arc<Mutex<Seen>>) {
    tool_server_with(slow_ms, false).await
}

/// The same; with `per_key`, `/slow` takes `slow_ms` the first time each idempotency key calls.
pub(crate) async fn tool_server_with(slow_ms: u64, per_key: bool) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let seen = shared.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut reader = BufReader::new(read);
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (mut length, mut key) = (0_usize, String::new());
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).await.unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap(),
                        "idempotency-key" => key = value.trim().to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).await.unwrap();
                let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let first = {
                    let mut seen = seen.lock().unwrap();
                    seen.calls.push((path.clone(), key.clone()));
                    seen.calls
                        .iter()
                        .filter(|(p, k)| *p == path && (!per_key || *k == key))
                        .count()
                        == 1
                };
                if path == "/slow" && first {
                    tokio::time::sleep(Duration::from_millis(slow_ms)).await;
                }
                let answer = json!({"tool": path, "args": args}).to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = write.write_all(response.as_bytes()).await;
            });
        }
    });
    (base, seen)
}

const SPEC: &str = r#"
name: support
description: draft an answer, look the customer up, polish the answer
inputs:
  question: {type: string}
  customer: {type: string, default: "c-1"}
outputs:
  answer: {value: steps.polish.output, type: string}
  record: {value: steps.record.output}
nodes:
  - id: draft
    kind: llm
    model: sim-small
    prompt: "Draft an answer to: {{ input.question }}"
  - id: record
    kind: tool
    tool: record
    args: {customer: "{{ input.customer }}", draft: "{{ steps.draft.output }}"}
  - id: lookup
    kind: tool
    tool: slow
    args: {customer: "{{ input.customer }}"}
  - id: polish
    kind: llm
    model: sim-small
    prompt: "Polish, for {{ steps.lookup.output.args.customer }}: {{ steps.draft.output }}"
"#;

fn tool_yaml(name: &str, base: &str) -> String {
    format!("name: {name}\nurl: {base}/{name}\ntimeout_ms: 30000\n")
}

pub(crate) fn switchyard(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_DATA_DIR", dir)
        .env_remove("SWITCHYARD_DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn post(
    client: &reqwest::Client,
    server: &Server,
    key: &str,
    path: &str,
    body: String,
) -> (u16, Value) {
    let response = client
        .post(server.url(path))
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

// Multi-threaded: the replay CLI runs as a blocking child process beside the tool server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_sigkill_and_each_step_takes_effect_once() {
    let dir = data_dir();
    let (tools, seen) = tool_server(2_500).await;
    let env = [("SWITCHYARD_ADMIN_TOKEN", TOKEN)];
    let server = Server::start_with(&dir, &env);
    let (_, key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    for tool in ["record", "slow"] {
        let (status, body) =
            post(&client, &server, &key, "/v1/tools", tool_yaml(tool, &tools)).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = post(&client, &server, &key, "/v1/workflows", SPEC.to_owned()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "support");

    // Hostile input at the boundary: a spec with a cycle is refused with its line.
    let (status, body) = post(
        &client,
        &server,
        &key,
        "/v1/workflows",
        "name: bad\nnodes:\n  - id: a\n    kind: llm\n    prompt: hi\n    next: a\n".to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_spec");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("line 3") && message.contains("cycle"),
        "{message}"
    );

    let (status, started) = post(
        &client,
        &server,
        &key,
        "/v1/workflows/support/runs",
        json!({"input": {"question": "Where is my order?"}}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let run = started["run_id"].as_str().unwrap().to_owned();

    // Until the slow tool has been called, then SIGKILL mid-step.
    for _ in 0..200 {
        if seen.lock().unwrap().calls.iter().any(|(p, _)| p == "/slow") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen.lock().unwrap().calls.iter().any(|(p, _)| p == "/slow"));
    drop(server);

    // Restarted on the same data: the run is recovered and finishes.
    let server = Server::start_with(&dir, &env);
    let state: Value = client
        .get(server.url(&format!("/v1/runs/{run}?wait_ms=30000")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["status"], "completed", "{state}");
    assert_eq!(state["output"]["record"]["args"]["customer"], "c-1");
    assert!(state["output"]["answer"].as_str().unwrap().len() > 1);

    // Every step's effect once: `record` was not called again, `slow` was carried out again
    // under the same idempotency key, and the tool applied it once.
    {
        let seen = seen.lock().unwrap();
        let calls = |path: &str| -> Vec<String> {
            seen.calls
                .iter()
                .filter(|(p, _)| p == path)
                .map(|(_, k)| k.clone())
                .collect()
        };
        assert_eq!(calls("/record").len(), 1, "{:?}", seen.calls);
        let slow = calls("/slow");
        assert_eq!(slow.len(), 2, "{:?}", seen.calls);
        assert_eq!(slow[0], slow[1]);
        assert!(slow[0].starts_with(&run));
    }

    // The run's two model calls were billed once each, through the gateway's inference path.
    let events: Value = client
        .get(server.url(&format!("/v1/runs/{run}/events")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let completed: Vec<&Value> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "StepCompleted" && e["data"]["inference_id"].is_string())
        .collect();
    assert_eq!(completed.len(), 2);
    assert!(
        completed
            .iter()
            .all(|e| e["data"]["cost_micros"].as_u64().unwrap() > 0)
    );

    // The read model of runs (the `workflows` projector) agrees: one run, completed, four
    // steps started (the interrupted one was carried out again under its first start), billed.
    let mut summary = Value::Null;
    for _ in 0..100 {
        summary = client
            .get(server.url("/v1/analytics/workflows"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if summary["data"][0]["completed"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = &summary["data"][0];
    assert_eq!(row["workflow"], "support", "{summary}");
    assert_eq!(row["runs"], 1);
    assert_eq!(row["completed"], 1);
    assert_eq!(row["steps"], 4);
    assert!(row["cost_micros"].as_i64().unwrap() > 0);

    // Metrics of the recovered run.
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchyard_workflow_runs_ended_total{status=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_workflow_steps_total{kind=\"tool\",outcome=\"completed\"}")
    );

    // Another tenant does not see the run.
    let (_, other_key, _) = tenant_with_key(&server).await;
    let hidden = client
        .get(server.url(&format!("/v1/runs/{run}")))
        .bearer_auth(&other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status().as_u16(), 404);

    // The episode, replayed exactly with the CLI: no divergence.
    let episode = client
        .get(server.url(&format!("/v1/runs/{run}/events?format=jsonl")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    drop(server);
    let file = dir.join("episode.jsonl");
    std::fs::write(&file, &episode).unwrap();
    let (ok, out, err) = switchyard(&dir, &["replay", file.to_str().unwrap(), "--json"]);
    assert!(ok, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(report["divergence"].is_null(), "{report}");
    assert_eq!(report["status"], "completed");

    // Re-executed against sim-large: a new episode beside the old, tool calls answered from the
    // recording (the tool server sees no new call).
    let calls_before = seen.lock().unwrap().calls.len();
    let (ok, out, err) = switchyard(&dir, &["replay", &run, "--model", "sim-large"]);
    assert!(ok, "{out}\n{err}");
    let compared: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(compared["replay"]["status"], "completed", "{compared}");
    assert_ne!(compared["replay"]["run_id"], compared["original"]["run_id"]);
    assert_eq!(
        compared["replay"]["output"]["record"],
        compared["original"]["output"]["record"]
    );
    assert!(
        compared["replay"]["cost_micros"].as_u64() > compared["original"]["cost_micros"].as_u64(),
        "sim-large costs more: {compared}"
    );
    assert_eq!(seen.lock().unwrap().calls.len(), calls_before);

    // Re-executed under another routing policy: the model nodes route with `auto`, and the
    // static policy sends them to sim-large.
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "kind = \"static\"\nmodel = \"sim-large\"\n").unwrap();
    let (ok, out, err) = switchyard(
        &dir,
        &["replay", &run, "--policy", policy.to_str().unwrap()],
    );
    assert!(ok, "{out}\n{err}");
    let rerouted: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rerouted["replay"]["status"], "completed", "{rerouted}");
    // Its model calls were routed by the overriding policy (logged as such, with propensities).
    let new_run = rerouted["replay"]["run_id"].as_str().unwrap().to_owned();
    let store = switchyard_events::SqliteStore::open(dir.join("events.db"))
        .await
        .unwrap();
    let events = switchyard_events::EventStore::read_all(
        &store,
        switchyard_events::Scope::All,
        switchyard_events::GlobalPosition::START,
        100_000,
    )
    .await
    .unwrap();
    let policies: Vec<String> = events
        .iter()
        .filter(|e| e.metadata.correlation_id.as_deref() == Some(new_run.as_str()))
        .filter_map(|e| {
            let event = switchyard_events::Event::from_recorded(e).ok()?;
            event.inference_route().map(|route| route.policy.clone())
        })
        .collect();
    assert_eq!(
        policies,
        ["override:static", "override:static"],
        "{rerouted}"
    );
    drop(store);
    let (ok, out, err) = switchyard(
        &dir,
        &[
            "replay",
            &run,
            "--policy",
            not_a_policy(&dir).to_str().unwrap(),
        ],
    );
    assert!(!ok, "a file that is not a policy is refused: {out}");
    assert!(err.contains("is not a routing policy"), "{err}");
}

fn not_a_policy(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("not-a-policy.toml");
    std::fs::write(&path, "kind = \"telepathy\"\n").unwrap();
    path
}

// Multi-threaded: the CLI runs as a blocking child process while the tool server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_a_spec_and_evals_two_models() {
    let dir = data_dir();
    let (tools, seen) = tool_server(10).await;
    let spec = dir.join("support.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    for tool in ["record", "slow"] {
        std::fs::write(dir.join(format!("{tool}.yaml")), tool_yaml(tool, &tools)).unwrap();
    }
    let record = dir.join("record.yaml");
    let slow = dir.join("slow.yaml");
    let (ok, out, err) = switchyard(
        &dir,
        &[
            "run",
            spec.to_str().unwrap(),
            "--tool",
            record.to_str().unwrap(),
            "--tool",
            slow.to_str().unwrap(),
            "--input",
            r#"{"question": "hello?"}"#,
        ],
    );
    assert!(ok, "{out}\n{err}");
    let state: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(state["status"], "completed");
    // The steps were shown as they happened.
    for step in ["draft", "record", "lookup", "polish"] {
        assert!(err.contains(&format!("✓ {step}")), "{err}");
    }
    // For people: no JSON log line among the live steps unless RUST_LOG asks for them.
    assert!(
        !err.lines().any(|line| line.trim_start().starts_with('{')),
        "{err}"
    );
    assert_eq!(seen.lock().unwrap().calls.len(), 2);

    // An eval whose scores on the simulated models are known: the simulator's words are
    // lower-case (the regex tasks pass), never JSON (the schema tasks fail), and share no word
    // with the judge tasks' reference (the simulated judge scores the overlap: 0).
    let tasks = dir.join("sim.jsonl");
    std::fs::write(
        &tasks,
        [
            r#"{"id": "words-1", "input": "say something", "scorer": {"type": "regex", "pattern": "^[a-z]+( [a-z]+)*$"}}"#,
            r#"{"id": "words-2", "input": "and again", "scorer": {"type": "regex", "pattern": "^[a-z]+( [a-z]+)*$"}}"#,
            r#"{"id": "words-3", "input": {"prompt": "once more"}, "scorer": {"type": "regex", "pattern": "^[a-z]+( [a-z]+)*$"}}"#,
            r#"{"id": "json-1", "input": "an object please", "scorer": {"type": "json_schema", "schema": {"type": "object"}}}"#,
            r#"{"id": "judged-1", "input": "name a colour", "expected": "vermilion cerulean", "scorer": {"type": "judge", "model": "sim-large"}}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let small = dir.join("small");
    let (ok, out, err) = switchyard(
        &dir,
        &[
            "eval",
            tasks.to_str().unwrap(),
            "--model",
            "sim-small",
            "--out",
            small.to_str().unwrap(),
            "--quiet",
        ],
    );
    assert!(ok, "{out}\n{err}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("small.json")).unwrap()).unwrap();
    assert_eq!(report["aggregate"]["tasks"], 5);
    assert_eq!(report["aggregate"]["passed"], 3, "{report}");
    assert!((report["aggregate"]["mean_score"].as_f64().unwrap() - 0.6).abs() < 1e-9);
    assert!(
        report["aggregate"]["judge_cost_micros"].as_u64().unwrap() > 0,
        "the judge went through the gateway"
    );
    let judged = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "judged-1")
        .unwrap();
    assert_eq!(judged["score"], 0.0);
    assert!(
        judged["episode"].is_string(),
        "every eval task is a recorded run"
    );
    assert!(
        std::fs::read_to_string(dir.join("small.md"))
            .unwrap()
            .contains("words-1")
    );

    let large = dir.join("large");
    let (ok, out, err) = switchyard(
        &dir,
        &[
            "eval",
            tasks.to_str().unwrap(),
            "--model",
            "sim-large",
            "--out",
            large.to_str().unwrap(),
            "--compare",
            dir.join("small.json").to_str().unwrap(),
            "--quiet",
        ],
    );
    assert!(ok, "no task regressed: {out}\n{err}");
    let comparison = std::fs::read_to_string(dir.join("large.compare.md")).unwrap();
    assert!(
        comparison.contains("model sim-small") && comparison.contains("model sim-large"),
        "{comparison}"
    );

    // An eval task's episode replays exactly.
    let episode = judged["episode"].as_str().unwrap();
    let (ok, out, err) = switchyard(&dir, &["replay", episode, "--json"]);
    assert!(ok, "{out}\n{err}");
}

/// The workflow endpoints answer hostile input with a clear 4xx, never a 5xx.
#[tokio::test]
async fn hostile_workflow_requests_get_a_clear_4xx() {
    let dir = data_dir();
    let server = Server::start_with(&dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let (tenant, key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, body: Vec<u8>, key: &str| {
        client
            .request(method, server.url(path))
            .bearer_auth(key)
            .body(body)
            .send()
    };
    let post_method = reqwest::Method::POST;
    let get_method = reqwest::Method::GET;
    let bomb = format!(
        "name: bomb\na: &a [x, x, x, x, x, x, x, x, x]\n{}nodes: [{{id: a, kind: llm, prompt: hi}}]\n",
        (b'b'..=b'j')
            .map(|c| {
                let prev = (c - 1) as char;
                let c = c as char;
                format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n")
            })
            .collect::<String>()
    );
    let cases: Vec<(reqwest::Method, String, Vec<u8>, u16, &str)> = vec![
        (
            post_method.clone(),
            "/v1/workflows".into(),
            vec![0xff, 0xfe, 0x00],
            400,
            "invalid_request",
        ),
        (
            post_method.clone(),
            "/v1/workflows".into(),
            bomb.into_bytes(),
            400,
            "invalid_spec",
        ),
        (
            post_method.clone(),
            "/v1/workflows".into(),
            b"- just\n- a list\n".to_vec(),
            400,
            "invalid_spec",
        ),
        (
            post_method.clone(),
            "/v1/workflows".into(),
            "name: big\ndescription: "
                .bytes()
                .chain(std::iter::repeat_n(b'x', 1_100_000))
                .collect(),
            413,
            "payload_too_large",
        ),
        (
            post_method.clone(),
            "/v1/workflows?envv=prod".into(),
            b"name: x\n".to_vec(),
            400,
            "invalid_request",
        ),
        (
            post_method.clone(),
            "/v1/tools".into(),
            b"name: t\nurl: file:///etc/passwd\n".to_vec(),
            400,
            "invalid_spec",
        ),
        (
            post_method.clone(),
            "/v1/fragments".into(),
            b"fragment: f\nnode: {kind: llm, promt: x}\n".to_vec(),
            400,
            "invalid_spec",
        ),
        (
            post_method.clone(),
            "/v1/workflows/nope/runs".into(),
            b"{}".to_vec(),
            404,
            "not_found",
        ),
        (
            post_method.clone(),
            "/v1/workflows/nope/runs".into(),
            b"{not json".to_vec(),
            400,
            "invalid_json",
        ),
        (
            post_method.clone(),
            "/v1/workflows/nope/runs".into(),
            br#"{"inputs": {}}"#.to_vec(),
            422,
            "invalid_request",
        ),
        (
            post_method.clone(),
            "/v1/workflows/nope/runs".into(),
            br#"{"overrides": {"temperature": 2}}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            post_method.clone(),
            "/v1/workflows/nope/runs".into(),
            br#"{"overrides": {"policy": {"kind": "telepathy"}}}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            get_method.clone(),
            "/v1/runs/not-a-uuid".into(),
            Vec::new(),
            404,
            "not_found",
        ),
        (
            get_method.clone(),
            format!("/v1/runs/{}", uuid::Uuid::now_v7()),
            Vec::new(),
            404,
            "not_found",
        ),
        (
            get_method.clone(),
            format!("/v1/runs/{}?wait_ms=abc", uuid::Uuid::now_v7()),
            Vec::new(),
            400,
            "invalid_request",
        ),
        (
            post_method.clone(),
            format!("/v1/runs/{}/signals", uuid::Uuid::now_v7()),
            br#"{"name": "Bad Name!"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            post_method.clone(),
            format!("/v1/runs/{}/signals", uuid::Uuid::now_v7()),
            br#"{"name": "ok"}"#.to_vec(),
            404,
            "not_found",
        ),
        (
            post_method.clone(),
            format!("/v1/runs/{}/cancel", uuid::Uuid::now_v7()),
            br#"{"reason": 5}"#.to_vec(),
            422,
            "invalid_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let response = send(method.clone(), &path, body, &key).await.unwrap();
        let got = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{method} {path}: {answer}");
        assert!(answer["error"]["request_id"].is_string(), "{answer}");
    }

    // A key without the `workflows` scope.
    let scoped: Value = client
        .post(server.url(&format!("/v1/admin/tenants/{tenant}/keys")))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "inference only", "scopes": ["inference"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let scoped = scoped["key"].as_str().unwrap();
    let refused = send(get_method.clone(), "/v1/workflows", Vec::new(), scoped)
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);

    // An ended run refuses signals and cancellation with 409; a bad events format is a 400.
    let (status, _) = post(
        &client,
        &server,
        &key,
        "/v1/workflows",
        "name: one\nnodes:\n  - id: w\n    kind: wait\n    duration_ms: 1\n".to_owned(),
    )
    .await;
    assert_eq!(status, 201);
    let run: Value = client
        .post(server.url("/v1/workflows/one/runs"))
        .bearer_auth(&key)
        .json(&json!({"wait_ms": 10000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    let id = run["run_id"].as_str().unwrap();
    for (path, body) in [
        (
            format!("/v1/runs/{id}/signals"),
            br#"{"name": "go"}"#.to_vec(),
        ),
        (format!("/v1/runs/{id}/cancel"), Vec::new()),
    ] {
        let response = send(post_method.clone(), &path, body, &key).await.unwrap();
        assert_eq!(response.status().as_u16(), 409, "{path}");
    }
    let response = send(
        get_method,
        &format!("/v1/runs/{id}/events?format=xml"),
        Vec::new(),
        &key,
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    // A tool on a link-local address (a cloud's metadata endpoint), in any of its forms, or on
    // another metadata address, is never called.
    for (i, url) in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:0.0.0.0]/",
    ]
    .into_iter()
    .enumerate()
    {
        let (status, _) = post(
            &client,
            &server,
            &key,
            "/v1/tools",
            format!("name: metadata{i}\nurl: {url}\nmethod: GET\n"),
        )
        .await;
        assert_eq!(status, 201, "{url}");
        let (status, _) = post(
            &client,
            &server,
            &key,
            "/v1/workflows",
            format!("name: peek{i}\nnodes:\n  - id: peek\n    kind: tool\n    tool: metadata{i}\n"),
        )
        .await;
        assert_eq!(status, 201, "{url}");
        let run: Value = client
            .post(server.url(&format!("/v1/workflows/peek{i}/runs")))
            .bearer_auth(&key)
            .json(&json!({"wait_ms": 10000}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(run["status"], "failed", "{url}: {run}");
        assert!(
            run["error"].as_str().unwrap().contains("may not reach"),
            "{url}: {run}"
        );
    }
}

/// One node killed (`kill -9`) while every run's second model step is in flight: after the
/// restart each run completes, and each model step is one inference in the log and one line
/// on the tenant's bill (issue 15, item 5: 96 two-step runs used to give 193–194 inferences,
/// all billed). The step carried out again after the crash has the same inference id (run,
/// step and attempt), so the pipeline answers it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_step_interrupted_by_a_kill_is_one_inference_billed_once() {
    use switchyard_events::{Event, EventStore, GlobalPosition, Scope, SqliteStore};

    const RUNS: usize = 6;
    let dir = data_dir();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "[[providers]]\nname = \"sim\"\nkind = \"sim\"\n\
         [[models]]\nname = \"sim-small\"\nprovider = \"sim\"\ninput_usd_per_million = \"1\"\nsim = { latency_ms = 0 }\n\
         [[models]]\nname = \"sim-slow\"\nprovider = \"sim\"\ninput_usd_per_million = \"1\"\nsim = { latency_ms = 2000 }\n",
    )
    .unwrap();
    let env = [
        ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
        ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
    ];
    let server = Server::start_with(&dir, &env);
    let (_, key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let spec = "name: two-models\nnodes:\n  - id: draft\n    kind: llm\n    model: sim-small\n    prompt: \"Q: {{ input.q }}\"\n  - id: polish\n    kind: llm\n    model: sim-slow\n    prompt: \"Polish: {{ steps.draft.output }}\"\n";
    let (status, body) = post(&client, &server, &key, "/v1/workflows", spec.to_owned()).await;
    assert_eq!(status, 201, "{body}");
    let mut runs = Vec::new();
    for i in 0..RUNS {
        let (status, started) = post(
            &client,
            &server,
            &key,
            "/v1/workflows/two-models/runs",
            json!({"input": {"q": format!("question {i}")}}).to_string(),
        )
        .await;
        assert_eq!(status, 201, "{started}");
        runs.push(started["run_id"].as_str().unwrap().to_owned());
    }
    // Until every run's slow step has started (and none can have finished), then SIGKILL.
    let events = |dir: std::path::PathBuf| async move {
        let store = SqliteStore::open(&dir.join("events.db")).await.unwrap();
        store
            .read_all(Scope::All, GlobalPosition::START, 100_000)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| Event::from_recorded(&e).ok())
            .collect::<Vec<Event>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let slow_started = events(dir.clone())
            .await
            .iter()
            .filter(|e| matches!(e, Event::StepStarted(s) if s.node == "polish"))
            .count();
        if slow_started == RUNS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{slow_started} of {RUNS} slow steps started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(server);
    let before = events(dir.clone()).await;
    let completed_before = before
        .iter()
        .filter(|e| matches!(e, Event::StepCompleted(s) if s.step == "polish"))
        .count();
    assert!(
        completed_before < RUNS,
        "the kill came after the slow steps"
    );

    let server = Server::start_with(&dir, &env);
    for run in &runs {
        let state = crate::cluster::ended(&client, &server, &key, run).await;
        assert_eq!(state["status"], "completed", "{state}");
    }
    // The billing feed bills the log in order, so once the last line is there the count is
    // final: a step billed twice would have its second line before it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (inferences, billed) = loop {
        let after = events(dir.clone()).await;
        let count = |f: fn(&Event) -> bool| after.iter().filter(|e| f(e)).count();
        let inferences = count(|e| matches!(e, Event::InferenceCompleted(_)));
        let billed = count(|e| matches!(e, Event::UsageRecorded(_)));
        if billed >= 2 * RUNS || std::time::Instant::now() > deadline {
            break (inferences, billed);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(server);
    assert_eq!(inferences, 2 * RUNS, "one inference per model step");
    assert_eq!(billed, 2 * RUNS, "one bill line per model step");
}

/// `switchyard eval` measures a simulated model's quality from outside (issue 16, item 1):
/// on 300 arithmetic tasks with the exact scorer, each default simulated model passes about
/// the share its hidden `quality` knob says (0.55 and 0.85), no secret channel involved.
#[test]
fn an_exact_eval_of_arithmetic_measures_the_simulators_quality() {
    let dir = data_dir();
    let tasks = dir.join("arith.jsonl");
    let lines: Vec<String> = (0..300)
        .map(|i| {
            let (a, b) = (i * 7 % 89 + 1, i * 11 % 61 + 2);
            json!({"id": format!("t{i}"), "input": format!("What is {a} + {b}? Answer with the number only."),
                   "expected": (a + b).to_string(), "scorer": "exact"})
            .to_string()
        })
        .collect();
    std::fs::write(&tasks, lines.join("\n")).unwrap();
    for (model, quality) in [("sim-small", 0.55), ("sim-large", 0.85)] {
        let out = dir.join(model);
        let (ok, stdout, stderr) = switchyard(
            &dir,
            &[
                "eval",
                tasks.to_str().unwrap(),
                "--model",
                model,
                "--out",
                out.to_str().unwrap(),
                "--quiet",
            ],
        );
        assert!(ok, "{stdout}\n{stderr}");
        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{model}.json"))).unwrap(),
        )
        .unwrap();
        let passed = report["aggregate"]["passed"].as_f64().unwrap() / 300.0;
        // Binomial: 3 standard deviations at n = 300 are at most 0.087.
        assert!(
            (passed - quality).abs() < 0.087,
            "{model}: passed {passed}, quality {quality}"
        );
    }
}
