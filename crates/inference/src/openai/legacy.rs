//! `POST /v1/completions`, OpenAI's legacy text completion API (what `gpt-3.5-turbo-instruct`
//! and many older clients speak): the prompt becomes one user message of a chat request, so
//! it is routed, limited, billed, cached and logged like any chat; the answer's choices become
//! `text` choices, whole and streamed.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CacheOptions, ChatRequest, Message, Role, StreamOptions, invalid};
use crate::error::Error;

/// What OpenAI answers when a completion request sets no `max_tokens`.
const DEFAULT_MAX_TOKENS: u64 = 16;

/// `POST /v1/completions`: every documented field and no other.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub model: String,
    /// A string, or an array holding one string (one prompt per request here).
    #[schema(value_type = Object)]
    pub prompt: Value,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// The prompt is put before the answer's text.
    #[serde(default)]
    pub echo: bool,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub stop: Option<Value>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub logit_bias: Option<Value>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
    /// Not offered by chat models: refused unless null.
    #[serde(default)]
    pub logprobs: Option<u32>,
    /// Not offered by chat models: refused unless null.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Only 1 (or `n`): one answer is generated per choice.
    #[serde(default)]
    pub best_of: Option<u32>,
    /// Switchyard's response cache for this request (as on chat completions).
    #[serde(default, skip_serializing)]
    pub cache: Option<CacheOptions>,
}

impl CompletionRequest {
    /// The prompt's text: a string, or an array of exactly one string.
    fn prompt_text(&self) -> Result<&str, Error> {
        match &self.prompt {
            Value::String(text) => Ok(text),
            Value::Array(prompts) => match prompts.as_slice() {
                [Value::String(text)] => Ok(text),
                [] => Err(invalid("prompt must not be empty".into())),
                [_] => Err(invalid(
                    "prompt must be a string, or an array of one string (token arrays are not accepted)"
                        .into(),
                )),
                _ => Err(invalid(
                    "one prompt per request: send each prompt as its own request".into(),
                )),
            },
            _ => Err(invalid(
                "prompt must be a string or an array of one string".into(),
            )),
        }
    }

