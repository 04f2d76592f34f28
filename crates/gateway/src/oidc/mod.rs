//! Admin identity: OIDC/JWT bearer tokens from the organisation's identity provider, checked
//! against its JWKS (issuer, audience, expiry and not-before with a clock-skew leeway, an
//! asymmetric signature by a published key), and the roles a token's claims grant.
//!
//! | role | may |
//! |---|---|
//! | `platform-admin` | everything |
//! | `tenant-admin` | read and change the tenants its tenants claim lists (keys, limits, settings, flags, routing, suspend and resume), and read their audit log; not create or delete tenants |
//! | `billing-viewer` | read tenants (their plans, budgets and spend) and routing |
//! | `auditor` | read tenants, routing and the whole audit log |
//!
//! The static admin token stays as the break-glass credential: it acts as `platform-admin`, and
//! every use of it is logged as such.

/// The identity provider's keys, cached.
pub mod jwks;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use switchyard_events::TenantId;

use jwks::{Jwks, Source};

/// What goes wrong with admin identity: its configuration, or a presented token.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("admin OIDC configuration: {0}")]
    Config(String),
    #[error("the admin token is not valid: {0}")]
    InvalidToken(String),
    #[error(
        "the admin token is signed with a key the identity provider does not publish (kid {0})"
    )]
    UnknownKey(String),
    #[error("{0}")]
    KeysUnavailable(String),
}

/// `switchyard serve`'s admin-identity settings (the standard OIDC knobs).
#[derive(Debug, Clone, Default, Args)]
pub struct OidcArgs {
    /// The identity provider's issuer (`iss`); setting it turns on OIDC bearer tokens for the
    /// admin API (the static admin token stays, as the break-glass credential).
    #[arg(long = "admin-oidc-issuer", env = "SWITCHYARD_ADMIN_OIDC_ISSUER")]
    pub issuer: Option<String>,
    /// Accepted audiences (`aud`), comma-separated; at least one is required with an issuer.
    #[arg(
        long = "admin-oidc-audience",
        env = "SWITCHYARD_ADMIN_OIDC_AUDIENCE",
        value_delimiter = ','
    )]
    pub audience: Vec<String>,
    /// Where the signing keys are published (the IdP's `jwks_uri`).
    #[arg(long = "admin-oidc-jwks-url", env = "SWITCHYARD_ADMIN_OIDC_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Or a JWKS file (read again like the URL).
    #[arg(long = "admin-oidc-jwks-file", env = "SWITCHYARD_ADMIN_OIDC_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// The claim that carries roles (a string, a space-separated string or an array; a dotted
    /// path such as `realm_access.roles` reaches into objects).
    #[arg(
        long = "admin-oidc-roles-claim",
        env = "SWITCHYARD_ADMIN_OIDC_ROLES_CLAIM",
        default_value = "roles"
    )]
    pub roles_claim: String,
    /// The claim that lists the tenant ids a `tenant-admin` may manage.
    #[arg(
        long = "admin-oidc-tenants-claim",
        env = "SWITCHYARD_ADMIN_OIDC_TENANTS_CLAIM",
        default_value = "switchyard_tenants"
    )]
    pub tenants_claim: String,
    /// The IdP's role or group names mapped to ours, `idp-name=role` comma-separated (our
    /// role names are always accepted as they are).
    #[arg(
        long = "admin-oidc-role-map",
        env = "SWITCHYARD_ADMIN_OIDC_ROLE_MAP",
        value_delimiter = ','
    )]
    pub role_map: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(
        long = "admin-oidc-leeway",
        env = "SWITCHYARD_ADMIN_OIDC_LEEWAY_SECONDS",
        default_value_t = 60
    )]
    pub leeway_secs: u64,
    /// How long the keys are kept before they are read again, in seconds.
    #[arg(
        long = "admin-oidc-jwks-ttl",
        env = "SWITCHYARD_ADMIN_OIDC_JWKS_TTL_SECONDS",
        default_value_t = 300
    )]
    pub jwks_ttl_secs: u64,
}

/// A role of the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    PlatformAdmin,
    TenantAdmin,
    BillingViewer,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::PlatformAdmin,
        Role::TenantAdmin,
        Role::BillingViewer,
        Role::Auditor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform-admin",
            Role::TenantAdmin => "tenant-admin",
            Role::BillingViewer => "billing-viewer",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == name)
    }
}

/// A verified token's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub issuer: String,
    /// Sorted, without duplicates.
    pub roles: Vec<Role>,
    /// The tenants a `tenant-admin` may manage.
    pub tenants: Vec<TenantId>,
}

/// Signature algorithms accepted: asymmetric only. A shared-secret algorithm (`HS*`) would let
/// anyone holding the public key sign, and `none` is no signature at all.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Checks admin bearer tokens.
#[derive(Debug)]
pub struct Verifier {
    issuer: String,
    audience: Vec<String>,
    roles_claim: String,
    tenants_claim: String,
    role_map: HashMap<String, Role>,
    leeway: Duration,
    pub(crate) keys: Jwks,
}

