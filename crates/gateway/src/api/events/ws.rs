//! The WebSocket form of the feed (`GET /v1/events/ws`): the feed out, and chat completions
//! and workflow starts in, served through the same handlers as over HTTP.

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::http::ErrorBody;
use crate::state::Admin;

use super::hub::{EventHub, Item, METRICS, items};
use super::{FeedParams, feed_of};

/// The WebSocket form of the feed, two-way: the server sends the tenant's events (as the SSE
/// feed, same parameters), and the client may send requests that run through the same path as
/// HTTP (authentication, limits, billing, events), answered on the socket:
///
/// - `{"type": "chat.completions", "id": "c1", "request": {…OpenAI chat request…}}` →
///   `{"type": "chat.completion.chunk", "id": "c1", "data": {…}}`… then
///   `{"type": "chat.completion.done", "id": "c1", "inference_id": "…"}` (streamed), or
///   `{"type": "chat.completion", "id": "c1", "data": {…}}` (`"stream": false`);
/// - anything the server cannot do: `{"type": "error", "id": …, "error": {"code", "message"}}`.
///
/// Server messages: `{"type": "event", "position", "event"}`, `{"type": "gap", "dropped",
/// "resume_from"}`, `{"type": "slow_consumer", "resume_from"}` (then a close), and a WebSocket
/// ping as the heartbeat.
#[utoipa::path(get, path = "/v1/events/ws", tag = "events", params(FeedParams,
        ("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 101, description = "WebSocket: events out; chat.completions requests in, their tokens out"),
        (status = 400, description = "not a WebSocket upgrade, or a bad parameter", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody)))]
pub(crate) async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    admin: web::Data<Admin>,
    hub: web::Data<EventHub>,
    pipeline: web::Data<switchyard_inference::Pipeline>,
    engine: web::Data<switchyard_workflows::Engine>,
) -> Result<HttpResponse, actix_web::Error> {
    let feed = feed_of(&req, &admin, &hub).await?;
    let (response, session, messages) = actix_ws::handle(&req, body)?;
    tracing::info!(tenant = %feed.tenant, after = feed.after, "event feed opened (WebSocket)");
    let items = items(&hub, feed, "ws");
    actix_web::rt::spawn(push_feed(session.clone(), items));
    actix_web::rt::spawn(serve_requests(
        session,
        messages,
        req,
        Services {
            admin,
            pipeline,
            engine,
        },
    ));
    Ok(response)
}

/// Sends the feed; a send waits while the socket's outgoing queue is full, so a client that
/// does not read stops the feed from being pulled, and falls behind the ring instead of growing
/// a queue here.
async fn push_feed(mut session: actix_ws::Session, items: impl futures_util::Stream<Item = Item>) {
    let mut items = std::pin::pin!(items);
    while let Some(item) = items.next().await {
        let sent = match item {
            Item::Event(frame) => {
                METRICS.sent.with_label_values(&["ws"]).inc();
                let mut text = Vec::with_capacity(frame.json.len() + 64);
                text.extend_from_slice(format!("{{\"type\":\"event\",\"position\":{},\"event\":", frame.position).as_bytes());
                text.extend_from_slice(&frame.json);
                text.push(b'}');
                session.text(String::from_utf8_lossy(&text).into_owned()).await
            }
            Item::Gap { dropped, resume_from } => {
                session
                    .text(serde_json::json!({"type": "gap", "dropped": dropped, "resume_from": resume_from}).to_string())
                    .await
            }
            Item::SlowConsumer { resume_from } => {
                let _ = session
                    .text(serde_json::json!({"type": "slow_consumer", "resume_from": resume_from}).to_string())
                    .await;
                let _ = session
                    .close(Some(actix_ws::CloseReason {
                        code: actix_ws::CloseCode::Policy,
                        description: Some(format!("slow consumer; resume from {resume_from}")),
                    }))
                    .await;
                return;
            }
            Item::Closed { reason } => {
                let _ = session
                    .text(serde_json::json!({"type": "closed", "reason": reason}).to_string())
                    .await;
                let _ = session
                    .close(Some(actix_ws::CloseReason {
                        code: actix_ws::CloseCode::Policy,
                        description: Some(reason),
                    }))
                    .await;
                return;
            }
            Item::Heartbeat => session.ping(b"heartbeat").await,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// A request from the client over the socket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SocketRequest {
    #[serde(rename = "type")]
    kind: String,
    /// The client's id of the request, echoed on every answer.
    id: Option<String>,
    request: Option<serde_json::Value>,
}

/// What requests over the socket are served with.
#[derive(Clone)]
struct Services {
    admin: web::Data<Admin>,
    pipeline: web::Data<switchyard_inference::Pipeline>,
    engine: web::Data<switchyard_workflows::Engine>,
}

/// Client messages: requests (each served concurrently), pings, close.
async fn serve_requests(
    mut session: actix_ws::Session,
    messages: actix_ws::MessageStream,
    req: HttpRequest,
    services: Services,
) {
    let mut messages = messages
        .max_frame_size(1 << 20)
        .aggregate_continuations()
        .max_continuation_size(1 << 20);
    while let Some(message) = messages.recv().await {
        match message {
            Ok(actix_ws::AggregatedMessage::Text(text)) => {
                let (session, req, services) = (session.clone(), req.clone(), services.clone());
                actix_web::rt::spawn(async move {
                    answer_request(session, text.to_string(), req, services).await;
                });
            }
            Ok(actix_ws::AggregatedMessage::Ping(bytes)) => {
                if session.pong(&bytes).await.is_err() {
                    return;
                }
            }
            Ok(actix_ws::AggregatedMessage::Close(_)) | Err(_) => {
                let _ = session.close(None).await;
                return;
            }
            Ok(_) => {}
        }
    }
}

fn socket_error(id: Option<&str>, code: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "id": id, "error": {"code": code, "message": message}})
        .to_string()
}