    /// The chat request this completion is served as (checked as a chat request is).
    pub fn to_chat(&self) -> Result<ChatRequest, Error> {
        let prompt = self.prompt_text()?;
        if self.suffix.is_some() {
            return Err(invalid("suffix is not supported by chat models".into()));
        }
        if self.logprobs.is_some() {
            return Err(invalid("logprobs is not supported by chat models".into()));
        }
        if self.best_of.is_some_and(|b| b != self.n.unwrap_or(1)) {
            return Err(invalid(
                "best_of must equal n: every generated answer is returned".into(),
            ));
        }
        let chat = ChatRequest {
            model: self.model.clone(),
            messages: vec![Message {
                role: Role::User,
                content: Some(Value::String(prompt.to_owned())),
                name: None,
                tool_calls: None,
                tool_call_id: None,
                function_call: None,
                refusal: None,
            }],
            stream: self.stream,
            stream_options: self.stream_options,
            max_tokens: Some(self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
            temperature: self.temperature,
            top_p: self.top_p,
            n: self.n,
            stop: self.stop.clone(),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: self.logit_bias.clone(),
            seed: self.seed,
            user: self.user.clone(),
            cache: self.cache.clone(),
            ..ChatRequest::default()
        };
        chat.validate()?;
        Ok(chat)
    }

    /// What `echo` puts before each answer's text.
    pub fn echoed(&self) -> Option<String> {
        self.echo
            .then(|| self.prompt_text().ok().map(str::to_owned))
            .flatten()
    }
}

/// A `chat.completion` body as a `text_completion` one (`echo`: the prompt before the text).
pub fn text_completion(chat: &Value, echo: Option<&str>) -> Value {
    let choices: Vec<Value> = chat
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|choice| {
            let text = choice
                .pointer("/message/content")
                .and_then(Value::as_str)
                .unwrap_or("");
            json!({
                "text": format!("{}{text}", echo.unwrap_or("")),
                "index": choice.get("index").cloned().unwrap_or(json!(0)),
                "logprobs": null,
                "finish_reason": choice.get("finish_reason").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    json!({
        "id": legacy_id(chat),
        "object": "text_completion",
        "created": chat.get("created").cloned().unwrap_or(json!(0)),
        "model": chat.get("model").cloned().unwrap_or(Value::Null),
        "choices": choices,
        "usage": chat.get("usage").cloned().unwrap_or(Value::Null),
        "system_fingerprint": null,
    })
}

/// A streamed `chat.completion.chunk` as a `text_completion` chunk (`None`: nothing to send,
/// as for the chunk that only names the role). An `{"error": …}` frame passes as it is.
pub fn text_chunk(chunk: &Value) -> Option<Value> {
    if chunk.get("object").and_then(Value::as_str) != Some("chat.completion.chunk") {
        return Some(chunk.clone());
    }
    let choices: Vec<Value> = chunk
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|choice| {
            let text = choice.pointer("/delta/content").and_then(Value::as_str);
            let finish = choice.get("finish_reason").filter(|f| !f.is_null());
            if text.is_none_or(str::is_empty) && finish.is_none() {
                return None;
            }
            Some(json!({
                "text": text.unwrap_or(""),
                "index": choice.get("index").cloned().unwrap_or(json!(0)),
                "logprobs": null,
                "finish_reason": finish.cloned().unwrap_or(Value::Null),
            }))
        })
        .collect();
    let usage = chunk.get("usage").filter(|u| !u.is_null());
    if choices.is_empty() && usage.is_none() {
        return None;
    }
    let mut out = json!({
        "id": legacy_id(chunk),
        "object": "text_completion",
        "created": chunk.get("created").cloned().unwrap_or(json!(0)),
        "model": chunk.get("model").cloned().unwrap_or(Value::Null),
        "choices": choices,
    });
    if let Some(usage) = usage {
        out["usage"] = usage.clone();
    }
    Some(out)
}

/// `cmpl-<inference id>` for a chat body's `chatcmpl-<inference id>`.
fn legacy_id(chat: &Value) -> String {
    let id = chat.get("id").and_then(Value::as_str).unwrap_or("");
    format!("cmpl-{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<ChatRequest, Error> {
        serde_json::from_value::<CompletionRequest>(body)
            .map_err(|e| invalid(e.to_string()))?
            .to_chat()
    }

    #[test]
    fn a_prompt_becomes_one_user_message_with_openais_default_cap() {
        let chat = request(json!({"model": "m", "prompt": "Say this is a test"})).unwrap();
        assert_eq!(chat.messages.len(), 1);
        assert_eq!(chat.messages[0].text(), "Say this is a test");
        assert_eq!(chat.max_tokens, Some(16));
        let chat =
            request(json!({"model": "m", "prompt": ["one"], "max_tokens": 5, "n": 2})).unwrap();
        assert_eq!((chat.max_tokens, chat.n), (Some(5), Some(2)));
        for (body, why) in [
            (
                json!({"model": "m", "prompt": ["a", "b"]}),
                "one prompt per request",
            ),
            (json!({"model": "m", "prompt": [[1, 2]]}), "token arrays"),
            (json!({"model": "m", "prompt": []}), "must not be empty"),
            (json!({"model": "m", "prompt": 7}), "a string"),
            (
                json!({"model": "m", "prompt": "x", "suffix": "y"}),
                "suffix",
            ),
            (
                json!({"model": "m", "prompt": "x", "logprobs": 2}),
                "logprobs",
            ),
            (
                json!({"model": "m", "prompt": "x", "best_of": 3}),
                "best_of",
            ),
            (
                json!({"model": "m", "prompt": "x", "temperature": 9}),
                "temperature",
            ),
        ] {
            let error = request(body.clone()).unwrap_err().to_string();
            assert!(error.contains(why), "{body}: {error}");
        }
    }

    #[test]
    fn answers_and_chunks_are_translated() {
        let chat = json!({"id": "chatcmpl-abc", "object": "chat.completion", "created": 5, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
        let text = text_completion(&chat, Some("Q: "));
        assert_eq!(text["id"], "cmpl-abc");
        assert_eq!(text["object"], "text_completion");
        assert_eq!(text["choices"][0]["text"], "Q: hi");
        assert_eq!(text["usage"]["total_tokens"], 2);
        let role = json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
        assert_eq!(text_chunk(&role), None);
        let piece = json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]});
        assert_eq!(text_chunk(&piece).unwrap()["choices"][0]["text"], "hi");
        let error = json!({"error": {"code": "x"}});
        assert_eq!(text_chunk(&error), Some(error));
    }
}
