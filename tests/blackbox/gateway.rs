//! The OpenAI-compatible gateway end to end on the real binary: answers whole and streamed,
//! every inference logged once, limits on requests and tokens at each tier, the monthly budget,
//! hostile input, and a second switchyard as an OpenAI-compatible upstream.

use std::path::Path;

use futures_util::StreamExt;
use serde_json::{Value, json};
use switchyard_events::{EventStore, GlobalPosition, Scope, SqliteStore};

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

/// Simulated models with no latency, so the tests run at the speed of the code.
pub(crate) const SIM_CONFIG: &str = r#"
default_model = "sim-small"
[[providers]]
name = "sim"
kind = "sim"
[[models]]
name = "sim-small"
provider = "sim"
input_usd_per_million = "1.00"
output_usd_per_million = "2.00"
sim = { latency_ms = 0, quality = 0.5 }
[[models]]
name = "sim-large"
provider = "sim"
input_usd_per_million = "10.00"
output_usd_per_million = "20.00"
sim = { latency_ms = 0, quality = 0.9 }
[[models]]
name = "sim-broken"
provider = "sim"
sim = { latency_ms = 0, failure_rate = 1.0 }
"#;

pub(crate) fn start(dir: &Path, config: &str) -> Server {
    start_env(dir, config, &[])
}

/// [`start`] with more environment variables.
pub(crate) fn start_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Server {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut all = vec![
        ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
        ("SWITCHYARD_CONFIG", path.to_str().unwrap()),
    ];
    all.extend_from_slice(env);
    Server::start_with(dir, &all)
}

