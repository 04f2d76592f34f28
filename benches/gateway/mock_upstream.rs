//! A fast mock of an OpenAI-compatible upstream, for the gateway benchmark and the provider
//! tests: it answers at once, in JSON or SSE, and misbehaves on request. The `model` of a chat
//! request picks the behaviour:
//!
//! | model | answer |
//! |---|---|
//! | anything else | a completion (or a 5-chunk stream) with usage 10 in / 5 out |
//! | anything else, offered `tools` | a call of the first tool with arguments `{"q":1}` (finish reason `tool_calls`; streamed: the arguments in two pieces) |
//! | `mock-slow` | the same after 300 ms |
//! | `mock-500` | 500 |
//! | `mock-429` | 429 with `Retry-After: 1` |
//! | `mock-flaky` | 500 on odd-numbered calls, a completion on even ones |
//! | `mock-malformed` | 200 with a body that is not JSON (streamed: a chunk that is not JSON) |
//! | `mock-cut` | a stream that stops after two chunks, without `[DONE]` |
//! | `mock-stall` | a stream that sends one chunk and then nothing for a minute |
//! | `mock-401-echo` | 401 whose message quotes the `Authorization` header it was sent (as some providers do) |
//! | `mock-context` | 400 `context_length_exceeded`, as OpenAI refuses a prompt over the model's window |
//! | `mock-filtered` | 400 `content_filter`, as Azure OpenAI refuses a prompt its content policy flags |
//! | `mock-echo` | the last message's text (streamed: word by word) |
//! | `mock-json-late` | `not json` to a conversation without an assistant turn, `{"answer": "fixed"}` to one with (a model that gets a schema right when asked again) |
//!
//! `POST /v1/messages` answers in Anthropic's Messages format (JSON, or its SSE events when
//! `stream` is true), with a `tool_use` block when the request offers tools; it refuses a request
//! without `anthropic-version`.
//!
//! Azure OpenAI, Mistral and Gemini are served in their own wire formats (`mock_providers.rs`),
//! AWS Bedrock's Converse with SigV4 checks (`mock_bedrock.rs`).
//!
//! `MOCK_LISTEN` (default `127.0.0.1:0`) and `MOCK_WORKERS` (default 1); the first line on
//! stdout is `mock-upstream listening on http://ADDR`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};

#[path = "mock_bedrock.rs"]
mod bedrock; // AWS Bedrock's Converse, SigV4-checked
#[path = "mock_providers.rs"]
mod providers; // Azure OpenAI, Mistral and Gemini wire formats
use bytes::Bytes;
use serde_json::{Value, json};

static CALLS: AtomicU64 = AtomicU64::new(0);

fn completion(model: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from the mock upstream"}, "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    })
}

/// A call of the tool named `tool`, as an OpenAI answer carries it.
fn tool_call(model: &str, tool: &str) -> Value {
    let mut answer = completion(model);
    answer["choices"][0]["message"] = json!({"role": "assistant", "content": null,
        "tool_calls": [{"id": "call_mock", "type": "function",
                        "function": {"name": tool, "arguments": "{\"q\":1}"}}]});
    answer["choices"][0]["finish_reason"] = json!("tool_calls");
    answer
}

fn tool_call_stream(model: &str, tool: &str) -> Vec<String> {
    let mut events = vec![chunk(
        model,
        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_mock",
            "type": "function", "function": {"name": tool, "arguments": ""}}]}),
        None,
    )];
    for part in ["{\"q\":", "1}"] {
        events.push(chunk(
            model,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
            None,
        ));
    }
    events.push(chunk(model, json!({}), Some("tool_calls")));
    let mut rest = stream_body(model);
    // The usage chunk and [DONE], as a text answer ends.
    events.extend(rest.split_off(rest.len() - 2));
    events
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    let chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {chunk}\n\n")
}

