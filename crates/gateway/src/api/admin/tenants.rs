//! Creating, listing and reading tenants.

use super::*;

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
    admit_platform(&req, &admin, Need::Create).await?;
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/admin/tenants?after=&limit=`: tenants in creation order, a page at a time.
/// List tenants in creation order, a page at a time.
#[utoipa::path(get, path = "/v1/admin/tenants", tag = "admin",
    params(("after" = Option<uuid::Uuid>, Query, description = "the previous page's next_after"),
        ("limit" = Option<usize>, Query, description = "1-1000, default 100")),
    responses((status = 200, description = "{data: [tenant], next_after}"), (status = 401, description = "missing or wrong admin token", body = ErrorBody)))]
pub(crate) async fn list_tenants(
    req: HttpRequest,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, ApiError> {
    let (caller, role) = admit_platform(&req, &admin, Need::List).await?;
    let query: ListQuery = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()))?
        .into_inner();
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(raw.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "after must be a tenant id",
            )
        })?),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let page = admin.directory.page(after, limit, caller.visible(role));
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
    let tenant = admit(&req, &admin, &path, Access::Read).await?;
    let (state, _version) = admin.tenants.read(&tenant).await.map_err(rejected)?;
    if !state.created || state.deleted {
        return Err(ApiError::not_found("no such tenant"));
    }
    let created_at = created_at(&admin, tenant).await?;
    let mut view = tenant_view(tenant, &state, created_at);
    let spend = admin.meter.view(tenant, OffsetDateTime::now_utc());
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

/// `POST /v1/admin/tenants/{id}/suspend`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Suspend {
    /// Why (kept with the tenant and shown by `GET`).
    reason: String,
}

/// Suspends a tenant: its keys are refused (401) on every node, its open event feeds end, and
/// its workflow steps are refused, until it is resumed.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/suspend", tag = "admin", request_body = Suspend,
    params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, description = "the tenant"), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody), (status = 409, description = "already suspended", body = ErrorBody)))]
pub(crate) async fn suspend_tenant(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let tenant = admit(&req, &admin, &path, Access::Write).await?;
    let input: Suspend = parse_json(&body)?;
    let applied = run_command(
        &admin,
        &req,
        tenant,
        TenantCommand::Suspend {
            reason: input.reason,
        },
    )
    .await?;
    tracing::info!(%tenant, "tenant suspended");
    let created = created_at(&admin, tenant).await?;
    Ok(HttpResponse::Ok().json(tenant_view(tenant, &applied.state, created)))
}

/// Resumes a suspended tenant: its keys work again.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/resume", tag = "admin",
    params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, description = "the tenant"), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody), (status = 409, description = "not suspended", body = ErrorBody)))]
pub(crate) async fn resume_tenant(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = admit(&req, &admin, &path, Access::Write).await?;
    let applied = run_command(&admin, &req, tenant, TenantCommand::Resume).await?;
    tracing::info!(%tenant, "tenant resumed");
    let created = created_at(&admin, tenant).await?;
    Ok(HttpResponse::Ok().json(tenant_view(tenant, &applied.state, created)))
}

/// `DELETE /v1/admin/tenants/{id}` (the body is optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Delete {
    /// Why (kept in the log); default "deleted by an operator".
    reason: Option<String>,
}

/// Delete a tenant: every key is revoked (refused on every node, open feeds end), the tenant is
/// gone from the admin API and refuses every command; its history (usage, invoices, runs) stays
/// in the log. Deleting again answers 404.
#[utoipa::path(delete, path = "/v1/admin/tenants/{id}", tag = "admin", request_body(content = Delete, description = "optional"),
    params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, description = "{id, deleted: true, keys_revoked}"), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody), (status = 422, description = "invalid input", body = ErrorBody)))]
pub(crate) async fn delete_tenant(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let tenant = admit(&req, &admin, &path, Access::Delete).await?;
    let input: Delete = if body.is_empty() {
        Delete::default()
    } else {
        parse_json(&body)?
    };
    let reason = input
        .reason
        .unwrap_or_else(|| "deleted by an operator".into());
    let applied = run_command(&admin, &req, tenant, TenantCommand::Delete { reason }).await?;
    admin.directory.remove(tenant);
    let revoked = applied
        .events
        .iter()
        .filter(|e| matches!(e, switchyard_events::Event::ApiKeyRevoked(_)))
        .count();
    tracing::info!(%tenant, keys_revoked = revoked, "tenant deleted");
    Ok(HttpResponse::Ok().json(json!({"id": tenant, "deleted": true, "keys_revoked": revoked})))
}
