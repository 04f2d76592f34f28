//! The analytics read API: `GET /v1/analytics/{usage,latency,router}`, `GET /v1/billing/{usage,
//! invoices}` and `GET /v1/inferences`, answered from the projections' read models (rollups and
//! the indexed inference log, never the raw events), scoped to the key's tenant, under
//! row-level security in PostgreSQL.
//!
//! Read-your-writes: a client that got `x-switchyard-position` from a command passes it as
//! `min_position`; the query waits (at most `wait_ms`, default 5 s, at most 30 s) until the
//! read model has passed it, else answers 503 `projection_lag` with `Retry-After`.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use switchyard_projections::query::{Group, InferenceQuery, Window};
use switchyard_projections::{Error as ReadError, Projections};

use super::openai::POSITION;
use crate::http::{ApiError, ErrorBody, scoped_request};
use crate::state::Admin;
use switchyard_inference::Principal;

/// The scope a key needs here (a key with no scopes may do anything).
pub const SCOPE: &str = "analytics";

/// The read side of this server: its running projectors and their database.
#[derive(Debug)]
pub struct ReadSide {
    pub projections: Projections,
}

crate::api::endpoints! {
    get "/v1/analytics/usage" => usage,
    get "/v1/analytics/latency" => latency,
    get "/v1/analytics/spend" => spend,
    get "/v1/analytics/router" => router,
    get "/v1/billing/usage" => billing_usage,
    get "/v1/billing/invoices" => invoices,
    get "/v1/billing/invoices/{period}" => invoice,
    get "/v1/inferences" => inferences,
    get "/v1/analytics/workflows" => workflows,
}

/// Query parameters shared by the analytics endpoints.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Params {
    /// Start of the window: unix seconds or RFC 3339 (default: the beginning).
    from: Option<String>,
    /// End of the window, exclusive (default: none).
    to: Option<String>,
    /// Usage: comma-separated `hour`, `day`, `model`. Spend: one of `key`, `user`, `tag`.
    group_by: Option<String>,
    /// Only this model.
    model: Option<String>,
    /// Inferences only: `completed`, `failed` or `pending` (only a log written before the
    /// outcome events' v2 holds pending inferences: a request logged without its outcome).
    status: Option<String>,
    /// Workflows only: only this workflow.
    workflow: Option<String>,
    /// Billing usage only: the invoice month `YYYY-MM`.
    period: Option<String>,
    /// Inferences only: page size, 1-500 (default 50).
    limit: Option<i64>,
    /// Inferences only: the `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Wait until the read model has passed this log position (read-your-writes).
    min_position: Option<u64>,
    /// How long to wait for `min_position`, in ms (default 5000, at most 30000).
    wait_ms: Option<u64>,
}

fn bad(message: String) -> ApiError {
    ApiError::owned(StatusCode::BAD_REQUEST, "invalid_request".into(), message)
}

/// A time as unix seconds: digits (unix seconds) or RFC 3339.
fn time_param(name: &str, value: Option<&str>, default: i64) -> Result<i64, ApiError> {
    let Some(value) = value else {
        return Ok(default);
    };
    if let Ok(seconds) = value.parse::<i64>() {
        return Ok(seconds);
    }
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(time::OffsetDateTime::unix_timestamp)
        .map_err(|_| {
            bad(format!(
                "{name} must be unix seconds or RFC 3339, not {value:?}"
            ))
        })
}

fn window(params: &Params) -> Result<Window, ApiError> {
    let from = time_param("from", params.from.as_deref(), 0)?;
    let to = time_param("to", params.to.as_deref(), i64::MAX / 1000)?;
    Window::new(from, to).map_err(|error| bad(error.to_string()))
}

fn read_error(error: ReadError) -> ApiError {
    match error {
        ReadError::Invalid(message) => bad(message),
        error => {
            tracing::error!(%error, "analytics query failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the read models cannot be queried; retry shortly",
            )
        }
    }
}

/// Authenticates the key, checks its scope and waits for `min_position` on `projector`.
/// Returns the principal and the projector's position.
async fn prepare(
    req: &HttpRequest,
    admin: &Admin,
    read: &ReadSide,
    projector: &str,
    params: &Params,
) -> Result<(Principal, u64), ApiError> {
    let (principal, _) = scoped_request(req, admin, &[SCOPE]).await?;
    let position = match params.min_position {
        None => read.projections.committed(projector).await,
        Some(min) => {
            // Every position handed to a client was committed, so one past the log's head is
            // a client's mistake that no wait would cure (the store's head is every node's).
            let head = admin.store.head().await.map_err(|e| {
                ApiError::owned(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable".into(),
                    format!("the event log cannot be read: {e}"),
                )
            })?;
            if min > head.0 {
                return Err(bad(format!(
                    "min_position {min} is past the end of the log (position {})",
                    head.0
                )));
            }
            let wait = Duration::from_millis(params.wait_ms.unwrap_or(5000).min(30_000));
            let at = read.projections.wait_for(projector, min, wait).await;
            if at < min {
                return Err(ApiError::owned(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "projection_lag".into(),
                    format!(
                        "the {projector} read model is at position {at}, not yet at {min}; retry shortly"
                    ),
                )
                .with_headers(vec![(
                    HeaderName::from_static("retry-after"),
                    HeaderValue::from_static("1"),
                )]));
            }
            at
        }
    };
    Ok((principal, position))
}

