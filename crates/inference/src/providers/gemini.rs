//! Google Gemini's generateContent API behind the OpenAI shape: system and developer messages
//! become `systemInstruction`, the conversation `contents` (`user` and `model` turns, tool calls
//! as `functionCall` parts, tool results as `functionResponse` parts named after the call they
//! answer), sampling parameters `generationConfig` (JSON mode and JSON Schema as
//! `responseMimeType` and `responseJsonSchema`), tools `functionDeclarations` and `tool_choice`
//! the function-calling mode. The answer's candidates come back as choices (finish reasons
//! mapped: `MAX_TOKENS` → `length`, safety blocks → `content_filter`), whole or streamed
//! (`:streamGenerateContent?alt=sse`, one chunk per event, usage from `usageMetadata`). A
//! prompt Gemini blocks is a `content_policy` refusal, so the fallback is tried.

use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::dialect::segment;
use super::http::{Endpoint, malformed};
use super::openai_compat::{Step, relay, send_checked};
use super::{ChunkStream, Completion, Embeddings, Provider, ProviderError, StreamEvent, Usage};
use crate::config::{ModelConfig, ProviderConfig};
use crate::openai::{ChatRequest, Role};

/// One Gemini endpoint (`base_url` such as `https://generativelanguage.googleapis.com`).
#[derive(Debug)]
pub struct Gemini {
    http: Endpoint,
}

impl Gemini {
    pub fn new(config: &ProviderConfig) -> crate::Result<Self> {
        Ok(Gemini {
            http: Endpoint::new(config)?,
        })
    }

    async fn send(
        &self,
        model: &ModelConfig,
        method: &str,
        body: &Value,
    ) -> Result<reqwest::Response, ProviderError> {
        let sse = if method == "streamGenerateContent" {
            "?alt=sse"
        } else {
            ""
        };
        let url = format!(
            "{}/v1beta/models/{}:{method}{sse}",
            self.http.base_url,
            segment(model.upstream_name())
        );
        let mut request = self.http.client.post(url).json(body);
        if let Some(key) = &self.http.api_key {
            request = request.header("x-goog-api-key", key);
        }
        send_checked(request, self.http.first_token_timeout, self.http.timeout)
            .await
            .map_err(|e| e.redact(self.http.api_key.as_deref()))
    }
}

fn rejected(message: impl Into<String>) -> ProviderError {
    ProviderError::fatal("unsupported_by_provider", 400, message)
}

/// The text parts of a message's content.
fn text_parts(content: Option<&Value>) -> Result<Vec<Value>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({"text": text})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("text").and_then(Value::as_str) {
                Some(text) => Ok(json!({"text": text})),
                None => Err(rejected(
                    "this Gemini adapter sends text parts only (no images or audio)",
                )),
            })
            .collect(),
        Some(_) => Err(rejected("a message's content must be text")),
    }
}

/// The generateContent body of a chat request.
pub fn request_body(request: &ChatRequest) -> Result<Value, ProviderError> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Tool results name the function they answer; OpenAI names the call.
    let mut call_names: Vec<(String, String)> = Vec::new();
    for message in &request.messages {
        match message.role {
            Role::System | Role::Developer => system.extend(text_parts(message.content.as_ref())?),
            Role::User => contents
                .push(json!({"role": "user", "parts": text_parts(message.content.as_ref())?})),
            Role::Assistant => {
                let mut parts = text_parts(message.content.as_ref())?;
                for call in message
                    .tool_calls
                    .as_ref()
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let name = call
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let arguments = call
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let args: Value = serde_json::from_str(arguments).unwrap_or(json!({}));
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_names.push((id.to_owned(), name.to_owned()));
                    }
                    parts.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                contents.push(json!({"role": "model", "parts": parts}));
            }
            Role::Tool | Role::Function => {
                let id = message.tool_call_id.as_deref().unwrap_or_default();
                let name = call_names
                    .iter()
                    .find(|(call, _)| call == id)
                    .map(|(_, name)| name.clone())
                    .or_else(|| message.name.clone())
                    .ok_or_else(|| {
                        rejected(format!(
                            "the tool result {id:?} answers no earlier tool call"
                        ))
                    })?;
                let text = message.text();
                let output = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"content": text}));
                contents.push(json!({"role": "user", "parts": [
                    {"functionResponse": {"name": name, "response": output}}]}));
            }
        }
    }
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    body.insert("generationConfig".into(), generation_config(request));
    if let Some(tools) = request.tools.as_ref().and_then(Value::as_array) {
        let declarations: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut declaration = Map::new();
                for field in ["name", "description", "parameters"] {
                    if let Some(value) = f.get(field).filter(|v| !v.is_null()) {
                        declaration.insert(field.into(), value.clone());
                    }
                }
                Value::Object(declaration)
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
    }
    if let Some(choice) = &request.tool_choice {
        let config = match choice {
            Value::String(mode) if mode == "none" => json!({"mode": "NONE"}),
            Value::String(mode) if mode == "required" => json!({"mode": "ANY"}),
            Value::Object(o) => json!({"mode": "ANY", "allowedFunctionNames":
                [o.get("function").and_then(|f| f.get("name")).cloned().unwrap_or(Value::Null)]}),
            _ => json!({"mode": "AUTO"}),
        };
        body.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    Ok(Value::Object(body))
}