fn stream_body(model: &str) -> Vec<String> {
    let mut events = vec![chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    for word in ["hello ", "from ", "the ", "mock"] {
        events.push(chunk(model, json!({"content": word}), None));
    }
    events.push(chunk(model, json!({}), Some("stop")));
    let usage = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
    events.push(format!("data: {usage}\n\n"));
    events.push("data: [DONE]\n\n".to_owned());
    events
}

/// The text of the scripted models (`mock-echo`, `mock-json-late`).
fn scripted(model: &str, body: &Value) -> Option<String> {
    let messages = body["messages"].as_array()?;
    match model {
        "mock-echo" => Some(
            messages
                .last()
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_owned(),
        ),
        "mock-json-late" if messages.iter().any(|m| m["role"] == "assistant") => {
            Some("{\"answer\": \"fixed\"}".to_owned())
        }
        "mock-json-late" => Some("not json".to_owned()),
        _ => None,
    }
}

/// `text` streamed a word (and its following space) at a time.
fn text_stream(model: &str, text: &str) -> Vec<String> {
    let mut events = vec![chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    for word in text.split_inclusive(' ') {
        events.push(chunk(model, json!({"content": word}), None));
    }
    events.push(chunk(model, json!({}), Some("stop")));
    events.push("data: [DONE]\n\n".to_owned());
    events
}

fn sse(events: Vec<String>, stall_after: Option<usize>) -> HttpResponse {
    let stream = futures_util::stream::unfold(
        (events.into_iter(), 0usize),
        move |(mut events, sent)| async move {
            if stall_after == Some(sent) {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            events.next().map(|e| {
                (
                    Ok::<_, std::convert::Infallible>(Bytes::from(e)),
                    (events, sent + 1),
                )
            })
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(stream)
}

async fn chat(request: actix_web::HttpRequest, body: web::Json<Value>) -> HttpResponse {
    let model = body["model"].as_str().unwrap_or("mock").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    match model.as_str() {
        "mock-401-echo" => {
            let sent = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            return HttpResponse::Unauthorized().json(
                json!({"error": {"message": format!("Incorrect API key provided: {sent}"),
                                 "type": "invalid_request_error", "code": "invalid_api_key"}}),
            );
        }
        "mock-context" => {
            return HttpResponse::BadRequest().json(json!({"error": {
                "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}));
        }
        "mock-filtered" => {
            return HttpResponse::BadRequest().json(json!({"error": {
                "message": "The response was filtered due to the prompt triggering content management policy.",
                "type": null, "param": "prompt", "code": "content_filter"}}));
        }
        "mock-500" => {
            return HttpResponse::InternalServerError()
                .json(json!({"error": {"message": "mock failure"}}));
        }
        "mock-429" => {
            return HttpResponse::TooManyRequests()
                .insert_header(("retry-after", "1"))
                .json(json!({"error": {"message": "slow down"}}));
        }
        "mock-flaky" if CALLS.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) => {
            return HttpResponse::InternalServerError()
                .json(json!({"error": {"message": "flaky"}}));
        }
        "mock-slow" => tokio::time::sleep(Duration::from_millis(300)).await,
        _ => {}
    }
    if let Some(text) = scripted(&model, &body) {
        return if stream {
            sse(text_stream(&model, &text), None)
        } else {
            let mut answer = completion(&model);
            answer["choices"][0]["message"]["content"] = json!(text);
            HttpResponse::Ok().json(answer)
        };
    }
    if let Some(tool) = body["tools"][0]["function"]["name"].as_str() {
        return if stream {
            sse(tool_call_stream(&model, tool), None)
        } else {
            HttpResponse::Ok().json(tool_call(&model, tool))
        };
    }
    if !stream {
        if model == "mock-malformed" {
            return HttpResponse::Ok()
                .content_type("application/json")
                .body("{\"choices\": [oops");
        }
        return HttpResponse::Ok().json(completion(&model));
    }
    match model.as_str() {
        "mock-malformed" => sse(vec!["data: {\"choices\": [oops\n\n".to_owned()], None),
        "mock-cut" => sse(stream_body(&model).into_iter().take(2).collect(), None),
        "mock-stall" => sse(stream_body(&model), Some(1)),
        _ => sse(stream_body(&model), None),
    }
}

fn anthropic_event(kind: &str, data: Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

async fn messages(req: actix_web::HttpRequest, body: web::Json<Value>) -> HttpResponse {
    if !req.headers().contains_key("anthropic-version") {
        return HttpResponse::BadRequest().json(json!({"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version header is required"}}));
    }
    let tool = body["tools"][0]["name"].as_str().map(str::to_owned);
    let stop = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    if !body["stream"].as_bool().unwrap_or(false) {
        let mut content = vec![json!({"type": "text", "text": "hello from the mock"})];
        if let Some(name) = &tool {
            content.push(
                json!({"type": "tool_use", "id": "toolu_1", "name": name, "input": {"q": 1}}),
            );
        }
        return HttpResponse::Ok().json(json!({"id": "msg_mock", "type": "message", "role": "assistant",
            "content": content, "stop_reason": stop, "usage": {"input_tokens": 10, "output_tokens": 5}}));
    }
    let mut events = vec![
        anthropic_event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_mock", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        ),
        anthropic_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        anthropic_event("ping", json!({"type": "ping"})),
    ];
    for word in ["hello ", "from ", "the ", "mock"] {
        events.push(anthropic_event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}})));
    }
    events.push(anthropic_event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    if let Some(name) = &tool {
        events.push(anthropic_event("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}})));
        for part in ["{\"q\":", "1}"] {
            events.push(anthropic_event("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}})));
        }
        events.push(anthropic_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    events.push(anthropic_event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 5}})));
    events.push(anthropic_event(
        "message_stop",
        json!({"type": "message_stop"}),
    ));
    sse(events, None)
}

async fn embeddings(body: web::Json<Value>) -> HttpResponse {
    let count = body["input"].as_array().map_or(1, Vec::len);
    let data: Vec<Value> = (0..count)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.6, 0.8]}))
        .collect();
    HttpResponse::Ok().json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 3, "total_tokens": 3}}))
}

async fn models() -> HttpResponse {
    HttpResponse::Ok().json(json!({"object": "list", "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "mock"}]}))
}

fn main() -> std::io::Result<()> {
    let listen = std::env::var("MOCK_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into());
    let workers = std::env::var("MOCK_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| {
            App::new()
                .app_data(web::JsonConfig::default().limit(16 * 1024 * 1024))
                .route("/v1/chat/completions", web::post().to(chat))
                .route("/v1/embeddings", web::post().to(embeddings))
                .route("/v1/messages", web::post().to(messages))
                .route("/v1/models", web::get().to(models))
                .configure(providers::routes)
                .configure(bedrock::routes)
        })
        .workers(workers)
        .backlog(4096)
        .bind(listen)?;
        for addr in server.addrs() {
            #[expect(
                clippy::print_stdout,
                reason = "the bound address is the binary's output"
            )]
            {
                println!("mock-upstream listening on http://{addr}");
            }
        }
        server.run().await
    })
}
