//! OpenAI chat requests as Converse bodies, and Converse answers as OpenAI choices.
//!
//! - System and developer messages become `system` blocks; the conversation `messages` of
//!   `user` and `assistant` turns, neighbours of one role merged (Converse wants them to
//!   alternate), empty text dropped (Converse refuses a blank text block).
//! - Tool calls are `toolUse` blocks, tool results `toolResult` blocks in a user turn, both
//!   keyed by the call's id; tools are `toolConfig.tools[].toolSpec`, `tool_choice` its
//!   `toolChoice` (`auto`, `any`, `tool`; `none` sends no tools unless the conversation already
//!   holds tool blocks, which Converse cannot read without them).
//! - `response_format` (JSON mode or a JSON Schema) has no Converse field every model honours,
//!   so it is asked as a tool the model must call, [`STRUCTURED_TOOL`], whose input is the
//!   answer: its arguments come back as the message's content, not as a tool call.
//! - Sampling: `maxTokens`, `temperature`, `topP`, `stopSequences`. `n` above 1 is refused;
//!   `seed`, penalties and logprobs have no Converse field and are not sent.

use serde_json::{Map, Value, json};

use super::super::{ProviderError, Usage};
use crate::openai::{ChatRequest, Role};

/// The tool a structured answer is asked through.
pub const STRUCTURED_TOOL: &str = "structured_answer";

pub fn rejected(message: impl Into<String>) -> ProviderError {
    ProviderError::fatal("unsupported_by_provider", 400, message)
}

/// The text blocks of a message's content (blank text dropped).
fn text_blocks(content: Option<&Value>) -> Result<Vec<Value>, ProviderError> {
    let block = |text: &str| (!text.is_empty()).then(|| json!({"text": text}));
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(block(text).into_iter().collect()),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("text").and_then(Value::as_str) {
                Some(text) => Ok(block(text)),
                None => Err(rejected(
                    "this Bedrock adapter sends text parts only (no images or documents)",
                )),
            })
            .filter_map(Result::transpose)
            .collect(),
        Some(_) => Err(rejected("a message's content must be text")),
    }
}

/// One assistant message's `toolUse` blocks.
fn tool_uses(calls: Option<&Value>) -> Result<Vec<Value>, ProviderError> {
    calls
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|call| {
            let arguments = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            let input: Value = serde_json::from_str(arguments)
                .map_err(|_| rejected("a tool call's arguments are not JSON"))?;
            Ok(json!({"toolUse": {
                "toolUseId": call.get("id").and_then(Value::as_str).unwrap_or_default(),
                "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default(),
                "input": input,
            }}))
        })
        .collect()
}

/// The Converse body of a chat request, and whether its answer is asked through
/// [`STRUCTURED_TOOL`].
pub fn request_body(request: &ChatRequest) -> Result<(Value, bool), ProviderError> {
    if request.choices() > 1 {
        return Err(rejected(
            "Bedrock answers one choice per request (n must be 1)",
        ));
    }
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let mut has_tool_blocks = false;
    for message in &request.messages {
        let (role, blocks) = match message.role {
            Role::System | Role::Developer => {
                system.extend(text_blocks(message.content.as_ref())?);
                continue;
            }
            Role::User => ("user", text_blocks(message.content.as_ref())?),
            Role::Assistant => {
                let mut blocks = text_blocks(message.content.as_ref())?;
                let uses = tool_uses(message.tool_calls.as_ref())?;
                has_tool_blocks |= !uses.is_empty();
                blocks.extend(uses);
                ("assistant", blocks)
            }
            Role::Tool | Role::Function => {
                let id = message.tool_call_id.as_deref().ok_or_else(|| {
                    rejected("a tool message needs the tool_call_id of the call it answers")
                })?;
                has_tool_blocks = true;
                let text = message.text();
                let content = if text.is_empty() {
                    json!([{"text": "(empty)"}])
                } else {
                    json!([{"text": text}])
                };
                (
                    "user",
                    vec![json!({"toolResult": {"toolUseId": id, "content": content}})],
                )
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(content) = last["content"].as_array_mut() {
                    content.extend(blocks);
                }
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    if messages.is_empty() {
        return Err(rejected(
            "Bedrock needs at least one user or assistant message with content",
        ));
    }
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let inference = inference_config(request);
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let structured = structured_tool(request);
    let tools = match &structured {
        Some(tool) => Some(json!({"tools": [tool],
            "toolChoice": {"tool": {"name": STRUCTURED_TOOL}}})),
        None => tool_config(request, has_tool_blocks)?,
    };
    if let Some(tools) = tools {
        body.insert("toolConfig".into(), tools);
    }
    Ok((Value::Object(body), structured.is_some()))
}

fn inference_config(request: &ChatRequest) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(max) = request.output_cap() {
        config.insert("maxTokens".into(), json!(max));
    }
    if let Some(t) = request.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        config.insert("topP".into(), json!(p));
    }
    if let Some(stops) = request.stop_sequences() {
        config.insert("stopSequences".into(), stops);
    }
    config
}

/// The forced tool of a `response_format` (JSON mode: any object).
fn structured_tool(request: &ChatRequest) -> Option<Value> {
    let format = request.response_format.as_ref()?;
    let schema = match format.get("type").and_then(Value::as_str)? {
        "json_object" => json!({"type": "object"}),
        "json_schema" => format
            .pointer("/json_schema/schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"})),
        _ => return None,
    };
    let description = format
        .pointer("/json_schema/description")
        .and_then(Value::as_str)
        .unwrap_or("Give the answer as this tool's input.");
    Some(
        json!({"toolSpec": {"name": STRUCTURED_TOOL, "description": description,
        "inputSchema": {"json": schema}}}),
    )
}

