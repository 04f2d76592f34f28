//! The HTTP API: routes, the one JSON error shape, request ids and RED metrics.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use serde::de::DeserializeOwned;
use serde_json::json;
use switchyard_events::EventStore;

use crate::admin::{self, Admin};
use crate::keys::{Principal, Refusal};
use crate::ratelimit::{Decision, Limit, Limiter};
use crate::telemetry::HTTP;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Largest JSON body the API reads.
const MAX_BODY: usize = 256 * 1024;

/// The request id of a request: the caller's `x-request-id` if it is sane, otherwise a new one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// An error answered as `{"error": {"code", "message", "request_id"}}`; the request id is
/// filled in by the [`observe`] middleware, which knows it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: &str) -> Self {
        ApiError {
            status,
            code: Cow::Borrowed(code),
            message: message.to_owned(),
            headers: Vec::new(),
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn owned(status: StatusCode, code: Cow<'static, str>, message: String) -> Self {
        ApiError {
            status,
            code,
            message,
            headers: Vec::new(),
        }
    }

    pub fn not_found(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The same error with headers (kept when the middleware adds the request id).
    pub fn with_headers(mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        self.headers.extend(headers);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body without the request id (as recorded for idempotent replays).
    pub fn to_json(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = error_body(self.status, &self.code, &self.message, None);
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
    }
}

/// The error shape of every endpoint (documentation of [`error_body`]).
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "describes the JSON that error_body writes")]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "describes the JSON that error_body writes")]
pub struct ErrorDetail {
    /// Stable, machine-readable: not_found, unauthorized, invalid_json, invalid_request, …
    code: String,
    message: String,
    /// The request's `x-request-id`.
    request_id: Option<String>,
}

/// The OpenAPI document of this server, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "Multi-tenant AI platform. Admin endpoints take `Authorization: Bearer <admin token>`; tenant endpoints a tenant API key. Errors are {\"error\": {code, message, request_id}}."
    ),
    paths(
        healthz,
        readyz,
        metrics,
        whoami,
        openapi_json,
        crate::admin::create_tenant,
        crate::admin::list_tenants,
        crate::admin::get_tenant,
        crate::admin::set_limits,
        crate::admin::issue_key,
        crate::admin::revoke_key,
        crate::admin::set_key_limits,
        crate::admin::set_model_limits,
        crate::admin::set_setting,
        crate::admin::set_flag,
        crate::inference::list_models,
        crate::inference::chat_completions,
        crate::inference::embeddings,
        crate::feedback::feedback,
        crate::feedback::evaluate_policy,
        crate::feedback::arms,
        crate::analytics::usage,
        crate::analytics::latency,
        crate::analytics::router,
        crate::analytics::billing_usage,
        crate::analytics::invoices,
        crate::analytics::inferences,
        crate::analytics::workflows,
        crate::events::stream,
        crate::events::websocket,
        crate::workflows::register,
        crate::workflows::list,
        crate::workflows::show,
        crate::workflows::start,
        crate::workflows::register_fragment,
        crate::workflows::register_tool,
        crate::workflows::run,
        crate::workflows::run_events,
        crate::workflows::signal,
        crate::workflows::cancel
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        crate::admin::CreateTenant,
        crate::admin::SetLimits,
        crate::admin::IssueKey,
        crate::admin::SetRateLimits,
        crate::admin::SetSetting,
        crate::admin::SetFlag,
        crate::openai::ChatRequest,
        crate::openai::Message,
        crate::openai::Role,
        crate::openai::StreamOptions,
        crate::openai::EmbeddingsRequest,
        crate::feedback::Feedback,
        crate::feedback::Evaluate,
        crate::workflows::StartRun,
        crate::workflows::Signal,
        crate::workflows::Cancel
    ))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1")))]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(<ApiDoc as utoipa::OpenApi>::openapi())
}

fn error_body(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: Option<&str>,
) -> HttpResponse {
    HttpResponse::build(status)
        .json(json!({"error": {"code": code, "message": message, "request_id": request_id}}))
}

/// Parses a query string strictly (unknown parameters refused by the target type): a 400
/// `invalid_request` that names the problem.
pub fn parse_query<T: DeserializeOwned>(req: &actix_web::HttpRequest) -> Result<T, ApiError> {
    actix_web::web::Query::<T>::from_query(req.query_string())
        .map(actix_web::web::Query::into_inner)
        .map_err(|error| {
            ApiError::owned(
                StatusCode::BAD_REQUEST,
                "invalid_request".into(),
                format!("invalid query: {error}"),
            )
        })
}

/// Parses a JSON body strictly (unknown fields refused by the target type), with errors that say
/// what was wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not valid UTF-8",
        )
    })?;
    serde_json::from_str(text).map_err(|e| {
        let code = if e.is_data() {
            "invalid_request"
        } else {
            "invalid_json"
        };
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, code, &e.to_string())
    })
}

