//! The exact response cache (issue 19, item 1) on the real binary: a repeated request is
//! answered from the cache, per tenant, billed at the configured share and logged as the
//! cache's inference; `no-cache`, `no-store` and `ttl` are obeyed; a streamed answer is kept
//! and replayed as a stream; two nodes sharing Redis share the cache.

use serde_json::{Value, json};
use switchyard_events::Event;

use crate::cluster::{Recipe, until_key};
use crate::gateway::{SIM_CONFIG, chat, inference_events, sse_data, start};
use crate::server::{Server, data_dir, tenant_with_key};

fn config() -> String {
    format!("{SIM_CONFIG}\n[cache]\nenabled = true\nhit_price = 0.5\n")
}

fn ask(text: &str) -> Value {
    json!({"model": "sim-small", "messages": [{"role": "user", "content": text}]})
}

/// The answer's `x-switchyard-cache` header, inference id and body.
pub(crate) async fn send(server: &Server, key: &str, body: &Value) -> (String, String, Value) {
    let response = chat(server, key, body).await;
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (cache, id) = (
        header("x-switchyard-cache"),
        header("x-switchyard-inference-id"),
    );
    (cache, id, response.json().await.unwrap())
}

/// A stream's `x-switchyard-cache` header, its text, and its tool calls' names.
async fn stream(server: &Server, key: &str, mut body: Value) -> (String, String, Vec<String>) {
    body["stream"] = json!(true);
    let response = chat(server, key, &body).await;
    assert_eq!(response.status(), 200);
    let cache = response
        .headers()
        .get("x-switchyard-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    let (mut content, mut tools) = (String::new(), Vec::new());
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            for call in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(name) = call["function"]["name"].as_str() {
                    tools.push(name.to_owned());
                }
            }
        }
    }
    (cache, content, tools)
}

