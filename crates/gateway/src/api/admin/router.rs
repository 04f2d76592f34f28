//! A tenant's own routing: its policy, candidates, exploration floor, reward weights, splits and
//! shadow policies, set without a restart (event `RouterConfigured` on `router-<tenant>`, decided
//! by the tenant's router actor at the head of its stream, so two nodes never lose an update).
//! Every change is a new revision, returned as the `ETag`; `If-Match` makes a write conditional.

use actix_web::http::header::{ETAG, HeaderName, HeaderValue, IF_MATCH};
use switchyard_actors::router::{RouterCommand, RouterRejection, RouterState, Routing};
use switchyard_inference::Pipeline;

use super::*;
use crate::api::feedback::PolicySchema;
use crate::http::idempotency::{Reply, idempotent_with};

/// Attempts of a read-modify-write (promote, roll back) that lost a race to another writer.
const ATTEMPTS: usize = 5;

/// The document's form of a routing (`switchyard_actors::router::Routing`, which the body is
/// read as).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "documents the shape only")]
pub(crate) struct RoutingSchema {
    /// The policy that serves `auto` outside the splits.
    policy: PolicySchema,
    /// Models `auto` may choose (all the server's models when empty).
    candidates: Option<Vec<String>>,
    /// Smallest probability of each candidate (default 0.02).
    #[schema(minimum = 0.0, maximum = 0.5)]
    min_exploration: Option<f64>,
    /// Canary splits: a sticky share of keys (or `user`s) served by another policy.
    splits: Option<Vec<SplitSchema>>,
    /// Policies that choose without serving, to be judged offline.
    shadow: Option<Vec<PolicySchema>>,
    /// Reward weights (defaults: quality 1, cost 0.5, latency 0.1).
    reward: Option<RewardSchema>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "documents the shape only")]
pub(crate) struct SplitSchema {
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    name: String,
    #[schema(minimum = 0.0, maximum = 1.0)]
    share: f64,
    policy: PolicySchema,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "documents the shape only")]
pub(crate) struct RewardSchema {
    #[schema(minimum = 0.0, maximum = 100.0)]
    quality: Option<f64>,
    #[schema(minimum = 0.0, maximum = 100.0)]
    cost: Option<f64>,
    #[schema(minimum = 0.0, maximum = 100.0)]
    latency: Option<f64>,
}

/// The view of a tenant's routing: the document in force, whose it is, and its revision.
fn routing_view(tenant: TenantId, pipeline: &Pipeline, state: &RouterState) -> serde_json::Value {
    json!({
        "tenant": tenant,
        "revision": state.revision,
        "source": if state.routing.is_some() { "tenant" } else { "server" },
        "routing": pipeline.router.routing(state),
    })
}

fn etag(body: &serde_json::Value) -> Vec<(HeaderName, HeaderValue)> {
    body["revision"]
        .as_u64()
        .and_then(|r| HeaderValue::from_str(&format!("\"{r}\"")).ok())
        .map(|v| vec![(ETAG, v)])
        .unwrap_or_default()
}

/// A 200 answer of a routing view, its revision as the ETag.
fn with_etag(body: serde_json::Value) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    for header in etag(&body) {
        response.insert_header(header);
    }
    response.json(body)
}

/// The revision `If-Match` demands (`*` or absent: none).
fn if_match(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(value) = req.headers().get(IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "If-Match must be a revision as the ETag gives it (\"3\") or *",
            )
        })
}

fn router_rejected(error: ActorError<RouterRejection>) -> ApiError {
    match error {
        ActorError::Rejected(RouterRejection::Invalid(message)) => ApiError::owned(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request".into(),
            message,
        ),
        ActorError::Rejected(RouterRejection::Stale { current }) => ApiError::owned(
            StatusCode::PRECONDITION_FAILED,
            "stale_revision".into(),
            format!("the routing is at revision {current}; read it again and retry"),
        ),
        other => not_decided(other, "the router is busy; retry shortly"),
    }
}

/// A live tenant, or 404.
async fn live_tenant(admin: &Admin, raw: &str) -> Result<TenantId, ApiError> {
    let tenant = tenant_id(raw)?;
    let (state, _) = admin.tenants.read(&tenant).await.map_err(rejected)?;
    if !state.created || state.deleted {
        return Err(ApiError::not_found("no such tenant"));
    }
    Ok(tenant)
}

