//! The router end to end: `auto` decisions logged with propensities and features, feedback that
//! teaches the tenant's bandit which simulated model is better, state rebuilt after a restart,
//! and off-policy evaluation of a candidate policy on the logged traffic.

use std::path::Path;

use serde_json::{Value, json};
use switchyard_events::{Event, EventStore, GlobalPosition, Scope, SqliteStore};

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

/// sim-small is judged good 20% of the time, sim-large 90%: the feedback in this test says
/// exactly that, so the right answer is known.
const CONFIG: &str = r#"
[[providers]]
name = "sim"
kind = "sim"
[[models]]
name = "sim-small"
provider = "sim"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
sim = { latency_ms = 0, quality = 0.2 }
[[models]]
name = "sim-large"
provider = "sim"
input_usd_per_million = "2.50"
output_usd_per_million = "10.00"
sim = { latency_ms = 0, quality = 0.9 }
[router]
policy = { kind = "thompson" }
min_exploration = 0.02
shadow = [{ kind = "linucb", alpha = 0.5 }]
# Quality alone, so that a reward is the feedback value and the right answers are known.
reward = { quality = 1.0, cost = 0.0, latency = 0.0 }
"#;

fn start(dir: &Path) -> Server {
    let path = dir.join("config.toml");
    std::fs::write(&path, CONFIG).unwrap();
    Server::start_with(
        dir,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", path.to_str().unwrap()),
        ],
    )
}

