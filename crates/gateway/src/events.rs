//! Per-tenant event feeds: `GET /v1/events/stream` (Server-Sent Events) and `GET /v1/events/ws`
//! (WebSocket, two-way: the client can also run chat completions over it).
//!
//! One hub task tails the log once for the whole server and encodes each event to JSON once, into
//! a bounded broadcast ring shared by every connection. A connection first catches up from the
//! log itself (from `Last-Event-ID` or `?after=`), page by page as the client reads, then follows
//! the ring. Nothing is produced faster than the client reads: the body is a pull stream, so a
//! slow client costs the server its place in the ring and no more. When a client falls further
//! behind than the ring holds, the slow-consumer policy applies:
//! - `policy=disconnect` (default): an `event: slow_consumer` with `{"resume_from": position}`,
//!   then the end of the stream; reconnecting with that position as `Last-Event-ID` loses
//!   nothing (the catch-up reads the log);
//! - `policy=drop_oldest`: an `event: gap` with `{"dropped": n, "resume_from": position}`, and the
//!   feed goes on from the oldest event still in the ring.
//!
//! A comment line (`: heartbeat`) goes out every 15 s of silence, so proxies keep the connection.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::StreamExt;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use serde::Deserialize;
use switchyard_events::{EventStore, GlobalPosition, RecordedEvent, Scope, TenantId};
use tokio::sync::broadcast;

use crate::admin::Admin;
use crate::http::{ApiError, ErrorBody, tenant_request};

/// Events per catch-up read.
const PAGE: usize = 256;

/// One event, encoded once for every connection.
#[derive(Debug)]
pub struct Frame {
    pub position: u64,
    pub tenant: TenantId,
    pub event_type: String,
    /// The event's JSON form (envelope and data).
    pub json: Bytes,
}

impl Frame {
    fn of(event: &RecordedEvent) -> Frame {
        // The same JSON as the NATS relay publishes.
        let json = switchyard_projections::relay::payload(event);
        Frame {
            position: event.global_position.0,
            tenant: event.tenant_id,
            event_type: event.event_type.clone(),
            json: Bytes::from(json),
        }
    }

    fn sse(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.json.len() + self.event_type.len() + 40);
        out.extend_from_slice(
            format!("id: {}\nevent: {}\ndata: ", self.position, self.event_type).as_bytes(),
        );
        out.extend_from_slice(&self.json);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

struct Metrics {
    connections: IntGaugeVec,
    buffered: IntGaugeVec,
    dropped: IntCounterVec,
    sent: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(collector: T) -> T {
    let _ = prometheus::register(Box::new(collector.clone()));
    collector
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one is a programming error caught by every test"
)]
static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    connections: register(
        IntGaugeVec::new(
            Opts::new("switchyard_subscriber_connections", "Open event-feed connections"),
            &["transport"],
        )
        .expect("valid metric"),
    ),
    buffered: register(
        IntGaugeVec::new(
            Opts::new(
                "switchyard_subscriber_buffer_depth",
                "Events waiting in the ring for event-feed connections (sum over connections)",
            ),
            &["transport"],
        )
        .expect("valid metric"),
    ),
    dropped: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_subscriber_dropped_total",
                "Events a slow event-feed client missed (drop_oldest) or was disconnected for (disconnect)",
            ),
            &["transport", "policy"],
        )
        .expect("valid metric"),
    ),
    sent: register(
        IntCounterVec::new(
            Opts::new("switchyard_subscriber_sent_total", "Events sent to event-feed clients"),
            &["transport"],
        )
        .expect("valid metric"),
    ),
}
});

/// The server's one tail of the log, fanned out to every feed.
#[derive(Debug, Clone)]
pub struct EventHub {
    store: Arc<dyn EventStore>,
    ring: broadcast::Sender<Arc<Frame>>,
    heartbeat: Duration,
}

