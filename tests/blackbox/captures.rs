//! Request capture (issue 19, item 4) on the real binary: a tenant that sets `capture` has its
//! inferences kept as its guardrails redacted them; `switchyard dataset export` prints them as
//! an eval task set, `switchyard replay` re-runs that set against another model,
//! `switchyard dataset delete` removes them (an event), and retention sweeps them.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_events::{Event, EventStore, Scope, StreamId, StreamVersion};

use crate::gateway::{chat, sse_data};
use crate::server::{Mock, Server, TOKEN, data_dir, tenant_with_key};

fn config(mock: &Mock) -> String {
    format!(
        "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [[models]]\nname = \"mock-echo\"\nprovider = \"mock\"\n",
        mock.base
    )
}

fn start(dir: &std::path::Path, config: &str) -> Server {
    crate::gateway::start_env(dir, config, &[("SWITCHYARD_CAPTURE_SWEEP_MS", "200")])
}

async fn set(server: &Server, tenant: &str, key: &str, value: Option<Value>) -> reqwest::Response {
    reqwest::Client::new()
        .put(server.url(&format!("/v1/admin/tenants/{tenant}/settings/{key}")))
        .bearer_auth(TOKEN)
        .json(&json!({"value": value.map(|v| v.to_string())}))
        .send()
        .await
        .unwrap()
}

