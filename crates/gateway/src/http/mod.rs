//! The HTTP plumbing every surface shares. No module here imports a surface (`crate::api`).

/// `ApiError` and the one JSON error shape; pipeline refusals mapped to it.
pub mod error;
/// `Idempotency-Key` on POST and PUT: claimed, recorded, replayed.
pub mod idempotency;
/// The middleware: request ids, RED metrics, logs, CORS, JSON errors.
pub mod observe;
/// Tenant-key authentication and the request limits of tenant and key.
pub mod principal;
/// `x-ratelimit-*` headers.
pub mod rate;
/// Request ids, strict JSON bodies and query strings.
pub mod request;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use principal::{scoped_request, tenant_request};
pub use rate::{rate_headers, with_headers};
pub use request::{RequestId, add_tag, correlation, parse_json, parse_query};
