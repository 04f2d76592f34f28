//! Guardrails (issue 19, item 2) on the real binary, against the mock upstream's `mock-echo`
//! (which answers with the prompt it was sent, so the tests see what the provider saw) and
//! `mock-json-late` (wrong JSON first, right when asked again): redaction before the model and
//! after it, blocks by topic, size, PII and schema with a 400 `content_blocked` that names the
//! rule, a stream checked chunk by chunk, and each decision in the log without the text it
//! matched.

use serde_json::{Value, json};
use switchyard_events::Event;

use crate::gateway::{chat, inference_events, logged, sse_data, start};
use crate::server::{Mock, Server, TOKEN, data_dir, tenant_with_key};

fn config(mock: &Mock) -> String {
    format!(
        r#"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{}/v1"
[[models]]
name = "mock-echo"
provider = "mock"
[[models]]
name = "mock-json-late"
provider = "mock"
[[providers]]
name = "sim"
kind = "sim"
[[models]]
name = "sim-small"
provider = "sim"
"#,
        mock.base
    )
}

async fn set_policy(server: &Server, tenant: &str, policy: Option<Value>) -> reqwest::Response {
    reqwest::Client::new()
        .put(server.url(&format!("/v1/admin/tenants/{tenant}/settings/guardrails")))
        .bearer_auth(TOKEN)
        .json(&json!({"value": policy.map(|p| p.to_string())}))
        .send()
        .await
        .unwrap()
}

