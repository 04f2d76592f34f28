//! A tenant's captured inferences (setting `capture`): exported as an eval task set, or raw,
//! and deleted on request. The log says what was captured (`InferenceCaptured` on
//! `captures-<tenant>`); the payloads are blobs beside it, so a capture that was deleted or
//! expired is simply not there any more. Any node answers alike: both live in the shared
//! database.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_events::{Event, EventStore, Scope, StreamVersion, TenantId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::access::{Access, admit};
use super::metadata;
use crate::http::{ApiError, ErrorBody, parse_query};
use crate::state::Admin;

/// Most captures one export answers.
const MAX_EXPORT: usize = 100_000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportParams {
    /// Captured at or after this time (RFC 3339).
    since: Option<String>,
    /// Captured before this time (RFC 3339).
    until: Option<String>,
    /// `dataset` (default: eval task lines, `{id, input, expected, scorer, tags}`) or `raw`
    /// (each capture as kept: the redacted request, the choices, the usage).
    format: Option<String>,
    /// At most this many lines (default and most: 100000).
    limit: Option<usize>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteParams {
    /// Only captures from before this time (RFC 3339); every capture without it.
    before: Option<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::owned(StatusCode::BAD_REQUEST, "invalid_request".into(), message)
}

fn unavailable(error: switchyard_events::Error) -> ApiError {
    tracing::error!(%error, "event log failure reading or deleting captures");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the event log is unavailable; retry shortly",
    )
}

/// Unix milliseconds of an RFC 3339 time.
fn millis(field: &str, raw: &str) -> Result<u64, ApiError> {
    let at = OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| {
        bad(format!(
            "{field} must be an RFC 3339 time, such as 2026-12-01T00:00:00Z"
        ))
    })?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| bad(format!("{field} is out of range")))
}

/// Every capture still kept, in the order they were captured, as `line` makes them.
async fn kept(
    store: &dyn EventStore,
    tenant: TenantId,
    since_ms: u64,
    until_ms: u64,
    limit: usize,
) -> Result<Vec<Value>, ApiError> {
    let stream = switchyard_inference::capture::stream_of(tenant)
        .map_err(|_| ApiError::not_found("no such tenant"))?;
    let mut bodies = Vec::new();
    let mut after = StreamVersion::NONE;
    loop {
        let page = store
            .read_stream(Scope::Tenant(tenant), &stream, after, 1_000)
            .await
            .map_err(unavailable)?;
        let Some(last) = page.last() else { break };
        after = last.stream_version;
        for recorded in &page {
            let Ok(Event::InferenceCaptured(captured)) = Event::from_recorded(recorded) else {
                continue;
            };
            let at_ms =
                u64::try_from(recorded.recorded_at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            if at_ms < since_ms || at_ms >= until_ms {
                continue;
            }
            // Deleted on request or by retention: its blob is gone.
            let Some(blob) = store
                .get_blob(tenant, &captured.blob)
                .await
                .map_err(unavailable)?
            else {
                continue;
            };
            match serde_json::from_slice::<Value>(&blob) {
                Ok(body) => bodies.push(body),
                Err(error) => {
                    tracing::error!(%error, %tenant, blob = %captured.blob, "a capture does not decode")
                }
            }
            if bodies.len() >= limit {
                return Ok(bodies);
            }
        }
    }
    Ok(bodies)
}

/// A tenant's captured inferences as JSON lines: an eval task set (`switchyard eval`,
/// `switchyard replay`) or the captures as kept.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/captures", tag = "admin",
    params(("id" = String, Path, description = "tenant id"), ExportParams),
    responses((status = 200, description = "JSON lines, one capture each", content_type = "application/x-ndjson"),
        (status = 400, description = "bad parameters", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody)))]
pub(crate) async fn export_captures(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = admit(&req, &admin, &path.into_inner(), Access::Read).await?;
    let params: ExportParams = parse_query(&req)?;
    let since = params
        .since
        .as_deref()
        .map(|s| millis("since", s))
        .transpose()?
        .unwrap_or(0);
    let until = params
        .until
        .as_deref()
        .map(|s| millis("until", s))
        .transpose()?
        .unwrap_or(u64::MAX);
    let raw = match params.format.as_deref() {
        None | Some("dataset") => false,
        Some("raw") => true,
        Some(other) => return Err(bad(format!("format {other:?} is not dataset or raw"))),
    };
    let limit = params.limit.unwrap_or(MAX_EXPORT);
    if !(1..=MAX_EXPORT).contains(&limit) {
        return Err(bad(format!("limit must be 1-{MAX_EXPORT}")));
    }
    let bodies = kept(admin.store.as_ref(), tenant, since, until, limit).await?;
    let mut out = String::new();
    for body in &bodies {
        let line = if raw {
            Some(body.clone())
        } else {
            switchyard_inference::capture::dataset_line(body)
        };
        if let Some(line) = line {
            out.push_str(&line.to_string());
            out.push('\n');
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .body(out))
}

/// Deletes a tenant's captured payloads (before a time, or all), recorded as
/// `CapturesDeleted`; answers how many went.
#[utoipa::path(delete, path = "/v1/admin/tenants/{id}/captures", tag = "admin",
    params(("id" = String, Path, description = "tenant id"), DeleteParams),
    responses((status = 200, description = "{\"deleted\": n}"),
        (status = 400, description = "bad parameters", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody)))]
pub(crate) async fn delete_captures(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = admit(&req, &admin, &path.into_inner(), Access::Write).await?;
    let params: DeleteParams = parse_query(&req)?;
    let before_ms = params
        .before
        .as_deref()
        .map(|b| millis("before", b))
        .transpose()?;
    let before_us = before_ms.map(|ms| i64::try_from(ms.saturating_mul(1_000)).unwrap_or(i64::MAX));
    let deleted = admin
        .store
        .delete_blobs(tenant, before_us)
        .await
        .map_err(unavailable)?;
    switchyard_inference::capture::record_deleted(
        admin.store.as_ref(),
        tenant,
        "request",
        before_ms,
        deleted,
        metadata(&req),
    )
    .await
    .map_err(unavailable)?;
    tracing::info!(%tenant, deleted, "captures deleted on request");
    Ok(HttpResponse::Ok().json(json!({"deleted": deleted})))
}
