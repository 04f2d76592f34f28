//! Anthropic's Messages API behind the OpenAI shape: the request is mapped (system prompt out of
//! the messages, tool calls and tool results as content blocks, OpenAI's tool and tool-choice
//! forms to Anthropic's), and the answer mapped back (text and `tool_use` blocks to a message
//! with `tool_calls`, stop reasons to finish reasons, usage), whole and streamed (`message_start`
//! … `message_stop` events to chat-completion chunks).

use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::http::{Endpoint, malformed};
use super::openai_compat::{Step, relay, send_checked};
use super::{ChunkStream, Completion, Embeddings, Provider, ProviderError, StreamEvent, Usage};
use crate::config::{ModelConfig, ProviderConfig};
use crate::openai::{ChatRequest, Role};

/// The API version this adapter speaks.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by Anthropic; this is sent when the client set none.
pub const DEFAULT_MAX_TOKENS: u64 = 4_096;

/// One Anthropic endpoint.
#[derive(Debug)]
pub struct Anthropic {
    http: Endpoint,
}

impl Anthropic {
    pub fn new(config: &ProviderConfig) -> crate::Result<Self> {
        Ok(Anthropic {
            http: Endpoint::new(config)?,
        })
    }

    async fn send(&self, body: &Value) -> Result<reqwest::Response, ProviderError> {
        let mut request = self
            .http
            .client
            .post(format!("{}/messages", self.http.base_url))
            .header("anthropic-version", API_VERSION)
            .json(body);
        if let Some(key) = &self.http.api_key {
            request = request.header("x-api-key", key);
        }
        send_checked(request, self.http.first_token_timeout, self.http.timeout)
            .await
            .map_err(|e| e.redact(self.http.api_key.as_deref()))
    }
}

fn rejected(message: &str) -> ProviderError {
    ProviderError::fatal("unsupported_by_provider", 400, message)
}

/// The text of a message's content (string, or the text parts of an array).
fn text_blocks(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(text)) if !text.is_empty() => {
            vec![json!({"type": "text", "text": text})]
        }
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|text| json!({"type": "text", "text": text}))
            .collect(),
        _ => Vec::new(),
    }
}

