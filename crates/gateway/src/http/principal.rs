//! The principal of a tenant-key request: the key authenticated against the in-memory index,
//! then the tenant's and the key's request limits.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpMessage, HttpRequest};
use std::time::Duration;
use switchyard_inference::Principal;

use switchyard_inference::admission::ratelimit::Limit;
use switchyard_inference::admission::{Check, enforce};

use super::error::ApiError;
use super::rate::rate_headers;
use crate::auth::{AUTH_FAILURES_PER_MINUTE, Refusal};
use crate::state::Admin;

/// Authenticates a tenant-key request and applies the tenant's request rate limit. Returns the
/// principal and the `x-ratelimit-*` headers for the response.
pub async fn tenant_request(
    req: &HttpRequest,
    admin: &Admin,
) -> Result<(Principal, Vec<(HeaderName, HeaderValue)>), ApiError> {
    let address = req.peer_addr().map(|a| a.ip());
    if let Some(left) = address.and_then(|a| admin.auth_failures.blocked(a)) {
        return Err(too_many_failures(left));
    }
    let principal = match authenticate(req, admin) {
        Ok(principal) => principal,
        Err(refused) => {
            if let Some(address) = address {
                let limit = Limit::per_minute(u64::from(AUTH_FAILURES_PER_MINUTE));
                let decision = admin
                    .auth_failures
                    .limiter
                    .check(&format!("authfail:{address}"), limit, 1)
                    .await;
                if !decision.allowed {
                    let left = decision.retry_after.max(Duration::from_secs(1));
                    if admin.auth_failures.block(address, left) {
                        // Once per block, not once per request.
                        tracing::warn!(%address, per_minute = AUTH_FAILURES_PER_MINUTE, retry_after_s = left.as_secs(), "repeated authentication failures: address refused");
                    }
                    return Err(too_many_failures(left));
                }
            }
            return Err(refused);
        }
    };
    req.extensions_mut().insert(principal.clone());
    let mut checks = Vec::with_capacity(2);
    if let Some(rpm) = admin
        .keys
        .tenant_limits(principal.tenant)
        .requests_per_minute
    {
        checks.push(Check::requests(format!("rpm:{}", principal.tenant), rpm));
    }
    if let Some(rpm) = admin.keys.key_limits(principal.key_id).requests_per_minute {
        checks.push(Check::requests(
            format!("rpm:key:{}", principal.key_id),
            rpm,
        ));
    }
    let status = enforce(&admin.limiter, &checks).await?;
    Ok((principal, rate_headers(&status)))
}

fn authenticate(req: &HttpRequest, admin: &Admin) -> Result<Principal, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "an API key is required",
            )
        })?;
    admin
        .keys
        .authenticate(
            &admin.secret.hash(presented),
            time::OffsetDateTime::now_utc(),
        )
        .map_err(|refusal: Refusal| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", refusal.reason())
        })
}

/// 429 for an address that failed key checks too often, with when it may try again.
fn too_many_failures(left: Duration) -> ApiError {
    let seconds = left.as_secs().max(1);
    let mut error = ApiError::owned(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_auth_failures".into(),
        format!("too many failed API key checks from this address; retry in {seconds} s"),
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        error = error.with_headers(vec![(header::RETRY_AFTER, value)]);
    }
    error
}

/// [`tenant_request`], then the key's scopes: it must hold the first of `scopes` (the one the
/// refusal names) or another of them; 403 `forbidden` otherwise.
pub async fn scoped_request(
    req: &HttpRequest,
    admin: &Admin,
    scopes: &[&str],
) -> Result<(Principal, Vec<(HeaderName, HeaderValue)>), ApiError> {
    let (principal, headers) = tenant_request(req, admin).await?;
    if !principal.allows(scopes) {
        return Err(ApiError::owned(
            StatusCode::FORBIDDEN,
            "forbidden".into(),
            format!(
                "this API key lacks the `{}` scope",
                scopes.first().copied().unwrap_or_default()
            ),
        ));
    }
    Ok((principal, headers))
}
