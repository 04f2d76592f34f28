//! `POST /v1/responses`, OpenAI's Responses API, served over the chat pipeline: `input` (a
//! string, or message, `function_call` and `function_call_output` items) and `instructions`
//! become the chat request's messages, function tools and `text.format` its tools and
//! `response_format`, so a response is routed, limited, billed, cached, guarded and logged like
//! any chat. The answer comes back as a `response` object, whole or as the Responses stream's
//! typed events ([`ResponseEvents`]). Nothing is stored: `previous_response_id` and
//! `background` are refused with a message that says so.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::{CacheOptions, ChatRequest, Message, Role, StreamOptions, invalid};
use crate::error::Error;

/// `POST /v1/responses`: the documented fields this server serves, and no other.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponsesRequest {
    pub model: String,
    /// A string (one user message) or an array of input items.
    #[schema(value_type = Object)]
    pub input: Value,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stream: bool,
    /// Function tools (`{"type": "function", "name", "parameters", ...}`).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub text: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub user: Option<String>,
    /// Accepted; nothing is stored either way.
    #[serde(default)]
    pub store: Option<bool>,
    /// Refused: responses are not stored, so there is none to continue.
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// Refused when true: a response is answered in the request.
    #[serde(default)]
    pub background: Option<bool>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub reasoning: Option<Value>,
    #[serde(default)]
    pub truncation: Option<String>,
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub service_tier: Option<String>,
    #[serde(default)]
    pub prompt_cache_key: Option<String>,
    #[serde(default)]
    pub safety_identifier: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub stream_options: Option<Value>,
    /// Switchyard's response cache for this request (as on chat completions).
    #[serde(default)]
    pub cache: Option<CacheOptions>,
}

fn message(role: Role, content: Value) -> Message {
    Message {
        role,
        content: Some(content),
        name: None,
        tool_calls: None,
        tool_call_id: None,
        function_call: None,
        refusal: None,
    }
}

impl ResponsesRequest {
    /// The chat request this response is served as (checked as a chat request is).
    pub fn to_chat(&self) -> Result<ChatRequest, Error> {
        if self.previous_response_id.is_some() {
            return Err(invalid(
                "previous_response_id is not supported: responses are not stored; send the conversation in input".into(),
            ));
        }
        if self.background == Some(true) {
            return Err(invalid(
                "background responses are not supported: a response is answered in its request"
                    .into(),
            ));
        }
        let mut messages = Vec::new();
        if let Some(instructions) = &self.instructions {
            messages.push(message(Role::System, json!(instructions)));
        }
        match &self.input {
            Value::String(text) => messages.push(message(Role::User, json!(text))),
            Value::Array(items) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    input_item(i, item, &mut messages)?;
                }
            }
            Value::Array(_) => return Err(invalid("input must not be empty".into())),
            _ => {
                return Err(invalid(
                    "input must be a string or an array of input items".into(),
                ));
            }
        }
        let chat = ChatRequest {
            model: self.model.clone(),
            messages,
            stream: self.stream,
            // The usage comes last in a stream, for `response.completed`.
            stream_options: self.stream.then_some(StreamOptions {
                include_usage: true,
            }),
            max_completion_tokens: self.max_output_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            tools: self.chat_tools()?,
            tool_choice: self
                .tool_choice
                .as_ref()
                .map(chat_tool_choice)
                .transpose()?,
            parallel_tool_calls: self.parallel_tool_calls,
            response_format: self.response_format()?,
            metadata: self.metadata.clone(),
            user: self.user.clone(),
            service_tier: self.service_tier.clone(),
            prompt_cache_key: self.prompt_cache_key.clone(),
            safety_identifier: self.safety_identifier.clone(),
            cache: self.cache.clone(),
            ..ChatRequest::default()
        };
        chat.validate()?;
        Ok(chat)
    }

    fn chat_tools(&self) -> Result<Option<Value>, Error> {
        let Some(tools) = &self.tools else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(tools.len());
        for (i, tool) in tools.iter().enumerate() {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid(format!(
                    "tools[{i}]: only function tools are served (type \"function\")"
                )));
            }
            let mut function = Map::new();
            for field in ["name", "description", "parameters", "strict"] {
                if let Some(value) = tool.get(field).filter(|v| !v.is_null()) {
                    function.insert(field.into(), value.clone());
                }
            }
            out.push(json!({"type": "function", "function": function}));
        }
        Ok(Some(Value::Array(out)))
    }

    fn response_format(&self) -> Result<Option<Value>, Error> {
        let Some(format) = self.text.as_ref().and_then(|t| t.get("format")) else {
            return Ok(None);
        };
        match format.get("type").and_then(Value::as_str) {
            Some("text") => Ok(None),
            Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
            Some("json_schema") => {
                let mut schema = Map::new();
                for field in ["name", "description", "schema", "strict"] {
                    if let Some(value) = format.get(field).filter(|v| !v.is_null()) {
                        schema.insert(field.into(), value.clone());
                    }
                }
                Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
            }
            _ => Err(invalid(
                "text.format.type must be text, json_object or json_schema".into(),
            )),
        }
    }
}

/// `tool_choice` in the chat form (`{"type": "function", "name"}` names its function).
fn chat_tool_choice(choice: &Value) -> Result<Value, Error> {
    match choice {
        Value::String(_) => Ok(choice.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.name is required".into()))?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(invalid(
            "tool_choice must be auto, none, required or {\"type\": \"function\", \"name\"}".into(),
        )),
    }
}