/// `GET /v1/admin/tenants/{id}`: the tenant with its limits, flags and spend.
pub(crate) async fn tenant_view(server: &Server, tenant: &str) -> Value {
    reqwest::Client::new()
        .get(server.url(&format!("/v1/admin/tenants/{tenant}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub(crate) async fn put(server: &Server, path: &str, body: Value) {
    let response = reqwest::Client::new()
        .put(server.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "{path}: {}",
        response.text().await.unwrap()
    );
}

pub(crate) async fn chat(server: &Server, key: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

pub(crate) fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello to the event log"}]})
}

/// Event types in the embedded log, read beside the running server.
pub(crate) async fn logged(dir: &Path) -> Vec<(String, String)> {
    let store = SqliteStore::open(&dir.join("events.db")).await.unwrap();
    let mut events = store
        .read_all(Scope::All, GlobalPosition::START, 100_000)
        .await
        .unwrap();
    events.retain(|e| e.stream_id.as_str().starts_with("inference-"));
    events
        .into_iter()
        .map(|e| (e.stream_id.as_str().to_owned(), e.event_type))
        .collect()
}

/// `InferenceCompleted` events in the log.
async fn completed(dir: &Path) -> usize {
    logged(dir)
        .await
        .iter()
        .filter(|(_, t)| t == "InferenceCompleted")
        .count()
}

#[tokio::test]
async fn a_completion_is_answered_billed_and_logged_once() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (tenant, key, _) = tenant_with_key(&server).await;

    let models: Value = reqwest::Client::new()
        .get(server.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sim-small", "sim-large", "sim-broken", "auto"]);

    let response = chat(&server, &key, &hello("auto")).await;
    assert_eq!(response.status(), 200);
    let inference = response.headers()["x-switchyard-inference-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "sim-small");
    assert_eq!(body["id"], format!("chatcmpl-{inference}"));
    let usage = &body["usage"];
    let (tokens_in, tokens_out) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(tokens_in > 0 && tokens_out > 0);
    assert!(
        !body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    // One event in the inference's own stream, carrying the request and the route.
    let events = logged(&dir).await;
    assert_eq!(
        events,
        [(
            format!("inference-{inference}"),
            "InferenceCompleted".to_owned()
        )]
    );
    match inference_events(&dir, &inference).await.as_slice() {
        [switchyard_events::Event::InferenceCompleted(done)] => {
            let request = done.request.as_ref().expect("the request is in the record");
            assert_eq!((request.endpoint.as_str(), request.messages), ("chat", 1));
            let route = done.route.as_ref().expect("the route is in the record");
            assert_eq!(route.model, done.model);
        }
        other => panic!("{other:?}"),
    }
    // The spend shows on the tenant at the model's price: $1/M in, $2/M out, rounded up.
    let view = tenant_view(&server, &tenant).await;
    let expected = tokens_in + 2 * tokens_out;
    assert_eq!(view["budget"]["spent_usd"], format!("0.{expected:06}"));
    assert_eq!(view["budget"]["tokens"], tokens_in + tokens_out);

    // A failing provider is retried, then answered with a clear error, and logged as failed.
    let failed = chat(&server, &key, &hello("sim-broken")).await;
    assert_eq!(failed.status(), 503);
    let error: Value = failed.json().await.unwrap();
    assert_eq!(error["error"]["code"], "upstream_unavailable");
    let events = logged(&dir).await;
    assert_eq!(events.last().unwrap().1, "InferenceFailed");
}

#[tokio::test]
async fn a_stream_passes_chunks_through_and_ends_with_usage_and_done() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (_, key, _) = tenant_with_key(&server).await;
    let whole: Value = chat(&server, &key, &hello("sim-large"))
        .await
        .json()
        .await
        .unwrap();

    let mut body = hello("sim-large");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = chat(&server, &key, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().contains_key("x-switchyard-inference-id"));
    let text = response.text().await.unwrap();
    let data: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(*data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?.pointer("/delta/content")?.as_str())
        .collect();
    // The same prompt, the same simulated answer, streamed.
    assert_eq!(
        content,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage, &whole["usage"]);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let completed = completed(&dir).await;
    assert_eq!(completed, 2);
}

#[tokio::test]
async fn request_and_token_limits_hold_at_every_tier() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (tenant, key, key_id) = tenant_with_key(&server).await;

    // The key may make 2 requests a minute.
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/keys/{key_id}/limits"),
        json!({"requests_per_minute": 2}),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(chat(&server, &key, &hello("sim-small")).await.status(), 200);
    }
    let refused = chat(&server, &key, &hello("sim-small")).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(refused.headers()["x-ratelimit-limit-requests"], "2");
    assert_eq!(refused.headers()["x-ratelimit-remaining-requests"], "0");
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/keys/{key_id}/limits"),
        json!({}),
    )
    .await;

    // sim-large: one request a minute for this tenant; sim-small is not affected.
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/models/sim-large/limits"),
        json!({"requests_per_minute": 1}),
    )
    .await;
    assert_eq!(chat(&server, &key, &hello("sim-large")).await.status(), 200);
    assert_eq!(chat(&server, &key, &hello("sim-large")).await.status(), 429);
    assert_eq!(chat(&server, &key, &hello("sim-small")).await.status(), 200);
    // A limit on a model the server does not serve is refused, naming the ones it does.
    let typo = reqwest::Client::new()
        .put(server.url(&format!(
            "/v1/admin/tenants/{tenant}/models/sim-smal/limits"
        )))
        .bearer_auth(TOKEN)
        .json(&json!({"requests_per_minute": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(typo.status(), 404);
    let body: Value = typo.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("sim-small, sim-large"), "{message}");

    // Tokens: 60 a minute for the tenant. The answer's tokens are charged after it, so the
    // next request waits for them.
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/limits"),
        json!({"tokens_per_minute": 60}),
    )
    .await;
    let first = chat(&server, &key, &hello("sim-small")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit-tokens"], "60");
    let mut refused = None;
    for _ in 0..5 {
        let response = chat(&server, &key, &hello("sim-small")).await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("the token limit refused nothing");
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute"),
        "{body}"
    );
}

#[tokio::test]
async fn a_spent_budget_answers_402_and_a_restart_remembers_the_spend() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (tenant, key, _) = tenant_with_key(&server).await;
    // sim-large at $10/M in and $20/M out reserves (prompt + 1024 output tokens) × price:
    // about $0.021 per request with no max_tokens. A budget of 3 cents allows one.
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/limits"),
        json!({"monthly_budget_usd": "0.03"}),
    )
    .await;
    assert_eq!(chat(&server, &key, &hello("sim-large")).await.status(), 200);
    // The first one cost far less than its reservation; with max_tokens set small, more fit.
    let mut small = hello("sim-large");
    small["max_tokens"] = json!(8);
    assert_eq!(chat(&server, &key, &small).await.status(), 200);
    let mut spent_out = None;
    for _ in 0..200 {
        let response = chat(&server, &key, &hello("sim-large")).await;
        if response.status() == 402 {
            spent_out = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let response = spent_out.expect("the budget never ran out");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exhausted");
    let spent = |view: &Value| view["budget"]["spent_usd"].as_str().unwrap().to_owned();
    let before = spent(&tenant_view(&server, &tenant).await);
    drop(server);
    let server = start(&dir, SIM_CONFIG);
    assert_eq!(
        spent(&tenant_view(&server, &tenant).await),
        before,
        "the spend is folded back from the log"
    );
    assert_eq!(chat(&server, &key, &hello("sim-large")).await.status(), 402);
}

#[tokio::test]
async fn hostile_inference_requests_get_clear_errors_and_cost_nothing() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (tenant, key, _) = tenant_with_key(&server).await;
    let post = |body: String| {
        let request = reqwest::Client::new()
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body);
        async move { request.send().await.unwrap() }
    };
    let huge = format!(
        r#"{{"model":"sim-small","messages":[{}]}}"#,
        vec![r#"{"role":"user","content":"x"}"#; 5_000].join(",")
    );
    for (body, status, code) in [
        ("{".to_owned(), 400, "invalid_json"),
        (
            r#"{"model":"sim-small","messages":[{"role":"user","content":"x"}],"temprature":1}"#
                .to_owned(),
            422,
            "invalid_request",
        ),
        (
            r#"{"model":"sim-small","messages":[{"role":"king","content":"x"}]}"#.to_owned(),
            422,
            "invalid_request",
        ),
        (
            r#"{"model":"sim-small","messages":[]}"#.to_owned(),
            400,
            "invalid_request",
        ),
        (
            r#"{"model":"gpt-17","messages":[{"role":"user","content":"x"}]}"#.to_owned(),
            404,
            "model_not_found",
        ),
        (
            r#"{"model":"sim-small","messages":[{"role":"user","content":"x"}],"n":100}"#
                .to_owned(),
            400,
            "invalid_request",
        ),
        (huge, 400, "invalid_request"),
        (r#"{"model":"sim-small","messages":[{"role":"user","content":"x"}],"max_tokens":-5}"#.to_owned(), 422, "invalid_request"),
        (format!(r#"{{"model":"{}","messages":[{{"role":"user","content":"x"}}]}}"#, "m".repeat(300)), 400, "invalid_request"),
        (r#"{"model":"sim-small\u0000","messages":[{"role":"user","content":"x"}]}"#.to_owned(), 404, "model_not_found"),
        (r#"{"model":"sim-small","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#.to_owned(), 422, "invalid_request"),
        // Tools, tool choices and response formats OpenAI would refuse (issue 19, item 6).
        (r#"{"model":"sim-small","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{}}]}"#.to_owned(), 400, "invalid_request"),
        (r#"{"model":"sim-small","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"rm -rf"}}]}"#.to_owned(), 400, "invalid_request"),
        (r#"{"model":"sim-small","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]}"#.to_owned(), 400, "invalid_request"),
        (r#"{"model":"sim-small","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}}"#.to_owned(), 400, "invalid_request"),
        (r#"{"model":"sim-small","messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}"#.to_owned(), 400, "invalid_request"),
        (r#"{"model":"sim-small","messages":[{"role":"user","content":"x"}],"response_format":{"type":"yaml"}}"#.to_owned(), 400, "invalid_request"),
        (r#"{"model":"sim-small","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":7}}}"#.to_owned(), 400, "invalid_request"),
    ] {
        let response = post(body.clone()).await;
        assert_eq!(response.status(), status, "{}", &body[..body.len().min(80)]);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{error}");
    }
    // Invalid UTF-8.
    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // No key, a wrong key, a key without the inference scope.
    assert_eq!(chat(&server, "sy_nope", &hello("auto")).await.status(), 401);
    let scoped: Value = reqwest::Client::new()
        .post(server.url(&format!("/v1/admin/tenants/{tenant}/keys")))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "reader", "scopes": ["analytics"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = chat(&server, scoped["key"].as_str().unwrap(), &hello("auto")).await;
    assert_eq!(response.status(), 403);
    assert!(
        logged(&dir).await.is_empty(),
        "refused requests are not inferences"
    );
}

/// A tenant's `allowed_models` setting (issue 19, item 3): `GET /v1/models` lists only those
/// models, a named other model is answered as one that does not exist, `auto` routes among the
/// allowed ones only, and an unknown name is refused when it is set. Cleared, everything is back.
#[tokio::test]
async fn a_tenants_model_allow_list_limits_what_it_lists_and_calls() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (tenant, key, _) = tenant_with_key(&server).await;
    let (_, other, _) = tenant_with_key(&server).await;
    let setting = format!("/v1/admin/tenants/{tenant}/settings/allowed_models");
    let set = |value: Value| {
        reqwest::Client::new()
            .put(server.url(&setting))
            .bearer_auth(TOKEN)
            .json(&json!({"value": value}))
            .send()
    };
    for bad in ["sim-small, gpt-17", "auto", " , "] {
        let response = set(json!(bad)).await.unwrap();
        assert_eq!(response.status(), 422, "{bad}");
    }
    assert_eq!(set(json!("sim-small")).await.unwrap().status(), 200);
    let models = |key: String| {
        let request = reqwest::Client::new()
            .get(server.url("/v1/models"))
            .bearer_auth(key)
            .send();
        async move {
            let body: Value = request.await.unwrap().json().await.unwrap();
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(models(key.clone()).await, ["sim-small", "auto"]);
    assert!(
        models(other.clone())
            .await
            .contains(&"sim-large".to_owned()),
        "other tenants keep every model"
    );
    let refused = chat(&server, &key, &hello("sim-large")).await;
    assert_eq!(refused.status(), 404);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_found");
    for _ in 0..20 {
        let answer: Value = chat(&server, &key, &hello("auto"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(answer["model"], "sim-small");
    }
    let embed = reqwest::Client::new()
        .post(server.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "sim-large", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(embed.status(), 404);
    assert_eq!(
        chat(&server, &other, &hello("sim-large")).await.status(),
        200
    );
    assert_eq!(set(Value::Null).await.unwrap().status(), 200);
    assert!(models(key.clone()).await.contains(&"sim-large".to_owned()));
    assert_eq!(chat(&server, &key, &hello("sim-large")).await.status(), 200);
}

/// A JSON Schema the simulator can make no value for (issue 19, item 6) is refused with a 400
/// that names the reason, whole and streamed, and no inference completes.
#[tokio::test]
async fn a_schema_no_value_fits_is_refused_with_the_reason() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (_, key, _) = tenant_with_key(&server).await;
    for stream in [false, true] {
        let body = json!({
            "model": "sim-small", "stream": stream,
            "messages": [{"role": "user", "content": "list them all"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "all",
                "schema": {"type": "array", "minItems": 1_000_000_000u64}}},
        });
        let response = chat(&server, &key, &body).await;
        assert_eq!(response.status(), 400, "stream {stream}");
        let error: Value = response.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("minItems 1000000000"), "{error}");
    }
    assert_eq!(completed(&dir).await, 0);
}

/// Every tenant endpoint checks the key's scopes, and a key cannot be given a scope that does
/// not exist.
#[tokio::test]
async fn scopes_are_checked_on_every_tenant_endpoint_and_unknown_ones_refused() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (tenant, _, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let issue = |scopes: Value| {
        client
            .post(server.url(&format!("/v1/admin/tenants/{tenant}/keys")))
            .bearer_auth(TOKEN)
            .json(&json!({"name": "scoped", "scopes": scopes}))
            .send()
    };
    let refused = issue(json!(["inferense"])).await.unwrap();
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("inferense") && message.contains("inference, feedback, analytics"),
        "{message}"
    );
    let key_with = |scopes: Value| {
        let issue = issue(scopes);
        async move {
            let body: Value = issue.await.unwrap().json().await.unwrap();
            body["key"].as_str().unwrap().to_owned()
        }
    };
    let analytics = key_with(json!(["analytics"])).await;
    let inference = key_with(json!(["inference"])).await;
    let feedback = key_with(json!(["feedback"])).await;
    let router = key_with(json!(["router"])).await;
    let call = |method: reqwest::Method, path: &str, key: &str, body: Value| {
        client
            .request(method, server.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let reward = json!({"inference_id": uuid::Uuid::now_v7(), "value": 1.0});
    let policy = json!({"policy": {"kind": "thompson"}});
    // (method, path, body, the keys that may, the keys that may not)
    let cases = [
        (
            reqwest::Method::POST,
            "/v1/feedback",
            reward,
            vec![&inference, &feedback],
            vec![&analytics, &router],
        ),
        (
            reqwest::Method::POST,
            "/v1/router/evaluate",
            policy,
            vec![&analytics, &router],
            vec![&inference, &feedback],
        ),
        (
            reqwest::Method::GET,
            "/v1/router/arms",
            Value::Null,
            vec![&analytics, &router],
            vec![&inference, &feedback],
        ),
    ];
    for (method, path, body, allowed, forbidden) in cases {
        for key in forbidden {
            let status = call(method.clone(), path, key, body.clone())
                .await
                .unwrap()
                .status();
            assert_eq!(status, 403, "{method} {path}");
        }
        for key in allowed {
            let status = call(method.clone(), path, key, body.clone())
                .await
                .unwrap()
                .status();
            assert_ne!(status, 403, "{method} {path}");
            assert_ne!(status, 401, "{method} {path}");
        }
    }
}

/// `Idempotency-Key` holds on embeddings (billed once) and on workflow starts (one run).
#[tokio::test]
async fn an_idempotency_key_answers_retried_embeddings_and_run_starts_once() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (_, key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let embed = || {
        client
            .post(server.url("/v1/embeddings"))
            .bearer_auth(&key)
            .header("idempotency-key", "embed-once")
            .json(&json!({"model": "sim-small", "input": ["one", "two"]}))
            .send()
    };
    let first = embed().await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().contains_key("x-switchyard-inference-id"));
    let first: Value = first.json().await.unwrap();
    let second = embed().await.unwrap();
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(completed(&dir).await, 1, "one inference for two sends");
    // An answer too large to hold (2,048 inputs × 4,096 dimensions) is refused up front.
    let huge = client
        .post(server.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "sim-small", "input": vec!["a"; 2_048], "dimensions": 4_096}))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 400);
    let body: Value = huge.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most"),
        "{body}"
    );
    assert_eq!(
        completed(&dir).await,
        1,
        "a refused request is not an inference"
    );

    let spec =
        "name: greet\nnodes:\n  - id: hi\n    kind: llm\n    model: sim-small\n    prompt: hi\n";
    let registered = client
        .post(server.url("/v1/workflows"))
        .bearer_auth(&key)
        .body(spec)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let start_run = || {
        client
            .post(server.url("/v1/workflows/greet/runs"))
            .bearer_auth(&key)
            .header("idempotency-key", "start-once")
            .json(&json!({"input": {}}))
            .send()
    };
    // Three at once: one starts the run, the others are told it is in progress (or get it).
    let mut runs = Vec::new();
    for response in futures_util::future::join_all((0..3).map(|_| start_run())).await {
        let response = response.unwrap();
        if response.status() == 201 {
            runs.push(response.json::<Value>().await.unwrap());
        }
    }
    assert!(!runs.is_empty());
    let again: Value = start_run().await.unwrap().json().await.unwrap();
    for run in &runs {
        assert_eq!(run["run_id"], again["run_id"], "one run for every retry");
    }
}

/// A refusal that depends on a limit is not recorded under an `Idempotency-Key`: once the
/// budget is raised, the same retry goes through (and is then recorded).
#[tokio::test]
async fn a_budget_refusal_is_not_replayed_to_a_retry_after_the_budget_is_raised() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (tenant, key, _) = tenant_with_key(&server).await;
    let limits = format!("/v1/admin/tenants/{tenant}/limits");
    put(&server, &limits, json!({"monthly_token_budget": 1})).await;
    let send = || {
        reqwest::Client::new()
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("idempotency-key", "after-the-raise")
            .json(&hello("sim-small"))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 402);
    put(&server, &limits, json!({"monthly_token_budget": 1_000_000})).await;
    let mut answered = None;
    for _ in 0..100 {
        let response = send().await.unwrap();
        if response.status() == 200 {
            answered = Some(response);
            break;
        }
        assert_eq!(
            response.status(),
            402,
            "only the old budget may still refuse"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let first: Value = answered
        .expect("the retry passes once the budget is raised")
        .json()
        .await
        .unwrap();
    let replayed = send().await.unwrap();
    assert_eq!(replayed.status(), 200);
    assert_eq!(replayed.headers()["idempotency-replayed"], "true");
    let replayed: Value = replayed.json().await.unwrap();
    assert_eq!(replayed["id"], first["id"]);
    assert_eq!(completed(&dir).await, 1);
}

/// Concurrent requests cannot together take more tokens than a token limit: admission
/// reserves the prompt and the output a request may produce, and gives back what was not used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_stay_within_a_token_limit() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (tenant, key, _) = tenant_with_key(&server).await;
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/limits"),
        json!({"tokens_per_minute": 500}),
    )
    .await;
    let client = reqwest::Client::new();
    let requests = (0..100).map(|_| {
        client
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "sim-small", "max_tokens": 64,
                          "messages": [{"role": "user", "content": "tell me something"}]}))
            .send()
    });
    let mut tokens = 0;
    let mut answered = 0;
    for response in futures_util::future::join_all(requests).await {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 => {
                answered += 1;
                let body: Value = response.json().await.unwrap();
                tokens += body["usage"]["total_tokens"].as_u64().unwrap();
            }
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(answered > 0);
    // The prompt estimate may differ from the provider's count by a few tokens per answer.
    assert!(
        tokens <= 500 + 5 * answered,
        "{tokens} tokens in {answered} answers for a 500/min limit"
    );
}

#[tokio::test]
async fn an_idempotency_key_answers_a_retried_completion_once() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (_, key, _) = tenant_with_key(&server).await;
    let send = || {
        reqwest::Client::new()
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("idempotency-key", "retry-me")
            .json(&hello("sim-small"))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 200);
    let id = first.headers()["x-switchyard-inference-id"].clone();
    let first: Value = first.json().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.headers()["x-switchyard-inference-id"], id);
    assert_eq!(second.headers()["idempotency-replayed"], "true");
    assert_eq!(second.json::<Value>().await.unwrap(), first);
    let completed = completed(&dir).await;
    assert_eq!(completed, 1, "billed once");
}

/// A replay is the first answer again, headers included: its rate-limit status, inference id,
/// log position and content type, marked `idempotency-replayed`; the request id is the
/// retry's own.
#[tokio::test]
async fn an_idempotent_replay_carries_the_original_answers_headers() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (tenant, key, _) = tenant_with_key(&server).await;
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/limits"),
        json!({"requests_per_minute": 600, "tokens_per_minute": 100_000}),
    )
    .await;
    let client = reqwest::Client::new();
    let kept = |headers: &reqwest::header::HeaderMap| {
        let mut kept: Vec<(String, String)> = headers
            .iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                name == "content-type"
                    || name.starts_with("x-ratelimit-")
                    || name.starts_with("x-switchyard-")
            })
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        kept.sort();
        kept
    };
    for (path, body) in [
        ("/v1/chat/completions", hello("sim-small")),
        (
            "/v1/embeddings",
            json!({"model": "sim-small", "input": ["one", "two"]}),
        ),
    ] {
        let send = || {
            client
                .post(server.url(path))
                .bearer_auth(&key)
                .header("idempotency-key", format!("headers-{path}"))
                .json(&body)
                .send()
        };
        let first = send().await.unwrap();
        assert_eq!(first.status(), 200, "{path}");
        let original = kept(first.headers());
        for name in [
            "content-type",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-limit-tokens",
            "x-switchyard-inference-id",
            "x-switchyard-position",
        ] {
            assert!(
                original.iter().any(|(n, _)| n == name),
                "{path}: the first answer has no {name}: {original:?}"
            );
        }
        let first_request = first.headers()["x-request-id"].clone();
        let first: Value = first.json().await.unwrap();
        // Another request in between moves the limits: the replay still says what the first
        // answer said.
        assert_eq!(chat(&server, &key, &hello("sim-small")).await.status(), 200);
        let again = send().await.unwrap();
        assert_eq!(again.status(), 200, "{path}");
        assert_eq!(again.headers()["idempotency-replayed"], "true");
        assert_eq!(kept(again.headers()), original, "{path}");
        assert_ne!(again.headers()["x-request-id"], first_request);
        assert_eq!(again.json::<Value>().await.unwrap(), first, "{path}");
    }
}

/// A second switchyard is an OpenAI-compatible upstream: the first reaches its simulated models
/// through the OpenAI-compatible provider, whole and streamed.
#[tokio::test]
async fn an_openai_compatible_upstream_is_served_whole_and_streamed() {
    let upstream_dir = data_dir();
    let upstream = start(&upstream_dir, SIM_CONFIG);
    let (_, upstream_key, _) = tenant_with_key(&upstream).await;
    let dir = data_dir();
    std::fs::write(dir.join("upstream-key"), &upstream_key).unwrap();
    let config = format!(
        r#"
[[providers]]
name = "upstream"
kind = "openai"
base_url = "{}/v1"
api_key_file = "{}"
first_token_timeout_ms = 5000
timeout_ms = 5000
[[models]]
name = "remote-small"
provider = "upstream"
upstream = "sim-small"
input_usd_per_million = "1"
"#,
        upstream.base,
        dir.join("upstream-key").display()
    );
    let server = start(&dir, &config);
    let (_, key, _) = tenant_with_key(&server).await;
    let direct: Value = chat(&upstream, &upstream_key, &hello("sim-small"))
        .await
        .json()
        .await
        .unwrap();
    let response = chat(&server, &key, &hello("remote-small")).await;
    assert_eq!(response.status(), 200);
    let through: Value = response.json().await.unwrap();
    assert_eq!(through["model"], "remote-small");
    assert_eq!(
        through["choices"][0]["message"],
        direct["choices"][0]["message"]
    );
    assert_eq!(through["usage"], direct["usage"]);

    let mut body = hello("remote-small");
    body["stream"] = json!(true);
    let response = chat(&server, &key, &body).await;
    assert_eq!(response.status(), 200);
    let mut bytes = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = bytes.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let completed = completed(&dir).await;
    assert_eq!(completed, 2);
}

#[tokio::test]
async fn browsers_read_answers_only_from_the_origins_their_tenant_allows() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (tenant, key, _) = tenant_with_key(&server).await;
    let (_, other_key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    // Hostile values are refused with the reason.
    for bad in [
        "",
        "ftp://x",
        "https://app.example/path",
        "https://",
        "a, b",
    ] {
        let response = client
            .put(server.url(&format!("/v1/admin/tenants/{tenant}/settings/cors_origins")))
            .bearer_auth(TOKEN)
            .json(&json!({"value": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{bad:?}");
    }
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/settings/cors_origins"),
        json!({"value": "https://app.example, http://localhost:3000"}),
    )
    .await;
    let models = |key: String, origin: &'static str| {
        let request = client
            .get(server.url("/v1/models"))
            .bearer_auth(key)
            .header("origin", origin);
        async move { request.send().await.unwrap() }
    };
    let allowed = models(key.clone(), "https://app.example").await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        allowed.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-switchyard-inference-id")
    );
    let elsewhere = models(key.clone(), "https://evil.example").await;
    assert_eq!(elsewhere.status(), 200);
    assert!(
        !elsewhere
            .headers()
            .contains_key("access-control-allow-origin")
    );
    // Another tenant did not allow that origin.
    let other = models(other_key, "https://app.example").await;
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    // A preflight (no key) is answered so the browser sends the real request.
    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url("/v1/chat/completions"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert!(
        preflight.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    // Removing the setting closes it again; flags are set the same way.
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/settings/cors_origins"),
        json!({"value": null}),
    )
    .await;
    assert!(
        !models(key, "https://app.example")
            .await
            .headers()
            .contains_key("access-control-allow-origin")
    );
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/flags/beta-router"),
        json!({"enabled": true}),
    )
    .await;
    let view = tenant_view(&server, &tenant).await;
    assert_eq!(view["flags"]["beta-router"], true);
}

/// Events of one inference stream, decoded.
pub(crate) async fn inference_events(dir: &Path, inference: &str) -> Vec<switchyard_events::Event> {
    let store = SqliteStore::open(&dir.join("events.db")).await.unwrap();
    let stream = switchyard_events::StreamId::parse(format!("inference-{inference}")).unwrap();
    store
        .read_stream(
            Scope::All,
            &stream,
            switchyard_events::StreamVersion::NONE,
            100,
        )
        .await
        .unwrap()
        .iter()
        .map(|e| switchyard_events::Event::from_recorded(e).unwrap())
        .collect()
}

pub(crate) fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// The OpenAI-compatible provider against an upstream that fails in every way it can.
#[tokio::test]
async fn upstream_failures_are_retried_mapped_to_clear_errors_and_logged() {
    let mock = crate::server::Mock::start();
    let dir = data_dir();
    let mut config = format!(
        r#"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{base}/v1"
first_token_timeout_ms = 1000
timeout_ms = 500
[[providers]]
name = "tight"
kind = "openai"
base_url = "{base}/v1"
first_token_timeout_ms = 100
"#,
        base = mock.base
    );
    for model in [
        "mock",
        "mock-500",
        "mock-429",
        "mock-flaky",
        "mock-malformed",
        "mock-cut",
        "mock-stall",
        "mock-slow",
    ] {
        config.push_str(&format!(
            "[[models]]\nname = \"{model}\"\nprovider = \"mock\"\n"
        ));
    }
    config.push_str(
        "[[models]]\nname = \"tight-slow\"\nprovider = \"tight\"\nupstream = \"mock-slow\"\n",
    );
    let server = start(&dir, &config);
    let (_, key, _) = tenant_with_key(&server).await;

    let ok = chat(&server, &key, &hello("mock")).await;
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 10);

    // Retried and recovered: one failure, then an answer; the event says two attempts.
    let flaky = chat(&server, &key, &hello("mock-flaky")).await;
    assert_eq!(flaky.status(), 200);
    let id = flaky.headers()["x-switchyard-inference-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let events = inference_events(&dir, &id).await;
    match events.last().unwrap() {
        switchyard_events::Event::InferenceCompleted(e) => assert_eq!(e.attempts, 2),
        other => panic!("{other:?}"),
    }

    for (model, status, code) in [
        ("mock-500", 502, "upstream_unavailable"),
        ("mock-429", 429, "upstream_rate_limited"),
        ("mock-malformed", 502, "upstream_malformed"),
        ("tight-slow", 504, "upstream_timeout"),
    ] {
        let response = chat(&server, &key, &hello(model)).await;
        assert_eq!(response.status(), status, "{model}");
        if model == "mock-429" {
            assert_eq!(response.headers()["retry-after"], "1");
        }
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{model}: {body}");
    }

    // Streams: a cut and a stall end with an error event, never with [DONE].
    for (model, code) in [
        ("mock-cut", "upstream_stream_cut"),
        ("mock-stall", "upstream_timeout"),
    ] {
        let mut body = hello(model);
        body["stream"] = json!(true);
        let response = chat(&server, &key, &body).await;
        assert_eq!(response.status(), 200, "{model}");
        let id = response.headers()["x-switchyard-inference-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let data = sse_data(&response.text().await.unwrap());
        assert_ne!(data.last().map(String::as_str), Some("[DONE]"), "{model}");
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], code, "{model}: {last}");
        assert_eq!(last["error"]["inference_id"], id);
        match inference_events(&dir, &id).await.last().unwrap() {
            switchyard_events::Event::InferenceFailed(e) => {
                assert_eq!(e.code, code);
                assert!(e.tokens_in > 0, "a cut stream still bills its prompt");
            }
            other => panic!("{model}: {other:?}"),
        }
    }
    // A clean stream from the same upstream ends with usage and [DONE].
    let mut body = hello("mock");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let data = sse_data(&chat(&server, &key, &body).await.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 5);
}

/// A failing model falls back along its chain before the first byte; after enough failures its
/// circuit opens (an event) and calls skip it at once.
#[tokio::test]
async fn a_failing_model_falls_back_and_its_circuit_opens() {
    let mock = crate::server::Mock::start();
    let dir = data_dir();
    let config = format!(
        r#"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{}/v1"
[[models]]
name = "mock-500"
provider = "mock"
fallbacks = ["mock"]
[[models]]
name = "mock"
provider = "mock"
input_usd_per_million = "1"
"#,
        mock.base
    );
    let server = start(&dir, &config);
    let (_, key, _) = tenant_with_key(&server).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let response = chat(&server, &key, &hello("mock-500")).await;
        assert_eq!(response.status(), 200);
        ids.push(
            response.headers()["x-switchyard-inference-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["model"], "mock", "served by the fallback");
    }
    let attempts: Vec<u32> = {
        let mut out = Vec::new();
        for id in &ids {
            match inference_events(&dir, id).await.last().unwrap() {
                switchyard_events::Event::InferenceCompleted(e) => {
                    assert_eq!(e.model, "mock");
                    assert!(e.cost_micros > 0, "billed at the fallback's price");
                    out.push(e.attempts);
                }
                other => panic!("{other:?}"),
            }
        }
        out
    };
    // 3 failures + the fallback; then 2 more failures open the circuit (5 in a row); then the
    // open circuit is skipped without a call.
    assert_eq!(attempts, [4, 3, 1]);
    // The circuit's event is appended off the request path: wait for it (bounded).
    let store = SqliteStore::open(&dir.join("events.db")).await.unwrap();
    let mut circuit = Vec::new();
    for _ in 0..50 {
        circuit = store
            .read_all(Scope::All, GlobalPosition::START, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type == "CircuitChanged")
            .map(|e| switchyard_events::Event::from_recorded(&e).unwrap())
            .collect::<Vec<_>>();
        if !circuit.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        circuit,
        [switchyard_events::Event::CircuitChanged(
            switchyard_events::CircuitChanged {
                model: "mock-500".into(),
                from: "closed".into(),
                to: "open".into(),
            }
        )]
    );
}

/// A prompt over a model's context window or flagged by its content policy (issue 19, item 3) is
/// not retried on that model but tried on its fallback at once; with no fallback the client
/// gets the refusal with OpenAI's code, and the circuit does not count it as a failure.
#[tokio::test]
async fn context_length_and_content_policy_refusals_fall_back() {
    let mock = crate::server::Mock::start();
    let dir = data_dir();
    let config = format!(
        r#"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{}/v1"
[[models]]
name = "mock-context"
provider = "mock"
fallbacks = ["mock"]
[[models]]
name = "mock-filtered"
provider = "mock"
fallbacks = ["mock"]
[[models]]
name = "small-window"
provider = "mock"
upstream = "mock-context"
[[models]]
name = "mock"
provider = "mock"
"#,
        mock.base
    );
    let server = start(&dir, &config);
    let (_, key, _) = tenant_with_key(&server).await;
    for model in ["mock-context", "mock-filtered"] {
        for _ in 0..6 {
            let response = chat(&server, &key, &hello(model)).await;
            assert_eq!(response.status(), 200, "{model}");
            let id = response.headers()["x-switchyard-inference-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["model"], "mock", "{model}: served by the fallback");
            match inference_events(&dir, &id).await.last().unwrap() {
                switchyard_events::Event::InferenceCompleted(e) => {
                    assert_eq!(
                        e.attempts, 2,
                        "{model}: one refusal, no retry, then the fallback"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }
    for (expected, body) in [
        ("context_length_exceeded", hello("small-window")),
        ("context_length_exceeded", {
            let mut streamed = hello("small-window");
            streamed["stream"] = json!(true);
            streamed
        }),
    ] {
        let response = chat(&server, &key, &body).await;
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], expected, "{error}");
    }
    // Refusals are not failures of the model: no circuit opened after 12 of them.
    let store = SqliteStore::open(&dir.join("events.db")).await.unwrap();
    let opened = store
        .read_all(Scope::All, GlobalPosition::START, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "CircuitChanged")
        .count();
    assert_eq!(opened, 0);
}

#[tokio::test]
async fn daily_and_token_budgets_answer_402_naming_the_budget() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (tenant, key, _) = tenant_with_key(&server).await;
    // max_tokens 8 reserves about 20 tokens a request; 100 tokens a day allow a few.
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/limits"),
        json!({"daily_token_budget": 100, "daily_budget_usd": "5"}),
    )
    .await;
    let mut body = hello("sim-small");
    body["max_tokens"] = json!(8);
    let mut refused = None;
    for _ in 0..20 {
        let response = chat(&server, &key, &body).await;
        if response.status() == 402 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let error: Value = refused
        .expect("the daily token budget never ran out")
        .json()
        .await
        .unwrap();
    assert_eq!(error["error"]["code"], "budget_exhausted");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("daily_token_budget"),
        "{error}"
    );
    let view = tenant_view(&server, &tenant).await;
    assert_eq!(view["limits"]["daily_token_budget"], 100);
    assert_eq!(view["limits"]["daily_budget_usd"], "5.000000");
    assert!(view["budget"]["day_tokens"].as_u64().unwrap() <= 100);
}

/// The Anthropic adapter against the mock's Messages API: whole and streamed, tools included,
/// and usage counted from Anthropic's own figures.
#[tokio::test]
async fn an_anthropic_upstream_is_served_through_the_openai_shape() {
    let mock = crate::server::Mock::start();
    let dir = data_dir();
    std::fs::write(dir.join("anthropic-key"), "sk-ant-test").unwrap();
    let config = format!(
        r#"
[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "{}/v1"
api_key_file = "{}"
[[models]]
name = "claude"
provider = "anthropic"
upstream = "claude-sonnet"
input_usd_per_million = "3"
output_usd_per_million = "15"
"#,
        mock.base,
        dir.join("anthropic-key").display()
    );
    let server = start(&dir, &config);
    let (_, key, _) = tenant_with_key(&server).await;
    let mut body = hello("claude");
    body["messages"] =
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather?"}]);
    body["tools"] = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]);
    let response = chat(&server, &key, &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "weather"
    );
    assert_eq!(answer["usage"]["prompt_tokens"], 10);
    assert_eq!(answer["usage"]["completion_tokens"], 5);

    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = chat(&server, &key, &body).await;
    assert_eq!(response.status(), 200);
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?.pointer("/delta/content")?.as_str())
        .collect();
    assert_eq!(text, "hello from the mock");
    let arguments: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)?
                .pointer("/delta/tool_calls/0/function/arguments")?
                .as_str()
        })
        .collect();
    assert_eq!(arguments, "{\"q\":1}");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 5);
}

