//! `Idempotency-Key` on POST and PUT: the same key with the same request gets the same response
//! (and the command runs once); the same key with another request is refused with 422.
//!
//! Each key is a stream `idem-<hash of tenant and key>` of its own. The first request claims it
//! with an append that expects no stream, so of several concurrent retries exactly one runs the
//! command and the others are told it is in progress; the response is then recorded in the
//! same stream and replayed to every later retry, on any node and after restarts. A 5xx, and a
//! refusal that depends on time or limits (402, 408, 429), releases the key instead, so a retry
//! can try again. Secrets in a response (a new API key) are removed
//! from the recorded copy: a replay says the key was shown once.
//!
//! The headers that belong to the answer (`content-type`, `retry-after`, `location`,
//! `x-ratelimit-*`, `x-switchyard-*`) are recorded with it and sent again on every replay, which
//! also carries `idempotency-replayed: true`; per-connection ones (`set-cookie`, `date`,
//! `content-length`, the request id) are not.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;
use switchyard_events::{
    Event, EventStore, ExpectedVersion, IdempotencyKeyClaimed, IdempotencyKeyReleased,
    IdempotentResponseRecorded, Metadata, Scope, StreamId, StreamVersion, TenantId,
};
use time::OffsetDateTime;

use crate::auth::hex;
use crate::http::ApiError;

/// A claim older than this with no response is taken to be abandoned (its node died).
const ABANDONED_AFTER: time::Duration = time::Duration::seconds(60);

/// The header every replayed answer carries.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");

/// A handler's answer: status, JSON body, and the headers that go with it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    pub fn new(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            body,
            headers: Vec::new(),
        }
    }
}

/// A recorded answer: status, body (as sent) and the headers a replay sends again.
#[derive(Debug)]
struct Recorded {
    status: u16,
    body: String,
    headers: BTreeMap<String, String>,
}

/// What a key's stream says.
#[derive(Debug, Default)]
struct Record {
    version: StreamVersion,
    claim: Option<(String, OffsetDateTime)>,
    response: Option<Recorded>,
}

/// Whether a header belongs to the answer (and is recorded and replayed), rather than to the
/// connection or the request.
fn replayable(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(name, "content-type" | "retry-after" | "location")
        || name.starts_with("x-ratelimit-")
        || name.starts_with("x-switchyard-")
}

fn recordable<'a>(
    headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) -> BTreeMap<String, String> {
    headers
        .into_iter()
        .filter(|(name, _)| replayable(name))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// Runs `run` at most once per `Idempotency-Key` (when the request has one) and answers retries
/// with the recorded response. `redact` removes secrets from the copy that is recorded.
pub async fn idempotent<F, Fut>(
    store: &dyn EventStore,
    req: &HttpRequest,
    tenant: TenantId,
    body: &[u8],
    redact: fn(&mut Value),
    run: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, Value), ApiError>>,
{
    idempotent_with(
        store,
        req,
        tenant,
        body,
        redact,
        |_| Vec::new(),
        || async { run().await.map(|(status, body)| Reply::new(status, body)) },
    )
    .await
}

/// Headers derived from a response body, set on the first answer and on every replay (also of
/// a response recorded before headers were, which has none of its own).
pub type BodyHeaders = fn(&Value) -> Vec<(HeaderName, HeaderValue)>;

/// [`idempotent`] for handlers that answer with headers of their own ([`Reply`]), and headers
/// derived from the body. A replay carries both.
pub async fn idempotent_with<F, Fut>(
    store: &dyn EventStore,
    req: &HttpRequest,
    tenant: TenantId,
    body: &[u8],
    redact: fn(&mut Value),
    headers: BodyHeaders,
    run: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    let respond = |reply: Reply| {
        let mut response = HttpResponse::build(reply.status);
        for header in headers(&reply.body).into_iter().chain(reply.headers) {
            response.insert_header(header);
        }
        response.json(reply.body)
    };
    let Some(key) = req.headers().get("idempotency-key") else {
        return run().await.map(respond);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            )
        })?;
    let stream = key_stream(tenant, key)?;
    let request_hash = request_hash(req, body);
    let record = load(store, tenant, &stream).await?;

    let expected = match (&record.claim, &record.response) {
        (Some((hash, _)), Some(recorded)) => {
            return if *hash == request_hash {
                replay(recorded, headers)
            } else {
                Err(reused())
            };
        }
        (Some((hash, _)), None) if *hash != request_hash => return Err(reused()),
        (Some((_, claimed_at)), None)
            if OffsetDateTime::now_utc() - *claimed_at < ABANDONED_AFTER =>
        {
            return Err(in_progress());
        }
        _ if record.version == StreamVersion::NONE => ExpectedVersion::NoStream,
        _ => ExpectedVersion::Exact(record.version),
    };
    let claim = Event::IdempotencyKeyClaimed(IdempotencyKeyClaimed { request_hash });
    let claimed = store
        .append(tenant, &stream, expected, vec![new_event(&claim)?])
        .await;
    let claimed = match claimed {
        Ok(appended) => appended.stream_version,
        Err(error) if error.is_conflict() => return Err(in_progress()),
        Err(error) => return Err(unavailable(error)),
    };

    // The answer as sent, and the copy of its body that is recorded (secrets removed).
    let outcome = run().await.map(|reply| {
        let mut stored = reply.body.clone();
        redact(&mut stored);
        (respond(reply), stored)
    });
    let recorded = match &outcome {
        Ok((response, stored)) => Some(Recorded {
            status: response.status().as_u16(),
            body: stored.to_string(),
            headers: recordable(response.headers()),
        }),
        // A refusal that depends on time or on limits (a rate limit, a budget, a timeout) may
        // pass on a retry, so it is not recorded (as Stripe does for 429); nor is a 5xx.
        Err(error) if depends_on_time_or_limits(error.status()) => None,
        Err(error) if !error.status().is_server_error() => Some(Recorded {
            status: error.status().as_u16(),
            body: error.to_json().to_string(),
            headers: recordable(error.headers().iter().map(|(name, value)| (name, value))),
        }),
        Err(_) => None,
    };
    let event = match recorded {
        Some(Recorded {
            status,
            body,
            headers,
        }) => Event::IdempotentResponseRecorded(IdempotentResponseRecorded {
            status,
            body,
            headers,
        }),
        None => Event::IdempotencyKeyReleased(IdempotencyKeyReleased {}),
    };
    if let Err(error) = store
        .append(
            tenant,
            &stream,
            ExpectedVersion::Exact(claimed),
            vec![new_event(&event)?],
        )
        .await
    {
        // The command ran; only its record is missing. A retry after the claim is abandoned
        // would run it again, so say so loudly.
        tracing::error!(%error, %stream, "could not record an idempotent response");
    }
    outcome.map(|(response, _)| response)
}