/// Runs the binary; its stdout when it succeeded.
fn switchyard(env: &[(&str, &str)], args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command.args(args).env("SWITCHYARD_ADMIN_TOKEN", TOKEN);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn export(server: &Server, tenant: &str, raw: bool) -> Vec<Value> {
    let mut args = vec!["dataset", "export", "--tenant", tenant];
    if raw {
        args.push("--raw");
    }
    switchyard(&[("SWITCHYARD_SERVER", &server.base)], &args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The export once it holds `n` lines (captures are kept after the answer, on a task).
async fn export_until(server: &Server, tenant: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let lines = export(server, tenant, false);
        if lines.len() == n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the export never held {n} captures");
}

async fn capture_events(dir: &std::path::Path, tenant: &str) -> Vec<Event> {
    let store = switchyard_events::store::sqlite::SqliteStore::open(&dir.join("events.db"))
        .await
        .unwrap();
    let stream = StreamId::parse(format!("captures-{tenant}")).unwrap();
    store
        .read_stream(Scope::All, &stream, StreamVersion::NONE, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|e| Event::from_recorded(e).unwrap())
        .collect()
}

#[tokio::test]
async fn captured_inferences_are_redacted_exported_replayed_and_deleted() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock));
    let (tenant, key, _) = tenant_with_key(&server).await;
    let (other, other_key, _) = tenant_with_key(&server).await;

    // A policy that does not parse is refused with the reason, and nothing changes.
    for bad in [
        json!({"retention": "forever"}),
        json!({"retention": "0d"}),
        json!({"max_bytes": 0}),
        json!({"keep": true}),
    ] {
        let response = set(&server, &tenant, "capture", Some(bad.clone())).await;
        assert_eq!(response.status(), 422, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("capture"),
            "{body}"
        );
    }
    // Hostile export and deletion parameters: a clear 400, nothing deleted.
    for query in ["since=yesterday", "format=csv", "limit=0", "surprise=1"] {
        let response = reqwest::Client::new()
            .get(server.url(&format!("/v1/admin/tenants/{tenant}/captures?{query}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
    }
    let response = reqwest::Client::new()
        .delete(server.url(&format!("/v1/admin/tenants/{tenant}/captures?before=soon")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let pii = json!({"pii": {"kinds": ["email"], "stages": "input"}});
    assert_eq!(
        set(&server, &tenant, "guardrails", Some(pii))
            .await
            .status(),
        200
    );
    let capture = json!({"retention": "1h"});
    assert_eq!(
        set(&server, &tenant, "capture", Some(capture))
            .await
            .status(),
        200
    );

    // A whole answer and a stream; the other tenant does not capture.
    let ask =
        |text: &str| json!({"model": "mock-echo", "messages": [{"role": "user", "content": text}]});
    let response = chat(&server, &key, &ask("mail ada@example.com please")).await;
    assert_eq!(response.status(), 200);
    let answered: Value = response.json().await.unwrap();
    let mut streamed = ask("and a stream");
    streamed["stream"] = json!(true);
    let response = chat(&server, &key, &streamed).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        sse_data(&response.text().await.unwrap()).last().unwrap(),
        "[DONE]"
    );
    let response = chat(&server, &other_key, &ask("not captured")).await;
    assert_eq!(response.status(), 200);

    // The export: task lines with what the provider saw (redacted) and what the client got.
    let lines = export_until(&server, &tenant, 2).await;
    let text = serde_json::to_string(&lines).unwrap();
    assert!(!text.contains("ada@example.com"), "{text}");
    let first = &lines[0];
    assert!(
        first["input"].as_str().unwrap().starts_with("mail "),
        "{first}"
    );
    assert_eq!(
        first["expected"],
        answered["choices"][0]["message"]["content"]
    );
    assert_eq!(first["scorer"], "exact");
    assert!(
        first["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("model:mock-echo"))
    );
    let raw = export(&server, &tenant, true);
    assert_eq!(raw.len(), 2);
    assert_eq!(raw[0]["request"]["messages"][0]["role"], "user");
    assert!(raw[1]["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(
        export(&server, &other, false).is_empty(),
        "captures never cross tenants"
    );
    let events = capture_events(&dir, &tenant).await;
    assert!(matches!(
        &events[..],
        [Event::InferenceCaptured(_), Event::InferenceCaptured(_)]
    ));

    // Replay: the task set against another model, in another data dir (the sim models).
    let set_file = dir.join("tasks.jsonl");
    let tasks: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&set_file, tasks).unwrap();
    let replay_dir = data_dir();
    let report: Value = serde_json::from_str(&switchyard(
        &[("SWITCHYARD_DATA_DIR", replay_dir.to_str().unwrap())],
        &["replay", set_file.to_str().unwrap(), "--model", "sim-large"],
    ))
    .unwrap();
    assert_eq!(report["tasks"], 2, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    for result in report["results"].as_array().unwrap() {
        assert_eq!(result["model"], "sim-large", "{report}");
        assert!(
            result["replayed"].as_str().is_some_and(|a| !a.is_empty()),
            "{report}"
        );
        assert_eq!(result["same"], false, "{report}");
    }

    // Deletion: one command, one event; nothing is left to export.
    let deleted: Value = serde_json::from_str(&switchyard(
        &[("SWITCHYARD_SERVER", &server.base)],
        &["dataset", "delete", "--tenant", &tenant],
    ))
    .unwrap();
    assert_eq!(deleted["deleted"], 2);
    assert!(export(&server, &tenant, false).is_empty());
    let events = capture_events(&dir, &tenant).await;
    match events.last().unwrap() {
        Event::CapturesDeleted(gone) => {
            assert_eq!(
                (gone.reason.as_str(), gone.before_ms, gone.count),
                ("request", None, 2)
            );
        }
        other => panic!("{other:?}"),
    }
    // Capture off: nothing more is kept.
    assert_eq!(set(&server, &tenant, "capture", None).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = chat(&server, &key, &ask("after capture ends")).await;
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(export(&server, &tenant, false).is_empty());
}

#[tokio::test]
async fn retention_deletes_captures_past_their_time() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock));
    let (tenant, key, _) = tenant_with_key(&server).await;
    let capture = json!({"retention": "1s"});
    assert_eq!(
        set(&server, &tenant, "capture", Some(capture))
            .await
            .status(),
        200
    );
    let body =
        json!({"model": "mock-echo", "messages": [{"role": "user", "content": "short-lived"}]});
    assert_eq!(chat(&server, &key, &body).await.status(), 200);
    export_until(&server, &tenant, 1).await;
    // Kept a second, then swept (every 200 ms here).
    export_until(&server, &tenant, 0).await;
    for _ in 0..50 {
        let events = capture_events(&dir, &tenant).await;
        if let Some(Event::CapturesDeleted(gone)) = events.last() {
            assert_eq!((gone.reason.as_str(), gone.count), ("retention", 1));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("retention's deletion is not in the log");
}

/// Any node: capture set through one node holds on another, and what one node kept, any
/// node exports and deletes (the blobs are in the shared database, beside the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn captures_kept_by_one_node_are_exported_and_deleted_by_another() {
    let nodes = crate::cluster::cluster(2);
    let (tenant, key, _) = tenant_with_key(&nodes[0]).await;
    crate::cluster::until_key(&nodes[1], &key, 200).await;
    let capture = json!({"retention": "1d"});
    assert_eq!(
        set(&nodes[0], &tenant, "capture", Some(capture))
            .await
            .status(),
        200
    );
    let body =
        json!({"model": "sim-small", "messages": [{"role": "user", "content": "kept on node b"}]});
    // The setting reaches node b through the log: ask until it captures.
    let mut lines = Vec::new();
    for _ in 0..100 {
        assert_eq!(chat(&nodes[1], &key, &body).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        lines = export(&nodes[0], &tenant, false);
        if !lines.is_empty() {
            break;
        }
    }
    assert!(!lines.is_empty(), "node a never exported what node b kept");
    assert_eq!(lines[0]["input"], "kept on node b");
    assert_eq!(export(&nodes[1], &tenant, false), lines);
    let deleted: Value = serde_json::from_str(&switchyard(
        &[("SWITCHYARD_SERVER", &nodes[1].base)],
        &[
            "dataset",
            "delete",
            "--tenant",
            &tenant,
            "--before",
            "2999-01-01T00:00:00Z",
        ],
    ))
    .unwrap();
    assert!(deleted["deleted"].as_u64().unwrap() >= 1, "{deleted}");
    // Captures still being kept from the loop's last requests are deleted again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    switchyard(
        &[("SWITCHYARD_SERVER", &nodes[1].base)],
        &["dataset", "delete", "--tenant", &tenant],
    );
    assert!(export(&nodes[0], &tenant, false).is_empty());
}
