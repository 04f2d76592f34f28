//! The admin API: tenants and their API keys (`/v1/admin/...`; an OIDC bearer token with a
//! role, or the static break-glass token: see [`access`]).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use switchyard_actors::Error as ActorError;
use switchyard_actors::tenant::{
    ApiKey, Limits, RateLimits, TenantCommand, TenantRejection, TenantState,
};
use switchyard_events::{LimitScope, Metadata, Scope, StreamId, StreamVersion, TenantId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::auth::{self, TenantEntry};
use crate::http::idempotency::idempotent;
use crate::http::{ApiError, ErrorBody, RequestId, parse_json};
use crate::state::Admin;

/// Who may call: OIDC or break-glass credentials, and the role each request needs.
pub(crate) mod access;
/// The audit log of admin commands.
pub(crate) mod audit;
/// Price books, invoices, credit notes, billing days and re-pricing.
pub(crate) mod billing;
/// A tenant's captured inferences: export and deletion.
pub(crate) mod captures;
/// The platform's feature flags: define, change, remove, list, evaluate.
pub(crate) mod flags;
/// Issuing and revoking API keys.
pub(crate) mod keys;
/// Limits of tenants, keys and models; settings; feature flags.
pub(crate) mod limits;
/// A tenant's own routing policy, splits and reward weights.
pub(crate) mod router;
/// Creating, listing and reading tenants.
pub(crate) mod tenants;

use access::{Access, Need, admit, admit_platform};
use audit::audit_log;
use billing::{
    close_invoice, export_invoices, get_invoice, issue_credit_note, list_price_books, mark_paid,
    publish_price_book, reprice, set_billing_day,
};
use captures::{delete_captures, export_captures};
use flags::{delete_flag, evaluate_flag, list_flags, set_flag as set_platform_flag};
use keys::{issue_key, revoke_key, rotate_key};
use limits::{set_flag, set_key_limits, set_limits, set_model_limits, set_setting};
use router::{get_routing, promote_split, reset_routing, roll_back_split, set_routing};
use tenants::{
    create_tenant, delete_tenant, get_tenant, list_tenants, resume_tenant, suspend_tenant,
};

crate::api::endpoints! {
    post "/v1/admin/tenants" => create_tenant,
    get "/v1/admin/tenants" => list_tenants,
    get "/v1/admin/tenants/{id}" => get_tenant,
    delete "/v1/admin/tenants/{id}" => delete_tenant,
    post "/v1/admin/tenants/{id}/keys/{key_id}/rotate" => rotate_key,
    post "/v1/admin/tenants/{id}/suspend" => suspend_tenant,
    post "/v1/admin/tenants/{id}/resume" => resume_tenant,
    put "/v1/admin/tenants/{id}/limits" => set_limits,
    post "/v1/admin/tenants/{id}/keys" => issue_key,
    delete "/v1/admin/tenants/{id}/keys/{key_id}" => revoke_key,
    put "/v1/admin/tenants/{id}/keys/{key_id}/limits" => set_key_limits,
    put "/v1/admin/tenants/{id}/models/{model}/limits" => set_model_limits,
    put "/v1/admin/tenants/{id}/settings/{key}" => set_setting,
    put "/v1/admin/tenants/{id}/flags/{flag}" => set_flag,
    get "/v1/admin/tenants/{id}/captures" => export_captures,
    delete "/v1/admin/tenants/{id}/captures" => delete_captures,
    get "/v1/admin/tenants/{id}/router" => get_routing,
    put "/v1/admin/tenants/{id}/router" => set_routing,
    delete "/v1/admin/tenants/{id}/router" => reset_routing,
    post "/v1/admin/tenants/{id}/router/splits/{split}/promote" => promote_split,
    post "/v1/admin/tenants/{id}/router/splits/{split}/rollback" => roll_back_split,
    get "/v1/admin/audit" => audit_log,
    post "/v1/admin/price-books" => publish_price_book,
    get "/v1/admin/price-books" => list_price_books,
    get "/v1/admin/invoices" => export_invoices,
    post "/v1/admin/billing/reprice" => reprice,
    get "/v1/admin/tenants/{id}/invoices/{period}" => get_invoice,
    post "/v1/admin/tenants/{id}/invoices/{period}/close" => close_invoice,
    post "/v1/admin/tenants/{id}/invoices/{period}/paid" => mark_paid,
    post "/v1/admin/tenants/{id}/credit-notes" => issue_credit_note,
    put "/v1/admin/tenants/{id}/billing-day" => set_billing_day,
    get "/v1/admin/flags" => list_flags,
    put "/v1/admin/flags/{name}" => set_platform_flag,
    delete "/v1/admin/flags/{name}" => delete_flag,
    post "/v1/admin/flags/{name}/evaluate" => evaluate_flag,
}

/// The metadata of the events an admin request appends: its request id and the caller that
/// [`access`] allowed (the audit log's who).
fn metadata(req: &HttpRequest) -> Metadata {
    use actix_web::HttpMessage;
    let extensions = req.extensions();
    Metadata {
        correlation_id: extensions.get::<RequestId>().map(|r| r.0.clone()),
        actor: extensions.get::<switchyard_events::Actor>().cloned(),
        traceparent: switchyard_events::trace::current(),
        ..Metadata::default()
    }
}

/// Tenant ids in paths: anything that is not a UUID is simply not found.
fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such tenant"))
}

