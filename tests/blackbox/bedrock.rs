//! AWS Bedrock's Converse (issue 19, item 3) through the real binary, against the mock
//! upstream's Bedrock (`benches/gateway/mock_bedrock.rs`), which recomputes each request's SigV4
//! signature from what it received and refuses what Converse refuses (turns that do not
//! alternate, blank text, tool results without their tool uses, unknown fields).

use serde_json::{Value, json};

use crate::gateway::{chat, inference_events, sse_data};
use crate::providers::{streamed, tokens, whole};
use crate::server::{Mock, Server, data_dir, tenant_with_key};

fn config(mock: &Mock, dir: &std::path::Path) -> String {
    let key = dir.join("bedrock.key");
    std::fs::write(&key, "bedrock-test-key\n").unwrap();
    let key = key.display();
    let base = &mock.base;
    format!(
        r#"
[[providers]]
name = "bedrock"
kind = "bedrock"
region = "us-east-1"
base_url = "{base}"
[[providers]]
name = "bedrock-keyed"
kind = "bedrock"
region = "us-east-1"
base_url = "{base}"
api_key_file = "{key}"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{base}/v1"
[[models]]
name = "claude"
provider = "bedrock"
upstream = "anthropic.claude-3-5-haiku-20241022-v1:0"
[[models]]
name = "claude-keyed"
provider = "bedrock-keyed"
upstream = "anthropic.claude-3-5-haiku-20241022-v1:0"
[[models]]
name = "claude-long"
provider = "bedrock"
upstream = "bedrock-long"
fallbacks = ["mock"]
[[models]]
name = "mock"
provider = "mock"
"#
    )
}

fn start(dir: &std::path::Path, config: &str, secret: &str) -> Server {
    crate::gateway::start_env(
        dir,
        config,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDMOCK"),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_SESSION_TOKEN", "mock-session-token"),
        ],
    )
}

fn weather() -> Value {
    json!([{"type": "function", "function": {"name": "weather",
        "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}}])
}

#[tokio::test]
async fn bedrock_is_spoken_to_in_converse_and_every_request_is_signed() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock, &dir), "mock-secret");
    let (_, key, _) = tenant_with_key(&server).await;
    let ask = |model: &str| {
        json!({"model": model, "max_tokens": 20, "seed": 7, "user": "u-1",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]})
    };

    // SigV4 (the mock checks the signature), whole and streamed, with the usage billed.
    let expected = "hello from bedrock with a system prompt";
    let (id, body) = whole(&server, &key, ask("claude")).await;
    assert_eq!(body["model"], "claude");
    assert_eq!(body["choices"][0]["message"]["content"], expected);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(tokens(&inference_events(&dir, &id).await), (10, 5));
    let (text, id) = streamed(&server, &key, ask("claude")).await;
    assert_eq!(text, expected);
    assert_eq!(tokens(&inference_events(&dir, &id).await), (10, 5));

    // A Bedrock API key as a bearer token instead of a signature.
    let (_, body) = whole(&server, &key, ask("claude-keyed")).await;
    assert_eq!(body["choices"][0]["message"]["content"], expected);

    // Tool calls, whole and streamed, and the result sent back as a toolResult.
    let tooled = json!({"model": "claude", "tools": weather(), "tool_choice": "required",
        "messages": [{"role": "user", "content": "weather?"}]});
    let (_, body) = whole(&server, &key, tooled.clone()).await;
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = choice["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"q": 1})
    );
    let mut streaming = tooled;
    streaming["stream"] = json!(true);
    let response = chat(&server, &key, &streaming).await;
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    let arguments: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"q": 1})
    );
    let (_, body) = whole(
        &server,
        &key,
        json!({"model": "claude", "tools": weather(), "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"sky\": \"clear\"}"}
        ]}),
    )
    .await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "hello from bedrock"
    );

    // A JSON Schema answer comes back as the message's content.
    let (_, body) = whole(
        &server,
        &key,
        json!({"model": "claude", "messages": [{"role": "user", "content": "q?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "a",
                "schema": {"type": "object", "properties": {"q": {"type": "integer"}}}}}}),
    )
    .await;
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(content).unwrap(),
        json!({"q": 1})
    );
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());

    // A prompt over the model's window goes to the fallback.
    let (_, body) = whole(&server, &key, ask("claude-long")).await;
    assert_eq!(body["model"], "mock");

    // What Converse cannot carry is refused before any call, with the reason.
    let response = chat(
        &server,
        &key,
        &json!({"model": "claude", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("n must be 1"),
        "{error}"
    );
}

/// The mock really checks signatures: signed with the wrong secret, Bedrock refuses.
#[tokio::test]
async fn a_request_signed_with_the_wrong_secret_is_refused_by_bedrock() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock, &dir), "not-the-secret");
    let (_, key, _) = tenant_with_key(&server).await;
    let response = chat(
        &server,
        &key,
        &json!({"model": "claude", "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(response.status(), 502);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("signature we calculated does not match"),
        "{error}"
    );
    assert!(!message.contains("not-the-secret"), "{error}");
}
