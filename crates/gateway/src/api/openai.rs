//! The OpenAI-compatible API: `GET /v1/models`, `POST /v1/chat/completions` (whole and
//! streamed as server-sent events) and `POST /v1/embeddings`.
//!
//! A handler authenticates the key (memory; request limits of tenant and key), checks the
//! `inference` scope, parses and checks the body, takes a place in the tenant's bulkhead, and
//! hands the request to [`Pipeline`] (route, limits, budget, provider, settlement, events). It
//! answers with `x-switchyard-inference-id`, `x-switchyard-position` and the `x-ratelimit-*`
//! headers of the tightest tier. A stream's events are appended before its `[DONE]`; a stream
//! cut mid-way ends with an `error` event, never a clean end.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use switchyard_inference::openai::{
    ChatRequest, CompletionRequest, EmbeddingsRequest, ResponseEvents, ResponsesRequest,
    response_body, text_chunk, text_completion,
};
use switchyard_inference::{CacheStatus, Frame, Pipeline, Principal};
use tokio::sync::OwnedSemaphorePermit;

use crate::http::idempotency::{Reply, idempotent_with};
use crate::http::{
    ApiError, ErrorBody, correlation, parse_json, rate_headers, scoped_request, with_headers,
};
use crate::state::Admin;

/// The response header naming the inference (its stream is `inference-<id>`).
pub const INFERENCE_ID: HeaderName = HeaderName::from_static("x-switchyard-inference-id");
/// What routed an answer: `named`, the tenant's serving policy, `<split>:<policy>`, or
/// `override:<policy>`.
pub const ROUTE: HeaderName = HeaderName::from_static("x-switchyard-route");

fn route_header(route: &str) -> Option<(HeaderName, HeaderValue)> {
    (!route.is_empty())
        .then(|| HeaderValue::from_str(route).ok())
        .flatten()
        .map(|value| (ROUTE, value))
}
/// `x-switchyard-cache`: `hit` (answered from the response cache) or `miss` (looked up, not
/// found); absent when the cache is off.
pub const CACHE: HeaderName = HeaderName::from_static("x-switchyard-cache");

fn cache_header(status: Option<CacheStatus>) -> Option<(HeaderName, HeaderValue)> {
    status.map(|s| (CACHE, HeaderValue::from_static(s.as_str())))
}

/// Adds the `x-switchyard-tags` header's tags to the body's `metadata.tags` (checked, each
/// once): the pipeline reads a request's tags from there alone.
fn header_tags(req: &HttpRequest, metadata: &mut Option<Value>) -> Result<(), ApiError> {
    let header = match req.headers().get("x-switchyard-tags") {
        None => return Ok(()),
        Some(value) => value.to_str().map_err(|_| {
            ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "invalid_request",
                "x-switchyard-tags must be ASCII",
            )
        })?,
    };
    let tags = switchyard_inference::openai::attribution::tags(metadata.as_ref(), Some(header))
        .map_err(|message| {
            ApiError::owned(
                actix_web::http::StatusCode::BAD_REQUEST,
                "invalid_request".into(),
                message,
            )
        })?;
    match metadata {
        Some(Value::Object(map)) => {
            map.insert("tags".into(), serde_json::json!(tags));
        }
        _ => *metadata = Some(serde_json::json!({"tags": tags})),
    }
    Ok(())
}

/// The request's `Cache-Control: no-cache` / `no-store` folded into its `cache` option.
fn cache_control(req: &HttpRequest, request: &mut ChatRequest) {
    let Some(value) = req
        .headers()
        .get(actix_web::http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let directives: Vec<String> = value
        .split(',')
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    let options = request.cache.get_or_insert_with(Default::default);
    options.no_cache |= directives.iter().any(|d| d == "no-cache");
    options.no_store |= directives.iter().any(|d| d == "no-store");
}

/// The scope a key needs for the inference endpoints (a key with no scopes may do anything).
pub const SCOPE: &str = "inference";
/// `x-switchyard-position`: the log position of what this request appended, for
/// read-your-writes (`min_position` on the analytics API).
pub const POSITION: HeaderName = HeaderName::from_static("x-switchyard-position");

crate::api::endpoints! {
    get "/v1/models" => list_models,
    post "/v1/chat/completions" => chat_completions,
    post "/v1/completions" => completions,
    post "/v1/responses" => responses,
    post "/v1/embeddings" => embeddings,
}

/// Authenticates and checks that the key may call the inference endpoints.
async fn principal(
    req: &HttpRequest,
    admin: &Admin,
) -> Result<(Principal, Vec<(HeaderName, HeaderValue)>), ApiError> {
    scoped_request(req, admin, &[SCOPE]).await
}

fn position_header(position: u64) -> Option<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(&position.to_string())
        .ok()
        .map(|value| (POSITION, value))
}