/// The answer to an actor command that was not decided (the actor busy, the log down, the
/// server stopping); `busy` is what to say when the actor is busy. A rejection is the
/// caller's to map.
fn not_decided<R: std::error::Error>(error: ActorError<R>, busy: &str) -> ApiError {
    match error {
        ActorError::Overloaded | ActorError::Contended { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", busy)
        }
        ActorError::Store(error) => {
            tracing::error!(%error, "event log failure in an admin command");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the event log is unavailable; retry shortly",
            )
        }
        ActorError::Rejected(rejection) => ApiError::owned(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request".into(),
            rejection.to_string(),
        ),
        ActorError::Stopped => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "retry shortly",
        ),
    }
}

fn rejected(error: ActorError<TenantRejection>) -> ApiError {
    match error {
        ActorError::Rejected(TenantRejection::NotFound) => ApiError::not_found("no such tenant"),
        ActorError::Rejected(TenantRejection::UnknownKey) => ApiError::not_found("no such API key"),
        ActorError::Rejected(
            r @ (TenantRejection::AlreadyExists | TenantRejection::DuplicateKey),
        ) => ApiError::new(StatusCode::CONFLICT, "conflict", &r.to_string()),
        ActorError::Rejected(r @ (TenantRejection::Suspended | TenantRejection::NotSuspended)) => {
            ApiError::new(StatusCode::CONFLICT, "tenant_state", &r.to_string())
        }
        ActorError::Rejected(TenantRejection::Invalid(message)) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            &message,
        ),
        other => not_decided(other, "the tenant is busy; retry shortly"),
    }
}

/// When the tenant's first event was recorded.
async fn created_at(admin: &Admin, tenant: TenantId) -> Result<Option<String>, ApiError> {
    let stream =
        StreamId::of("tenant", tenant).map_err(|_| ApiError::not_found("no such tenant"))?;
    let first = admin
        .store
        .read_stream(Scope::Tenant(tenant), &stream, StreamVersion::NONE, 1)
        .await
        .map_err(|e| rejected(ActorError::Store(e)))?;
    Ok(first
        .first()
        .and_then(|e| e.recorded_at.format(&Rfc3339).ok()))
}

fn unix_to_rfc3339(at: Option<i64>) -> Option<String> {
    at.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
}

fn key_view(id: &Uuid, key: &ApiKey) -> serde_json::Value {
    json!({
        "id": id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes,
        "expires_at": unix_to_rfc3339(key.expires_at_unix),
        "revoked": key.revoked,
    })
}