/// Binds and serves until SIGINT/SIGTERM.
pub async fn serve(
    store: Arc<dyn EventStore>,
    admin: web::Data<Admin>,
    gateway: web::Data<crate::inference::Gateway>,
    read: crate::analytics::ReadSide,
    hub: crate::events::EventHub,
    engine: Arc<switchyard_workflows::Engine>,
    listen: SocketAddr,
) -> anyhow::Result<()> {
    let read = web::Data::new(read);
    let hub = web::Data::new(hub);
    let store = web::Data::from(Arc::new(StoreHandle(store)));
    let engine = web::Data::from(engine);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(store.clone())
            .app_data(admin.clone())
            .app_data(gateway.clone())
            .app_data(read.clone())
            .app_data(hub.clone())
            .app_data(engine.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .wrap(actix_web::middleware::from_fn(observe))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
            .route("/openapi.json", web::get().to(openapi_json))
            .route("/v1/tenant", web::get().to(whoami))
            .configure(admin::routes)
            .configure(crate::inference::routes)
            .configure(crate::feedback::routes)
            .configure(crate::analytics::routes)
            .configure(crate::events::routes)
            .configure(crate::workflows::routes)
            .default_service(web::to(not_found))
    })
    .bind(listen)?;
    for addr in server.addrs() {
        tracing::info!(%addr, "listening");
        // The one line on stdout: scripts and tests read the bound address from it.
        #[expect(
            clippy::print_stdout,
            reason = "the bound address is the binary's output"
        )]
        {
            println!("switchyard listening on http://{addr}");
        }
    }
    server.run().await?;
    Ok(())
}

struct StoreHandle(Arc<dyn EventStore>);

/// Request ids, RED metrics, one log line per request, and the JSON error shape for every error
/// (including the ones actix-web answers itself: 404, 405, 413, malformed requests).
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, BoxBody>>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(uuid_v7, str::to_owned);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let origin = req.headers().get(header::ORIGIN).cloned();
    let tenant_api = req.path().starts_with("/v1/") && !req.path().starts_with("/v1/admin/");
    if tenant_api && origin.is_some() && req.method() == actix_web::http::Method::OPTIONS {
        // A preflight carries no key, so it cannot know the tenant: it is answered for any
        // origin, and the real answer carries CORS headers only for the tenant's origins.
        let response = HttpResponse::NoContent()
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                origin.clone().unwrap_or(HeaderValue::from_static("*")),
            ))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "GET, POST, PUT, DELETE",
            ))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "authorization, content-type, idempotency-key, x-request-id",
            ))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
            .insert_header((header::VARY, "Origin"))
            .finish();
        return Ok(req.into_response(response).map_into_right_body());
    }
    let cors_admin = origin
        .as_ref()
        .and_then(|_| req.app_data::<web::Data<Admin>>().cloned());
    let response = next.call(req).await?;
    let cors = match (&origin, &cors_admin) {
        (Some(origin), Some(admin)) if tenant_api => response
            .request()
            .extensions()
            .get::<Principal>()
            .map(|p| p.tenant)
            .filter(|tenant| {
                origin
                    .to_str()
                    .is_ok_and(|o| admin.keys.cors_allows(*tenant, o))
            })
            .map(|_| origin.clone()),
        _ => None,
    };
    let status = response.status();
    let mut response = if status.is_client_error() || status.is_server_error() {
        let (request, response) = response.into_parts();
        let code = response
            .error()
            .and_then(|e| e.as_error::<ApiError>())
            .map(|e| (e.code.clone(), e.message.clone()));
        let (code, message) = code.unwrap_or_else(|| {
            (
                Cow::Borrowed(status_code_name(status)),
                status.canonical_reason().unwrap_or("error").to_owned(),
            )
        });
        let mut body = error_body(status, &code, &message, Some(&request_id));
        // Keep what the error said in headers (Retry-After, x-ratelimit-*, WWW-Authenticate).
        for (name, value) in response.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                body.headers_mut().insert(name.clone(), value.clone());
            }
        }
        ServiceResponse::new(request, body).map_into_right_body()
    } else {
        response.map_into_left_body()
    };
    let elapsed = started.elapsed();
    HTTP.requests
        .with_label_values(&[&method, &route, status.as_str()])
        .inc();
    HTTP.seconds
        .with_label_values(&[&method, &route])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        request_id,
        method,
        route,
        status = status.as_u16(),
        micros = elapsed.as_micros() as u64,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if let Some(origin) = cors {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-request-id, x-switchyard-inference-id, x-switchyard-position, retry-after, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens"),
        );
    }
    Ok(response)
}

fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::UNAUTHORIZED => "unauthorized",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

fn uuid_v7() -> String {
    switchyard_events::EventId::new().to_string()
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "{status: ok}")))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The event log can take writes and be read.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "{status: ready, event_log_head}"), (status = 503, description = "not ready", body = ErrorBody)))]
async fn readyz(store: web::Data<StoreHandle>) -> Result<HttpResponse, ApiError> {
    match store.0.ready().await {
        Ok(head) => Ok(HttpResponse::Ok().json(json!({"status": "ready", "event_log_head": head}))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the event log is not reachable",
            ))
        }
    }
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text")))]
async fn metrics() -> Result<HttpResponse, ApiError> {
    let mut body = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&prometheus::gather(), &mut body)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot encode metrics");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot encode metrics",
            )
        })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body))
}