/// The models this server serves that the tenant may use, and `auto` (the router chooses
/// among them).
#[utoipa::path(get, path = "/v1/models", tag = "inference",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "OpenAI model list"),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 429, description = "over a request limit", body = ErrorBody)))]
pub(crate) async fn list_models(
    req: HttpRequest,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
) -> Result<HttpResponse, ApiError> {
    let (principal, headers) = principal(&req, &admin).await?;
    // Only the models the tenant may use (its `allowed_models` setting), and `auto` when any.
    let allowed = pipeline.accounts.allowed_models(principal.tenant);
    let mut data: Vec<Value> = pipeline
        .config
        .models
        .iter()
        .filter(|m| allowed.as_ref().is_none_or(|a| a.contains(&m.name)))
        .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": m.provider}))
        .collect();
    if !data.is_empty() {
        data.push(
            json!({"id": "auto", "object": "model", "created": 0, "owned_by": "switchyard-router"}),
        );
    }
    Ok(with_headers(
        HttpResponse::Ok().json(json!({"object": "list", "data": data})),
        headers,
    ))
}

fn inference_headers(body: &Value) -> Vec<(HeaderName, HeaderValue)> {
    body.get("id")
        .and_then(Value::as_str)
        .and_then(|id| {
            id.strip_prefix("chatcmpl-")
                .or_else(|| id.strip_prefix("cmpl-"))
                .or_else(|| id.strip_prefix("resp_"))
                .or_else(|| id.strip_prefix("embd-"))
        })
        .and_then(|id| HeaderValue::from_str(id).ok())
        .map(|value| vec![(INFERENCE_ID, value)])
        .unwrap_or_default()
}

/// OpenAI-compatible chat completions; `stream: true` answers with server-sent events.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "inference",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"),
        ("Idempotency-Key" = Option<String>, Header, description = "same key and body: the same answer, billed once (not for streams)")),
    request_body = ChatRequest,
    responses((status = 200, description = "chat.completion, or text/event-stream of chat.completion.chunk; headers x-switchyard-inference-id, x-switchyard-route (what routed it) and, with `prompt`, x-switchyard-prompt (the prompt version served); with `retrieval`, x-switchyard-context (the chunks put before the messages, `<document id>:<chunk>`)"),
        (status = 400, description = "invalid request (the message names the field)", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 402, description = "monthly budget spent", body = ErrorBody),
        (status = 404, description = "no such model", body = ErrorBody),
        (status = 429, description = "over a request or token limit (Retry-After)", body = ErrorBody),
        (status = 502, description = "the provider failed after retries", body = ErrorBody),
        (status = 504, description = "the provider timed out", body = ErrorBody)))]
pub(crate) async fn chat_completions(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
    engine: Option<web::Data<switchyard_workflows::Engine>>,
) -> Result<HttpResponse, ApiError> {
    let (principal, _) = principal(&req, &admin).await?;
    let mut request: ChatRequest = parse_json(&body)?;
    header_tags(&req, &mut request.metadata)?;
    let served = crate::api::registry::apply_prompt(
        &mut request,
        principal.tenant,
        engine.as_ref().map(|e| e.get_ref()),
    )
    .await?;
    let context =
        crate::api::documents::apply_retrieval(&mut request, &principal, &admin, &pipeline).await?;
    request.validate()?;
    cache_control(&req, &mut request);
    let slot = pipeline.tenant_slot(principal.tenant)?;
    let mut response = if request.stream {
        chat_stream(req, pipeline, principal, request, slot, Surface::Chat).await?
    } else {
        answer_whole(&req, &body, &pipeline, &principal, &request, |answer| {
            answer
        })
        .await?
    };
    for (name, value) in [
        (crate::api::registry::PROMPT_HEADER, served),
        (
            crate::api::documents::CONTEXT_HEADER,
            context.map(|used| used.join(",")),
        ),
    ] {
        if let Some(value) = value
            && let Ok(value) = actix_web::http::header::HeaderValue::from_str(&value)
        {
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static(name),
                value,
            );
        }
    }
    Ok(response)
}

