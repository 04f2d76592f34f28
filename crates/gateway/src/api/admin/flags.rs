//! The platform's feature flags: define, change and remove them (the flags actor decides, over
//! the shared log), list them, and ask what one answers for a tenant, key or user. A flag acts
//! on every node once that node's key index has read its event.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use switchyard_actors::Error as ActorError;
use switchyard_actors::flags::{Flag, FlagsCommand, FlagsRejection};
use switchyard_events::TenantId;
use uuid::Uuid;

use super::access::{Access, Need, admit_platform};
use super::{keep, metadata, not_decided};
use crate::http::idempotency::idempotent;
use crate::http::{ApiError, ErrorBody, parse_json};
use crate::state::Admin;

fn refused(error: ActorError<FlagsRejection>) -> ApiError {
    match error {
        ActorError::Rejected(FlagsRejection::NotFound(name)) => ApiError::owned(
            StatusCode::NOT_FOUND,
            "flag_not_found".into(),
            format!("no flag {name}"),
        ),
        other => not_decided(other, "the flags are busy; retry shortly"),
    }
}

/// Applies the flags actor's events to this node's key index at once (the subscription
/// applies them again, and other nodes when they read them).
fn apply_here(admin: &Admin, events: &[switchyard_events::Event]) {
    for event in events {
        admin.keys.apply(TenantId::SYSTEM, event);
    }
}

/// Every flag, by name, as this node evaluates them.
#[utoipa::path(get, path = "/v1/admin/flags", tag = "flags",
    responses((status = 200, description = "{data: [{name, definition}]}"),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody)))]
pub(crate) async fn list_flags(
    req: HttpRequest,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, ApiError> {
    admit_platform(&req, &admin, Need::Flags(Access::Read)).await?;
    // From the log as this node has read it (what its request path evaluates), not from an
    // actor's in-memory state, which another node's writes do not refresh.
    let data: Vec<serde_json::Value> = admin
        .keys
        .flags
        .list()
        .into_iter()
        .map(|(name, flag)| json!({"name": name, "definition": flag.as_ref()}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data })))
}

/// Defines or changes a flag: `{enabled?, rollout_percent?, sticky_by?, plans?, tenants?,
/// keys?, description?}` (see `switchyard_actors::flags`).
#[utoipa::path(put, path = "/v1/admin/flags/{name}", tag = "flags",
    params(("name" = String, Path, description = "flag name: 1-64 of a-z, 0-9, -_.")),
    request_body(content = Object, description = "the flag's definition"),
    responses((status = 200, description = "{name, definition}"),
        (status = 400, description = "bad JSON", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody),
        (status = 409, description = "the Idempotency-Key was used for another request", body = ErrorBody),
        (status = 422, description = "an invalid name or definition", body = ErrorBody),
        (status = 503, description = "the event log is unavailable or busy; retry", body = ErrorBody)))]
pub(crate) async fn set_flag(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    admit_platform(&req, &admin, Need::Flags(Access::Write)).await?;
    let name = path.into_inner();
    idempotent(
        admin.store.as_ref(),
        &req,
        TenantId::SYSTEM,
        &body,
        keep,
        || async {
            let definition: serde_json::Value = parse_json(&body)?;
            let text = definition.to_string();
            let flag = Flag::parse(&text).map_err(|message| {
                ApiError::owned(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request".into(),
                    message,
                )
            })?;
            let applied = admin
                .flags
                .send(
                    &TenantId::SYSTEM,
                    FlagsCommand::Set {
                        name: name.clone(),
                        definition: Some(text),
                    },
                    metadata(&req),
                )
                .await
                .map_err(refused)?;
            apply_here(&admin, &applied.events);
            tracing::info!(flag = %name, changed = !applied.events.is_empty(), "flag set");
            Ok((StatusCode::OK, json!({"name": name, "definition": flag})))
        },
    )
    .await
}

/// Removes a flag (what it gated behaves as without flags).
#[utoipa::path(delete, path = "/v1/admin/flags/{name}", tag = "flags",
    params(("name" = String, Path, description = "flag name")),
    responses((status = 200, description = "{deleted: name}"),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody),
        (status = 404, description = "no such flag", body = ErrorBody),
        (status = 409, description = "the Idempotency-Key was used for another request", body = ErrorBody),
        (status = 422, description = "an invalid name", body = ErrorBody),
        (status = 503, description = "the event log is unavailable or busy; retry", body = ErrorBody)))]
pub(crate) async fn delete_flag(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admit_platform(&req, &admin, Need::Flags(Access::Write)).await?;
    let name = path.into_inner();
    idempotent(
        admin.store.as_ref(),
        &req,
        TenantId::SYSTEM,
        &[],
        keep,
        || async {
            let applied = admin
                .flags
                .send(
                    &TenantId::SYSTEM,
                    FlagsCommand::Set {
                        name: name.clone(),
                        definition: None,
                    },
                    metadata(&req),
                )
                .await
                .map_err(refused)?;
            apply_here(&admin, &applied.events);
            tracing::info!(flag = %name, "flag removed");
            Ok((StatusCode::OK, json!({ "deleted": name })))
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvaluateFlag {
    /// The tenant the request would come from.
    #[schema(value_type = String)]
    tenant: TenantId,
    /// The API key's id.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    key_id: Option<Uuid>,
    /// The request's `user`.
    #[serde(default)]
    user: Option<String>,
}

/// What a flag answers for a tenant (and key, and user), and why: what this node's request
/// path would decide.
#[utoipa::path(post, path = "/v1/admin/flags/{name}/evaluate", tag = "flags",
    params(("name" = String, Path, description = "flag name")),
    request_body = EvaluateFlag,
    responses((status = 200, description = "{flag, on, reason}"),
        (status = 400, description = "bad JSON", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody),
        (status = 404, description = "no such flag", body = ErrorBody)))]
pub(crate) async fn evaluate_flag(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    admit_platform(&req, &admin, Need::Flags(Access::Read)).await?;
    let name = path.into_inner();
    let input: EvaluateFlag = parse_json(&body)?;
    let plan = admin.directory.plan(input.tenant);
    let decision = admin
        .keys
        .flags
        .evaluate(
            &name,
            input.tenant,
            plan.as_deref(),
            input.key_id,
            input.user.as_deref(),
        )
        .ok_or_else(|| {
            ApiError::owned(
                StatusCode::NOT_FOUND,
                "flag_not_found".into(),
                format!("no flag {name}"),
            )
        })?;
    Ok(HttpResponse::Ok().json(json!({
        "flag": name, "on": decision.on, "reason": decision.reason.as_str()
    })))
}