/// A stream that outgrows its reservation extends it as it goes, and is cut with an error event
/// when the budget cannot cover more; what was sent is billed.
#[tokio::test]
async fn a_budget_that_runs_out_mid_stream_cuts_the_stream() {
    let dir = data_dir();
    let config = r#"
default_output_reservation = 4
[[providers]]
name = "sim"
kind = "sim"
[[models]]
name = "sim-long"
provider = "sim"
input_usd_per_million = "10"
output_usd_per_million = "10"
sim = { latency_ms = 0, min_answer_tokens = 100, max_answer_tokens = 120 }
"#;
    let server = start(&dir, config);
    let (tenant, key, _) = tenant_with_key(&server).await;
    // The first reservation (prompt + 4 tokens) fits; growing it to 20, then 40 tokens does not.
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/limits"),
        json!({"monthly_budget_usd": "0.0005"}),
    )
    .await;
    let mut body = hello("sim-long");
    body["stream"] = json!(true);
    let response = chat(&server, &key, &body).await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-switchyard-inference-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let data = sse_data(&response.text().await.unwrap());
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "budget_exhausted", "{last}");
    match inference_events(&dir, &id).await.last().unwrap() {
        switchyard_events::Event::InferenceFailed(e) => {
            assert_eq!(e.code, "budget_exhausted");
            assert!(e.tokens_out > 4 && e.tokens_out < 100, "{e:?}");
            assert!(e.cost_micros > 0 && e.cost_micros <= 500, "{e:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// Every billed inference lands once on its tenant's invoice ledger (UsageRecorded on stream
/// billing-<tenant>), at the cost in its event, and a restart bills nothing twice.
#[tokio::test]
async fn inferences_are_billed_once_and_a_restart_bills_nothing_twice() {
    let dir = data_dir();
    let server = start(&dir, SIM_CONFIG);
    let (_, key, _) = tenant_with_key(&server).await;
    for _ in 0..5 {
        assert_eq!(chat(&server, &key, &hello("sim-large")).await.status(), 200);
    }
    let billed = |dir: std::path::PathBuf| async move {
        let store = SqliteStore::open(&dir.join("events.db")).await.unwrap();
        let events = store
            .read_all(Scope::All, GlobalPosition::START, 100_000)
            .await
            .unwrap();
        let cost = |t: &str| -> u64 {
            events
                .iter()
                .filter(|e| e.event_type == t)
                .map(
                    |e| match switchyard_events::Event::from_recorded(e).unwrap() {
                        switchyard_events::Event::UsageRecorded(u) => u.cost_micros,
                        switchyard_events::Event::InferenceCompleted(c) => c.cost_micros,
                        _ => 0,
                    },
                )
                .sum()
        };
        let usage = events
            .iter()
            .filter(|e| e.event_type == "UsageRecorded")
            .count();
        (usage, cost("UsageRecorded"), cost("InferenceCompleted"))
    };
    let mut seen = (0, 0, 0);
    for _ in 0..50 {
        seen = billed(dir.clone()).await;
        if seen.0 == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen.0, 5, "five usage lines");
    assert_eq!(
        seen.1, seen.2,
        "the ledger's total equals the log's inference costs"
    );
    drop(server);
    let server = start(&dir, SIM_CONFIG);
    assert_eq!(chat(&server, &key, &hello("sim-small")).await.status(), 200);
    // The restarted feeder bills the log from the start, in log order (one FIFO queue into
    // the billing actors): any old inference billed again would be on the ledger before the new
    // one is. So once the new line is there, the count is final.
    let mut settled = (0, 0, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while settled.0 < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new inference was never billed: {settled:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        settled = billed(dir.clone()).await;
    }
    assert_eq!(settled.0, 6, "one more line, none twice: {settled:?}");
    assert_eq!(settled.1, settled.2);
}

/// HTTPS upstreams are reached with TLS (rustls): an https base URL is a connection attempt,
/// not a refusal of the scheme.
#[tokio::test]
async fn an_https_upstream_is_dialled_with_tls() {
    let dir = data_dir();
    let config = r#"
[[providers]]
name = "remote"
kind = "openai"
base_url = "https://127.0.0.1:9/v1"
first_token_timeout_ms = 2000
[[models]]
name = "remote"
provider = "remote"
"#;
    let server = start(&dir, config);
    let (_, key, _) = tenant_with_key(&server).await;
    let response = chat(&server, &key, &hello("remote")).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains("scheme"), "{message}");
}
