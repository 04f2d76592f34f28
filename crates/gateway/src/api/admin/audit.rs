//! `GET /v1/admin/audit`: who changed what, from the `audit` projection of the log, newest
//! first. A page waits (bounded) until the projection holds every event committed before the
//! request, so a command answered by any node is in the next audit read on any other.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use switchyard_projections::query::{AuditQuery, MAX_AUDIT_PAGE};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::access::{Need, admit_platform};
use crate::api::analytics::ReadSide;
use crate::http::{ApiError, ErrorBody, parse_query};
use crate::state::Admin;

/// The audit projector's name.
const PROJECTOR: &str = "audit";

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// Only this tenant's commands.
    tenant: Option<String>,
    /// Only this subject's commands (a token's `sub`, or `break-glass`).
    actor: Option<String>,
    /// Recorded at or after this time (RFC 3339).
    since: Option<String>,
    /// Recorded before this time (RFC 3339).
    until: Option<String>,
    /// The previous page's `next_before`.
    before: Option<u64>,
    /// 1 to 1000, default 100.
    limit: Option<u32>,
    /// Longest wait for the projection to catch up with the log, in ms (default 5000, at most
    /// 30000).
    wait_ms: Option<u64>,
}

fn bad(message: String) -> ApiError {
    ApiError::owned(StatusCode::BAD_REQUEST, "invalid_request".into(), message)
}

/// Unix microseconds of an RFC 3339 time.
fn micros(field: &str, raw: &str) -> Result<i64, ApiError> {
    let at = OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| {
        bad(format!(
            "{field} must be an RFC 3339 time, such as 2026-12-01T00:00:00Z"
        ))
    })?;
    i64::try_from(at.unix_timestamp_nanos() / 1000)
        .map_err(|_| bad(format!("{field} is out of range")))
}

/// The audit log: admin commands with who issued them, newest first.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", params(AuditParams,
        ("Authorization" = String, Header, description = "Bearer <OIDC token with platform-admin, auditor or tenant-admin>")),
    responses((status = 200, description = "{data: [{position, tenant_id, recorded_at, stream, event_type, actor: {subject, issuer, role, via} | null, request_id}], next_before, position}"),
        (status = 400, description = "bad parameters", body = ErrorBody),
        (status = 401, description = "missing or invalid admin token", body = ErrorBody),
        (status = 403, description = "the role may not read this part of the audit log", body = ErrorBody),
        (status = 503, description = "projection_lag: the audit projection is behind the log", body = ErrorBody)))]
pub(crate) async fn audit_log(
    req: HttpRequest,
    admin: web::Data<Admin>,
    read: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let (caller, role) = admit_platform(&req, &admin, Need::Audit).await?;
    let params: AuditParams = parse_query(&req)?;
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_AUDIT_PAGE {
        return Err(bad(format!("limit must be 1 to {MAX_AUDIT_PAGE}")));
    }
    let tenant = match params.tenant.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(
            raw.parse::<switchyard_events::TenantId>()
                .map_err(|_| bad("tenant must be a tenant id".into()))?,
        ),
    };
    let tenants = match (tenant, caller.visible(role)) {
        (Some(tenant), Some(visible)) if !visible.contains(&tenant) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a tenant-admin reads only its own tenants' audit log",
            ));
        }
        (Some(tenant), _) => Some(vec![*tenant.as_uuid()]),
        (None, Some(visible)) => Some(visible.iter().map(|t| *t.as_uuid()).collect()),
        (None, None) => None,
    };
    let query = AuditQuery {
        tenants,
        subject: params.actor.filter(|a| !a.is_empty()),
        from_us: params
            .since
            .as_deref()
            .map(|s| micros("since", s))
            .transpose()?,
        to_us: params
            .until
            .as_deref()
            .map(|s| micros("until", s))
            .transpose()?,
        before: params.before,
        limit,
    };
    // Every event committed before this request must be in the answer.
    let head = admin.store.head().await.map_err(|e| {
        tracing::error!(error = %e, "audit: the event log cannot be read");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the event log cannot be read; retry shortly",
        )
    })?;
    let wait = Duration::from_millis(params.wait_ms.unwrap_or(5000).min(30_000));
    let position = read.projections.wait_for(PROJECTOR, head.0, wait).await;
    if position < head.0 {
        return Err(ApiError::owned(
            StatusCode::SERVICE_UNAVAILABLE,
            "projection_lag".into(),
            format!(
                "the audit log is at position {position}, the event log at {}; retry shortly",
                head.0
            ),
        ));
    }
    let rows = read.projections.db().audit(&query).await.map_err(|error| {
        tracing::error!(%error, "audit query failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the audit log cannot be read; retry shortly",
        )
    })?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.position))
        .flatten();
    let data: Vec<_> = rows
        .iter()
        .map(|row| {
            let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(row.recorded_us) * 1000)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok());
            json!({
                "position": row.position,
                "tenant_id": row.tenant_id,
                "recorded_at": at,
                "stream": row.stream,
                "event_type": row.event_type,
                "actor": row.actor,
                "request_id": row.request_id,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"data": data, "next_before": next, "position": position})))
}
