//! The one JSON error shape of the API: `{"error": {"code", "message", "request_id"}}`, for
//! handler errors, refusals of the inference pipeline, and actix-web's own 404/405/413.

use std::borrow::Cow;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use super::rate::rate_headers;

/// An error answered as `{"error": {"code", "message", "request_id"}}`; the request id is
/// filled in by the [`super::observe`] middleware, which knows it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    pub(super) code: Cow<'static, str>,
    pub(super) message: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: &str) -> Self {
        ApiError {
            status,
            code: Cow::Borrowed(code),
            message: message.to_owned(),
            headers: Vec::new(),
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn owned(status: StatusCode, code: Cow<'static, str>, message: String) -> Self {
        ApiError {
            status,
            code,
            message,
            headers: Vec::new(),
        }
    }

    pub fn not_found(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The same error with headers (kept when the middleware adds the request id).
    pub fn with_headers(mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        self.headers.extend(headers);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers the error is answered with (besides the request id).
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The body without the request id (as recorded for idempotent replays).
    pub fn to_json(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = error_body(self.status, &self.code, &self.message, None);
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
    }
}

/// The error shape of every endpoint (documentation of [`error_body`]).
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "describes the JSON that error_body writes")]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "describes the JSON that error_body writes")]
pub struct ErrorDetail {
    /// Stable, machine-readable: not_found, unauthorized, invalid_json, invalid_request, …
    code: String,
    message: String,
    /// The request's `x-request-id`.
    request_id: Option<String>,
}

pub(super) fn error_body(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: Option<&str>,
) -> HttpResponse {
    HttpResponse::build(status)
        .json(json!({"error": {"code": code, "message": message, "request_id": request_id}}))
}

/// A refusal of the inference pipeline, with its `Retry-After` and `x-ratelimit-*` headers.
impl From<switchyard_inference::Error> for ApiError {
    fn from(error: switchyard_inference::Error) -> Self {
        let status =
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = error.rate().map(rate_headers).unwrap_or_default();
        if let Some(after) = error.retry_after_secs() {
            headers.push((header::RETRY_AFTER, HeaderValue::from(after)));
        }
        ApiError::owned(
            status,
            Cow::Owned(error.code().to_owned()),
            error.to_string(),
        )
        .with_headers(headers)
    }
}
