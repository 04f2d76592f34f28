//! Azure OpenAI, Mistral and Gemini (issue 19, item 3) through the real binary, against the mock
//! upstream's copies of their wire formats (`benches/gateway/mock_providers.rs`), which refuse
//! what the real services refuse: Azure without `api-version` or its `api-key` header, Mistral
//! with a field it does not know, Gemini with a role other than `user` and `model`.

use serde_json::{Value, json};

use crate::gateway::{chat, inference_events, sse_data, start};
use crate::server::{Mock, data_dir, tenant_with_key};

fn config(mock: &Mock, dir: &std::path::Path) -> String {
    let key = dir.join("provider.key");
    std::fs::write(&key, "test-provider-key\n").unwrap();
    let key = key.display();
    let base = &mock.base;
    format!(
        r#"
[[providers]]
name = "azure"
kind = "azure"
base_url = "{base}"
api_version = "2024-10-21"
api_key_file = "{key}"
[[providers]]
name = "mistral"
kind = "mistral"
base_url = "{base}/mistral/v1"
api_key_file = "{key}"
[[providers]]
name = "gemini"
kind = "gemini"
base_url = "{base}"
api_key_file = "{key}"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{base}/v1"
[[models]]
name = "azure-gpt"
provider = "azure"
upstream = "gpt4o-prod"
[[models]]
name = "mistral-small"
provider = "mistral"
[[models]]
name = "gemini-flash"
provider = "gemini"
upstream = "gemini-2.0-flash"
[[models]]
name = "gemini-blocked"
provider = "gemini"
fallbacks = ["mock"]
[[models]]
name = "mock"
provider = "mock"
"#
    )
}

pub(crate) async fn whole(
    server: &crate::server::Server,
    key: &str,
    body: Value,
) -> (String, Value) {
    let response = chat(server, key, &body).await;
    let status = response.status();
    let id = response
        .headers()
        .get("x-switchyard-inference-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    (id, body)
}

/// A stream's text and its inference id.
pub(crate) async fn streamed(
    server: &crate::server::Server,
    key: &str,
    mut body: Value,
) -> (String, String) {
    body["stream"] = json!(true);
    let response = chat(server, key, &body).await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-switchyard-inference-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]", "{events:?}");
    let text = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    (text, id)
}

pub(crate) fn tokens(events: &[switchyard_events::Event]) -> (u64, u64) {
    match events.last().unwrap() {
        switchyard_events::Event::InferenceCompleted(done) => (done.tokens_in, done.tokens_out),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn azure_mistral_and_gemini_are_spoken_to_in_their_own_wire_formats() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock, &dir));
    let (_, key, _) = tenant_with_key(&server).await;
    let ask = |model: &str| {
        json!({"model": model, "max_completion_tokens": 20, "seed": 7, "user": "u-1",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]})
    };

    // Azure: the deployment, its version and key (the mock refuses anything else).
    let (_, body) = whole(&server, &key, ask("azure-gpt")).await;
    assert_eq!(body["model"], "azure-gpt");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "hello from the mock upstream"
    );
    let (text, _) = streamed(&server, &key, ask("azure-gpt")).await;
    assert_eq!(text, "hello from the mock");

    // Mistral: its field names only (the mock answers 422 to `stream_options`, `user`,
    // `max_completion_tokens`, `seed`, `tool_choice: "required"`), and the usage of its last chunk.
    let mut tooled = ask("mistral-small");
    tooled["tools"] = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]);
    tooled["tool_choice"] = json!("required");
    let (_, body) = whole(&server, &key, tooled).await;
    assert_eq!(body["usage"]["completion_tokens"], 5);
    let (text, id) = streamed(&server, &key, ask("mistral-small")).await;
    assert_eq!(text, "hello from mistral");
    assert_eq!(tokens(&inference_events(&dir, &id).await), (10, 3));

    // Gemini: the system instruction, the text, the usage, whole and streamed.
    let (id, body) = whole(&server, &key, ask("gemini-flash")).await;
    let expected = "hello from gemini with a system instruction";
    assert_eq!(body["choices"][0]["message"]["content"], expected);
    assert_eq!(tokens(&inference_events(&dir, &id).await), (10, 5));
    let (text, id) = streamed(&server, &key, ask("gemini-flash")).await;
    assert_eq!(text, expected);
    assert_eq!(tokens(&inference_events(&dir, &id).await), (10, 5));

    // Gemini's tool calls as OpenAI's, and the tool's result sent back as a functionResponse.
    let weather = json!([{"type": "function", "function": {"name": "weather",
        "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}}]);
    let (_, body) = whole(
        &server,
        &key,
        json!({"model": "gemini-flash", "tools": weather,
        "messages": [{"role": "user", "content": "weather?"}]}),
    )
    .await;
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"q": 1})
    );
    let (_, body) = whole(
        &server,
        &key,
        json!({"model": "gemini-flash", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"sky\": \"clear\"}"}
        ]}),
    )
    .await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "hello from gemini"
    );

    // A prompt Gemini blocks goes to the fallback.
    let (_, body) = whole(&server, &key, ask("gemini-blocked")).await;
    assert_eq!(body["model"], "mock");
}