impl EventHub {
    /// Starts the hub at the current head, with a ring of `capacity` events.
    pub async fn start(
        store: Arc<dyn EventStore>,
        capacity: usize,
        heartbeat: Duration,
    ) -> anyhow::Result<EventHub> {
        let (ring, _) = broadcast::channel(capacity.max(16));
        let head = store.head().await?;
        let hub = EventHub {
            store: store.clone(),
            ring: ring.clone(),
            heartbeat,
        };
        tokio::spawn(async move {
            let mut at = head;
            loop {
                let mut events = store.subscribe_all(Scope::All, at);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => {
                            at = event.global_position;
                            // With no feed open, nothing is encoded: a feed that opens later
                            // catches up from the log itself.
                            if ring.receiver_count() > 0 {
                                let _ = ring.send(Arc::new(Frame::of(&event)));
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "event hub: log subscription failed; resubscribing");
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(hub)
    }
}

/// Registers the routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/events/stream", web::get().to(stream))
        .route("/v1/events/ws", web::get().to(websocket));
}

/// What a client falling behind the ring gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowPolicy {
    Disconnect,
    DropOldest,
}

impl SlowPolicy {
    fn label(self) -> &'static str {
        match self {
            SlowPolicy::Disconnect => "disconnect",
            SlowPolicy::DropOldest => "drop_oldest",
        }
    }
}

/// Query parameters of the feed.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct FeedParams {
    /// Comma-separated event types to send (default: all).
    types: Option<String>,
    /// Start after this log position (`Last-Event-ID` takes precedence); default: from now on.
    after: Option<u64>,
    /// `disconnect` (default) or `drop_oldest`.
    #[param(value_type = Option<String>)]
    policy: Option<SlowPolicy>,
}

/// A feed's filter and position.
#[derive(Debug, Clone)]
pub struct Feed {
    pub tenant: TenantId,
    pub types: Option<Vec<String>>,
    pub after: u64,
    pub policy: SlowPolicy,
}

impl Feed {
    fn wants(&self, event_type: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event_type))
    }
}

/// What a feed produces, transport-neutral: the SSE and WebSocket writers format it.
#[derive(Debug, Clone)]
pub enum Item {
    Event(Arc<Frame>),
    /// The client fell behind and missed `dropped` events after `resume_from`.
    Gap {
        dropped: u64,
        resume_from: u64,
    },
    /// The client fell behind; the feed ends; reconnect from `resume_from`.
    SlowConsumer {
        resume_from: u64,
    },
    Heartbeat,
}

struct State {
    hub: EventHub,
    feed: Feed,
    ring: broadcast::Receiver<Arc<Frame>>,
    catching_up: bool,
    page: std::collections::VecDeque<Arc<Frame>>,
    done: bool,
    transport: &'static str,
    reported_depth: i64,
}

impl Drop for State {
    fn drop(&mut self) {
        METRICS
            .connections
            .with_label_values(&[self.transport])
            .dec();
        METRICS
            .buffered
            .with_label_values(&[self.transport])
            .sub(self.reported_depth);
    }
}

impl State {
    fn report_depth(&mut self) {
        let depth = i64::try_from(self.ring.len()).unwrap_or(i64::MAX);
        METRICS
            .buffered
            .with_label_values(&[self.transport])
            .add(depth - self.reported_depth);
        self.reported_depth = depth;
    }

    async fn next(&mut self) -> Option<Item> {
        if self.done {
            return None;
        }
        loop {
            if let Some(frame) = self.page.pop_front() {
                self.feed.after = frame.position;
                if self.feed.wants(&frame.event_type) {
                    return Some(Item::Event(frame));
                }
                continue;
            }
            if self.catching_up {
                let page = self
                    .hub
                    .store
                    .read_all(
                        Scope::Tenant(self.feed.tenant),
                        GlobalPosition(self.feed.after),
                        PAGE,
                    )
                    .await;
                match page {
                    Ok(page) if page.is_empty() => self.catching_up = false,
                    Ok(page) => self
                        .page
                        .extend(page.iter().map(|e| Arc::new(Frame::of(e)))),
                    Err(error) => {
                        tracing::warn!(%error, "event feed: catch-up read failed; closing");
                        self.done = true;
                        return Some(Item::SlowConsumer {
                            resume_from: self.feed.after,
                        });
                    }
                }
                continue;
            }
            let received = tokio::time::timeout(self.hub.heartbeat, self.ring.recv()).await;
            self.report_depth();
            match received {
                Err(_) => return Some(Item::Heartbeat),
                Ok(Ok(frame)) => {
                    if frame.tenant != self.feed.tenant || frame.position <= self.feed.after {
                        continue;
                    }
                    self.feed.after = frame.position;
                    if self.feed.wants(&frame.event_type) {
                        return Some(Item::Event(frame));
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(missed))) => {
                    METRICS
                        .dropped
                        .with_label_values(&[self.transport, self.feed.policy.label()])
                        .inc_by(missed);
                    return Some(match self.feed.policy {
                        SlowPolicy::Disconnect => {
                            self.done = true;
                            Item::SlowConsumer {
                                resume_from: self.feed.after,
                            }
                        }
                        SlowPolicy::DropOldest => Item::Gap {
                            dropped: missed,
                            resume_from: self.feed.after,
                        },
                    });
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    self.done = true;
                    return Some(Item::SlowConsumer {
                        resume_from: self.feed.after,
                    });
                }
            }
        }
    }
}

