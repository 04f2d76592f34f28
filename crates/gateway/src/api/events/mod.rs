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

/// The hub: the log's one tail, the ring, feeds and their items.
mod hub;
/// The WebSocket feed and the requests a client sends over it.
pub mod ws;

pub use hub::{EventHub, Feed, Item, SlowPolicy};

use hub::{METRICS, items};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::http::{ApiError, ErrorBody, scoped_request};
use crate::state::Admin;

crate::api::endpoints! {
    get "/v1/events/stream" => stream,
    get "/v1/events/ws" => ws::websocket,
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
    #[param(inline)]
    policy: Option<SlowPolicy>,
}

/// Authenticates a feed request and reads its parameters.
pub(crate) async fn feed_of(
    req: &HttpRequest,
    admin: &Admin,
    hub: &EventHub,
) -> Result<Feed, ApiError> {
    let (principal, _) = scoped_request(req, admin, &["events", super::analytics::SCOPE]).await?;
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
    let keys = admin.keys.clone();
    let key_id = principal.key_id;
    Ok(Feed {
        tenant: principal.tenant,
        types,
        after,
        policy: params.policy.unwrap_or(SlowPolicy::Disconnect),
        key: std::sync::Arc::new(move || {
            keys.check_key(key_id, time::OffsetDateTime::now_utc())
                .err()
                .map(|refusal| refusal.reason().to_owned())
        }),
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
            Item::Closed { reason } => Bytes::from(format!(
                "event: closed\ndata: {}\n\n",
                serde_json::json!({ "reason": reason })
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