async fn answer_request(
    mut session: actix_ws::Session,
    text: String,
    req: HttpRequest,
    services: Services,
) {
    let Services {
        admin,
        pipeline,
        engine,
    } = services;
    let request: SocketRequest = match serde_json::from_str(&text) {
        Ok(request) => request,
        Err(error) => {
            let _ = session
                .text(socket_error(
                    None,
                    "invalid_request",
                    &format!("not a request: {error}"),
                ))
                .await;
            return;
        }
    };
    let id = request.id.as_deref();
    match request.kind.as_str() {
        "chat.completions" => {}
        "workflow.start" => {
            // The same checks and path as `POST /v1/workflows/{name}/runs`; the run's events
            // then arrive on this socket's feed like any other.
            let answer = match request.request {
                Some(body) => {
                    crate::api::workflows::start_over_socket(
                        &req,
                        &admin,
                        engine.into_inner(),
                        body,
                    )
                    .await
                }
                None => Err(crate::http::ApiError::new(
                    actix_web::http::StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "workflow.start needs a `request`: {workflow, input, version?, overrides?}",
                )),
            };
            let message = match answer {
                Ok(run_id) => {
                    serde_json::json!({"type": "workflow.started", "id": id, "run_id": run_id})
                        .to_string()
                }
                Err(error) => socket_error(id, error.code(), error.message()),
            };
            let _ = session.text(message).await;
            return;
        }
        other => {
            let _ = session
                .text(socket_error(
                    id,
                    "invalid_request",
                    &format!(
                        "unknown request type {other:?}; use chat.completions or workflow.start"
                    ),
                ))
                .await;
            return;
        }
    }
    let Some(body) = request.request else {
        let _ = session
            .text(socket_error(
                id,
                "invalid_request",
                "chat.completions needs a `request`",
            ))
            .await;
        return;
    };
    let body = Bytes::from(body.to_string());
    let engine = req
        .app_data::<actix_web::web::Data<switchyard_workflows::Engine>>()
        .cloned();
    let response =
        match crate::api::openai::chat_completions(req, body, admin, pipeline, engine).await {
            Ok(response) => response,
            Err(error) => {
                let response = actix_web::ResponseError::error_response(&error);
                let bytes = actix_web::body::to_bytes(response.into_body())
                    .await
                    .unwrap_or_default();
                let detail: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let _ = session
                    .text(
                        serde_json::json!({"type": "error", "id": id, "error": detail["error"]})
                            .to_string(),
                    )
                    .await;
                return;
            }
        };
    let inference_id = response
        .headers()
        .get(crate::api::openai::INFERENCE_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let streamed = response
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let body = response.into_body();
    if !streamed {
        let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
        let data: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let _ = session
            .text(serde_json::json!({"type": "chat.completion", "id": id, "inference_id": inference_id, "data": data}).to_string())
            .await;
        return;
    }
    let mut body = std::pin::pin!(body);
    let mut pending = String::new();
    while let Some(chunk) =
        std::future::poll_fn(|cx| actix_web::body::MessageBody::poll_next(body.as_mut(), cx)).await
    {
        let Ok(chunk) = chunk else { break };
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let frame: String = pending.drain(..end + 2).collect();
            let Some(data) = frame.trim().strip_prefix("data: ") else {
                continue;
            };
            let message = if data == "[DONE]" {
                serde_json::json!({"type": "chat.completion.done", "id": id, "inference_id": inference_id})
            } else {
                let data: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                if data.get("error").is_some() {
                    serde_json::json!({"type": "error", "id": id, "error": data["error"]})
                } else {
                    serde_json::json!({"type": "chat.completion.chunk", "id": id, "data": data})
                }
            };
            if session.text(message.to_string()).await.is_err() {
                return;
            }
        }
    }
}