fn tenant_view(id: TenantId, state: &TenantState, created_at: Option<String>) -> serde_json::Value {
    json!({
        "id": id,
        "name": state.name,
        "plan": state.plan,
        "created_at": created_at,
        "suspended": state.suspended.is_some(),
        "suspension_reason": state.suspended,
        "flags": state.flags,
        "settings": state.settings,
        "keys": state.keys.iter().map(|(id, key)| key_view(id, key)).collect::<Vec<_>>(),
        "limits": limits_view(&state.limits),
        "key_limits": state.key_limits.iter().map(|(id, l)| (id.to_string(), rate_view(l))).collect::<serde_json::Map<_, _>>(),
        "model_limits": state.model_limits.iter().map(|(m, l)| (m.clone(), rate_view(l))).collect::<serde_json::Map<_, _>>(),
    })
}

fn rate_view(limits: &RateLimits) -> serde_json::Value {
    json!({
        "requests_per_minute": limits.requests_per_minute,
        "tokens_per_minute": limits.tokens_per_minute,
    })
}

fn limits_view(limits: &Limits) -> serde_json::Value {
    json!({
        "requests_per_minute": limits.requests_per_minute,
        "tokens_per_minute": limits.tokens_per_minute,
        "monthly_budget_usd": limits.monthly_budget_micros.map(micros_to_usd),
        "daily_budget_usd": limits.daily_budget_micros.map(micros_to_usd),
        "monthly_token_budget": limits.monthly_token_budget,
        "daily_token_budget": limits.daily_token_budget,
    })
}

/// Micro-dollars as a decimal string with six places (`"12.500000"`): exact, never a float.
fn micros_to_usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// A JSON number or string of dollars to integer micro-dollars, exactly (at most six decimals).
fn usd_to_micros(value: &serde_json::Value) -> Result<u64, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "monthly_budget_usd and daily_budget_usd must be non-negative amounts with at most 6 decimals",
        )
    };
    let text = match value {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => return Err(invalid()),
    };
    switchyard_inference::config::usd_to_micros(&text).map_err(|_| invalid())
}

fn keep(_: &mut serde_json::Value) {}

/// A new API key is shown once: the recorded copy (replayed to retries) leaves it out.
fn without_key(body: &mut serde_json::Value) {
    if let Some(view) = body.as_object_mut() {
        view.remove("key");
        view.insert("key_redacted".into(), json!(true));
    }
}

/// Sends a command to a tenant and applies its events to this node's key index at once, so a
/// key or a limit works as soon as the call returns (the log subscription applies them again,
/// idempotently).
async fn run_command(
    admin: &Admin,
    req: &HttpRequest,
    tenant: TenantId,
    command: TenantCommand,
) -> Result<switchyard_actors::Applied<TenantState>, ApiError> {
    let applied = admin
        .tenants
        .send(&tenant, command, metadata(req))
        .await
        .map_err(rejected)?;
    write_through(admin, tenant, &applied.events);
    Ok(applied)
}

fn write_through(admin: &Admin, tenant: TenantId, events: &[switchyard_events::Event]) {
    for event in events {
        admin.keys.apply(tenant, event);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dollars_convert_to_micros_exactly() {
        for (input, micros) in [
            (json!(12.5), 12_500_000),
            (json!("0.000001"), 1),
            (json!(250), 250_000_000),
            (json!("19.99"), 19_990_000),
            (json!(0.1), 100_000),
        ] {
            assert_eq!(usd_to_micros(&input).unwrap(), micros, "{input}");
        }
        for bad in [
            json!(-1),
            json!("1.0000001"),
            json!("1e3"),
            json!("abc"),
            json!(true),
            json!(""),
            json!("9999999999999"),
        ] {
            assert!(usd_to_micros(&bad).is_err(), "{bad} accepted");
        }
        assert_eq!(micros_to_usd(12_500_000), "12.500000");
    }
}
