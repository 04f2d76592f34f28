//! Operations and identity: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/v1/tenant`,
//! and the JSON 404 of unknown paths.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use switchyard_events::EventStore;

use crate::http::{ApiError, ErrorBody, tenant_request};
use crate::state::Admin;

/// The event log, as the readiness check sees it.
#[derive(Clone)]
pub struct StoreHandle(pub Arc<dyn EventStore>);

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle").finish_non_exhaustive()
    }
}

crate::api::endpoints! {
    get "/healthz" => healthz,
    get "/readyz" => readyz,
    get "/metrics" => metrics,
    get "/openapi.json" => openapi_json,
    get "/v1/tenant" => whoami,
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1")))]
pub(super) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(<super::ApiDoc as utoipa::OpenApi>::openapi())
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "{status: ok}")))]
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The event log can take writes and be read.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "{status: ready, event_log_head, followed}"), (status = 503, description = "not ready", body = ErrorBody)))]
pub(super) async fn readyz(
    store: web::Data<StoreHandle>,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, ApiError> {
    if !admin.follower.healthy() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "this node's keys, limits and spend are not following the event log",
        ));
    }
    match store.0.ready().await {
        // `followed`: the last position this node's keys, limits and spend have folded (a
        // write elsewhere is enforced here once it is at least that write's position).
        Ok(head) => Ok(HttpResponse::Ok().json(json!({
            "status": "ready",
            "event_log_head": head,
            "followed": admin.follower.position().0,
        }))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the event log is not reachable",
            ))
        }
    }
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text")))]
pub(super) async fn metrics() -> Result<HttpResponse, ApiError> {
    let mut body = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&prometheus::gather(), &mut body)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot encode metrics");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot encode metrics",
            )
        })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body))
}

/// Who a tenant key belongs to (lets a client check its key).
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "tenant_id, name, plan, key_id, scopes; x-ratelimit-* headers"),
        (status = 401, description = "missing, unknown, revoked or expired key, or suspended tenant", body = ErrorBody),
        (status = 429, description = "over the tenant's requests per minute (Retry-After)", body = ErrorBody)))]
pub(super) async fn whoami(
    req: HttpRequest,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, ApiError> {
    let (principal, rate) = tenant_request(&req, &admin).await?;
    let (state, _) = admin.tenants.read(&principal.tenant).await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "retry shortly",
        )
    })?;
    let mut response = HttpResponse::Ok();
    for header in rate {
        response.insert_header(header);
    }
    Ok(response.json(json!({
        "tenant_id": principal.tenant,
        "name": state.name,
        "plan": state.plan,
        "key_id": principal.key_id,
        "scopes": principal.scopes,
    })))
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no such endpoint"))
}
