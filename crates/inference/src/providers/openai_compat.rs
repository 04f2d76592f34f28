//! Any OpenAI-compatible HTTP endpoint (OpenAI, vLLM, Ollama, llama.cpp server, LiteLLM, ...,
//! and Azure OpenAI and Mistral in their [`Dialect`]s): the request is sent as the client wrote
//! it with the model renamed to the upstream's name;
//! streams are read as SSE with a first-token timeout and an inter-chunk timeout, and a stream
//! that ends without `[DONE]` is an error, never a clean end.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::dialect::Dialect;
use super::framed::Bytes;
pub use super::framed::{Step, relay, sse_stream};
use super::http::{Endpoint, malformed};
use super::{ChunkStream, Completion, Embeddings, Provider, ProviderError, StreamEvent, Usage};
use crate::config::{ModelConfig, ProviderConfig};
use crate::openai::ChatRequest;

/// One OpenAI-compatible endpoint.
#[derive(Debug)]
pub struct OpenAiCompatible {
    http: Endpoint,
    dialect: Dialect,
}

impl OpenAiCompatible {
    pub fn new(config: &ProviderConfig) -> crate::Result<Self> {
        Ok(OpenAiCompatible {
            http: Endpoint::new(config)?,
            dialect: Dialect::of(config),
        })
    }

    /// Sends and waits for the response head within the first-token timeout; maps refusals.
    async fn send(
        &self,
        model: &ModelConfig,
        path: &str,
        body: &Value,
    ) -> Result<reqwest::Response, ProviderError> {
        let url = self.dialect.url(&self.http.base_url, path, model);
        let request = self.dialect.authorize(
            self.http.client.post(url).json(body),
            self.http.api_key.as_deref(),
        );
        send_checked(request, self.http.first_token_timeout, self.http.timeout)
            .await
            .map_err(|e| e.redact(self.http.api_key.as_deref()))
    }

    fn body(
        &self,
        model: &ModelConfig,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<Value, ProviderError> {
        let mut body = serde_json::to_value(request)
            .map_err(|e| ProviderError::fatal("internal", 500, e.to_string()))?;
        body["model"] = json!(model.upstream_name());
        // `metadata.tags` is Switchyard's attribution, not the provider's (OpenAI's metadata
        // values must be strings): it stays here.
        if let Some(object) = body.as_object_mut() {
            let emptied = object
                .get_mut("metadata")
                .and_then(Value::as_object_mut)
                .map(|metadata| {
                    metadata.remove("tags");
                    metadata.is_empty()
                });
            if emptied == Some(true) {
                object.remove("metadata");
            }
        }
        if stream {
            body["stream"] = json!(true);
            // Usage is always asked for: billing needs it even when the client did not.
            body["stream_options"] = json!({"include_usage": true});
        } else if let Some(object) = body.as_object_mut() {
            object.remove("stream");
            object.remove("stream_options");
        }
        self.dialect.shape(&mut body);
        Ok(body)
    }
}

/// Sends a request and waits for the response head within `first`; a refusal (4xx, 5xx) is
/// mapped to a `ProviderError` (retryable for 429 and 5xx, with the upstream's `Retry-After`).
pub async fn send_checked(
    request: reqwest::RequestBuilder,
    first: Duration,
    timeout: Duration,
) -> Result<reqwest::Response, ProviderError> {
    let response = send_within(request, first).await?;
    if response.status().is_success() {
        return Ok(response);
    }
    Err(refusal(response, timeout).await)
}

/// Sends a request and waits for the response head (of any status) within `first`.
pub async fn send_within(
    request: reqwest::RequestBuilder,
    first: Duration,
) -> Result<reqwest::Response, ProviderError> {
    tokio::time::timeout(first, request.send())
        .await
        .map_err(|_| ProviderError::timeout("no response from the provider in time"))?
        .map_err(|e| {
            ProviderError::retryable(
                "upstream_unavailable",
                format!("cannot reach the provider: {e}"),
            )
        })
}

/// The error of a response whose status is not a success, its body read within `timeout`.
pub async fn refusal(response: reqwest::Response, timeout: Duration) -> ProviderError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = tokio::time::timeout(timeout, response.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let detail: String = text.chars().take(500).collect();
    match status.as_u16() {
        429 => ProviderError {
            retry_after,
            status: 429,
            ..ProviderError::retryable(
                "upstream_rate_limited",
                format!("the provider is rate limiting: {detail}"),
            )
        },
        500..=599 => ProviderError {
            retry_after,
            ..ProviderError::retryable(
                "upstream_unavailable",
                format!("the provider answered {status}: {detail}"),
            )
        },
        400 | 404 | 413 | 422 => ProviderError::fatal(
            refusal_code(&text),
            400,
            format!("the provider refused the request ({status}): {detail}"),
        ),
        _ => ProviderError::fatal(
            "upstream_error",
            502,
            format!("the provider answered {status}: {detail}"),
        ),
    }
}

/// The code of a 4xx refusal: `context_length_exceeded` and `content_policy` are refusals of
/// this model that another may not make (its window is larger, its policy differs), so a
/// fallback is tried ([`ProviderError::falls_back`]); anything else is `upstream_rejected`.
fn refusal_code(body: &str) -> &'static str {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = parsed.get("error").unwrap_or(&parsed);
    let field = |name: &str| error.get(name).and_then(Value::as_str).unwrap_or("");
    let message = field("message").to_ascii_lowercase();
    if field("code") == "context_length_exceeded"
        || message.contains("maximum context length")
        || message.contains("prompt is too long")
        || message.contains("exceeds the maximum number of tokens")
        || message.contains("input is too long")
        || message.contains("context window")
    {
        "context_length_exceeded"
    } else if ["content_filter", "content_policy_violation"].contains(&field("code"))
        || field("type") == "content_policy_violation"
    {
        "content_policy"
    } else {
        "upstream_rejected"
    }
}

