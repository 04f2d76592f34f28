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

use std::borrow::Cow;
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

/// What a key's stream says.
#[derive(Debug, Default)]
struct Record {
    version: StreamVersion,
    claim: Option<(String, OffsetDateTime)>,
    response: Option<(u16, String)>,
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
    idempotent_with(store, req, tenant, body, redact, |_| Vec::new(), run).await
}

/// Headers derived from a response body, set on the first answer and on every replay.
pub type BodyHeaders = fn(&Value) -> Vec<(HeaderName, HeaderValue)>;

/// [`idempotent`], with headers that are derived from the body (so a replay carries them too).
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
    Fut: Future<Output = Result<(StatusCode, Value), ApiError>>,
{
    let respond = |status: StatusCode, body: Value| {
        let mut response = HttpResponse::build(status);
        for header in headers(&body) {
            response.insert_header(header);
        }
        response.json(body)
    };
    let Some(key) = req.headers().get("idempotency-key") else {
        return run().await.map(|(status, body)| respond(status, body));
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
        (Some((hash, _)), Some((status, body))) => {
            return if *hash == request_hash {
                Ok(replay(*status, body, headers)?)
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

    let outcome = run().await;
    let recorded = match &outcome {
        Ok((status, body)) => {
            let mut stored = body.clone();
            redact(&mut stored);
            Some((status.as_u16(), stored.to_string()))
        }
        // A refusal that depends on time or on limits (a rate limit, a budget, a timeout) may
        // pass on a retry, so it is not recorded (as Stripe does for 429); nor is a 5xx.
        Err(error) if depends_on_time_or_limits(error.status()) => None,
        Err(error) if !error.status().is_server_error() => {
            Some((error.status().as_u16(), error.to_json().to_string()))
        }
        Err(_) => None,
    };
    let event = match recorded {
        Some((status, body)) => {
            Event::IdempotentResponseRecorded(IdempotentResponseRecorded { status, body })
        }
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
    outcome.map(|(status, body)| respond(status, body))
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
            Event::IdempotentResponseRecorded(e) => record.response = Some((e.status, e.body)),
            Event::IdempotencyKeyReleased(_) => {
                record.claim = None;
                record.response = None;
            }
            _ => {}
        }
    }
    Ok(record)
}

fn replay(status: u16, body: &str, headers: BodyHeaders) -> Result<HttpResponse, ApiError> {
    let status = StatusCode::from_u16(status).map_err(|_| in_progress())?;
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if status.is_client_error() {
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or("bad_request")
            .to_owned();
        let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
        return Err(ApiError::owned(status, Cow::Owned(code), message));
    }
    let mut response = HttpResponse::build(status);
    response.insert_header(("idempotency-replayed", "true"));
    for header in headers(&body) {
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
