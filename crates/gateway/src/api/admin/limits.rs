//! Limits of tenants, keys and models; tenant settings; feature flags.

use super::*;

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
    let tenant = admit(&req, &admin, &path, Access::Write).await?;
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
    let (tenant, key_id) = path.into_inner();
    let tenant = admit(&req, &admin, &tenant, Access::Write).await?;
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
        (status = 404, description = "no such tenant, or no such model (the message lists the models)", body = ErrorBody), (status = 422, description = "invalid limits", body = ErrorBody)))]
pub(crate) async fn set_model_limits(
    req: HttpRequest,
    admin: web::Data<Admin>,
    pipeline: web::Data<switchyard_inference::Pipeline>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model) = path.into_inner();
    let tenant = admit(&req, &admin, &tenant, Access::Write).await?;
    // A limit on a model this server does not serve would never apply.
    if pipeline.config.model(&model).is_none() {
        let known: Vec<&str> = pipeline
            .config
            .models
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        return Err(ApiError::owned(
            StatusCode::NOT_FOUND,
            "model_not_found".into(),
            format!(
                "the model `{model}` does not exist; the models are: {}",
                known.join(", ")
            ),
        ));
    }
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
/// read the tenant's API answers; `allowed_models` (configured model names separated by commas,
/// or `*`) limits the models the tenant lists and may call; `guardrails` (a JSON policy, see
/// the README) sets the checks before and after the model; `capture`
/// (`{"retention": "30d", "max_bytes": 1048576}`) keeps its prompts and answers for export and
/// replay; `require_signatures` (`true`/`false`) makes its registry take signed manifests only.
#[utoipa::path(put, path = "/v1/admin/tenants/{id}/settings/{key}", tag = "admin", request_body = SetSetting,
    params(("id" = String, Path, description = "tenant id"), ("key" = String, Path, description = "setting name")),
    responses((status = 200, description = "the tenant's settings"), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody), (status = 422, description = "invalid setting", body = ErrorBody)))]
pub(crate) async fn set_setting(
    req: HttpRequest,
    admin: web::Data<Admin>,
    pipeline: web::Data<switchyard_inference::Pipeline>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (tenant, key) = path.into_inner();
    let tenant = admit(&req, &admin, &tenant, Access::Write).await?;
    idempotent(
        admin.store.as_ref(),
        &req,
        TenantId::SYSTEM,
        &body,
        keep,
        || async {
            let input: SetSetting = parse_json(&body)?;
            if let Some(value) = &input.value {
                crate::settings::check(&key, value, &|name| pipeline.config.model(name).is_some())
                    .map_err(|message| {
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
    let (tenant, flag) = path.into_inner();
    let tenant = admit(&req, &admin, &tenant, Access::Write).await?;
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