fn usage_of(value: &Value) -> Option<Usage> {
    let usage = value.get("usage").filter(|u| !u.is_null())?;
    Some(Usage {
        prompt_tokens: usage
            .get("prompt_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        completion_tokens: usage
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

impl Provider for OpenAiCompatible {
    fn chat<'a>(
        &'a self,
        model: &'a ModelConfig,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let body = self.body(model, request, false)?;
            let response = self.send(model, "/chat/completions", &body).await?;
            let value = self.http.json(response).await?;
            let choices = value
                .get("choices")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| malformed("no choices"))?;
            let usage = usage_of(&value).ok_or_else(|| malformed("no usage"))?;
            Ok(Completion { choices, usage })
        })
    }

    fn chat_stream<'a>(
        &'a self,
        model: &'a ModelConfig,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            let body = self.body(model, request, true)?;
            let response = self.send(model, "/chat/completions", &body).await?;
            Ok(relay(&self.http, response, openai_step))
        })
    }

    fn embed<'a>(
        &'a self,
        model: &'a ModelConfig,
        inputs: &'a [String],
        dimensions: Option<u32>,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        Box::pin(async move {
            let mut body = json!({"model": model.upstream_name(), "input": inputs});
            if let Some(d) = dimensions {
                body["dimensions"] = json!(d);
            }
            self.dialect.shape_embeddings(&mut body);
            let response = self.send(model, "/embeddings", &body).await?;
            let value = self.http.json(response).await?;
            let data = value
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("no data"))?;
            let vectors = data
                .iter()
                .map(|item| {
                    item.get("embedding")
                        .and_then(Value::as_array)
                        .and_then(|v| {
                            v.iter()
                                .map(|x| x.as_f64().map(|f| f as f32))
                                .collect::<Option<Vec<f32>>>()
                        })
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| malformed("an embedding is not a list of numbers"))?;
            let prompt_tokens = value
                .pointer("/usage/prompt_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            Ok(Embeddings {
                vectors,
                prompt_tokens,
            })
        })
    }
}

/// An OpenAI-style stream: `data: {json}` chunks until `data: [DONE]`.
pub fn sse_events(bytes: Bytes, first: Duration, between: Duration) -> ChunkStream {
    sse_stream(bytes, first, between, openai_step)
}

/// One OpenAI-style event: a chunk's choices and usage, `[DONE]` the clean end.
fn openai_step(data: &str) -> Result<Step, ProviderError> {
    if data == "[DONE]" {
        return Ok(Step::Done(Vec::new()));
    }
    let value: Value = serde_json::from_str(data).map_err(malformed)?;
    if let Some(error) = value.get("error") {
        return Err(ProviderError::retryable(
            "upstream_stream_error",
            format!("the provider sent an error mid-stream: {error}"),
        ));
    }
    let mut events = Vec::with_capacity(2);
    if let Some(choices) = value.get("choices").and_then(Value::as_array)
        && !choices.is_empty()
    {
        events.push(StreamEvent::Choices(choices.clone()));
    }
    if let Some(usage) = usage_of(&value) {
        events.push(StreamEvent::Usage(usage));
    }
    Ok(Step::Emit(events))
}

