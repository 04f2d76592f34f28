//! The admin API: tenants and their API keys (`/v1/admin/...`, bearer admin token).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use switchyard_actors::tenant::{
    ApiKey, Limits, RateLimits, Tenant, TenantCommand, TenantRejection, TenantState,
};
use switchyard_actors::{Error as ActorError, Runtime};
use switchyard_events::{
    EventStore, LimitScope, Metadata, Scope, StreamId, StreamVersion, TenantId,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::http::{ApiError, ErrorBody, RequestId, parse_json};
use crate::idempotency::idempotent;
use crate::keys::{self, KeyIndex, KeySecret, TenantDirectory, TenantEntry};

/// What the admin handlers share.
pub struct Admin {
    pub store: Arc<dyn EventStore>,
    pub tenants: Runtime<Tenant>,
    pub keys: Arc<KeyIndex>,
    pub directory: Arc<TenantDirectory>,
    /// Rate-limit state: this process, or Redis when several nodes share limits.
    pub limiter: crate::ratelimit::Limiter,
    pub secret: KeySecret,
    pub token: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// Registers the admin routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/admin/tenants", web::post().to(create_tenant))
        .route("/v1/admin/tenants", web::get().to(list_tenants))
        .route("/v1/admin/tenants/{id}", web::get().to(get_tenant))
        .route("/v1/admin/tenants/{id}/limits", web::put().to(set_limits))
        .route("/v1/admin/tenants/{id}/keys", web::post().to(issue_key))
        .route(
            "/v1/admin/tenants/{id}/keys/{key_id}",
            web::delete().to(revoke_key),
        )
        .route(
            "/v1/admin/tenants/{id}/keys/{key_id}/limits",
            web::put().to(set_key_limits),
        )
        .route(
            "/v1/admin/tenants/{id}/models/{model}/limits",
            web::put().to(set_model_limits),
        )
        .route(
            "/v1/admin/tenants/{id}/settings/{key}",
            web::put().to(set_setting),
        )
        .route(
            "/v1/admin/tenants/{id}/flags/{flag}",
            web::put().to(set_flag),
        );
}

/// Constant-time comparison of the presented admin token.
fn authorized(req: &HttpRequest, admin: &Admin) -> Result<(), ApiError> {
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = admin.token.as_bytes();
    let same = presented.len() == expected.len()
        && presented
            .bytes()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required",
        ))
    }
}

fn metadata(req: &HttpRequest) -> Metadata {
    use actix_web::HttpMessage;
    Metadata {
        correlation_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
        ..Metadata::default()
    }
}

/// Tenant ids in paths: anything that is not a UUID is simply not found.
fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such tenant"))
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
        ActorError::Overloaded | ActorError::Contended { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the tenant is busy; retry shortly",
        ),
        ActorError::Store(error) => {
            tracing::error!(%error, "event log failure in an admin command");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the event log is unavailable; retry shortly",
            )
        }
        ActorError::Stopped => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "retry shortly",
        ),
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
    crate::config::usd_to_micros(&text).map_err(|_| invalid())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenant {
    name: String,
    #[serde(default = "default_plan")]
    plan: String,
}

fn default_plan() -> String {
    "free".into()
}

/// Create a tenant.
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "admin", request_body = CreateTenant,
    params(("Idempotency-Key" = Option<String>, Header, description = "retries with the same key get the same response")),
    responses((status = 201, description = "the tenant: id, name, plan, created_at"), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 422, description = "invalid input", body = ErrorBody)))]
pub(crate) async fn create_tenant(
    req: HttpRequest,
    admin: web::Data<Admin>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorized(&req, &admin)?;
    idempotent(admin.store.as_ref(), &req, TenantId::SYSTEM, &body, keep, || async {
        let input: CreateTenant = parse_json(&body)?;
        let tenant = TenantId::new();
        let command = TenantCommand::Create { name: input.name, plan: input.plan };
        let applied = admin.tenants.send(&tenant, command, metadata(&req)).await.map_err(rejected)?;
        let created_at = created_at(&admin, tenant).await?;
        let created = created_at.as_deref().and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
        admin.directory.insert(TenantEntry {
            id: tenant,
            name: applied.state.name.clone(),
            plan: applied.state.plan.clone(),
            created_at: created.unwrap_or_else(OffsetDateTime::now_utc),
        });
        tracing::info!(%tenant, "tenant created");
        Ok((
            StatusCode::CREATED,
            json!({"id": tenant, "name": applied.state.name, "plan": applied.state.plan, "created_at": created_at}),
        ))
    })
    .await
}