async fn json_of(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

#[tokio::test]
async fn feedback_teaches_the_router_the_better_model_and_survives_a_restart() {
    let dir = data_dir();
    let server = start(&dir);
    let client = reqwest::Client::new();
    let (_, key, _) = tenant_with_key(&server).await;
    let quality = |model: &str| if model == "sim-large" { 0.9 } else { 0.2 };

    let mut served = Vec::new();
    for i in 0..160 {
        let response = client
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": format!("question {i}?")}]}))
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-switchyard-inference-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = json_of(response).await;
        let model = body["model"].as_str().unwrap().to_owned();
        let reward = json_of(
            client
                .post(server.url("/v1/feedback"))
                .bearer_auth(&key)
                .json(&json!({"inference_id": id, "metric": "quality", "value": quality(&model)}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!((reward["reward"].as_f64().unwrap() - quality(&model)).abs() < 1e-9);
        served.push(model);
    }
    let late_large = served[120..].iter().filter(|m| *m == "sim-large").count();
    assert!(
        late_large >= 32,
        "Thompson sampling served sim-large {late_large} of the last 40 times"
    );

    // Every decision is logged with its propensity, its 35 features and the shadow's choice.
    let store = SqliteStore::open(&dir.join("events.db")).await.unwrap();
    let events = store
        .read_all(Scope::All, GlobalPosition::START, 100_000)
        .await
        .unwrap();
    let route = |e: &switchyard_events::RecordedEvent| {
        Event::from_recorded(e).unwrap().inference_route().cloned()
    };
    let routes: Vec<_> = events.iter().filter_map(route).collect();
    assert_eq!(routes.len(), 160);
    for route in &routes {
        assert_eq!(route.policy, "thompson");
        assert!(
            route.propensity_ppb >= 20_000_000,
            "min exploration keeps every propensity up: {route:?}"
        );
        assert_eq!(route.features_milli.len(), 23 + 6 * 2);
        assert_eq!(route.shadow.len(), 1);
        assert_eq!(route.shadow[0].policy, "linucb");
    }
    // Feedback sent twice counts once; another tenant's inference is not found; bad values fail.
    let first = events.iter().find(|e| route(e).is_some()).unwrap();
    let first_id = first
        .stream_id
        .as_str()
        .strip_prefix("inference-")
        .unwrap()
        .to_owned();
    // Another tenant's key on this real inference of the first tenant: not found. The owner's
    // feedback on it is still taken (counted once: it was given in the loop above).
    let (_, other_key, _) = tenant_with_key(&server).await;
    let stolen = client
        .post(server.url("/v1/feedback"))
        .bearer_auth(&other_key)
        .json(&json!({"inference_id": first_id, "metric": "quality", "value": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), 404);
    assert_eq!(
        stolen.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let again = client
        .post(server.url("/v1/feedback"))
        .bearer_auth(&key)
        .json(&json!({"inference_id": first_id, "metric": "quality", "value": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    for (body, status) in [
        (
            json!({"inference_id": first_id, "metric": "quality", "value": 7}),
            400,
        ),
        (
            json!({"inference_id": "nope", "metric": "quality", "value": 1}),
            404,
        ),
        (
            json!({"inference_id": uuid::Uuid::now_v7().to_string(), "metric": "quality", "value": 1}),
            404,
        ),
        (
            json!({"inference_id": first_id, "metric": "bad metric", "value": 1}),
            400,
        ),
        (
            json!({"inference_id": first_id, "metric": "quality", "value": 1, "extra": 1}),
            422,
        ),
    ] {
        let response = client
            .post(server.url("/v1/feedback"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
    }
    let arms = json_of(
        client
            .get(server.url("/v1/router/arms"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let pulls = |arms: &Value| {
        arms["arms"]["sim-small"]["pulls"].as_u64().unwrap()
            + arms["arms"]["sim-large"]["pulls"].as_u64().unwrap()
    };
    assert_eq!(pulls(&arms), 160, "{arms}");

    // Off-policy evaluation: always sim-large is worth 0.9, exactly, by SNIPS and DR.
    let report = json_of(
        client
            .post(server.url("/v1/router/evaluate"))
            .bearer_auth(&key)
            .json(&json!({"policy": {"kind": "static", "model": "sim-large"}, "min_exploration": 0.0}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(report["decisions"], 160);
    // SNIPS is the mean reward of the decisions that served sim-large: exactly its 0.9. DR's
    // reward model is a ridge regression on the context (shrunk a little toward 0), so its
    // value is close to, not exactly, that.
    let snips = report["snips"]["value"].as_f64().unwrap();
    assert!((snips - 0.9).abs() < 1e-6, "snips: {report}");
    let dr = report["dr"]["value"].as_f64().unwrap();
    assert!((dr - 0.9).abs() < 0.03, "dr: {report}");
    assert!(
        report["effective_sample_size"].as_f64().unwrap() > 10.0,
        "{report}"
    );
    let small = json_of(
        client
            .post(server.url("/v1/router/evaluate"))
            .bearer_auth(&key)
            .json(&json!({"policy": {"kind": "static", "model": "sim-small"}, "min_exploration": 0.0}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        (small["snips"]["value"].as_f64().unwrap() - 0.2).abs() < 1e-6,
        "{small}"
    );
    // As it would serve: the configured exploration floor is for learning policies; a static
    // one serves its model every time (issue 16, item 5).
    let served = json_of(
        client
            .post(server.url("/v1/router/evaluate"))
            .bearer_auth(&key)
            .json(&json!({"policy": {"kind": "static", "model": "sim-large"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // DR's reward model is a ridge regression on the context (shrunk a little toward 0), so
    // its value is close to, not exactly, the model's reward.
    let expected = 0.9;
    assert!(
        (served["dr"]["value"].as_f64().unwrap() - expected).abs() < 0.03,
        "{served}"
    );

    // The bandit state is rebuilt from the log after a restart.
    drop(server);
    let server = start(&dir);
    let arms = json_of(
        client
            .get(server.url("/v1/router/arms"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(pulls(&arms), 160, "{arms}");
    assert!(arms["arms"]["sim-large"]["mean_reward"].as_f64().unwrap() > 0.89);
}

#[tokio::test]
async fn the_cli_evaluates_a_policy_file_on_the_log() {
    let dir = data_dir();
    {
        let server = start(&dir);
        let client = reqwest::Client::new();
        let (_, key, _) = tenant_with_key(&server).await;
        for _ in 0..20 {
            let response = client
                .post(server.url("/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            let id = response.headers()["x-switchyard-inference-id"]
                .to_str()
                .unwrap()
                .to_owned();
            json_of(
                client
                    .post(server.url("/v1/feedback"))
                    .bearer_auth(&key)
                    .json(&json!({"inference_id": id, "metric": "quality", "value": 1.0}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
        }
    }
    let policy = dir.join("candidate.toml");
    std::fs::write(&policy, "kind = \"epsilon_greedy\"\nepsilon = 0.1\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["router", "evaluate", "--policy"])
        .arg(&policy)
        .arg("--json")
        .env("SWITCHYARD_DATA_DIR", &dir)
        .env_remove("SWITCHYARD_DATABASE_URL")
        .env("SWITCHYARD_CONFIG", dir.join("config.toml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["decisions"], 20);
    assert_eq!(report["policy"], "epsilon_greedy");
    assert!(
        (report["snips"]["value"].as_f64().unwrap() - 1.0).abs() < 1e-6,
        "{report}"
    );
    // A policy file that is not a policy is refused with the reason.
    std::fs::write(&policy, "kind = \"oracle\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["router", "evaluate", "--policy"])
        .arg(&policy)
        .env("SWITCHYARD_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a policy"));
}

/// Feedback on a request that named its model does not train the router: 409 `not_rewardable`
/// (issue 16, item 6), and the router's log has no reward for it. Feedback on an `auto`
/// request is taken.
#[tokio::test]
async fn feedback_on_a_named_model_request_is_refused_and_trains_nothing() {
    let dir = data_dir();
    let server = start(&dir);
    let (_, key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let ask = |model: &str| {
        client
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let feedback = |id: String| {
        client
            .post(server.url("/v1/feedback"))
            .bearer_auth(&key)
            .json(&json!({"inference_id": id, "metric": "quality", "value": 1.0}))
            .send()
    };
    let id_of = |response: &reqwest::Response| {
        assert_eq!(response.status(), 200);
        response.headers()["x-switchyard-inference-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let named = id_of(&ask("sim-small").await.unwrap());
    let refused = feedback(named).await.unwrap();
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_rewardable", "{body}");
    let routed = id_of(&ask("auto").await.unwrap());
    let taken = feedback(routed).await.unwrap();
    assert_eq!(taken.status(), 200);
    drop(server);
    let store = SqliteStore::open(&dir.join("events.db")).await.unwrap();
    let rewards = store
        .read_all(Scope::All, GlobalPosition::START, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "RewardRecorded")
        .count();
    assert_eq!(
        rewards, 1,
        "only the routed inference's feedback is a reward"
    );
}