#[cfg(test)]
mod tests {
    #[test]
    fn refusals_another_model_may_accept_are_told_apart() {
        for (body, code) in [
            (
                r#"{"error":{"code":"context_length_exceeded","message":"too long"}}"#,
                "context_length_exceeded",
            ),
            (
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
                "context_length_exceeded",
            ),
            (
                r#"{"error":{"code":"content_filter","message":"filtered"}}"#,
                "content_policy",
            ),
            (
                r#"{"error":{"type":"content_policy_violation"}}"#,
                "content_policy",
            ),
            (
                r#"{"error":{"code":"invalid_value","message":"bad temperature"}}"#,
                "upstream_rejected",
            ),
            ("not json", "upstream_rejected"),
        ] {
            assert_eq!(refusal_code(body), code, "{body}");
        }
    }

    use super::*;
    use futures_util::StreamExt;

    fn bytes_of(
        parts: Vec<&'static str>,
    ) -> futures_util::stream::BoxStream<'static, Result<bytes::Bytes, ProviderError>> {
        futures_util::stream::iter(parts.into_iter().map(|p| Ok(bytes::Bytes::from(p)))).boxed()
    }

    async fn collect(parts: Vec<&'static str>) -> Vec<Result<StreamEvent, ProviderError>> {
        sse_events(
            bytes_of(parts),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .collect()
        .await
    }

    #[test]
    fn switchyard_tags_never_reach_the_provider() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = crate::config::Config::parse(
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://x/v1\"\n\
             [[models]]\nname = \"m\"\nprovider = \"p\"",
        )
        .unwrap();
        let adapter = OpenAiCompatible::new(&config.providers[0]).unwrap();
        let model = config.model("m").unwrap();
        let request = |metadata: Value| -> ChatRequest {
            serde_json::from_value(json!({"model": "m", "metadata": metadata,
                "messages": [{"role": "user", "content": "x"}]}))
            .unwrap()
        };
        let only_tags = adapter
            .body(model, &request(json!({"tags": ["a"]})), false)
            .unwrap();
        assert!(only_tags.get("metadata").is_none(), "{only_tags}");
        let more = adapter
            .body(model, &request(json!({"tags": "a", "k": "v"})), true)
            .unwrap();
        assert_eq!(more["metadata"], json!({"k": "v"}));
    }

    #[tokio::test]
    async fn events_split_anywhere_are_reassembled_and_done_ends_cleanly() {
        let events = collect(vec![
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"he\"}}]}\n",
            "\n: keep-alive\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"llo\"}}]}\r\n\r\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
        ])
        .await;
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(Result::is_ok));
        assert!(matches!(
            events[2],
            Ok(StreamEvent::Usage(Usage {
                prompt_tokens: 3,
                completion_tokens: 2
            }))
        ));
    }

    #[tokio::test]
    async fn a_cut_a_malformed_chunk_and_an_error_event_are_errors() {
        let cut = collect(vec!["data: {\"choices\":[{\"index\":0,\"delta\":{}}]}\n\n"]).await;
        assert_eq!(
            cut.last().unwrap().as_ref().unwrap_err().code,
            "upstream_stream_cut"
        );
        let bad = collect(vec!["data: {not json\n\n"]).await;
        assert_eq!(
            bad.last().unwrap().as_ref().unwrap_err().code,
            "upstream_malformed"
        );
        let error = collect(vec!["data: {\"error\":{\"message\":\"overloaded\"}}\n\n"]).await;
        assert_eq!(
            error.last().unwrap().as_ref().unwrap_err().code,
            "upstream_stream_error"
        );
    }

    /// Found by the `sse-reader` fuzz target: the chunks read before an error in the same
    /// buffer were dropped, so what a client got depended on how the bytes were cut.
    #[tokio::test]
    async fn chunks_before_an_error_in_the_same_buffer_still_go_out() {
        let chunk = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";
        let error = "data: {\"error\":{\"message\":\"overloaded\"}}\n\n";
        let whole = collect(vec![Box::leak(format!("{chunk}{error}").into_boxed_str())]).await;
        let split = collect(vec![chunk, error]).await;
        for events in [whole, split] {
            assert_eq!(events.len(), 2, "{events:?}");
            assert!(matches!(events[0], Ok(StreamEvent::Choices(_))));
            assert_eq!(
                events[1].as_ref().unwrap_err().code,
                "upstream_stream_error"
            );
        }
    }

    #[tokio::test]
    async fn a_stalled_stream_times_out() {
        let stalled = futures_util::stream::iter(vec![Ok(bytes::Bytes::from(
            "data: {\"choices\":[{\"index\":0,\"delta\":{}}]}\n\n",
        ))])
        .chain(futures_util::stream::pending())
        .boxed();
        let events: Vec<_> = sse_events(
            stalled,
            Duration::from_millis(500),
            Duration::from_millis(50),
        )
        .collect()
        .await;
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].as_ref().unwrap_err().code, "upstream_timeout");
    }
}
