//! Who may call the admin API: the caller's credential (an OIDC bearer token, or the static
//! break-glass token) and the role it needs for what it asks (see [`crate::oidc`]). An allowed
//! caller's identity goes into the request's extensions, and from there into the metadata of
//! every event its command appends (the audit log).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpMessage, HttpRequest};
use switchyard_events::{Actor, TenantId};

use crate::http::{ApiError, RequestId};
use crate::oidc::{OidcError, Role};
use crate::state::Admin;
use crate::telemetry::ADMIN_AUTH;

/// What a request does to one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read its state or routing.
    Read,
    /// Change its keys, limits, settings, flags or routing; suspend or resume it.
    Write,
    /// Delete it.
    Delete,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Create a tenant.
    Create,
    /// List tenants (a `tenant-admin` sees its own).
    List,
    /// Something on one tenant.
    Tenant(TenantId, Access),
    /// Read the audit log (a `tenant-admin` reads its tenants' part).
    Audit,
    /// Billing across tenants: read (price books, invoices, re-pricing) or write (publish a
    /// price book; close, pay or credit an invoice; set a billing day). A tenant's admin
    /// cannot bill its own tenant.
    Billing(Access),
    /// The platform's feature flags: read (list, evaluate) or write (define, change, remove).
    Flags(Access),
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Oidc,
    BreakGlass,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Oidc => "oidc",
            Via::BreakGlass => "break-glass",
        }
    }
}

/// An authenticated admin caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub subject: String,
    pub issuer: Option<String>,
    pub via: Via,
    pub roles: Vec<Role>,
    /// The tenants a `tenant-admin` role covers.
    pub tenants: Vec<TenantId>,
}

impl Caller {
    fn break_glass() -> Caller {
        Caller {
            subject: "break-glass".into(),
            issuer: None,
            via: Via::BreakGlass,
            roles: vec![Role::PlatformAdmin],
            tenants: Vec::new(),
        }
    }

    fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    fn covers(&self, tenant: TenantId) -> bool {
        self.has(Role::TenantAdmin) && self.tenants.contains(&tenant)
    }

    /// The role under which `need` is allowed (the strongest that allows it), if any.
    pub(crate) fn role_for(&self, need: Need) -> Option<Role> {
        let platform = self.has(Role::PlatformAdmin).then_some(Role::PlatformAdmin);
        let readers = || {
            [Role::Auditor, Role::BillingViewer]
                .into_iter()
                .find(|role| self.has(*role))
        };
        match need {
            Need::Create | Need::Tenant(_, Access::Delete) => platform,
            Need::Tenant(tenant, Access::Write) => {
                platform.or_else(|| self.covers(tenant).then_some(Role::TenantAdmin))
            }
            Need::Tenant(tenant, Access::Read) => platform
                .or_else(|| self.covers(tenant).then_some(Role::TenantAdmin))
                .or_else(readers),
            Need::List => platform
                .or_else(readers)
                .or_else(|| self.has(Role::TenantAdmin).then_some(Role::TenantAdmin)),
            Need::Billing(Access::Read) => platform.or_else(readers),
            Need::Billing(_) => platform,
            Need::Flags(Access::Read) => {
                platform.or_else(|| self.has(Role::Auditor).then_some(Role::Auditor))
            }
            Need::Flags(_) => platform,
            Need::Audit => platform
                .or_else(|| self.has(Role::Auditor).then_some(Role::Auditor))
                .or_else(|| self.has(Role::TenantAdmin).then_some(Role::TenantAdmin)),
        }
    }

    /// The tenants this caller may see in lists and the audit log: `None` for all of them.
    pub(crate) fn visible(&self, under: Role) -> Option<&[TenantId]> {
        (under == Role::TenantAdmin).then_some(self.tenants.as_slice())
    }

    /// Allows `need` or answers 403; an allowed caller is recorded on the request (its events
    /// carry it). Returns the role it was allowed under.
    pub(crate) fn allow(&self, req: &HttpRequest, need: Need) -> Result<Role, ApiError> {
        let Some(role) = self.role_for(need) else {
            ADMIN_AUTH
                .with_label_values(&[self.via.name(), "forbidden"])
                .inc();
            tracing::warn!(subject = %self.subject, roles = ?self.roles, ?need, path = req.path(), "admin request refused: no role allows it");
            let held: Vec<&str> = self.roles.iter().map(|r| r.name()).collect();
            return Err(ApiError::owned(
                StatusCode::FORBIDDEN,
                "forbidden".into(),
                if held.is_empty() {
                    "this identity holds no Switchyard admin role".into()
                } else {
                    format!(
                        "the role(s) {} do not allow this on this tenant",
                        held.join(", ")
                    )
                },
            ));
        };
        ADMIN_AUTH
            .with_label_values(&[self.via.name(), "allowed"])
            .inc();
        req.extensions_mut().insert(Actor {
            subject: self.subject.clone(),
            issuer: self.issuer.clone(),
            role: role.name().into(),
            via: self.via.name().into(),
        });
        Ok(role)
    }
}