/// Authenticates a tenant-key request and applies the tenant's request rate limit. Returns the
/// principal and the `x-ratelimit-*` headers for the response.
pub async fn tenant_request(
    req: &HttpRequest,
    admin: &Admin,
) -> Result<(Principal, Vec<(HeaderName, HeaderValue)>), ApiError> {
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
    let principal = admin
        .keys
        .authenticate(
            &admin.secret.hash(presented),
            time::OffsetDateTime::now_utc(),
        )
        .map_err(|refusal| {
            let message = match refusal {
                Refusal::Unknown => "invalid API key",
                Refusal::Revoked => "this API key was revoked",
                Refusal::Expired => "this API key has expired",
                Refusal::Suspended => "the tenant is suspended",
            };
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        })?;
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
    let headers = enforce(&admin.limiter, &checks).await?;
    Ok((principal, headers))
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Requests,
    Tokens,
}

/// One tier's limit to take `cost` units from.
#[derive(Debug, Clone)]
pub struct Check {
    pub key: String,
    pub limit: Limit,
    pub cost: u64,
    pub unit: Unit,
}

impl Check {
    pub fn requests(key: String, per_minute: u32) -> Self {
        Check {
            key,
            limit: Limit::per_minute(u64::from(per_minute)),
            cost: 1,
            unit: Unit::Requests,
        }
    }

    pub fn tokens(key: String, per_minute: u64, cost: u64) -> Self {
        Check {
            key,
            limit: Limit::per_minute(per_minute),
            cost,
            unit: Unit::Tokens,
        }
    }
}

/// Takes every check's units, tier by tier; the first tier that refuses answers 429 with its
/// `Retry-After`. The `x-ratelimit-*` headers show the tightest tier of each unit. (Tiers
/// checked before a refusing one keep what they took: a refused request still counted there,
/// as in Envoy's and OpenAI's limiters.)
pub async fn enforce(
    limiter: &Limiter,
    checks: &[Check],
) -> Result<Vec<(HeaderName, HeaderValue)>, ApiError> {
    let mut tightest: [Option<Decision>; 2] = [None, None];
    for check in checks {
        let decision = limiter.check(&check.key, check.limit, check.cost).await;
        let slot = &mut tightest[check.unit as usize];
        if slot.is_none_or(|d| decision.remaining < d.remaining) || !decision.allowed {
            *slot = Some(decision);
        }
        if !decision.allowed {
            let mut headers = rate_headers(&tightest);
            let retry =
                decision.retry_after.as_secs() + u64::from(decision.retry_after.subsec_nanos() > 0);
            headers.push((header::RETRY_AFTER, HeaderValue::from(retry.max(1))));
            let what = match check.unit {
                Unit::Requests => "requests per minute",
                Unit::Tokens => "tokens per minute",
            };
            return Err(ApiError::owned(
                StatusCode::TOO_MANY_REQUESTS,
                Cow::Borrowed("rate_limited"),
                format!(
                    "{what} exceeded ({}); retry after Retry-After seconds",
                    check.key.split(':').next().unwrap_or("")
                ),
            )
            .with_headers(headers));
        }
    }
    Ok(rate_headers(&tightest))
}

/// OpenAI's header names: limit, remaining, and time until the limit is whole again, for
/// requests and for tokens.
fn rate_headers(tightest: &[Option<Decision>; 2]) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::with_capacity(6);
    for (decision, unit) in tightest.iter().zip(["requests", "tokens"]) {
        let Some(decision) = decision else { continue };
        let reset = format!("{:.3}s", decision.reset_after.as_secs_f64());
        for (name, value) in [
            ("limit", HeaderValue::from(decision.limit)),
            ("remaining", HeaderValue::from(decision.remaining)),
            (
                "reset",
                HeaderValue::from_str(&reset).unwrap_or(HeaderValue::from_static("0s")),
            ),
        ] {
            if let Ok(name) =
                HeaderName::from_bytes(format!("x-ratelimit-{name}-{unit}").as_bytes())
            {
                headers.push((name, value));
            }
        }
    }
    headers
}

/// Who a tenant key belongs to (lets a client check its key).
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "tenant_id, name, plan, key_id, scopes; x-ratelimit-* headers"),
        (status = 401, description = "missing, unknown, revoked or expired key, or suspended tenant", body = ErrorBody),
        (status = 429, description = "over the tenant's requests per minute (Retry-After)", body = ErrorBody)))]
async fn whoami(req: HttpRequest, admin: web::Data<Admin>) -> Result<HttpResponse, ApiError> {
    let (principal, rate) = tenant_request(&req, &admin).await?;
    let (state, _) = admin.tenants.read(&principal.tenant).await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "retry shortly",
        )
    })?;
    let mut response = HttpResponse::Ok();
    for header in rate {
        response.insert_header(header);
    }
    Ok(response.json(json!({
        "tenant_id": principal.tenant,
        "name": state.name,
        "plan": state.plan,
        "key_id": principal.key_id,
        "scopes": principal.scopes,
    })))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no such endpoint"))
}