/// The items of a feed, produced only as fast as they are pulled.
pub fn items(
    hub: &EventHub,
    feed: Feed,
    transport: &'static str,
) -> impl futures_util::Stream<Item = Item> + use<> {
    METRICS.connections.with_label_values(&[transport]).inc();
    let state = State {
        ring: hub.ring.subscribe(),
        hub: hub.clone(),
        catching_up: true,
        feed,
        page: std::collections::VecDeque::new(),
        done: false,
        transport,
        reported_depth: 0,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    })
}

/// Authenticates a feed request and reads its parameters.
pub(crate) async fn feed_of(
    req: &HttpRequest,
    admin: &Admin,
    hub: &EventHub,
) -> Result<Feed, ApiError> {
    let (principal, _) = tenant_request(req, admin).await?;
    if !principal.allows(&["events", crate::analytics::SCOPE]) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key lacks the `events` scope",
        ));
    }
    let params = web::Query::<FeedParams>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|error| {
            ApiError::owned(
                StatusCode::BAD_REQUEST,
                "invalid_request".into(),
                format!("invalid query: {error}"),
            )
        })?;
    let last_event_id = match req.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "Last-Event-ID must be a log position (an unsigned integer)",
                    )
                })?,
        ),
    };
    let after = match last_event_id.or(params.after) {
        Some(after) => after,
        None => hub.store.head().await.map(|h| h.0).unwrap_or(0),
    };
    let types = params.types.map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    Ok(Feed {
        tenant: principal.tenant,
        types,
        after,
        policy: params.policy.unwrap_or(SlowPolicy::Disconnect),
    })
}

/// The tenant's events as Server-Sent Events.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(FeedParams,
        ("Authorization" = String, Header, description = "Bearer <tenant API key>"),
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this position")),
    responses((status = 200, description = "text/event-stream: `id: <position>`, `event: <type>`, `data: <event JSON>`; `event: gap` / `event: slow_consumer` with resume_from; `: heartbeat` comments"),
        (status = 400, description = "bad parameters", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody)))]
pub(crate) async fn stream(
    req: HttpRequest,
    admin: web::Data<Admin>,
    hub: web::Data<EventHub>,
) -> Result<HttpResponse, ApiError> {
    let feed = feed_of(&req, &admin, &hub).await?;
    tracing::info!(tenant = %feed.tenant, after = feed.after, "event feed opened (SSE)");
    let body = items(&hub, feed, "sse").map(|item| {
        let bytes = match item {
            Item::Event(frame) => {
                METRICS.sent.with_label_values(&["sse"]).inc();
                frame.sse()
            }
            Item::Gap {
                dropped,
                resume_from,
            } => Bytes::from(format!(
                "event: gap\ndata: {{\"dropped\":{dropped},\"resume_from\":{resume_from}}}\n\n"
            )),
            Item::SlowConsumer { resume_from } => Bytes::from(format!(
                "event: slow_consumer\ndata: {{\"resume_from\":{resume_from}}}\n\n"
            )),
            Item::Heartbeat => Bytes::from_static(b": heartbeat\n\n"),
        };
        Ok::<_, std::convert::Infallible>(bytes)
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

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
        (status = 401, description = "missing or invalid key", body = ErrorBody)))]
pub(crate) async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    admin: web::Data<Admin>,
    hub: web::Data<EventHub>,
    gateway: web::Data<crate::inference::Gateway>,
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
            gateway,
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
    gateway: web::Data<crate::inference::Gateway>,
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
        gateway,
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
                    crate::workflows::start_over_socket(&req, &admin, engine.into_inner(), body)
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
    let response = match crate::inference::chat_completions(req, body, admin, gateway).await {
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
        .get(crate::inference::INFERENCE_ID)
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