fn say(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The answer's status, inference id header (when any) and body.
async fn send(server: &Server, key: &str, body: &Value) -> (u16, String, Value) {
    let response = chat(server, key, body).await;
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("x-switchyard-inference-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, id, response.json().await.unwrap())
}

/// A `GuardrailChecked` as (stage, action, [(rule, action, count)]).
type Check = (String, String, Vec<(String, String, u32)>);

fn checks(events: &[Event]) -> Vec<Check> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::GuardrailChecked(c) => Some((
                c.stage.clone(),
                c.action.clone(),
                c.rules
                    .iter()
                    .map(|r| (r.rule.clone(), r.action.clone(), r.count))
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

/// Every inference stream in the log whose events include a `GuardrailChecked` that blocked.
async fn blocked_streams(dir: &std::path::Path) -> Vec<String> {
    let mut streams: Vec<String> = logged(dir)
        .await
        .into_iter()
        .filter(|(_, t)| t == "GuardrailChecked")
        .map(|(s, _)| s)
        .collect();
    streams.dedup();
    let mut blocked = Vec::new();
    for stream in streams {
        let id = stream.trim_start_matches("inference-").to_owned();
        let events = inference_events(dir, &id).await;
        if checks(&events)
            .iter()
            .any(|(_, action, _)| action == "block")
        {
            blocked.push(id);
        }
    }
    blocked
}

#[tokio::test]
async fn prompts_are_redacted_before_the_model_and_blocked_by_topic_and_size() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock));
    let (tenant, key, _) = tenant_with_key(&server).await;
    let (_, other, _) = tenant_with_key(&server).await;

    // A policy with problems is refused, naming each; nothing is set.
    let response = set_policy(
        &server,
        &tenant,
        Some(json!({"topics": [{"name": "x", "patterns": ["(open"]}], "max_prompt_chars": 0})),
    )
    .await;
    assert_eq!(response.status(), 422);
    let problem = response.text().await.unwrap();
    assert!(
        problem.contains("patterns[0]") && problem.contains("max_prompt_chars"),
        "{problem}"
    );
    for hostile in ["not json", "[1]", "{\"pii\": {\"kinds\": [\"dna\"]}}"] {
        let response = reqwest::Client::new()
            .put(server.url(&format!("/v1/admin/tenants/{tenant}/settings/guardrails")))
            .bearer_auth(TOKEN)
            .json(&json!({"value": hostile}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{hostile}");
    }

    let policy = json!({
        "pii": {"kinds": ["email", "card", "iban"], "stages": "input"},
        "topics": [{"name": "weapons", "keywords": ["nerve agent"], "patterns": ["(?i)build an? bomb"]}],
        "max_prompt_chars": 300
    });
    assert_eq!(
        set_policy(&server, &tenant, Some(policy)).await.status(),
        200
    );

    // What the provider saw (mock-echo answers with it) is the redacted prompt.
    let secret = "card 4111 1111 1111 1111, mail amy@example.com, iban DE89 3704 0044 0532 0130 00";
    let (status, id, body) = send(&server, &key, &say("mock-echo", secret)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "card [REDACTED:CARD], mail [REDACTED:EMAIL], iban [REDACTED:IBAN]"
    );
    let events = inference_events(&dir, &id).await;
    let found = checks(&events);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, "input");
    assert_eq!(found[0].1, "redact");
    let mut rules: Vec<_> = found[0].2.iter().map(|r| r.0.as_str()).collect();
    rules.sort_unstable();
    assert_eq!(rules, ["pii.card", "pii.email", "pii.iban"]);
    assert_eq!(
        (found[1].0.as_str(), found[1].1.as_str()),
        ("output", "pass")
    );
    let raw = std::fs::read(dir.join("events.db")).unwrap();
    for leaked in ["amy@example.com", "4111 1111 1111 1111", "DE89 3704"] {
        assert!(
            !raw.windows(leaked.len()).any(|w| w == leaked.as_bytes()),
            "{leaked} reached the log"
        );
    }

    // A blocked topic and an oversized prompt: 400 content_blocked naming the rule, logged as a
    // failed inference that cost nothing.
    for (text, rule) in [
        ("how would one Build A Bomb at home", "topic.weapons"),
        ("tell me about nerve agent chemistry", "topic.weapons"),
        (&"long ".repeat(80)[..], "max_prompt_chars"),
    ] {
        let (status, _, body) = send(&server, &key, &say("mock-echo", text)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "content_blocked");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(rule), "{message}");
        // Streams are refused the same way, before they start.
        let mut streamed = say("mock-echo", text);
        streamed["stream"] = json!(true);
        assert_eq!(chat(&server, &key, &streamed).await.status(), 400);
    }
    let blocked = blocked_streams(&dir).await;
    assert_eq!(blocked.len(), 6);
    for id in &blocked {
        let events = inference_events(&dir, id).await;
        match events.last().unwrap() {
            Event::InferenceFailed(failed) => {
                assert_eq!(failed.code, "content_blocked");
                assert_eq!(failed.cost_micros, 0);
                // Blocked before routing: the record holds the request, no route.
                assert!(
                    failed.request.is_some() && failed.route.is_none(),
                    "{failed:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    // Another tenant has no guardrails: its prompt reaches the model as sent, and nothing is
    // checked.
    let (status, id, body) = send(&server, &other, &say("mock-echo", secret)).await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], secret);
    assert!(checks(&inference_events(&dir, &id).await).is_empty());

    // Cleared, the tenant's prompts pass untouched.
    assert_eq!(set_policy(&server, &tenant, None).await.status(), 200);
    let (_, _, body) = send(&server, &key, &say("mock-echo", "build a bomb")).await;
    assert_eq!(body["choices"][0]["message"]["content"], "build a bomb");
}

#[tokio::test]
async fn answers_are_checked_whole_and_streamed_and_asked_again_for_their_schema() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock));
    let (tenant, key, _) = tenant_with_key(&server).await;
    let policy = json!({
        "pii": {"kinds": ["email", "phone"], "stages": "output"},
        "topics": [{"name": "bluebird", "keywords": ["project bluebird"], "stages": "output"}]
    });
    assert_eq!(
        set_policy(&server, &tenant, Some(policy)).await.status(),
        200
    );

    // Whole: the model's answer is redacted before the client sees it.
    let text = "reach amy@example.com or +44 20 7946 0958 today";
    let (status, id, body) = send(&server, &key, &say("mock-echo", text)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "reach [REDACTED:EMAIL] or [REDACTED:PHONE] today"
    );
    let found = checks(&inference_events(&dir, &id).await);
    assert_eq!(found[0].1, "pass", "input: nothing applies");
    assert_eq!(found[1].0, "output");
    assert_eq!(found[1].1, "redact");

    // Streamed word by word: an address split over chunks is still redacted whole.
    let mut streamed = say("mock-echo", &format!("{} {text}", "filler ".repeat(20)));
    streamed["stream"] = json!(true);
    let response = chat(&server, &key, &streamed).await;
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]");
    let content: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        content,
        format!(
            "{} reach [REDACTED:EMAIL] or [REDACTED:PHONE] today",
            "filler ".repeat(20)
        )
    );

    // A blocked phrase in the answer: 400 for a whole answer, billed for what the model took;
    // a stream ends with a content_blocked error instead of [DONE].
    let (status, id, body) = send(&server, &key, &say("mock-echo", "about Project Bluebird")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "content_blocked");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("topic.bluebird")
    );
    assert!(id.is_empty());
    let mut streamed = say("mock-echo", "we discuss project bluebird here");
    streamed["stream"] = json!(true);
    let text = chat(&server, &key, &streamed).await.text().await.unwrap();
    let events = sse_data(&text);
    assert_ne!(events.last().unwrap(), "[DONE]");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "content_blocked", "{text}");
    let failures: Vec<_> = logged(&dir)
        .await
        .into_iter()
        .filter(|(_, t)| t == "InferenceFailed")
        .collect();
    assert_eq!(failures.len(), 2);
    for (stream, _) in failures {
        let events = inference_events(&dir, stream.trim_start_matches("inference-")).await;
        let Some(Event::InferenceFailed(failed)) = events.last() else {
            panic!("{events:?}")
        };
        assert_eq!(failed.code, "content_blocked");
        assert!(failed.tokens_out > 0, "the answer's tokens are billed");
        assert!(
            checks(&events)
                .iter()
                .any(|(stage, action, rules)| stage == "output"
                    && action == "block"
                    && rules[0].0 == "topic.bluebird")
        );
    }

    // The output schema: a wrong answer is asked for again once, and the second one fits.
    let schema = json!({"type": "object", "required": ["answer"],
        "properties": {"answer": {"type": "string"}}});
    let policy = json!({"output_schema": schema});
    assert_eq!(
        set_policy(&server, &tenant, Some(policy)).await.status(),
        200
    );
    let (status, id, body) = send(&server, &key, &say("mock-json-late", "answer in JSON")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "{\"answer\": \"fixed\"}"
    );
    let events = inference_events(&dir, &id).await;
    let found = checks(&events);
    assert_eq!(
        found[1],
        (
            "output".to_owned(),
            "retry".to_owned(),
            vec![("output_schema".to_owned(), "retry".to_owned(), 1)]
        )
    );
    let Some(Event::InferenceCompleted(done)) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(done.attempts, 2);
    assert_eq!(done.tokens_out, 10, "both calls' tokens");
    // With no retry allowed, the first wrong answer is blocked.
    let policy = json!({"output_schema": schema, "schema_retries": 0});
    assert_eq!(
        set_policy(&server, &tenant, Some(policy)).await.status(),
        200
    );
    let (status, _, body) = send(&server, &key, &say("mock-json-late", "answer in JSON")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("output_schema")
    );
}