/// Refusals a retry may not get: 402 (a budget, raised or renewed), 408 and 429 (time).
fn depends_on_time_or_limits(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::PAYMENT_REQUIRED | StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
    )
}

fn key_stream(tenant: TenantId, key: &str) -> Result<StreamId, ApiError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(tenant.as_uuid().as_bytes());
    hasher.update(key.as_bytes());
    StreamId::of("idem", hex(&hasher.finalize().as_bytes()[..16])).map_err(|_| reused())
}

fn request_hash(req: &HttpRequest, body: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(req.method().as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(req.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hex(hasher.finalize().as_bytes())
}

async fn load(
    store: &dyn EventStore,
    tenant: TenantId,
    stream: &StreamId,
) -> Result<Record, ApiError> {
    let events = store
        .read_stream(Scope::Tenant(tenant), stream, StreamVersion::NONE, 1000)
        .await
        .map_err(unavailable)?;
    let mut record = Record::default();
    for recorded in &events {
        record.version = recorded.stream_version;
        match Event::from_recorded(recorded).map_err(unavailable)? {
            Event::IdempotencyKeyClaimed(e) => {
                record.claim = Some((e.request_hash, recorded.recorded_at));
                record.response = None;
            }
            Event::IdempotentResponseRecorded(e) => {
                record.response = Some(Recorded {
                    status: e.status,
                    body: e.body,
                    headers: e.headers,
                });
            }
            Event::IdempotencyKeyReleased(_) => {
                record.claim = None;
                record.response = None;
            }
            _ => {}
        }
    }
    Ok(record)
}

/// The recorded answer again: its status, body and headers, marked as a replay.
fn replay(recorded: &Recorded, headers: BodyHeaders) -> Result<HttpResponse, ApiError> {
    let status = StatusCode::from_u16(recorded.status).map_err(|_| in_progress())?;
    let body: Value = serde_json::from_str(&recorded.body).unwrap_or(Value::Null);
    let mut sent: Vec<(HeaderName, HeaderValue)> = recorded
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .filter(|(name, _)| replayable(name))
        .collect();
    // A response recorded before headers were: the ones derived from its body at least.
    for (name, value) in headers(&body) {
        if !sent.iter().any(|(sent, _)| *sent == name) {
            sent.push((name, value));
        }
    }
    sent.push((REPLAYED, HeaderValue::from_static("true")));
    if status.is_client_error() {
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or("bad_request")
            .to_owned();
        let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
        return Err(ApiError::owned(status, Cow::Owned(code), message).with_headers(sent));
    }
    let mut response = HttpResponse::build(status);
    for header in sent {
        response.insert_header(header);
    }
    Ok(response.json(body))
}

fn new_event(event: &Event) -> Result<switchyard_events::NewEvent, ApiError> {
    event.to_new_event(Metadata::default()).map_err(unavailable)
}

fn reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request",
    )
}

fn in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "request_in_progress",
        "a request with this Idempotency-Key is still running; retry later",
    )
}

fn unavailable(error: switchyard_events::Error) -> ApiError {
    tracing::error!(%error, "idempotency record unavailable");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the event log is unavailable; retry shortly",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_answers_own_headers_are_recorded() {
        let headers: Vec<(HeaderName, HeaderValue)> = [
            ("content-type", "application/json"),
            ("retry-after", "3"),
            ("x-ratelimit-remaining-tokens", "7"),
            ("x-switchyard-inference-id", "abc"),
            ("set-cookie", "session=1"),
            ("date", "Tue, 01 Dec 2026 00:00:00 GMT"),
            ("content-length", "12"),
            ("x-request-id", "req-1"),
        ]
        .into_iter()
        .map(|(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect();
        let recorded = recordable(headers.iter().map(|(name, value)| (name, value)));
        let names: Vec<&str> = recorded.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "retry-after",
                "x-ratelimit-remaining-tokens",
                "x-switchyard-inference-id"
            ]
        );
    }
}