fn tool_config(
    request: &ChatRequest,
    has_tool_blocks: bool,
) -> Result<Option<Value>, ProviderError> {
    let Some(tools) = request.tools.as_ref().and_then(Value::as_array) else {
        return Ok(None);
    };
    let specs: Vec<Value> = tools
        .iter()
        .filter_map(|t| t.get("function"))
        .map(|f| {
            let mut spec = Map::new();
            spec.insert("name".into(), f.get("name").cloned().unwrap_or(json!("")));
            if let Some(description) = f.get("description").filter(|d| d.is_string()) {
                spec.insert("description".into(), description.clone());
            }
            let schema = f
                .get("parameters")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            spec.insert("inputSchema".into(), json!({"json": schema}));
            json!({"toolSpec": spec})
        })
        .collect();
    if specs.is_empty() {
        return Ok(None);
    }
    let choice = match &request.tool_choice {
        None => None,
        Some(Value::String(s)) if s == "auto" => Some(json!({"auto": {}})),
        Some(Value::String(s)) if s == "required" => Some(json!({"any": {}})),
        Some(Value::String(s)) if s == "none" => {
            if !has_tool_blocks {
                return Ok(None);
            }
            Some(json!({"auto": {}}))
        }
        Some(other) => match other.pointer("/function/name") {
            Some(name) => Some(json!({"tool": {"name": name}})),
            None => return Err(rejected("tool_choice is not one Bedrock understands")),
        },
    };
    let mut config = json!({"tools": specs});
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Ok(Some(config))
}

/// An OpenAI finish reason for a Converse `stopReason`.
pub fn finish_reason(stop: Option<&str>, structured: bool) -> &'static str {
    match stop {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") if !structured => "tool_calls",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        _ => "stop",
    }
}

pub fn usage(value: &Value) -> Option<Usage> {
    let usage = value.get("usage")?;
    let count = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: count("inputTokens")
            + count("cacheReadInputTokens")
            + count("cacheWriteInputTokens"),
        completion_tokens: count("outputTokens"),
    })
}

/// The one choice of a whole Converse answer.
pub fn choice(response: &Value, structured: bool) -> Result<Value, ProviderError> {
    let blocks = response
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| super::super::http::malformed("no output message"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        if let Some(piece) = block.get("text").and_then(Value::as_str) {
            text.push_str(piece);
        }
        if let Some(tool) = block.get("toolUse") {
            let input = tool.get("input").cloned().unwrap_or_else(|| json!({}));
            if structured {
                text = input.to_string();
                continue;
            }
            calls.push(json!({"id": tool.get("toolUseId"), "type": "function",
                "function": {"name": tool.get("name"), "arguments": input.to_string()}}));
        }
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = Value::Array(calls);
    }
    let reason = finish_reason(
        response.get("stopReason").and_then(Value::as_str),
        structured,
    );
    Ok(json!({"index": 0, "message": message, "finish_reason": reason, "logprobs": null}))
}