/// Nothing secret in the response: record it as sent.
fn keep(_: &mut serde_json::Value) {}

/// A new API key is shown once: the recorded copy (replayed to retries) leaves it out.
fn without_key(body: &mut serde_json::Value) {
    if let Some(view) = body.as_object_mut() {
        view.remove("key");
        view.insert("key_redacted".into(), json!(true));
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/admin/tenants?after=&limit=`: tenants in creation order, a page at a time.
/// List tenants in creation order, a page at a time.
#[utoipa::path(get, path = "/v1/admin/tenants", tag = "admin",
    params(("after" = Option<String>, Query, description = "the previous page's next_after"),
        ("limit" = Option<usize>, Query, description = "1-1000, default 100")),
    responses((status = 200, description = "{data: [tenant], next_after}"), (status = 401, description = "missing or wrong admin token", body = ErrorBody)))]
pub(crate) async fn list_tenants(
    req: HttpRequest,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, ApiError> {
    authorized(&req, &admin)?;
    let query: ListQuery = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                &e.to_string(),
            )
        })?
        .into_inner();
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(raw.parse().map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "after must be a tenant id",
            )
        })?),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let page = admin.directory.page(after, limit);
    let next = if page.len() == limit {
        page.last().map(|e| e.id)
    } else {
        None
    };
    let data: Vec<_> = page
        .iter()
        .map(|e| json!({"id": e.id, "name": e.name, "plan": e.plan, "created_at": e.created_at.format(&Rfc3339).ok()}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"data": data, "next_after": next})))
}

/// A tenant with its limits, flags, settings and keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/admin/tenants/{id}", tag = "admin", params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, description = "the tenant"), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 404, description = "no such tenant", body = ErrorBody)))]
pub(crate) async fn get_tenant(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorized(&req, &admin)?;
    let tenant = tenant_id(&path)?;
    let (state, _version) = admin.tenants.read(&tenant).await.map_err(rejected)?;
    if !state.created {
        return Err(ApiError::not_found("no such tenant"));
    }
    let created_at = created_at(&admin, tenant).await?;
    let mut view = tenant_view(tenant, &state, created_at);
    let spend = admin.keys.meter.view(tenant, OffsetDateTime::now_utc());
    view["budget"] = json!({
        "period": spend.period,
        "spent_usd": micros_to_usd(spend.spent_micros),
        "reserved_usd": micros_to_usd(spend.reserved_micros),
        "remaining_usd": state.limits.monthly_budget_micros.map(|b| micros_to_usd(b.saturating_sub(spend.spent_micros + spend.reserved_micros))),
        "tokens": spend.tokens,
        "day": spend.day,
        "day_spent_usd": micros_to_usd(spend.day_spent_micros),
        "day_tokens": spend.day_tokens,
    });
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetLimits {
    requests_per_minute: Option<u32>,
    tokens_per_minute: Option<u64>,
    /// Dollars, as a JSON number or a decimal string.
    monthly_budget_usd: Option<serde_json::Value>,
    /// Dollars per UTC day.
    daily_budget_usd: Option<serde_json::Value>,
    /// Tokens (in + out) per UTC month.
    monthly_token_budget: Option<u64>,
    /// Tokens (in + out) per UTC day.
    daily_token_budget: Option<u64>,
}

/// `PUT /v1/admin/tenants/{id}/limits`: replaces the tenant's limits (absent or null: no limit).
#[utoipa::path(put, path = "/v1/admin/tenants/{id}/limits", tag = "admin", request_body = SetLimits,
    params(("id" = String, Path, description = "tenant id"),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key get the same response")),
    responses((status = 200, description = "the limits now in force"), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody), (status = 422, description = "invalid limits", body = ErrorBody)))]
pub(crate) async fn set_limits(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorized(&req, &admin)?;
    let tenant = tenant_id(&path)?;
    idempotent(
        admin.store.as_ref(),
        &req,
        TenantId::SYSTEM,
        &body,
        keep,
        || async {
            let input: SetLimits = parse_json(&body)?;
            let limits = Limits {
                requests_per_minute: input.requests_per_minute,
                tokens_per_minute: input.tokens_per_minute,
                monthly_budget_micros: input
                    .monthly_budget_usd
                    .as_ref()
                    .filter(|v| !v.is_null())
                    .map(usd_to_micros)
                    .transpose()?,
                daily_budget_micros: input
                    .daily_budget_usd
                    .as_ref()
                    .filter(|v| !v.is_null())
                    .map(usd_to_micros)
                    .transpose()?,
                monthly_token_budget: input.monthly_token_budget,
                daily_token_budget: input.daily_token_budget,
            };
            let applied =
                run_command(&admin, &req, tenant, TenantCommand::SetLimits(limits)).await?;
            Ok((StatusCode::OK, limits_view(&applied.state.limits)))
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetRateLimits {
    requests_per_minute: Option<u32>,
    tokens_per_minute: Option<u64>,
}

/// `PUT /v1/admin/tenants/{id}/keys/{key_id}/limits`: one key's rate limits, on top of the
/// tenant's (absent or null: no limit at this tier).
#[utoipa::path(put, path = "/v1/admin/tenants/{id}/keys/{key_id}/limits", tag = "admin", request_body = SetRateLimits,
    params(("id" = String, Path, description = "tenant id"), ("key_id" = String, Path, description = "key id")),
    responses((status = 200, description = "the key's limits now in force"), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant or key", body = ErrorBody), (status = 422, description = "invalid limits", body = ErrorBody)))]
pub(crate) async fn set_key_limits(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorized(&req, &admin)?;
    let (tenant, key_id) = path.into_inner();
    let tenant = tenant_id(&tenant)?;
    let key_id: Uuid = key_id
        .parse()
        .map_err(|_| ApiError::not_found("no such API key"))?;
    set_rate_limit(req, admin, tenant, LimitScope::Key(key_id), body).await
}

/// `PUT /v1/admin/tenants/{id}/models/{model}/limits`: one model's rate limits across the
/// tenant's keys.
#[utoipa::path(put, path = "/v1/admin/tenants/{id}/models/{model}/limits", tag = "admin", request_body = SetRateLimits,
    params(("id" = String, Path, description = "tenant id"), ("model" = String, Path, description = "model name")),
    responses((status = 200, description = "the model's limits now in force"), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody), (status = 422, description = "invalid limits", body = ErrorBody)))]
pub(crate) async fn set_model_limits(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorized(&req, &admin)?;
    let (tenant, model) = path.into_inner();
    let tenant = tenant_id(&tenant)?;
    set_rate_limit(req, admin, tenant, LimitScope::Model(model), body).await
}

async fn set_rate_limit(
    req: HttpRequest,
    admin: web::Data<Admin>,
    tenant: TenantId,
    scope: LimitScope,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    idempotent(
        admin.store.as_ref(),
        &req,
        TenantId::SYSTEM,
        &body,
        keep,
        || async {
            let input: SetRateLimits = parse_json(&body)?;
            let limits = RateLimits {
                requests_per_minute: input.requests_per_minute,
                tokens_per_minute: input.tokens_per_minute,
            };
            let command = TenantCommand::SetRateLimit { scope, limits };
            run_command(&admin, &req, tenant, command).await?;
            Ok((StatusCode::OK, rate_view(&limits)))
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetSetting {
    /// The new value; null removes the setting.
    value: Option<String>,
}

/// `PUT /v1/admin/tenants/{id}/settings/{key}`: sets or removes one tenant setting. The
/// setting `cors_origins` (origins separated by commas, or `*`) lets browsers on those origins
/// read the tenant's API answers.
#[utoipa::path(put, path = "/v1/admin/tenants/{id}/settings/{key}", tag = "admin", request_body = SetSetting,
    params(("id" = String, Path, description = "tenant id"), ("key" = String, Path, description = "setting name")),
    responses((status = 200, description = "the tenant's settings"), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody), (status = 422, description = "invalid setting", body = ErrorBody)))]
pub(crate) async fn set_setting(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorized(&req, &admin)?;
    let (tenant, key) = path.into_inner();
    let tenant = tenant_id(&tenant)?;
    idempotent(
        admin.store.as_ref(),
        &req,
        TenantId::SYSTEM,
        &body,
        keep,
        || async {
            let input: SetSetting = parse_json(&body)?;
            if key == crate::keys::CORS_SETTING
                && let Some(value) = &input.value
            {
                crate::keys::parse_origins(value).map_err(|message| {
                    ApiError::owned(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_request".into(),
                        message,
                    )
                })?;
            }
            let command = TenantCommand::SetSetting {
                key,
                value: input.value,
            };
            let applied = run_command(&admin, &req, tenant, command).await?;
            Ok((StatusCode::OK, json!({"settings": applied.state.settings})))
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetFlag {
    enabled: bool,
}

/// `PUT /v1/admin/tenants/{id}/flags/{flag}`: turns one feature flag on or off.
#[utoipa::path(put, path = "/v1/admin/tenants/{id}/flags/{flag}", tag = "admin", request_body = SetFlag,
    params(("id" = String, Path, description = "tenant id"), ("flag" = String, Path, description = "flag name")),
    responses((status = 200, description = "the tenant's flags"), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody), (status = 422, description = "invalid flag", body = ErrorBody)))]
pub(crate) async fn set_flag(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorized(&req, &admin)?;
    let (tenant, flag) = path.into_inner();
    let tenant = tenant_id(&tenant)?;
    idempotent(
        admin.store.as_ref(),
        &req,
        TenantId::SYSTEM,
        &body,
        keep,
        || async {
            let input: SetFlag = parse_json(&body)?;
            let command = TenantCommand::SetFlag {
                flag,
                enabled: input.enabled,
            };
            let applied = run_command(&admin, &req, tenant, command).await?;
            Ok((StatusCode::OK, json!({"flags": applied.state.flags})))
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssueKey {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    /// RFC 3339.
    expires_at: Option<String>,
}

/// Issue an API key: the key is in this response only.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/keys", tag = "admin", request_body = IssueKey,
    params(("id" = String, Path, description = "tenant id"),
        ("Idempotency-Key" = Option<String>, Header, description = "a replay omits the key (key_redacted: true)")),
    responses((status = 201, description = "id, key, prefix, name, scopes, expires_at"), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody), (status = 422, description = "invalid input", body = ErrorBody)))]
pub(crate) async fn issue_key(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorized(&req, &admin)?;
    let tenant = tenant_id(&path)?;
    idempotent(
        admin.store.as_ref(),
        &req,
        TenantId::SYSTEM,
        &body,
        without_key,
        || async {
            let input: IssueKey = parse_json(&body)?;
            let expires_at_unix = match &input.expires_at {
                None => None,
                Some(text) => Some(
                    OffsetDateTime::parse(text, &Rfc3339)
                        .map_err(|_| {
                            ApiError::new(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "invalid_request",
                                "expires_at must be an RFC 3339 time",
                            )
                        })?
                        .unix_timestamp(),
                ),
            };
            let fresh = keys::generate();
            let key_id = Uuid::now_v7();
            let command = TenantCommand::IssueKey {
                key_id,
                name: input.name,
                key_hash: admin.secret.hash(&fresh.key),
                prefix: fresh.prefix,
                scopes: input.scopes,
                expires_at_unix,
            };
            let applied = admin
                .tenants
                .send(&tenant, command, metadata(&req))
                .await
                .map_err(rejected)?;
            let key = applied
                .state
                .keys
                .get(&key_id)
                .ok_or_else(|| ApiError::not_found("no such tenant"))?;
            write_through(&admin, tenant, &applied.events);
            tracing::info!(%tenant, %key_id, "API key issued");
            let mut view = key_view(&key_id, key);
            view["key"] = json!(fresh.key);
            Ok((StatusCode::CREATED, view))
        },
    )
    .await
}

/// Revoke an API key for good.
#[utoipa::path(delete, path = "/v1/admin/tenants/{id}/keys/{key_id}", tag = "admin",
    params(("id" = String, Path, description = "tenant id"), ("key_id" = String, Path, description = "key id")),
    responses((status = 200, description = "{id, revoked: true}"), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 404, description = "no such tenant or key", body = ErrorBody)))]
pub(crate) async fn revoke_key(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    authorized(&req, &admin)?;
    let (tenant, key_id) = path.into_inner();
    let tenant = tenant_id(&tenant)?;
    let key_id: Uuid = key_id
        .parse()
        .map_err(|_| ApiError::not_found("no such API key"))?;
    run_command(&admin, &req, tenant, TenantCommand::RevokeKey { key_id }).await?;
    tracing::info!(%tenant, %key_id, "API key revoked");
    Ok(HttpResponse::Ok().json(json!({"id": key_id, "revoked": true})))
}

/// Applies a command's events to this node's key index at once, so a key or a limit works as
/// soon as the call returns (the log subscription applies them again, idempotently).
/// Sends a command to a tenant and applies its events to the in-memory indexes at once.
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