/// The tenant's router state at the head of its stream (not the cache, which may lag).
async fn head(pipeline: &Pipeline, tenant: TenantId) -> Result<RouterState, ApiError> {
    let (state, _) = pipeline
        .router
        .runtime
        .read(&tenant)
        .await
        .map_err(router_rejected)?;
    Ok(state)
}

/// Checks a document against the server's models.
fn check(pipeline: &Pipeline, routing: &Routing) -> Result<(), ApiError> {
    routing
        .validate(|m| pipeline.config.model(m).is_some())
        .map_err(|message| {
            ApiError::owned(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request".into(),
                message,
            )
        })
}

/// Sends a configuration and makes the change visible on this node at once.
async fn configure(
    req: &HttpRequest,
    pipeline: &Pipeline,
    tenant: TenantId,
    routing: Option<Routing>,
    expected_revision: Option<u64>,
    change: String,
) -> Result<RouterState, ActorError<RouterRejection>> {
    let applied = pipeline
        .router
        .runtime
        .send(
            &tenant,
            RouterCommand::Configure {
                routing,
                expected_revision,
                change: change.clone(),
            },
            metadata(req),
        )
        .await?;
    if !applied.events.is_empty() {
        tracing::info!(%tenant, revision = applied.state.revision, %change, "tenant routing changed");
        CHANGES.with_label_values(&[kind(&change)]).inc();
    }
    pipeline
        .router
        .write_through(tenant, applied.version, applied.state.clone());
    Ok(applied.state)
}

/// The metric label of a change (`promote:canary` counts as `promote`).
fn kind(change: &str) -> &str {
    change.split(':').next().unwrap_or(change)
}

/// Tenant routing revisions written, by kind of change.
#[expect(
    clippy::expect_used,
    reason = "a static metric definition; a bad one fails every test"
)]
static CHANGES: std::sync::LazyLock<prometheus::IntCounterVec> = std::sync::LazyLock::new(|| {
    let counter = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "switchyard_routing_changes_total",
            "Tenant routing revisions written, by kind of change (set, reset, promote, rollback)",
        ),
        &["change"],
    )
    .expect("valid metric");
    let _ = prometheus::register(Box::new(counter.clone()));
    counter
});

/// `GET /v1/admin/tenants/{id}/router`: the routing in force for the tenant.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/router", tag = "admin",
    params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, description = "the routing in force: `source` is `tenant` (its own) or `server` (the config's); `revision` is also the ETag"),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody)))]
pub(crate) async fn get_routing(
    req: HttpRequest,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admit(&req, &admin, &path, Access::Read).await?;
    let tenant = live_tenant(&admin, &path).await?;
    let state = head(&pipeline, tenant).await?;
    Ok(with_etag(routing_view(tenant, &pipeline, &state)))
}

/// `PUT /v1/admin/tenants/{id}/router`: replaces the tenant's routing (a new revision, in force
/// on every node without a restart; the same document again is no new revision).
#[utoipa::path(put, path = "/v1/admin/tenants/{id}/router", tag = "admin", request_body = RoutingSchema,
    params(("id" = String, Path, description = "tenant id"),
        ("If-Match" = Option<String>, Header, description = "only if the routing is still at this revision (the ETag)")),
    responses((status = 200, description = "the routing now in force, with its revision (also the ETag)"),
        (status = 400, description = "malformed JSON or If-Match", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 412, description = "the routing is no longer at the If-Match revision", body = ErrorBody),
        (status = 422, description = "not a routing document, or an invalid one (unknown model, shares above 1, bad knobs)", body = ErrorBody)))]
pub(crate) async fn set_routing(
    req: HttpRequest,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    admit(&req, &admin, &path, Access::Write).await?;
    let tenant = live_tenant(&admin, &path).await?;
    let expected = if_match(&req)?;
    let routing: Routing = parse_json(&body)?;
    check(&pipeline, &routing)?;
    let state = configure(
        &req,
        &pipeline,
        tenant,
        Some(routing),
        expected,
        "set".into(),
    )
    .await
    .map_err(router_rejected)?;
    Ok(with_etag(routing_view(tenant, &pipeline, &state)))
}

/// `DELETE /v1/admin/tenants/{id}/router`: the tenant goes back to the server's routing.
#[utoipa::path(delete, path = "/v1/admin/tenants/{id}/router", tag = "admin",
    params(("id" = String, Path, description = "tenant id"),
        ("If-Match" = Option<String>, Header, description = "only if the routing is still at this revision (the ETag)")),
    responses((status = 200, description = "the server's routing, now in force for the tenant"),
        (status = 400, description = "malformed If-Match", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 412, description = "the routing is no longer at the If-Match revision", body = ErrorBody)))]