/// The caller behind an admin request, or 401.
pub(crate) async fn caller(req: &HttpRequest, admin: &Admin) -> Result<Caller, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if presented.is_empty() {
        return Err(unauthorized("an admin bearer token is required", None));
    }
    if same(presented.as_bytes(), admin.token.as_bytes()) {
        let request = req.extensions().get::<RequestId>().map(|r| r.0.clone());
        // Every use, so that the break-glass credential never goes unnoticed.
        tracing::warn!(method = %req.method(), path = req.path(), request_id = request.as_deref().unwrap_or(""), "admin request with the break-glass token");
        return Ok(Caller::break_glass());
    }
    let Some(verifier) = &admin.oidc else {
        ADMIN_AUTH.with_label_values(&["none", "invalid"]).inc();
        return Err(unauthorized("a valid admin token is required", None));
    };
    match verifier.verify(presented).await {
        Ok(identity) => Ok(Caller {
            subject: identity.subject,
            issuer: Some(identity.issuer),
            via: Via::Oidc,
            roles: identity.roles,
            tenants: identity.tenants,
        }),
        Err(OidcError::KeysUnavailable(reason)) => {
            tracing::error!(%reason, "admin token not checked: the identity provider's keys are unavailable");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the identity provider's keys cannot be read; retry shortly",
            ))
        }
        Err(error) => {
            ADMIN_AUTH.with_label_values(&["oidc", "invalid"]).inc();
            tracing::warn!(%error, path = req.path(), "admin token refused");
            Err(unauthorized(&error.to_string(), Some("invalid_token")))
        }
    }
}

/// Authenticates, reads the tenant id in the path (404 when it is not one), and allows `access`
/// to it (403 otherwise).
pub(crate) async fn admit(
    req: &HttpRequest,
    admin: &Admin,
    raw_tenant: &str,
    access: Access,
) -> Result<TenantId, ApiError> {
    let caller = caller(req, admin).await?;
    let tenant = super::tenant_id(raw_tenant)?;
    caller.allow(req, Need::Tenant(tenant, access))?;
    Ok(tenant)
}

/// Authenticates and allows a request that names no tenant; returns the caller and its role.
pub(crate) async fn admit_platform(
    req: &HttpRequest,
    admin: &Admin,
    need: Need,
) -> Result<(Caller, Role), ApiError> {
    let caller = caller(req, admin).await?;
    let role = caller.allow(req, need)?;
    Ok((caller, role))
}

/// 401 with a `WWW-Authenticate: Bearer` challenge (RFC 6750).
fn unauthorized(message: &str, error: Option<&str>) -> ApiError {
    let challenge = match error {
        Some(error) => format!("Bearer realm=\"switchyard-admin\", error=\"{error}\""),
        None => "Bearer realm=\"switchyard-admin\"".to_owned(),
    };
    let mut refusal = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        refusal = refusal.with_headers(vec![(header::WWW_AUTHENTICATE, value)]);
    }
    refusal
}

/// Constant-time comparison (the length is not secret).
fn same(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(roles: &[Role], tenants: &[TenantId]) -> Caller {
        Caller {
            subject: "alice".into(),
            issuer: Some("https://idp".into()),
            via: Via::Oidc,
            roles: roles.to_vec(),
            tenants: tenants.to_vec(),
        }
    }

    #[test]
    fn each_role_may_do_exactly_what_its_table_says() {
        let (mine, other) = (TenantId::new(), TenantId::new());
        let needs = [
            Need::Create,
            Need::List,
            Need::Audit,
            Need::Tenant(mine, Access::Read),
            Need::Tenant(mine, Access::Write),
            Need::Tenant(mine, Access::Delete),
            Need::Tenant(other, Access::Read),
            Need::Tenant(other, Access::Write),
            Need::Tenant(other, Access::Delete),
            Need::Billing(Access::Read),
            Need::Billing(Access::Write),
        ];
        // Per role: whether each need above is allowed.
        let table = [
            (Role::PlatformAdmin, [true; 11]),
            (
                Role::TenantAdmin,
                [
                    false, true, true, true, true, false, false, false, false, false, false,
                ],
            ),
            (
                Role::BillingViewer,
                [
                    false, true, false, true, false, false, true, false, false, true, false,
                ],
            ),
            (
                Role::Auditor,
                [
                    false, true, true, true, false, false, true, false, false, true, false,
                ],
            ),
        ];
        for (role, allowed) in table {
            let who = caller(&[role], &[mine]);
            for (need, expected) in needs.iter().zip(allowed) {
                assert_eq!(
                    who.role_for(*need).is_some(),
                    expected,
                    "{role:?} on {need:?}"
                );
            }
        }
        // No role, no access; and a tenant list without the tenant-admin role grants nothing.
        let nobody = caller(&[], &[mine]);
        assert!(needs.iter().all(|need| nobody.role_for(*need).is_none()));
        let viewer = caller(&[Role::BillingViewer], &[mine]);
        assert_eq!(viewer.role_for(Need::Tenant(mine, Access::Write)), None);
    }

    #[test]
    fn the_strongest_role_is_the_one_recorded() {
        let tenant = TenantId::new();
        let both = caller(&[Role::TenantAdmin, Role::Auditor], &[tenant]);
        assert_eq!(
            both.role_for(Need::Tenant(tenant, Access::Read)),
            Some(Role::TenantAdmin)
        );
        assert_eq!(both.role_for(Need::Audit), Some(Role::Auditor));
        assert_eq!(both.visible(Role::Auditor), None);
        let admin = caller(&[Role::TenantAdmin], &[tenant]);
        assert_eq!(admin.visible(Role::TenantAdmin), Some(&[tenant][..]));
    }

    #[test]
    fn the_token_comparison_needs_every_byte() {
        assert!(same(b"abcdef", b"abcdef"));
        assert!(!same(b"abcdeg", b"abcdef"));
        assert!(!same(b"abcde", b"abcdef"));
        assert!(!same(b"", b"abcdef"));
    }
}