/// One input item into the chat's messages.
fn input_item(i: usize, item: &Value, messages: &mut Vec<Message>) -> Result<(), Error> {
    let kind = item.get("type").and_then(Value::as_str);
    match kind {
        Some("function_call") => {
            let (Some(call_id), Some(name)) = (
                item.get("call_id").and_then(Value::as_str),
                item.get("name").and_then(Value::as_str),
            ) else {
                return Err(invalid(format!(
                    "input[{i}]: a function_call needs call_id and name"
                )));
            };
            let arguments = item
                .get("arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            let call = json!({"id": call_id, "type": "function",
                              "function": {"name": name, "arguments": arguments}});
            // Calls in a row are one assistant turn.
            if let Some(last) = messages.last_mut()
                && last.role == Role::Assistant
                && let Some(Value::Array(calls)) = &mut last.tool_calls
            {
                calls.push(call);
                return Ok(());
            }
            let mut turn = message(Role::Assistant, Value::Null);
            turn.content = None;
            turn.tool_calls = Some(json!([call]));
            messages.push(turn);
            Ok(())
        }
        Some("function_call_output") => {
            let call_id = item
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("input[{i}]: call_id is required")))?;
            let output = match item.get("output") {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => return Err(invalid(format!("input[{i}]: output is required"))),
            };
            let mut turn = message(Role::Tool, json!(output));
            turn.tool_call_id = Some(call_id.to_owned());
            messages.push(turn);
            Ok(())
        }
        Some("message") | None => {
            let role = match item.get("role").and_then(Value::as_str) {
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                Some("system") => Role::System,
                Some("developer") => Role::Developer,
                _ => {
                    return Err(invalid(format!(
                        "input[{i}].role must be user, assistant, system or developer"
                    )));
                }
            };
            let content = match item.get("content") {
                Some(Value::String(text)) => json!(text),
                Some(Value::Array(parts)) => Value::Array(
                    parts
                        .iter()
                        .enumerate()
                        .map(|(j, part)| content_part(i, j, part))
                        .collect::<Result<_, _>>()?,
                ),
                _ => {
                    return Err(invalid(format!(
                        "input[{i}].content must be a string or an array of parts"
                    )));
                }
            };
            messages.push(message(role, content));
            Ok(())
        }
        Some(other) => Err(invalid(format!(
            "input[{i}]: items of type {other:?} are not supported (message, function_call, function_call_output)"
        ))),
    }
}

fn content_part(i: usize, j: usize, part: &Value) -> Result<Value, Error> {
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text") => {
            let text = part
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("input[{i}].content[{j}].text is required")))?;
            Ok(json!({"type": "text", "text": text}))
        }
        Some("input_image") => {
            let url = part
                .get("image_url")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("input[{i}].content[{j}].image_url is required")))?;
            Ok(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        _ => Err(invalid(format!(
            "input[{i}].content[{j}].type must be input_text, output_text or input_image"
        ))),
    }
}

/// The id of a response for inference `id` (its stream is `inference-<id>`).
pub fn response_id(inference: &str) -> String {
    format!("resp_{inference}")
}

/// The `response` object around `output`.
fn envelope(
    request: &ResponsesRequest,
    id: &str,
    model: &str,
    status: &str,
    output: Vec<Value>,
    usage: Option<&Value>,
) -> Value {
    let usage = usage.map(|u| {
        let input = u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
        let output = u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": 0},
               "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": input + output})
    });
    let format = request
        .text
        .as_ref()
        .and_then(|t| t.get("format"))
        .cloned()
        .unwrap_or_else(|| json!({"type": "text"}));
    json!({
        "id": response_id(id),
        "object": "response",
        "created_at": OffsetDateTime::now_utc().unix_timestamp(),
        "status": status,
        "error": null,
        "incomplete_details": (status == "incomplete").then(|| json!({"reason": "max_output_tokens"})),
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls.unwrap_or(true),
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": request.temperature.unwrap_or(1.0),
        "text": {"format": format},
        "tool_choice": request.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        "tools": request.tools.clone().unwrap_or_default(),
        "top_p": request.top_p.unwrap_or(1.0),
        "truncation": request.truncation.as_deref().unwrap_or("disabled"),
        "usage": usage,
        "user": request.user,
        "metadata": request.metadata.clone().unwrap_or_else(|| json!({})),
    })
}

fn text_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": format!("msg_{id}"), "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(id: &str, n: usize, call: &Value, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_{id}_{n}"),
           "call_id": call.get("id").cloned().unwrap_or(Value::Null),
           "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
           "arguments": call.pointer("/function/arguments").cloned().unwrap_or(json!("")),
           "status": status})
}

/// A `chat.completion` body as a `response` object.
pub fn response_body(chat: &Value, request: &ResponsesRequest) -> Value {
    let id = chat
        .get("id")
        .and_then(Value::as_str)
        .map_or("", |id| id.trim_start_matches("chatcmpl-"));
    let model = chat
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let choice = chat.pointer("/choices/0").cloned().unwrap_or(Value::Null);
    let mut output = Vec::new();
    if let Some(text) = choice
        .pointer("/message/content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        output.push(text_item(id, text, "completed"));
    }
    for (n, call) in choice
        .pointer("/message/tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        output.push(call_item(id, n, call, "completed"));
    }
    let status = if choice.get("finish_reason").and_then(Value::as_str) == Some("length") {
        "incomplete"
    } else {
        "completed"
    };
    envelope(request, id, model, status, output, chat.get("usage"))
}

mod events;
#[cfg(test)]
mod tests;

pub use events::ResponseEvents;