/// Load balancing across deployments of one model (issue 19, item 3): a weighted model's
/// traffic follows the weights, and a failing deployment is passed over at once its circuit
/// opens, while the client sees one model throughout.
#[tokio::test]
async fn a_models_deployments_share_its_traffic_and_a_failing_one_is_passed_over() {
    let mock = Mock::start();
    let dir = data_dir();
    let base = &mock.base;
    let config = format!(
        r#"
[[providers]]
name = "east"
kind = "openai"
base_url = "{base}/v1"
[[providers]]
name = "west"
kind = "openai"
base_url = "{base}/v1"
[[models]]
name = "gpt"
provider = "east"
upstream = "mock"
weight = 3
deployments = [{{provider = "west", upstream = "mock"}}]
[[models]]
name = "flaky"
provider = "east"
upstream = "mock-500"
deployments = [{{provider = "west", upstream = "mock"}}]
"#
    );
    let server = start(&dir, &config);
    let (_, key, _) = tenant_with_key(&server).await;
    let hello =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let served = |events: Vec<switchyard_events::Event>| match events.last().unwrap() {
        switchyard_events::Event::InferenceCompleted(done) => {
            (done.model.clone(), done.provider.clone(), done.attempts)
        }
        other => panic!("{other:?}"),
    };

    let mut east = 0;
    for _ in 0..200 {
        let (id, body) = whole(&server, &key, hello("gpt")).await;
        assert_eq!(body["model"], "gpt");
        let (model, provider, _) = served(inference_events(&dir, &id).await);
        assert_eq!(model, "gpt");
        east += usize::from(provider == "east");
    }
    // Weight 3 against 1: about 150 of 200 go east (a binomial's 4.9 standard deviations
    // either way).
    assert!((120..=180).contains(&east), "{east} of 200 went east");

    // The requests first, their events after: reading the log per request made the loop slower
    // than the breaker's 10 s cool-down under load, and a half-open probe is then legitimate.
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(whole(&server, &key, hello("flaky")).await.0);
    }
    let mut attempts = Vec::new();
    for id in &ids {
        let (_, provider, tried) = served(inference_events(&dir, id).await);
        assert_eq!(provider, "west", "only the working deployment answers");
        attempts.push(tried);
    }
    assert!(
        attempts.iter().any(|&a| a > 1),
        "{attempts:?}: east was tried and failed"
    );
    // Once open, east is not called again before its cool-down ends (at most one half-open
    // probe if the machine is slow enough for 10 s to pass).
    assert!(
        attempts[10..].iter().filter(|&&a| a > 1).count() <= 1,
        "{attempts:?}: once east's circuit is open, it is not called"
    );
}