/// A whole answer through the pipeline, with its headers, under the request's
/// `Idempotency-Key`; `shape` turns the `chat.completion` body into the surface's.
async fn answer_whole(
    req: &HttpRequest,
    body: &web::Bytes,
    pipeline: &Pipeline,
    principal: &Principal,
    request: &ChatRequest,
    shape: impl FnOnce(Value) -> Value,
) -> Result<HttpResponse, ApiError> {
    idempotent_with(
        pipeline.store.as_ref(),
        req,
        principal.tenant,
        body,
        |_| {},
        inference_headers,
        || async {
            let done = pipeline
                .complete(correlation(req), principal, request, None, None)
                .await?;
            let mut headers = rate_headers(&done.rate);
            headers.extend(route_header(&done.route));
            headers.extend(cache_header(done.cache));
            if done.position > 0 {
                headers.extend(position_header(done.position));
            }
            Ok(Reply {
                status: StatusCode::OK,
                body: shape(done.body),
                headers,
            })
        },
    )
    .await
}

/// The legacy text completion API: the prompt is served as a chat request of one user message
/// (routed, limited, billed, cached and logged as one), and the answer's choices come back as
/// `text` choices, whole or streamed.
#[utoipa::path(post, path = "/v1/completions", tag = "inference",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"),
        ("Idempotency-Key" = Option<String>, Header, description = "same key and body: the same answer, billed once (not for streams)")),
    request_body = CompletionRequest,
    responses((status = 200, description = "text_completion, or text/event-stream of text_completion chunks; headers as for chat completions"),
        (status = 400, description = "invalid request (several prompts, token prompts, suffix, logprobs: the message says which)", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 402, description = "monthly budget spent", body = ErrorBody),
        (status = 404, description = "no such model", body = ErrorBody),
        (status = 429, description = "over a request or token limit (Retry-After)", body = ErrorBody),
        (status = 502, description = "the provider failed after retries", body = ErrorBody),
        (status = 504, description = "the provider timed out", body = ErrorBody)))]
pub(crate) async fn completions(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
) -> Result<HttpResponse, ApiError> {
    let (principal, _) = principal(&req, &admin).await?;
    let legacy: CompletionRequest = parse_json(&body)?;
    let mut request = legacy.to_chat()?;
    cache_control(&req, &mut request);
    header_tags(&req, &mut request.metadata)?;
    let echo = legacy.echoed();
    let slot = pipeline.tenant_slot(principal.tenant)?;
    if request.stream {
        return chat_stream(req, pipeline, principal, request, slot, Surface::Text).await;
    }
    answer_whole(&req, &body, &pipeline, &principal, &request, |answer| {
        text_completion(&answer, echo.as_deref())
    })
    .await
}

/// The Responses API over the chat pipeline: `input` and `instructions` become the chat's
/// messages (routed, limited, billed, cached, guarded and logged as one), the answer a
/// `response` object, whole or as the Responses stream's typed events.
#[utoipa::path(post, path = "/v1/responses", tag = "inference",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"),
        ("Idempotency-Key" = Option<String>, Header, description = "same key and body: the same answer, billed once (not for streams)")),
    request_body = ResponsesRequest,
    responses((status = 200, description = "response, or text/event-stream of response events; headers as for chat completions"),
        (status = 400, description = "invalid request (previous_response_id, background, other tools than functions: the message says which)", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 402, description = "monthly budget spent", body = ErrorBody),
        (status = 404, description = "no such model", body = ErrorBody),
        (status = 429, description = "over a request or token limit (Retry-After)", body = ErrorBody),
        (status = 502, description = "the provider failed after retries", body = ErrorBody),
        (status = 504, description = "the provider timed out", body = ErrorBody)))]
pub(crate) async fn responses(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
) -> Result<HttpResponse, ApiError> {
    let (principal, _) = principal(&req, &admin).await?;
    let asked: ResponsesRequest = parse_json(&body)?;
    let mut request = asked.to_chat()?;
    cache_control(&req, &mut request);
    header_tags(&req, &mut request.metadata)?;
    let slot = pipeline.tenant_slot(principal.tenant)?;
    if request.stream {
        let stream = pipeline
            .stream(correlation(&req), &principal, request, slot)
            .await?;
        let mut events = ResponseEvents::new(asked, &stream.inference_id.to_string());
        let first = sse_events(events.start());
        let frames = futures_util::stream::unfold(
            (stream.frames, events, false),
            |(mut frames, mut events, ended)| async move {
                if ended {
                    return None;
                }
                let (out, ended) = match frames.recv().await? {
                    Frame::Data(value) => {
                        let failed = value.get("error").is_some();
                        (events.chunk(&value), failed)
                    }
                    Frame::Done => (events.done(), true),
                };
                Some((
                    Ok::<_, std::convert::Infallible>(sse_events(out)),
                    (frames, events, ended),
                ))
            },
        );
        let body = futures_util::stream::once(async move { Ok(first) }).chain(frames);
        return Ok(stream_response(
            stream.inference_id,
            &stream.rate,
            &stream.route,
            stream.cache,
            body,
        ));
    }
    answer_whole(&req, &body, &pipeline, &principal, &request, |answer| {
        response_body(&answer, &asked)
    })
    .await
}