fn completed(events: &[Event]) -> switchyard_events::InferenceCompleted {
    events
        .iter()
        .find_map(|e| match e {
            Event::InferenceCompleted(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap()
}

#[tokio::test]
async fn a_repeated_request_is_answered_from_the_tenants_cache_at_its_share_of_the_price() {
    let dir = data_dir();
    let server = start(&dir, &config());
    let (_, key, _) = tenant_with_key(&server).await;
    let (_, other, _) = tenant_with_key(&server).await;

    let (first, first_id, first_body) = send(&server, &key, &ask("what is a cache")).await;
    assert_eq!(first, "miss");
    let (second, second_id, second_body) = send(&server, &key, &ask("what is a cache")).await;
    assert_eq!(second, "hit");
    assert_ne!(first_id, second_id, "a hit is an inference of its own");
    assert_eq!(first_body["choices"], second_body["choices"]);
    assert_eq!(first_body["usage"], second_body["usage"]);
    // Logged as the cache's inference, billed at half the first answer's cost.
    let miss = completed(&inference_events(&dir, &first_id).await);
    let hit_events = inference_events(&dir, &second_id).await;
    let hit = completed(&hit_events);
    assert_eq!(miss.provider, "sim");
    assert_eq!(hit.provider, "cache");
    assert_eq!(hit.model, miss.model);
    assert_eq!(hit.attempts, 0);
    assert_eq!(
        (hit.tokens_in, hit.tokens_out),
        (miss.tokens_in, miss.tokens_out)
    );
    assert_eq!(hit.cost_micros, miss.cost_micros.div_ceil(2));
    assert!(
        hit_events
            .iter()
            .any(|e| matches!(e, Event::InferenceCompleted(c)
                if c.route.as_ref().is_some_and(|r| r.policy == "cache")))
    );

    // Another tenant sending the same request never sees the first tenant's entry.
    let (theirs, _, _) = send(&server, &other, &ask("what is a cache")).await;
    assert_eq!(theirs, "miss");
    // `user` and `metadata` are not part of the key; a different temperature is.
    let mut tagged = ask("what is a cache");
    tagged["user"] = json!("u-1");
    assert_eq!(send(&server, &key, &tagged).await.0, "hit");
    let mut warmer = ask("what is a cache");
    warmer["temperature"] = json!(1.5);
    assert_eq!(send(&server, &key, &warmer).await.0, "miss");

    // no-cache: looked past, and the fresh answer stored; no-store (body or header): not kept.
    let mut fresh = ask("what is a cache");
    fresh["cache"] = json!({"no-cache": true});
    assert_eq!(send(&server, &key, &fresh).await.0, "miss");
    let mut unkept = ask("keep nothing");
    unkept["cache"] = json!({"no-store": true});
    assert_eq!(send(&server, &key, &unkept).await.0, "miss");
    assert_eq!(send(&server, &key, &ask("keep nothing")).await.0, "miss");
    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("cache-control", "no-store")
        .json(&ask("nor this"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-switchyard-cache"], "miss");
    assert_eq!(send(&server, &key, &ask("nor this")).await.0, "miss");
    assert_eq!(send(&server, &key, &ask("nor this")).await.0, "hit");

    // A ttl of one second: gone after it.
    let mut brief = ask("brief");
    brief["cache"] = json!({"ttl": 1});
    assert_eq!(send(&server, &key, &brief).await.0, "miss");
    assert_eq!(send(&server, &key, &ask("brief")).await.0, "hit");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(send(&server, &key, &ask("brief")).await.0, "miss");

    // A bad cache option is refused before anything is spent.
    let mut bad = ask("x");
    bad["cache"] = json!({"forever": true});
    assert_eq!(chat(&server, &key, &bad).await.status(), 422);
}

#[tokio::test]
async fn a_streamed_answer_is_kept_and_replayed_as_a_stream_with_its_tool_calls() {
    let dir = data_dir();
    let server = start(&dir, &config());
    let (_, key, _) = tenant_with_key(&server).await;
    let (miss, text, _) = stream(&server, &key, ask("stream me a story")).await;
    assert_eq!(miss, "miss");
    let (hit, replayed, _) = stream(&server, &key, ask("stream me a story")).await;
    assert_eq!(hit, "hit");
    assert_eq!(replayed, text);
    // The whole form of the same request is the same entry.
    let (whole, _, body) = send(&server, &key, &ask("stream me a story")).await;
    assert_eq!(whole, "hit");
    assert_eq!(body["choices"][0]["message"]["content"], text);

    // A tool call streamed, kept, and replayed whole and streamed.
    let mut tools = ask("multiply 6 by 7");
    tools["tools"] = json!([{"type": "function", "function": {"name": "multiply",
        "description": "multiply two numbers",
        "parameters": {"type": "object", "required": ["a", "b"],
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}]);
    let (miss, _, called) = stream(&server, &key, tools.clone()).await;
    assert_eq!(
        (miss.as_str(), called.clone()),
        ("miss", vec!["multiply".to_owned()])
    );
    let (hit, _, again) = stream(&server, &key, tools.clone()).await;
    assert_eq!((hit.as_str(), again), ("hit", called));
    let (whole, _, body) = send(&server, &key, &tools).await;
    assert_eq!(whole, "hit");
    let call = &body["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "multiply");
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({"a": 6, "b": 7})
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
}

/// Any request may go to any node: with the cache in the shared Redis, an answer one node
/// kept is a hit on the other, as it would be on one node.
#[tokio::test]
async fn two_nodes_sharing_redis_share_the_cache() {
    let dir = data_dir();
    let path = dir.join("cache.toml");
    std::fs::write(&path, config()).unwrap();
    let recipe = Recipe::new().with("SWITCHYARD_CONFIG", path.to_str().unwrap());
    let (a, b) = (recipe.start(), recipe.start());
    let (_, key, _) = tenant_with_key(&a).await;
    let (_, other, _) = tenant_with_key(&a).await;
    until_key(&b, &key, 200).await;
    until_key(&b, &other, 200).await;
    let question = ask(&format!("shared {}", uuid::Uuid::now_v7()));
    let (first, _, body) = send(&a, &key, &question).await;
    assert_eq!(first, "miss");
    let (second, _, again) = send(&b, &key, &question).await;
    assert_eq!(second, "hit");
    assert_eq!(body["choices"], again["choices"]);
    assert_eq!(send(&b, &other, &question).await.0, "miss");
}