/// Maps an OpenAI chat request to a Messages API body.
pub fn to_messages(
    model: &ModelConfig,
    request: &ChatRequest,
    stream: bool,
) -> Result<Value, ProviderError> {
    if request.choices() > 1 {
        return Err(rejected(
            "this provider answers one choice per request (n must be 1)",
        ));
    }
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for message in &request.messages {
        let (role, blocks) = match message.role {
            Role::System | Role::Developer => {
                system.push(message.text());
                continue;
            }
            Role::User => ("user", text_blocks(message.content.as_ref())),
            Role::Assistant => {
                let mut blocks = text_blocks(message.content.as_ref());
                for call in message
                    .tool_calls
                    .as_ref()
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let arguments = call
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let input: Value = serde_json::from_str(arguments)
                        .map_err(|_| rejected("a tool call's arguments are not JSON"))?;
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
                        "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default(),
                        "input": input,
                    }));
                }
                ("assistant", blocks)
            }
            Role::Tool | Role::Function => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
                    "content": message.text(),
                })],
            ),
        };
        if blocks.is_empty() {
            continue;
        }
        // Anthropic wants user and assistant turns to alternate: merge neighbours.
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(content) = last["content"].as_array_mut() {
                    content.extend(blocks);
                }
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model.upstream_name()));
    body.insert("messages".into(), Value::Array(messages));
    body.insert(
        "max_tokens".into(),
        json!(request.output_cap().unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t.min(1.0)));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(stops) = request.stop_sequences() {
        body.insert("stop_sequences".into(), stops);
    }
    if let Some(tools) = request.tools.as_ref().and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                json!({
                    "name": f.get("name").cloned().unwrap_or(json!("")),
                    "description": f.get("description").cloned().unwrap_or(json!("")),
                    "input_schema": f.get("parameters").cloned().unwrap_or(json!({"type": "object"})),
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &request.tool_choice {
        let mapped = match choice {
            Value::String(s) if s == "auto" => json!({"type": "auto"}),
            Value::String(s) if s == "none" => json!({"type": "none"}),
            Value::String(s) if s == "required" => json!({"type": "any"}),
            other => match other.pointer("/function/name") {
                Some(name) => json!({"type": "tool", "name": name}),
                None => return Err(rejected("tool_choice is not one this provider understands")),
            },
        };
        body.insert("tool_choice".into(), mapped);
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Maps a Messages API answer to an OpenAI choice and usage.
pub fn from_message(value: &Value) -> Result<Completion, ProviderError> {
    let blocks = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("no content"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(json!("")),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(json!("")),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let usage = Usage {
        prompt_tokens: value
            .pointer("/usage/input_tokens")
            .and_then(Value::as_u64)
            .ok_or_else(|| malformed("no usage"))?,
        completion_tokens: value
            .pointer("/usage/output_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    };
    Ok(Completion {
        choices: vec![json!({
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(value.get("stop_reason").and_then(Value::as_str)),
            "logprobs": null,
        })],
        usage,
    })
}

/// Turns Messages API stream events into chat-completion chunks.
#[derive(Debug, Default)]
pub struct StreamMapper {
    input_tokens: u64,
    output_tokens: u64,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_of_block: std::collections::BTreeMap<u64, u64>,
}

impl StreamMapper {
    /// One event's data.
    pub fn step(&mut self, data: &str) -> Result<Step, ProviderError> {
        let value: Value = serde_json::from_str(data).map_err(malformed)?;
        let delta = |delta: Value, finish: Option<&str>| {
            StreamEvent::Choices(vec![
                json!({"index": 0, "delta": delta, "finish_reason": finish}),
            ])
        };
        let events = match value.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                self.input_tokens = value
                    .pointer("/message/usage/input_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                vec![delta(json!({"role": "assistant", "content": ""}), None)]
            }
            Some("content_block_start") => {
                let block = value.get("content_block").cloned().unwrap_or(Value::Null);
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let tool = self.tool_of_block.len() as u64;
                    self.tool_of_block.insert(index, tool);
                    vec![delta(
                        json!({"tool_calls": [{"index": tool, "id": block.get("id"), "type": "function",
                            "function": {"name": block.get("name"), "arguments": ""}}]}),
                        None,
                    )]
                } else {
                    Vec::new()
                }
            }
            Some("content_block_delta") => {
                let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                match value.pointer("/delta/type").and_then(Value::as_str) {
                    Some("text_delta") => vec![delta(
                        json!({"content": value.pointer("/delta/text")}),
                        None,
                    )],
                    Some("input_json_delta") => {
                        let tool = self.tool_of_block.get(&index).copied().unwrap_or(0);
                        vec![delta(
                            json!({"tool_calls": [{"index": tool, "function": {"arguments": value.pointer("/delta/partial_json")}}]}),
                            None,
                        )]
                    }
                    _ => Vec::new(),
                }
            }
            Some("message_delta") => {
                if let Some(out) = value
                    .pointer("/usage/output_tokens")
                    .and_then(Value::as_u64)
                {
                    self.output_tokens = out;
                }
                let stop = value.pointer("/delta/stop_reason").and_then(Value::as_str);
                vec![delta(json!({}), Some(finish_reason(stop)))]
            }
            Some("message_stop") => {
                return Ok(Step::Done(vec![StreamEvent::Usage(Usage {
                    prompt_tokens: self.input_tokens,
                    completion_tokens: self.output_tokens,
                })]));
            }
            Some("error") => {
                return Err(ProviderError::retryable(
                    "upstream_stream_error",
                    format!(
                        "the provider sent an error mid-stream: {}",
                        value.get("error").unwrap_or(&Value::Null)
                    ),
                ));
            }
            _ => Vec::new(), // ping, content_block_stop, and events added later
        };
        Ok(Step::Emit(events))
    }
}

impl Provider for Anthropic {
    fn chat<'a>(
        &'a self,
        model: &'a ModelConfig,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let body = to_messages(model, request, false)?;
            let response = self.send(&body).await?;
            let value = self.http.json(response).await?;
            from_message(&value)
        })
    }

    fn chat_stream<'a>(
        &'a self,
        model: &'a ModelConfig,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            let body = to_messages(model, request, true)?;
            let response = self.send(&body).await?;
            let mut mapper = StreamMapper::default();
            Ok(relay(&self.http, response, move |data| mapper.step(data)))
        })
    }

    fn embed<'a>(
        &'a self,
        _model: &'a ModelConfig,
        _inputs: &'a [String],
        _dimensions: Option<u32>,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        Box::pin(async { Err(rejected("Anthropic serves no embeddings")) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn model() -> ModelConfig {
        Config::default().model("sim-small").unwrap().clone()
    }

    #[test]
    fn a_conversation_with_tools_maps_to_the_messages_api() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {"role": "user", "content": "thanks"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "stop": "END",
            "temperature": 1.5,
        }))
        .unwrap();
        let body = to_messages(&model(), &request, true).unwrap();
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["temperature"], 1.0);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["tool_choice"], json!({"type": "any"}));
        assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
        assert_eq!(body["stream"], true);
        let messages = body["messages"].as_array().unwrap();
        // user, assistant (tool_use), user (tool_result + "thanks", merged)
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1]["content"][0]["type"], "tool_use");
        assert_eq!(messages[1]["content"][0]["input"], json!({"city": "Paris"}));
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(messages[2]["content"][1]["text"], "thanks");
        let two: ChatRequest = serde_json::from_value(
            json!({"model": "c", "messages": [{"role": "user", "content": "x"}], "n": 2}),
        )
        .unwrap();
        assert_eq!(to_messages(&model(), &two, false).unwrap_err().status, 400);
    }

    #[test]
    fn answers_and_streams_map_back_to_the_openai_shape() {
        let answer = json!({"content": [{"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "t9", "name": "weather", "input": {"city": "Oslo"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 12, "output_tokens": 7}});
        let completion = from_message(&answer).unwrap();
        assert_eq!(
            completion.usage,
            Usage {
                prompt_tokens: 12,
                completion_tokens: 7
            }
        );
        let choice = &completion.choices[0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert!(from_message(&json!({"nope": 1})).is_err());

        let mut mapper = StreamMapper::default();
        let mut chunks = Vec::new();
        let mut done = None;
        for data in [
            r#"{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t1","name":"f"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#,
            r#"{"type":"message_stop"}"#,
        ] {
            match mapper.step(data).unwrap() {
                Step::Emit(events) => chunks.extend(events),
                Step::Done(events) => done = Some(events),
            }
        }
        assert_eq!(chunks.len(), 5);
        assert!(matches!(
            &done.unwrap()[0],
            StreamEvent::Usage(Usage {
                prompt_tokens: 12,
                completion_tokens: 9
            })
        ));
        assert!(
            StreamMapper::default()
                .step(r#"{"type":"error","error":{"type":"overloaded_error"}}"#)
                .is_err()
        );
        assert!(StreamMapper::default().step("not json").is_err());
    }
}