/// Server-sent events with their `event:` names (the Responses stream's form).
fn sse_events(events: Vec<Value>) -> Bytes {
    let mut out = String::new();
    for event in events {
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        out.push_str("event: ");
        out.push_str(kind);
        out.push_str("\ndata: ");
        out.push_str(&event.to_string());
        out.push_str("\n\n");
    }
    Bytes::from(out)
}

/// Which API a stream answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    Chat,
    /// `/v1/completions`: chunks translated to `text_completion` ones.
    Text,
}

/// The streamed form: the provider is called (with retries) before the response starts; from
/// then on chunks pass through as they arrive, as server-sent events.
async fn chat_stream(
    req: HttpRequest,
    pipeline: web::Data<Pipeline>,
    principal: Principal,
    request: ChatRequest,
    slot: OwnedSemaphorePermit,
    surface: Surface,
) -> Result<HttpResponse, ApiError> {
    let stream = pipeline
        .stream(correlation(&req), &principal, request, slot)
        .await?;
    let body = futures_util::stream::unfold(stream.frames, move |mut frames| async move {
        loop {
            let frame = frames.recv().await?;
            let bytes = match frame {
                Frame::Data(value) if surface == Surface::Text => match text_chunk(&value) {
                    Some(chunk) => Bytes::from(format!("data: {chunk}\n\n")),
                    None => continue,
                },
                Frame::Data(value) => Bytes::from(format!("data: {value}\n\n")),
                Frame::Done => Bytes::from_static(b"data: [DONE]\n\n"),
            };
            return Some((Ok::<_, std::convert::Infallible>(bytes), frames));
        }
    });
    Ok(stream_response(
        stream.inference_id,
        &stream.rate,
        &stream.route,
        stream.cache,
        body,
    ))
}

/// A streamed answer with its headers (inference id, rate limits, route, cache).
fn stream_response<S>(
    inference_id: uuid::Uuid,
    rate: &switchyard_inference::RateStatus,
    route: &str,
    cache: Option<CacheStatus>,
    body: S,
) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + 'static,
{
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header((INFERENCE_ID, inference_id.to_string()));
    for header in rate_headers(rate)
        .into_iter()
        .chain(route_header(route))
        .chain(cache_header(cache))
    {
        response.insert_header(header);
    }
    response.streaming(body)
}

/// OpenAI-compatible embeddings.
#[utoipa::path(post, path = "/v1/embeddings", tag = "inference",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    request_body = EmbeddingsRequest,
    responses((status = 200, description = "OpenAI embedding list; header x-switchyard-inference-id"),
        (status = 400, description = "invalid request", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 402, description = "monthly budget spent", body = ErrorBody),
        (status = 429, description = "over a limit", body = ErrorBody)))]
pub(crate) async fn embeddings(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
) -> Result<HttpResponse, ApiError> {
    let (principal, _) = principal(&req, &admin).await?;
    let _slot = pipeline.tenant_slot(principal.tenant)?;
    let mut request: EmbeddingsRequest = parse_json(&body)?;
    header_tags(&req, &mut request.metadata)?;
    // With an `Idempotency-Key`, a retry gets the first answer (and its headers) and is not
    // billed again.
    idempotent_with(
        pipeline.store.as_ref(),
        &req,
        principal.tenant,
        &body,
        |_| {},
        |_| Vec::new(),
        || async {
            let done = pipeline
                .embed(correlation(&req), &principal, &request)
                .await?;
            let mut headers = rate_headers(&done.rate);
            if let Ok(id) = HeaderValue::from_str(&done.inference_id.to_string()) {
                headers.push((INFERENCE_ID, id));
            }
            headers.extend(position_header(done.position));
            Ok(Reply {
                status: StatusCode::OK,
                body: done.body,
                headers,
            })
        },
    )
    .await
}
