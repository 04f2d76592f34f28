//! Reading requests: the request id, and strict JSON bodies and query strings whose errors say
//! what was wrong.

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The request id of a request: the caller's `x-request-id` if it is sane, otherwise a new one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The request id of an HTTP request, as the correlation id of what it logs.
pub fn correlation(req: &HttpRequest) -> Option<String> {
    req.extensions().get::<RequestId>().map(|r| r.0.clone())
}

/// Parses a query string strictly (unknown parameters refused by the target type): a 400
/// `invalid_request` that names the problem.
pub fn parse_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    actix_web::web::Query::<T>::from_query(req.query_string())
        .map(actix_web::web::Query::into_inner)
        .map_err(|error| {
            ApiError::owned(
                StatusCode::BAD_REQUEST,
                "invalid_request".into(),
                format!("invalid query: {error}"),
            )
        })
}

/// Parses a JSON body strictly (unknown fields refused by the target type), with errors that say
/// what was wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not valid UTF-8",
        )
    })?;
    serde_json::from_str(text).map_err(|e| {
        let code = if e.is_data() {
            "invalid_request"
        } else {
            "invalid_json"
        };
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, code, &e.to_string())
    })
}

/// Adds `tag` to a request's `metadata.tags` (a list or a comma-separated string), where the
/// pipeline reads the tags it logs with the inference. Metadata that is not an object is left
/// for the request's own checks to refuse.
pub fn add_tag(metadata: &mut Option<serde_json::Value>, tag: String) {
    use serde_json::{Value, json};
    match metadata {
        Some(Value::Object(map)) => {
            let tags = map.entry("tags").or_insert_with(|| json!([]));
            match tags {
                Value::Array(list) => list.push(Value::String(tag)),
                Value::String(list) if list.trim().is_empty() => *tags = json!([tag]),
                Value::String(list) => *list = format!("{list},{tag}"),
                _ => {}
            }
        }
        None | Some(Value::Null) => *metadata = Some(json!({"tags": [tag]})),
        Some(_) => {}
    }
}
