//! The middleware every request passes: request ids, RED metrics, one log line per request,
//! CORS for tenants' origins, and the JSON error shape for every error (including the ones
//! actix-web answers itself: 404, 405, 413, malformed requests).

use std::borrow::Cow;
use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};

use super::error::{ApiError, error_body};
use super::request::RequestId;
use crate::state::Admin;
use crate::telemetry::HTTP;
use switchyard_inference::Principal;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Request ids, RED metrics, one log line per request, and the JSON error shape for every error
/// (including the ones actix-web answers itself: 404, 405, 413, malformed requests).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, BoxBody>>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(uuid_v7, str::to_owned);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let origin = req.headers().get(header::ORIGIN).cloned();
    let tenant_api = req.path().starts_with("/v1/") && !req.path().starts_with("/v1/admin/");
    if tenant_api && origin.is_some() && req.method() == actix_web::http::Method::OPTIONS {
        // A preflight carries no key, so it cannot know the tenant: it is answered for any
        // origin, and the real answer carries CORS headers only for the tenant's origins.
        let response = HttpResponse::NoContent()
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                origin.clone().unwrap_or(HeaderValue::from_static("*")),
            ))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "GET, POST, PUT, DELETE",
            ))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "authorization, content-type, idempotency-key, x-request-id, traceparent, tracestate",
            ))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
            .insert_header((header::VARY, "Origin"))
            .finish();
        return Ok(req.into_response(response).map_into_right_body());
    }
    let cors_admin = origin
        .as_ref()
        .and_then(|_| req.app_data::<web::Data<Admin>>().cloned());
    // The request's span (exported when traces are on; a `debug` span no layer enables
    // otherwise): a child of the caller's W3C `traceparent` when it sends one.
    let span = tracing::debug_span!(
        "http request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        switchyard.request_id = %request_id,
    );
    if let Some(parent) = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()) {
        switchyard_events::trace::continue_from(&span, parent);
    }
    let response = tracing::Instrument::instrument(next.call(req), span.clone()).await?;
    let cors = match (&origin, &cors_admin) {
        (Some(origin), Some(admin)) if tenant_api => response
            .request()
            .extensions()
            .get::<Principal>()
            .map(|p| p.tenant)
            .filter(|tenant| {
                origin
                    .to_str()
                    .is_ok_and(|o| admin.keys.cors_allows(*tenant, o))
            })
            .map(|_| origin.clone()),
        _ => None,
    };
    let status = response.status();
    let mut response = if status.is_client_error() || status.is_server_error() {
        let (request, response) = response.into_parts();
        let code = response
            .error()
            .and_then(|e| e.as_error::<ApiError>())
            .map(|e| (e.code.clone(), e.message.clone()));
        let (code, message) = code.unwrap_or_else(|| {
            (
                Cow::Borrowed(status_code_name(status)),
                status.canonical_reason().unwrap_or("error").to_owned(),
            )
        });
        let mut body = error_body(status, &code, &message, Some(&request_id));
        // Keep what the error said in headers (Retry-After, x-ratelimit-*, WWW-Authenticate).
        for (name, value) in response.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                body.headers_mut().insert(name.clone(), value.clone());
            }
        }
        ServiceResponse::new(request, body).map_into_right_body()
    } else {
        response.map_into_left_body()
    };
    let elapsed = started.elapsed();
    HTTP.requests
        .with_label_values(&[&method, &route, status.as_str()])
        .inc();
    HTTP.seconds
        .with_label_values(&[&method, &route])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        request_id,
        method,
        route,
        status = status.as_u16(),
        micros = elapsed.as_micros() as u64,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    span.record("http.response.status_code", status.as_u16());
    if let Some(value) = span
        .in_scope(switchyard_events::trace::current)
        .and_then(|parent| HeaderValue::from_str(&parent).ok())
    {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    if let Some(origin) = cors {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-request-id, traceparent, x-switchyard-inference-id, x-switchyard-route, x-switchyard-position, retry-after, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens"),
        );
    }
    Ok(response)
}

fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::UNAUTHORIZED => "unauthorized",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

fn uuid_v7() -> String {
    switchyard_events::EventId::new().to_string()
}