fn generation_config(request: &ChatRequest) -> Value {
    let mut config = Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value.filter(|v| !v.is_null()) {
            config.insert(name.into(), value);
        }
    };
    put("temperature", request.temperature.map(|t| json!(t)));
    put("topP", request.top_p.map(|p| json!(p)));
    put("maxOutputTokens", request.output_cap().map(|m| json!(m)));
    put("candidateCount", request.n.map(|n| json!(n)));
    put("seed", request.seed.map(|s| json!(s)));
    put(
        "presencePenalty",
        request.presence_penalty.map(|p| json!(p)),
    );
    put(
        "frequencyPenalty",
        request.frequency_penalty.map(|p| json!(p)),
    );
    put(
        "stopSequences",
        request.stop.as_ref().map(|stop| match stop {
            Value::String(one) => json!([one]),
            other => other.clone(),
        }),
    );
    if let Some(format) = &request.response_format {
        match format.get("type").and_then(Value::as_str) {
            Some("json_object") => put("responseMimeType", Some(json!("application/json"))),
            Some("json_schema") => {
                put("responseMimeType", Some(json!("application/json")));
                put(
                    "responseJsonSchema",
                    format.pointer("/json_schema/schema").cloned(),
                );
            }
            _ => {}
        }
    }
    Value::Object(config)
}

fn finish_reason(reason: Option<&str>, called: bool) -> Option<&'static str> {
    Some(match reason? {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => "content_filter",
        _ if called => "tool_calls",
        _ => "stop",
    })
}

/// A candidate's text and tool calls (ids made from its index and the call's place).
fn candidate_parts(index: u64, candidate: &Value) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(piece) = part.get("text").and_then(Value::as_str) {
            text.push_str(piece);
        }
        if let Some(call) = part.get("functionCall") {
            let args = call.get("args").cloned().unwrap_or(json!({}));
            calls.push(
                json!({"id": format!("call_{index}_{}", calls.len()), "type": "function",
                "function": {"name": call.get("name"), "arguments": args.to_string()}}),
            );
        }
    }
    (text, calls)
}

fn usage(response: &Value) -> Option<Usage> {
    let meta = response.get("usageMetadata")?;
    let count = |name: &str| meta.get(name).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: count("promptTokenCount"),
        completion_tokens: count("candidatesTokenCount") + count("thoughtsTokenCount"),
    })
}

/// A prompt Gemini refused to answer at all.
fn blocked(response: &Value) -> Option<ProviderError> {
    let reason = response
        .pointer("/promptFeedback/blockReason")
        .and_then(Value::as_str)?;
    Some(ProviderError::fatal(
        "content_policy",
        400,
        format!("Gemini blocked the prompt ({reason})"),
    ))
}

/// The choices of a whole generateContent answer.
pub fn choices(response: &Value) -> Result<Vec<Value>, ProviderError> {
    if let Some(error) = blocked(response) {
        return Err(error);
    }
    let candidates = response
        .get("candidates")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("no candidates"))?;
    Ok(candidates
        .iter()
        .enumerate()
        .map(|(at, candidate)| {
            let index = candidate
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(at as u64);
            let (text, calls) = candidate_parts(index, candidate);
            let mut message = json!({"role": "assistant", "content": text});
            if !calls.is_empty() {
                if text.is_empty() {
                    message["content"] = Value::Null;
                }
                message["tool_calls"] = Value::Array(calls.clone());
            }
            let reason = finish_reason(
                candidate.get("finishReason").and_then(Value::as_str),
                !calls.is_empty(),
            )
            .unwrap_or("stop");
            json!({"index": index, "message": message, "finish_reason": reason, "logprobs": null})
        })
        .collect())
}