/// `{"data": rows, "position": …}` from a read-model query.
fn data<T: serde::Serialize>(
    position: u64,
    rows: Result<T, ReadError>,
) -> Result<HttpResponse, ApiError> {
    let rows = rows.map_err(read_error)?;
    Ok(answer(
        position,
        json!({"data": rows, "position": position}),
    ))
}

fn answer(position: u64, body: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((POSITION, position.to_string()))
        .json(body)
}

/// Usage totals: requests, failures, tokens in and out, cost.
#[utoipa::path(get, path = "/v1/analytics/usage", tag = "analytics", params(Params,
        ("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "{data: [{hour?, day?, model?, requests, failures, tokens_in, tokens_out, cost_micros}], position}"),
        (status = 400, description = "bad parameters", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 503, description = "projection_lag: min_position not reached in time", body = ErrorBody)))]
pub(crate) async fn usage(
    req: HttpRequest,
    admin: web::Data<Admin>,
    read: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let params: Params = crate::http::parse_query(&req)?;
    let window = window(&params)?;
    let groups = match params.group_by.as_deref() {
        None | Some("") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|g| g.trim().parse::<Group>().map_err(|e| bad(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if groups.len() > 3 {
        return Err(bad("group_by takes at most hour, day and model".into()));
    }
    let (principal, position) = prepare(&req, &admin, &read, "usage", &params).await?;
    data(
        position,
        read.projections
            .db()
            .usage(
                *principal.tenant.as_uuid(),
                window,
                &groups,
                params.model.as_deref(),
            )
            .await,
    )
}

/// Spend below the tenant: requests, failures, tokens and cost per API key, end user
/// (`user` of the request) or tag (`metadata.tags`, `x-switchyard-tags`), the largest first.
#[utoipa::path(get, path = "/v1/analytics/spend", tag = "analytics", params(Params,
        ("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "{data: [{key_id | user | tag, requests, failures, tokens_in, tokens_out, cost_micros}], position}"),
        (status = 400, description = "bad parameters (group_by must be key, user or tag)", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 503, description = "projection_lag: min_position not reached in time", body = ErrorBody)))]
pub(crate) async fn spend(
    req: HttpRequest,
    admin: web::Data<Admin>,
    read: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let params: Params = crate::http::parse_query(&req)?;
    let window = window(&params)?;
    let group: switchyard_projections::query::SpendGroup = params
        .group_by
        .as_deref()
        .ok_or_else(|| bad("group_by is key, user or tag".into()))?
        .parse()
        .map_err(|e: switchyard_projections::Error| bad(e.to_string()))?;
    let (principal, position) = prepare(&req, &admin, &read, "spend", &params).await?;
    data(
        position,
        read.projections
            .db()
            .spend(*principal.tenant.as_uuid(), window, group)
            .await,
    )
}

/// Latency percentiles per model (from hourly histograms with 4 buckets per doubling).
#[utoipa::path(get, path = "/v1/analytics/latency", tag = "analytics", params(Params,
        ("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "{data: [{model, count, mean_ms, p50_ms, p90_ms, p99_ms}], position}"),
        (status = 400, description = "bad parameters", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody)))]
pub(crate) async fn latency(
    req: HttpRequest,
    admin: web::Data<Admin>,
    read: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let params: Params = crate::http::parse_query(&req)?;
    let window = window(&params)?;
    let (principal, position) = prepare(&req, &admin, &read, "usage", &params).await?;
    data(
        position,
        read.projections
            .db()
            .latency(*principal.tenant.as_uuid(), window, params.model.as_deref())
            .await,
    )
}

/// Router decisions and rewards per policy and model.
#[utoipa::path(get, path = "/v1/analytics/router", tag = "analytics", params(Params,
        ("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "{data: [{policy, model, decisions, rewards, mean_reward, reward_cost_micros}], position}"),
        (status = 401, description = "missing or invalid key", body = ErrorBody)))]
pub(crate) async fn router(
    req: HttpRequest,
    admin: web::Data<Admin>,
    read: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let params: Params = crate::http::parse_query(&req)?;
    let window = window(&params)?;
    let (principal, position) = prepare(&req, &admin, &read, "usage", &params).await?;
    data(
        position,
        read.projections
            .db()
            .router(*principal.tenant.as_uuid(), window)
            .await,
    )
}

/// Billed usage per invoice month and model.
#[utoipa::path(get, path = "/v1/billing/usage", tag = "billing", params(Params,
        ("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "{data: [{period, model, requests, tokens_in, tokens_out, tool_calls, cost_micros}], position}"),
        (status = 401, description = "missing or invalid key", body = ErrorBody)))]