pub(crate) async fn reset_routing(
    req: HttpRequest,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admit(&req, &admin, &path, Access::Write).await?;
    let tenant = live_tenant(&admin, &path).await?;
    let expected = if_match(&req)?;
    let state = configure(&req, &pipeline, tenant, None, expected, "reset".into())
        .await
        .map_err(router_rejected)?;
    Ok(with_etag(routing_view(tenant, &pipeline, &state)))
}

/// What to do with a split.
#[derive(Debug, Clone, Copy)]
enum SplitAction {
    Promote,
    RollBack,
}

async fn on_split(
    req: HttpRequest,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
    path: web::Path<(String, String)>,
    action: SplitAction,
) -> Result<HttpResponse, ApiError> {
    let (tenant, split) = path.into_inner();
    admit(&req, &admin, &tenant, Access::Write).await?;
    let tenant = live_tenant(&admin, &tenant).await?;
    let expected = if_match(&req)?;
    idempotent_with(
        admin.store.as_ref(),
        &req,
        TenantId::SYSTEM,
        split.as_bytes(),
        keep,
        etag,
        || async {
            // Read, change, write at that revision; a write in between means read again.
            for _ in 0..ATTEMPTS {
                let state = head(&pipeline, tenant).await?;
                if expected.is_some_and(|e| e != state.revision) {
                    return Err(router_rejected(ActorError::Rejected(
                        RouterRejection::Stale {
                            current: state.revision,
                        },
                    )));
                }
                let current = pipeline.router.routing(&state);
                let (next, change) = match action {
                    SplitAction::Promote => (current.promoted(&split), "promote"),
                    SplitAction::RollBack => (current.rolled_back(&split), "rollback"),
                };
                let Some(next) = next else {
                    return Err(ApiError::owned(
                        StatusCode::NOT_FOUND,
                        "not_found".into(),
                        format!("the tenant's routing has no split named {split:?}"),
                    ));
                };
                check(&pipeline, &next)?;
                match configure(
                    &req,
                    &pipeline,
                    tenant,
                    Some(next),
                    Some(state.revision),
                    format!("{change}:{split}"),
                )
                .await
                {
                    Ok(state) => {
                        return Ok(Reply::new(
                            StatusCode::OK,
                            routing_view(tenant, &pipeline, &state),
                        ));
                    }
                    Err(ActorError::Rejected(RouterRejection::Stale { .. })) => continue,
                    Err(error) => return Err(router_rejected(error)),
                }
            }
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the routing kept changing under this request; retry shortly",
            ))
        },
    )
    .await
}

/// `POST /v1/admin/tenants/{id}/router/splits/{split}/promote`: the split's policy serves all
/// of the tenant's traffic (the split is removed). From the server's routing, when the tenant
/// has none of its own, the result becomes the tenant's.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/router/splits/{split}/promote", tag = "admin",
    params(("id" = String, Path, description = "tenant id"), ("split" = String, Path, description = "split name"),
        ("If-Match" = Option<String>, Header, description = "only if the routing is still at this revision (the ETag)"),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key get the same response")),
    responses((status = 200, description = "the routing now in force"),
        (status = 400, description = "malformed If-Match", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant or split", body = ErrorBody),
        (status = 412, description = "the routing is no longer at the If-Match revision", body = ErrorBody)))]
pub(crate) async fn promote_split(
    req: HttpRequest,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    on_split(req, admin, pipeline, path, SplitAction::Promote).await
}

/// `POST /v1/admin/tenants/{id}/router/splits/{split}/rollback`: the split is removed and its
/// traffic goes back to the serving policy.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/router/splits/{split}/rollback", tag = "admin",
    params(("id" = String, Path, description = "tenant id"), ("split" = String, Path, description = "split name"),
        ("If-Match" = Option<String>, Header, description = "only if the routing is still at this revision (the ETag)"),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key get the same response")),
    responses((status = 200, description = "the routing now in force"),
        (status = 400, description = "malformed If-Match", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tenant or split", body = ErrorBody),
        (status = 412, description = "the routing is no longer at the If-Match revision", body = ErrorBody)))]
pub(crate) async fn roll_back_split(
    req: HttpRequest,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    on_split(req, admin, pipeline, path, SplitAction::RollBack).await
}