/// Embeddings inputs go through the same input rules: redacted before the model (the
/// simulator's vectors are a function of the text, so the guarded tenant's vector for a text
/// with an address equals another tenant's for the redacted text) and blocked by topic.
#[tokio::test]
async fn embeddings_inputs_are_redacted_and_blocked_like_prompts() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock));
    let (tenant, key, _) = tenant_with_key(&server).await;
    let (_, other, _) = tenant_with_key(&server).await;
    let policy = json!({"pii": {"kinds": ["email"]},
        "topics": [{"name": "secret", "keywords": ["bluebird"]}]});
    assert_eq!(
        set_policy(&server, &tenant, Some(policy)).await.status(),
        200
    );
    let embed = |key: String, input: Value| {
        let request = reqwest::Client::new()
            .post(server.url("/v1/embeddings"))
            .bearer_auth(key)
            .json(&json!({"model": "sim-small", "input": input}))
            .send();
        async move {
            let response = request.await.unwrap();
            let status = response.status().as_u16();
            let id = response
                .headers()
                .get("x-switchyard-inference-id")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, id, response.json::<Value>().await.unwrap())
        }
    };
    let (status, id, guarded) = embed(key.clone(), json!(["mail amy@example.com", "hi"])).await;
    assert_eq!(status, 200, "{guarded}");
    let (_, _, plain) = embed(other.clone(), json!(["mail [REDACTED:EMAIL]", "hi"])).await;
    assert_eq!(guarded["data"], plain["data"]);
    let found = checks(&inference_events(&dir, &id).await);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].0.as_str(), found[0].1.as_str()),
        ("input", "redact")
    );

    let (status, _, body) = embed(key, json!("all about bluebird")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "content_blocked");
    assert_eq!(blocked_streams(&dir).await.len(), 1);
}
