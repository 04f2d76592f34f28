//! The HTTP surfaces, one module per API. Each registers its routes and documents them for
//! the OpenAPI document; they build on the plumbing in `crate::http`, never the other way.

/// `/v1/admin/...`: tenants, limits, API keys, settings, flags (admin token).
pub mod admin;
/// `/v1/analytics/...`, `/v1/billing/...`, `/v1/inferences`: the read models.
pub mod analytics;
/// `/v1/documents`, `/v1/retrieve`: ingestion and retrieval.
pub mod documents;
/// `/v1/events/stream` (SSE) and `/v1/events/ws` (WebSocket): the tenant's event feed.
pub mod events;
/// `/v1/feedback`, `/v1/router/arms`, `/v1/router/evaluate`: the router's rewards and reports.
pub mod feedback;
/// `/v1/models`, `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: the
/// OpenAI-compatible API.
pub mod openai;
/// `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/v1/tenant`.
pub mod ops;
/// `/v1/registry/...`: signed manifests of tools, workflows, fragments and prompts.
pub mod registry;
/// The bodies `POST /v1/documents` takes: raw, multipart, or a URL to fetch.
mod uploads;
/// `/v1/workflows`, `/v1/fragments`, `/v1/tools`, `/v1/runs/...`: durable workflows.
pub mod workflows;

/// The route tables compared with the OpenAPI document.
#[cfg(test)]
mod tests;

use actix_web::web;

// Every route the server serves is in one table per surface: the table is what `configure`
// registers and what the OpenAPI test compares with `/openapi.json`, so a route cannot be
// served without being checked against the document.

/// One registered route: its method (lower case, as OpenAPI writes it) and its path pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
}

/// Declares a surface's routes once, as `method "path" => handler`: `ENDPOINTS` lists them and
/// `routes` registers exactly those, in that order.
macro_rules! endpoints {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// This surface's routes, as [`routes`] registers them.
        pub const ENDPOINTS: &[$crate::api::Endpoint] = &[
            $($crate::api::Endpoint { method: stringify!($method), path: $path }),*
        ];

        /// Registers this surface's routes.
        pub fn routes(config: &mut actix_web::web::ServiceConfig) {
            $(config.route($path, actix_web::web::$method().to($handler));)*
        }
    };
}
pub(crate) use endpoints;

/// A surface: its route table and the function that registers it.
type Surface = (&'static [Endpoint], fn(&mut web::ServiceConfig));

/// Every surface, in registration order. actix tries routes in this order, and a path with a
/// `{segment}` is matched by a regex: the surfaces whose paths are all static and that every
/// request of the hot path hits (the OpenAI surface, then ops and feedback) come first, so a
/// completion is routed by string comparisons alone, never by the admin routes' regexes.
const SURFACES: [Surface; 9] = [
    (openai::ENDPOINTS, openai::routes),
    (ops::ENDPOINTS, ops::routes),
    (feedback::ENDPOINTS, feedback::routes),
    (admin::ENDPOINTS, admin::routes),
    (analytics::ENDPOINTS, analytics::routes),
    (events::ENDPOINTS, events::routes),
    (workflows::ENDPOINTS, workflows::routes),
    (registry::ENDPOINTS, registry::routes),
    (documents::ENDPOINTS, documents::routes),
];

/// Registers every surface's routes.
pub fn configure(config: &mut web::ServiceConfig) {
    for (_, routes) in SURFACES {
        config.configure(routes);
    }
}

/// Every route `configure` registers.
#[cfg(test)]
pub(crate) fn registered() -> impl Iterator<Item = Endpoint> {
    SURFACES
        .into_iter()
        .flat_map(|(endpoints, _)| endpoints.iter().copied())
}

/// The OpenAPI document of this server, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "Multi-tenant AI platform. Admin endpoints take `Authorization: Bearer <admin token>`; tenant endpoints a tenant API key. Errors are {\"error\": {code, message, request_id}}."
    ),
    modifiers(&CommonResponses),
    paths(
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::whoami,
        ops::openapi_json,
        admin::tenants::create_tenant,
        admin::tenants::list_tenants,
        admin::tenants::get_tenant,
        admin::tenants::suspend_tenant,
        admin::tenants::resume_tenant,
        admin::tenants::delete_tenant,
        admin::limits::set_limits,
        admin::keys::issue_key,
        admin::keys::revoke_key,
        admin::keys::rotate_key,
        admin::limits::set_key_limits,
        admin::limits::set_model_limits,
        admin::limits::set_setting,
        admin::limits::set_flag,
        admin::router::get_routing,
        admin::router::set_routing,
        admin::router::reset_routing,
        admin::router::promote_split,
        admin::router::roll_back_split,
        admin::audit::audit_log,
        admin::captures::export_captures,
        admin::captures::delete_captures,
        openai::list_models,
        openai::chat_completions,
        openai::completions,
        openai::responses,
        openai::embeddings,
        feedback::feedback,
        feedback::evaluate_policy,
        feedback::arms,
        analytics::usage,
        analytics::latency,
        analytics::spend,
        analytics::router,
        analytics::billing_usage,
        analytics::invoices,
        analytics::invoice,
        admin::billing::publish_price_book,
        admin::billing::list_price_books,
        admin::billing::export_invoices,
        admin::billing::reprice,
        admin::billing::get_invoice,
        admin::billing::close_invoice,
        admin::billing::mark_paid,
        admin::billing::issue_credit_note,
        admin::billing::set_billing_day,
        admin::flags::list_flags,
        admin::flags::set_flag,
        admin::flags::delete_flag,
        admin::flags::evaluate_flag,
        analytics::inferences,
        analytics::workflows,
        events::stream,
        events::ws::websocket,
        workflows::register,
        workflows::list,
        workflows::show,
        workflows::start,
        workflows::register_fragment,
        workflows::register_tool,
        workflows::run,
        workflows::run_events,
        workflows::signal,
        workflows::cancel,
        registry::publish,
        registry::list,
        registry::show,
        documents::upload,
        documents::list,
        documents::show,
        documents::remove,
        documents::retrieve
    ),
    components(schemas(
        crate::http::ErrorBody,
        crate::http::ErrorDetail,
        admin::tenants::CreateTenant,
        admin::tenants::Suspend,
        admin::tenants::Delete,
        admin::limits::SetLimits,
        admin::keys::IssueKey,
        admin::keys::RotateKey,
        admin::limits::SetRateLimits,
        admin::limits::SetSetting,
        admin::limits::SetFlag,
        admin::flags::EvaluateFlag,
        admin::router::RoutingSchema,
        admin::router::SplitSchema,
        admin::router::RewardSchema,
        switchyard_inference::openai::ChatRequest,
        switchyard_inference::openai::CompletionRequest,
        switchyard_inference::openai::ResponsesRequest,
        switchyard_inference::openai::CacheOptions,
        switchyard_inference::openai::Message,
        switchyard_inference::openai::Role,
        switchyard_inference::openai::StreamOptions,
        switchyard_inference::openai::EmbeddingsRequest,
        feedback::Feedback,
        feedback::Evaluate,
        feedback::PolicySchema,
        workflows::StartRun,
        workflows::EventsFormat,
        workflows::Signal,
        workflows::Cancel,
        documents::Retrieve,
        documents::Filters
    ))
)]
pub struct ApiDoc;