pub(crate) async fn billing_usage(
    req: HttpRequest,
    admin: web::Data<Admin>,
    read: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let params: Params = crate::http::parse_query(&req)?;
    if let Some(period) = &params.period {
        let valid = period.len() == 7
            && period.as_bytes()[4] == b'-'
            && period
                .chars()
                .enumerate()
                .all(|(i, c)| i == 4 || c.is_ascii_digit());
        if !valid {
            return Err(bad(format!("period must be YYYY-MM, not {period:?}")));
        }
    }
    let (principal, position) = prepare(&req, &admin, &read, "billing", &params).await?;
    data(
        position,
        read.projections
            .db()
            .billing_usage(*principal.tenant.as_uuid(), params.period.as_deref())
            .await,
    )
}

/// The tenant's invoices.
#[utoipa::path(get, path = "/v1/billing/invoices", tag = "billing", params(Params,
        ("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "{data: [{period, total_micros, status, finalized_at_us, paid_at_us}], position}"),
        (status = 401, description = "missing or invalid key", body = ErrorBody)))]
pub(crate) async fn invoices(
    req: HttpRequest,
    admin: web::Data<Admin>,
    read: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let params: Params = crate::http::parse_query(&req)?;
    let (principal, position) = prepare(&req, &admin, &read, "billing", &params).await?;
    data(
        position,
        read.projections
            .db()
            .invoices(*principal.tenant.as_uuid())
            .await,
    )
}

/// One of the tenant's invoices: closed, or the open period's draft on its plan's prices
/// (from the billing actor, not the read side: always current).
#[utoipa::path(get, path = "/v1/billing/invoices/{period}", tag = "billing",
    params(("period" = String, Path, description = "YYYY-MM"), ("format" = Option<String>, Query, description = "json (default) or csv"),
        ("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "the invoice document, or CSV"),
        (status = 400, description = "bad query parameters", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the analytics scope", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 422, description = "not a period", body = ErrorBody),
        (status = 503, description = "the event log is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn invoice(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Format {
        format: Option<String>,
    }
    let (principal, _) = scoped_request(&req, &admin, &[SCOPE]).await?;
    let format: Format = crate::http::parse_query(&req)?;
    let csv = match format.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(bad(format!("format {other:?} is not json or csv"))),
    };
    let document = admin
        .invoicer
        .document(principal.tenant, &path.into_inner())
        .await?;
    Ok(if csv {
        HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(switchyard_inference::invoicing::to_csv(&[document]))
    } else {
        HttpResponse::Ok().json(document)
    })
}

/// Workflow runs per workflow: how many ran, how they ended, their steps, cost and duration.
#[utoipa::path(get, path = "/v1/analytics/workflows", tag = "analytics", params(Params,
        ("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "{data: [{workflow, runs, completed, failed, cancelled, running, steps, failed_steps, cost_micros, mean_duration_ms, max_duration_ms}], position}"),
        (status = 401, description = "missing or invalid key", body = ErrorBody)))]
pub(crate) async fn workflows(
    req: HttpRequest,
    admin: web::Data<Admin>,
    read: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let params: Params = crate::http::parse_query(&req)?;
    let window = window(&params)?;
    let (principal, position) = prepare(&req, &admin, &read, "workflows", &params).await?;
    data(
        position,
        read.projections
            .db()
            .workflows(
                *principal.tenant.as_uuid(),
                window.from.saturating_mul(1000),
                window.to.saturating_mul(1000),
                params.workflow.as_deref(),
            )
            .await,
    )
}

fn cursor(value: &str) -> Result<(i64, uuid::Uuid), ApiError> {
    let invalid = || bad(format!("invalid cursor {value:?}"));
    let (ms, id) = value.split_once('_').ok_or_else(invalid)?;
    Ok((
        ms.parse().map_err(|_| invalid())?,
        uuid::Uuid::parse_str(id).map_err(|_| invalid())?,
    ))
}

/// The inference log, newest first, one page at a time.
#[utoipa::path(get, path = "/v1/inferences", tag = "analytics", params(Params,
        ("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "{data: [inference], next_cursor, position}"),
        (status = 400, description = "bad parameters", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody)))]
pub(crate) async fn inferences(
    req: HttpRequest,
    admin: web::Data<Admin>,
    read: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let params: Params = crate::http::parse_query(&req)?;
    let window = window(&params)?;
    if let Some(status) = &params.status
        && !matches!(status.as_str(), "completed" | "failed" | "pending")
    {
        return Err(bad(format!(
            "status must be completed, failed or pending, not {status:?}"
        )));
    }
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(bad(format!("limit must be 1-500, not {limit}")));
    }
    let after = params.cursor.as_deref().map(cursor).transpose()?;
    let (principal, position) = prepare(&req, &admin, &read, "inferences", &params).await?;
    let query = InferenceQuery {
        from_ms: window.from.saturating_mul(1000),
        to_ms: window.to.saturating_mul(1000),
        model: params.model.clone(),
        status: params.status.clone(),
        limit,
        after,
    };
    let (rows, next) = read
        .projections
        .db()
        .inferences(*principal.tenant.as_uuid(), &query)
        .await
        .map_err(read_error)?;
    let next = next.map(|(ms, id)| format!("{ms}_{id}"));
    Ok(answer(
        position,
        json!({"data": rows, "next_cursor": next, "position": position}),
    ))
}
