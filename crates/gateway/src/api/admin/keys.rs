//! Issuing and revoking API keys (a key is shown once, when issued).

use super::*;

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
    let tenant = admit(&req, &admin, &path, Access::Write).await?;
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
            auth::check_scopes(&input.scopes).map_err(|message| {
                ApiError::owned(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request".into(),
                    message,
                )
            })?;
            let fresh = auth::generate();
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
    let (tenant, key_id) = path.into_inner();
    let tenant = admit(&req, &admin, &tenant, Access::Write).await?;
    let key_id: Uuid = key_id
        .parse()
        .map_err(|_| ApiError::not_found("no such API key"))?;
    run_command(&admin, &req, tenant, TenantCommand::RevokeKey { key_id }).await?;
    tracing::info!(%tenant, %key_id, "API key revoked");
    Ok(HttpResponse::Ok().json(json!({"id": key_id, "revoked": true})))
}

/// `POST /v1/admin/tenants/{id}/keys/{key_id}/rotate`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateKey {
    /// How long the old key keeps working, 0 to 2,592,000 (30 days); default 86,400 (a day).
    grace_seconds: Option<i64>,
}

/// Longest grace period of a rotated key.
const MAX_GRACE_SECONDS: i64 = 30 * 24 * 3600;

/// Rotate an API key: a new key with the old one's name, scopes and expiry (in this response
/// only); the old key keeps working for the grace period, then is refused on every node.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/keys/{key_id}/rotate", tag = "admin", request_body = RotateKey,
    params(("id" = String, Path, description = "tenant id"), ("key_id" = String, Path, description = "the key to replace"),
        ("Idempotency-Key" = Option<String>, Header, description = "a replay omits the key (key_redacted: true)")),
    responses((status = 201, description = "the new key (id, key, prefix, name, scopes, expires_at), replaces and old_key_expires_at"),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant or key", body = ErrorBody),
        (status = 422, description = "invalid input, or a revoked or expired key", body = ErrorBody)))]
pub(crate) async fn rotate_key(
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
    idempotent(
        admin.store.as_ref(),
        &req,
        TenantId::SYSTEM,
        &body,
        without_key,
        || async {
            let input: RotateKey = if body.is_empty() {
                RotateKey::default()
            } else {
                parse_json(&body)?
            };
            let grace = input.grace_seconds.unwrap_or(86_400);
            if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    "grace_seconds must be 0 to 2592000 (30 days)",
                ));
            }
            let fresh = auth::generate();
            let new_key_id = Uuid::now_v7();
            let command = TenantCommand::RotateKey {
                key_id,
                new_key_id,
                key_hash: admin.secret.hash(&fresh.key),
                prefix: fresh.prefix,
                grace_until_unix: OffsetDateTime::now_utc().unix_timestamp() + grace,
            };
            let applied = run_command(&admin, &req, tenant, command).await?;
            let (Some(key), Some(old)) = (
                applied.state.keys.get(&new_key_id),
                applied.state.keys.get(&key_id),
            ) else {
                return Err(ApiError::not_found("no such API key"));
            };
            tracing::info!(%tenant, %key_id, %new_key_id, grace_seconds = grace, "API key rotated");
            let mut view = key_view(&new_key_id, key);
            view["key"] = json!(fresh.key);
            view["replaces"] = json!(key_id);
            view["old_key_expires_at"] = json!(unix_to_rfc3339(old.expires_at_unix));
            Ok((StatusCode::CREATED, view))
        },
    )
    .await
}