/// The chunk events of one streamed generateContent response; `Done` once every candidate
/// has finished.
fn stream_step(data: &str, started: &mut bool) -> Result<Step, ProviderError> {
    let response: Value = serde_json::from_str(data).map_err(malformed)?;
    if let Some(error) = response.get("error") {
        return Err(ProviderError::retryable(
            "upstream_stream_error",
            format!("the provider sent an error mid-stream: {error}"),
        ));
    }
    if let Some(error) = blocked(&response) {
        return Err(error);
    }
    let mut deltas = Vec::new();
    let mut finished = false;
    for (at, candidate) in response
        .get("candidates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let index = candidate
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(at as u64);
        let (text, calls) = candidate_parts(index, candidate);
        let mut delta = json!({"content": text});
        if !*started {
            delta["role"] = json!("assistant");
        }
        if !calls.is_empty() {
            let indexed: Vec<Value> = calls
                .into_iter()
                .enumerate()
                .map(|(k, mut call)| {
                    call["index"] = json!(k);
                    call
                })
                .collect();
            delta["tool_calls"] = Value::Array(indexed);
        }
        let reason = finish_reason(
            candidate.get("finishReason").and_then(Value::as_str),
            delta.get("tool_calls").is_some(),
        );
        finished |= reason.is_some();
        deltas.push(json!({"index": index, "delta": delta, "finish_reason": reason}));
    }
    *started = true;
    let mut events = Vec::with_capacity(2);
    if !deltas.is_empty() {
        events.push(StreamEvent::Choices(deltas));
    }
    if finished {
        if let Some(counted) = usage(&response) {
            events.push(StreamEvent::Usage(counted));
        }
        return Ok(Step::Done(events));
    }
    Ok(Step::Emit(events))
}

impl Provider for Gemini {
    fn chat<'a>(
        &'a self,
        model: &'a ModelConfig,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let body = request_body(request)?;
            let response = self.send(model, "generateContent", &body).await?;
            let value = self.http.json(response).await?;
            let choices = choices(&value)?;
            let usage = usage(&value).ok_or_else(|| malformed("no usageMetadata"))?;
            Ok(Completion { choices, usage })
        })
    }

    fn chat_stream<'a>(
        &'a self,
        model: &'a ModelConfig,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            let body = request_body(request)?;
            let response = self.send(model, "streamGenerateContent", &body).await?;
            let mut started = false;
            Ok(relay(&self.http, response, move |data| {
                stream_step(data, &mut started)
            }))
        })
    }

    fn embed<'a>(
        &'a self,
        model: &'a ModelConfig,
        inputs: &'a [String],
        dimensions: Option<u32>,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        Box::pin(async move {
            let name = format!("models/{}", model.upstream_name());
            let requests: Vec<Value> = inputs
                .iter()
                .map(|text| {
                    let mut one = json!({"model": name, "content": {"parts": [{"text": text}]}});
                    if let Some(d) = dimensions {
                        one["outputDimensionality"] = json!(d);
                    }
                    one
                })
                .collect();
            let body = json!({"requests": requests});
            let response = self.send(model, "batchEmbedContents", &body).await?;
            let value = self.http.json(response).await?;
            let vectors = value
                .get("embeddings")
                .and_then(Value::as_array)
                .and_then(|all| {
                    all.iter()
                        .map(|e| {
                            e.get("values").and_then(Value::as_array).and_then(|v| {
                                v.iter()
                                    .map(|x| x.as_f64().map(|f| f as f32))
                                    .collect::<Option<Vec<f32>>>()
                            })
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| malformed("embeddings are not lists of numbers"))?;
            // Gemini does not count embedding tokens: about four characters a token.
            let chars: usize = inputs.iter().map(|i| i.chars().count()).sum();
            Ok(Embeddings {
                vectors,
                prompt_tokens: (chars as u64).div_ceil(4),
            })
        })
    }
}

#[cfg(test)]
mod tests;