impl Verifier {
    /// The verifier the settings ask for; `None` when no issuer is set (static token only).
    pub fn from_args(args: &OidcArgs) -> Result<Option<Verifier>, OidcError> {
        let Some(issuer) = args.issuer.clone().filter(|i| !i.trim().is_empty()) else {
            return Ok(None);
        };
        let audience: Vec<String> = args
            .audience
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if audience.is_empty() {
            return Err(OidcError::Config(
                "SWITCHYARD_ADMIN_OIDC_AUDIENCE is required with an issuer".into(),
            ));
        }
        let source = match (&args.jwks_url, &args.jwks_file) {
            (Some(url), None) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(OidcError::Config(format!(
                        "the JWKS URL must be http(s): {url}"
                    )));
                }
                Source::Url(url.clone())
            }
            (None, Some(file)) => Source::File(file.clone()),
            _ => {
                return Err(OidcError::Config(
                    "set exactly one of SWITCHYARD_ADMIN_OIDC_JWKS_URL and SWITCHYARD_ADMIN_OIDC_JWKS_FILE".into(),
                ));
            }
        };
        let mut role_map = HashMap::new();
        for entry in &args.role_map {
            let Some((from, to)) = entry.split_once('=') else {
                return Err(OidcError::Config(format!(
                    "role map entry {entry:?} is not `idp-name=role`"
                )));
            };
            let role = Role::parse(to.trim()).ok_or_else(|| {
                OidcError::Config(format!(
                    "role map entry {entry:?}: unknown role {to:?} (platform-admin, tenant-admin, billing-viewer, auditor)"
                ))
            })?;
            role_map.insert(from.trim().to_owned(), role);
        }
        Ok(Some(Verifier {
            issuer,
            audience,
            roles_claim: args.roles_claim.clone(),
            tenants_claim: args.tenants_claim.clone(),
            role_map,
            leeway: Duration::from_secs(args.leeway_secs),
            keys: Jwks::new(source, Duration::from_secs(args.jwks_ttl_secs.max(1)))?,
        }))
    }

    /// Verifies a token and reads its identity.
    pub async fn verify(&self, token: &str) -> Result<Identity, OidcError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| OidcError::InvalidToken(format!("malformed header: {e}")))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(OidcError::InvalidToken(format!(
                "algorithm {:?} is not accepted (asymmetric signatures only)",
                header.alg
            )));
        }
        let jwk = self.keys.key(header.kid.as_deref()).await?;
        let key = decoding_key(&jwk, header.alg)?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| OidcError::InvalidToken(describe(&e)))?
            .claims;
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() && sub.len() <= 256 => sub.clone(),
            _ => {
                return Err(OidcError::InvalidToken(
                    "`sub` is missing or not a string".into(),
                ));
            }
        };
        Ok(Identity {
            subject,
            issuer: self.issuer.clone(),
            roles: self.roles(&claims),
            tenants: self.tenants(&claims)?,
        })
    }

    fn roles(&self, claims: &Map<String, Value>) -> Vec<Role> {
        let mut roles: Vec<Role> = strings(claim(claims, &self.roles_claim))
            .iter()
            .filter_map(|name| {
                Role::parse(name).or_else(|| self.role_map.get(name.as_str()).copied())
            })
            .collect();
        roles.sort_unstable();
        roles.dedup();
        roles
    }

    fn tenants(&self, claims: &Map<String, Value>) -> Result<Vec<TenantId>, OidcError> {
        strings(claim(claims, &self.tenants_claim))
            .iter()
            .map(|raw| {
                raw.parse::<TenantId>().map_err(|_| {
                    OidcError::InvalidToken(format!(
                        "`{}` holds {raw:?}, which is not a tenant id",
                        self.tenants_claim
                    ))
                })
            })
            .collect()
    }
}

/// The key of a JWK for `alg`: it must be a public key of the algorithm's family, for
/// signatures, and agree with the JWK's own `alg` when it states one.
fn decoding_key(jwk: &Jwk, alg: Algorithm) -> Result<DecodingKey, OidcError> {
    if let AlgorithmParameters::OctetKey(_) = jwk.algorithm {
        return Err(OidcError::InvalidToken(
            "the JWKS key is a shared secret; only public keys are accepted".into(),
        ));
    }
    if let Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_)) = &jwk.common.public_key_use {
        return Err(OidcError::InvalidToken(
            "the JWKS key is not for signatures".into(),
        ));
    }
    if let Some(stated) = jwk.common.key_algorithm
        && format!("{stated:?}") != format!("{alg:?}")
    {
        return Err(OidcError::InvalidToken(format!(
            "the token says {alg:?} but its key is for {stated:?}"
        )));
    }
    DecodingKey::from_jwk(jwk)
        .map_err(|e| OidcError::InvalidToken(format!("unusable JWKS key: {e}")))
}

/// What failed, in words an operator can act on (never the token itself).
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm => "algorithm does not match the key".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim `{claim}`"),
        other => format!("{other:?}"),
    }
}

/// A claim by dotted path (`realm_access.roles`); a claim whose name itself has dots is found
/// first.
fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    Some(value)
}

/// A claim's strings: an array of strings, or one string split on spaces (the OAuth `scope`
/// style); anything else is none.
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