/// Documents the answers that come from shared plumbing rather than from one handler, on every
/// operation that can give them, unless its own annotation says more:
///
/// - a tenant route (it takes a tenant key in `Authorization`): 401 (no or a bad key), 403 (the
///   key lacks the route's scope), 429 (too many failed keys from one address);
/// - an admin route: 401 (no or a bad admin token);
/// - a body: 400 (not JSON, or not readable) and 422 (JSON of the wrong shape);
/// - query parameters: 400 (a parameter of the wrong form, or an unknown one);
/// - `Idempotency-Key`: 400 (an empty or overlong key), 409 (the same key in progress), 422
///   (the same key with another request);
/// - `min_position` (read-your-writes): 503 when the read model does not reach it in time.
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{Operation, ParameterIn};
        use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};

        fn add(operation: &mut Operation, status: &str, description: &str) {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| {
                    RefOr::T(
                        ResponseBuilder::new()
                            .description(description)
                            .content(
                                "application/json",
                                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                            )
                            .build(),
                    )
                });
        }

        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let params: Vec<(String, bool)> = operation
                    .parameters
                    .iter()
                    .flatten()
                    .filter_map(|p| match p {
                        RefOr::T(p) => Some((p.name.clone(), p.parameter_in == ParameterIn::Query)),
                        RefOr::Ref(_) => None,
                    })
                    .collect();
                let has = |name: &str| params.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
                if path.starts_with("/v1/admin/") {
                    add(operation, "401", "missing or invalid admin token");
                } else if has("Authorization") {
                    add(operation, "401", "missing or invalid key");
                    add(operation, "403", "the key lacks this route's scope");
                    add(
                        operation,
                        "429",
                        "too_many_auth_failures: too many failed keys from this address (Retry-After)",
                    );
                }
                if operation.request_body.is_some() {
                    add(operation, "400", "the body is not valid JSON (or YAML)");
                    add(
                        operation,
                        "422",
                        "the body does not have the expected shape",
                    );
                }
                if params.iter().any(|(_, query)| *query) {
                    add(
                        operation,
                        "400",
                        "a query parameter is malformed or unknown",
                    );
                }
                if has("Idempotency-Key") {
                    add(operation, "400", "invalid_idempotency_key");
                    add(
                        operation,
                        "409",
                        "request_in_progress: the same key is being served",
                    );
                    add(
                        operation,
                        "422",
                        "idempotency_key_reused: the same key with another request",
                    );
                }
                if has("min_position") {
                    add(
                        operation,
                        "503",
                        "projection_lag: the read model did not reach min_position in time (Retry-After)",
                    );
                }
            }
        }
    }
}
