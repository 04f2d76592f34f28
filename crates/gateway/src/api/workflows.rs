//! Durable workflows over HTTP.
//!
//! - `POST /v1/workflows` (YAML or JSON body) registers a spec; `GET /v1/workflows` lists them.
//! - `POST /v1/fragments`, `POST /v1/tools`: reusable node definitions and HTTP tools.
//! - `POST /v1/workflows/{name}/runs` starts a run; `GET /v1/runs/{id}` (optionally waiting for
//!   its end), `GET /v1/runs/{id}/events` (JSON, or `?format=jsonl`: an episode file),
//!   `POST /v1/runs/{id}/signals`, `POST /v1/runs/{id}/cancel`.
//!
//! Steps are carried out by [`crate::executor::StepExecutor`].

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_events::JsonEvent;
use switchyard_workflows::spec::LoadOptions;
use switchyard_workflows::{Engine, Error as WorkflowError, StartOptions};
use uuid::Uuid;

use crate::http::idempotency::idempotent;
use crate::http::{ApiError, ErrorBody, parse_json, parse_query, scoped_request};
use crate::state::Admin;
use switchyard_inference::Principal;

/// The scope a key needs for the workflow endpoints (a key with no scopes may do anything).
pub const SCOPE: &str = "workflows";
/// The longest a request may wait for a run to end.
const MAX_WAIT: Duration = Duration::from_secs(60);

crate::api::endpoints! {
    post "/v1/workflows" => register,
    get "/v1/workflows" => list,
    get "/v1/workflows/{name}" => show,
    post "/v1/workflows/{name}/runs" => start,
    post "/v1/fragments" => register_fragment,
    post "/v1/tools" => register_tool,
    get "/v1/runs/{id}" => run,
    get "/v1/runs/{id}/events" => run_events,
    post "/v1/runs/{id}/signals" => signal,
    post "/v1/runs/{id}/cancel" => cancel,
}

async fn principal(req: &HttpRequest, admin: &Admin) -> Result<Principal, ApiError> {
    scoped_request(req, admin, &[SCOPE]).await.map(|(p, _)| p)
}

/// The workflow crate's errors as HTTP answers.
pub(crate) fn api_error(error: WorkflowError) -> ApiError {
    let (status, code) = match &error {
        WorkflowError::Spec(_) => (StatusCode::BAD_REQUEST, "invalid_spec"),
        WorkflowError::Schema { .. } | WorkflowError::Template { .. } => {
            (StatusCode::BAD_REQUEST, "invalid_request")
        }
        WorkflowError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        WorkflowError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        WorkflowError::Store(e) if e.is_transient() => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    if status.is_server_error() {
        tracing::error!(%error, "workflow request failed");
    }
    ApiError::owned(status, code.into(), error.to_string())
}

/// Refuses an unsigned registration where signatures are required (the environment's
/// `[registry]` or the tenant's setting `require_signatures`).
fn unsigned_allowed(admin: &Admin, tenant: switchyard_events::TenantId) -> Result<(), ApiError> {
    if admin.signatures_required(tenant) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "signature_required",
            "signed manifests only here: sign the definition with `switchyard registry sign` and publish it with `switchyard registry publish` (POST /v1/registry/manifests)",
        ));
    }
    Ok(())
}

fn text_body(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body is not UTF-8",
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterQuery {
    /// The environment whose overlay applies.
    env: Option<String>,
}

/// Registers a WorkflowSpec (YAML or JSON body). Answers its name and version.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"), ("env" = Option<String>, Query, description = "the environment whose overlay applies")),
    request_body(content = String, description = "a WorkflowSpec, YAML or JSON (schemas/workflow.schema.json)", content_type = "application/yaml"),
    responses((status = 201, description = "name, version, nodes"),
        (status = 400, description = "invalid_spec: every problem with its field and line", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `workflows` scope, or signatures are required (signature_required)", body = ErrorBody)))]
pub(crate) async fn register(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    unsigned_allowed(&admin, principal.tenant)?;
    let query: RegisterQuery = parse_query(&req)?;
    let text = text_body(&body)?;
    let tenant = principal.tenant.to_string();
    let name = admin.directory.name(principal.tenant).unwrap_or_default();
    let keys = [tenant.as_str(), name.as_str()];
    let options = LoadOptions {
        env: query.env.as_deref(),
        tenant: &keys,
    };
    let (name, version, spec) = engine
        .register_workflow(principal.tenant, text, options)
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Created().json(json!({
        "name": name,
        "version": version,
        "nodes": spec.nodes.iter().map(|n| json!({"id": n.id, "kind": n.kind})).collect::<Vec<_>>(),
    })))
}

#[utoipa::path(post, path = "/v1/fragments", tag = "workflows", params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    request_body(content = String, description = "{fragment: name, node: {…}}, YAML or JSON", content_type = "application/yaml"),
    responses((status = 201, description = "name, version"),
        (status = 400, description = "invalid_spec", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `workflows` scope, or signatures are required (signature_required)", body = ErrorBody)))]
pub(crate) async fn register_fragment(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    unsigned_allowed(&admin, principal.tenant)?;
    let (name, version) = engine
        .register_fragment(principal.tenant, text_body(&body)?)
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Created().json(json!({"name": name, "version": version})))
}

#[utoipa::path(post, path = "/v1/tools", tag = "workflows", params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    request_body(content = String, description = "{name, url, method?, timeout_ms?, max_attempts?, response_schema?, description?}, YAML or JSON", content_type = "application/yaml"),
    responses((status = 201, description = "name, version"),
        (status = 400, description = "invalid_spec", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `workflows` scope, or signatures are required (signature_required)", body = ErrorBody)))]
pub(crate) async fn register_tool(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    unsigned_allowed(&admin, principal.tenant)?;
    let (name, version) = engine
        .register_tool(principal.tenant, text_body(&body)?)
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Created().json(json!({"name": name, "version": version})))
}

#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "workflows with their version counts, tools, fragments"),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `workflows` scope", body = ErrorBody)))]
pub(crate) async fn list(
    req: HttpRequest,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    let catalog = engine.catalog(principal.tenant).await.map_err(api_error)?;
    let data: Vec<Value> = catalog
        .workflows
        .iter()
        .map(|(name, versions)| json!({"name": name, "versions": versions.len()}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "data": data,
        "tools": catalog.tools.keys().collect::<Vec<_>>(),
        "fragments": catalog.fragments.iter().map(|(n, v)| json!({"name": n, "versions": v.len()})).collect::<Vec<_>>(),
    })))
}

#[utoipa::path(get, path = "/v1/workflows/{name}", tag = "workflows",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"), ("name" = String, Path, description = "the workflow's name")),
    responses((status = 200, description = "name, version, the spec as loaded"),
        (status = 404, description = "no such workflow", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `workflows` scope", body = ErrorBody)))]
pub(crate) async fn show(
    req: HttpRequest,
    path: web::Path<String>,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    let catalog = engine.catalog(principal.tenant).await.map_err(api_error)?;
    let (version, spec) = catalog
        .workflow(&path, None)
        .ok_or_else(|| api_error(WorkflowError::NotFound(format!("no workflow `{path}`"))))?;
    Ok(HttpResponse::Ok().json(json!({"name": spec.name, "version": version, "spec": spec})))
}

/// `POST /v1/workflows/{name}/runs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRun {
    #[serde(default)]
    input: Value,
    version: Option<u32>,
    /// Re-execution knobs: `{"model": …}`, `{"models": {node: …}}`, `{"prompts": {node: …}}`.
    #[serde(default)]
    overrides: Option<Value>,
    /// Answer once the run ended (or this many milliseconds passed, at most 60,000).
    wait_ms: Option<u64>,
}

#[utoipa::path(post, path = "/v1/workflows/{name}/runs", tag = "workflows",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"), ("name" = String, Path, description = "the workflow's name")),
    request_body = StartRun,
    responses((status = 201, description = "run_id (or, with wait_ms, the run's state)"),
        (status = 400, description = "the input does not match the declared inputs", body = ErrorBody),
        (status = 404, description = "no such workflow or version", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `workflows` scope", body = ErrorBody)))]
pub(crate) async fn start(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    let request: StartRun = parse_json(&body)?;
    let overrides = request.overrides.unwrap_or_else(|| json!({}));
    check_overrides(&overrides)?;
    let engine = engine.into_inner();
    // With an `Idempotency-Key`, a retried start answers the first run instead of a second one.
    idempotent(
        admin.store.as_ref(),
        &req,
        principal.tenant,
        &body,
        |_| {},
        || async {
            let run_id = engine
                .start(
                    principal.tenant,
                    &path,
                    request.input,
                    StartOptions {
                        version: request.version,
                        overrides,
                        ..StartOptions::default()
                    },
                )
                .await
                .map_err(api_error)?;
            let mut answer = json!({"run_id": run_id});
            if let Some(wait) = request.wait_ms {
                let state = engine
                    .wait(
                        principal.tenant,
                        run_id,
                        Duration::from_millis(wait).min(MAX_WAIT),
                    )
                    .await
                    .map_err(api_error)?;
                answer = crate::views::run(&state);
            }
            Ok((StatusCode::CREATED, answer))
        },
    )
    .await
}

/// `workflow.start` over the event WebSocket: `{workflow, input?, version?, overrides?}`, with
/// the checks of `POST /v1/workflows/{name}/runs`. Answers the run id.
pub(crate) async fn start_over_socket(
    req: &HttpRequest,
    admin: &Admin,
    engine: Arc<Engine>,
    body: Value,
) -> Result<Uuid, ApiError> {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SocketStart {
        workflow: String,
        #[serde(default)]
        input: Value,
        version: Option<u32>,
        overrides: Option<Value>,
    }
    let principal = principal(req, admin).await?;
    let request: SocketStart = serde_json::from_value(body).map_err(|e| {
        ApiError::owned(
            StatusCode::BAD_REQUEST,
            "invalid_request".into(),
            format!("workflow.start: {e}"),
        )
    })?;
    let overrides = request.overrides.unwrap_or_else(|| json!({}));
    check_overrides(&overrides)?;
    engine
        .start(
            principal.tenant,
            &request.workflow,
            request.input,
            StartOptions {
                version: request.version,
                overrides,
                ..StartOptions::default()
            },
        )
        .await
        .map_err(api_error)
}

/// Overrides are an object of `model` (string), `models` and `prompts` (objects of strings) and
/// `policy` (a routing policy, as in the config's `[router] policy`).
fn check_overrides(overrides: &Value) -> Result<(), ApiError> {
    let bad = |message: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message);
    let Some(map) = overrides.as_object() else {
        return Err(bad("`overrides` is an object"));
    };
    for (key, value) in map {
        let ok = match key.as_str() {
            "model" => value.is_string(),
            "models" | "prompts" => value
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string)),
            "policy" => {
                if let Err(e) = serde_json::from_value::<switchyard_actors::router::policy::Policy>(
                    value.clone(),
                ) {
                    return Err(ApiError::owned(
                        StatusCode::BAD_REQUEST,
                        "invalid_request".into(),
                        format!("`overrides.policy` is not a routing policy: {e}"),
                    ));
                }
                true
            }
            _ => {
                return Err(bad(
                    "`overrides` takes `model`, `models`, `prompts` and `policy`",
                ));
            }
        };
        if !ok {
            return Err(bad(
                "`overrides.model` is a string; `models` and `prompts` map node ids to strings",
            ));
        }
    }
    Ok(())
}

fn run_id(path: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(path).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such run (run ids are UUIDs)",
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunQuery {
    /// Wait up to this many milliseconds for the run to end (at most 60,000).
    wait_ms: Option<u64>,
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "workflows",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"), ("id" = String, Path, description = "the run id"),
        ("wait_ms" = Option<u64>, Query, description = "wait up to this long for the run to end (≤ 60000)")),
    responses((status = 200, description = "the run's state: status, current node, steps, output, error, cost"),
        (status = 404, description = "no such run for this tenant", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `workflows` scope", body = ErrorBody)))]
pub(crate) async fn run(
    req: HttpRequest,
    path: web::Path<String>,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    let query: RunQuery = parse_query(&req)?;
    let run_id = run_id(&path)?;
    let state = match query.wait_ms {
        Some(wait) => {
            engine
                .wait(
                    principal.tenant,
                    run_id,
                    Duration::from_millis(wait).min(MAX_WAIT),
                )
                .await
        }
        None => engine.state(principal.tenant, run_id).await,
    }
    .map_err(api_error)?;
    Ok(HttpResponse::Ok().json(crate::views::run(&state)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// `json` (default) or `jsonl` (an episode file for `switchyard replay`).
    format: Option<EventsFormat>,
}

/// The form of a run's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EventsFormat {
    Json,
    Jsonl,
}

#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "workflows",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"), ("id" = String, Path, description = "the run id"),
        ("format" = Option<EventsFormat>, Query, description = "json (default) or jsonl (an episode file)")),
    responses((status = 200, description = "the run's events, every segment"),
        (status = 404, description = "no such run for this tenant", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `workflows` scope", body = ErrorBody)))]
pub(crate) async fn run_events(
    req: HttpRequest,
    path: web::Path<String>,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    let query: EventsQuery = parse_query(&req)?;
    let run_id = run_id(&path)?;
    let events = engine
        .events(principal.tenant, run_id)
        .await
        .map_err(api_error)?;
    match query.format.unwrap_or(EventsFormat::Json) {
        EventsFormat::Json => {
            let data: Vec<JsonEvent> = events
                .iter()
                .filter_map(|e| JsonEvent::from_recorded(e).ok())
                .collect();
            Ok(HttpResponse::Ok().json(json!({"data": data})))
        }
        EventsFormat::Jsonl => {
            let text = switchyard_workflows::replay::episode_text(&events).map_err(api_error)?;
            Ok(HttpResponse::Ok()
                .content_type("application/x-ndjson")
                .body(text))
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Signal {
    name: String,
    #[serde(default)]
    payload: Value,
}

#[utoipa::path(post, path = "/v1/runs/{id}/signals", tag = "workflows",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"), ("id" = String, Path, description = "the run id")),
    request_body = Signal,
    responses((status = 202, description = "recorded"),
        (status = 400, description = "a bad name, or a payload that does not fit the human_input's schema", body = ErrorBody),
        (status = 404, description = "no such run for this tenant", body = ErrorBody),
        (status = 409, description = "the run has ended", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `workflows` scope", body = ErrorBody)))]
pub(crate) async fn signal(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    let run_id = run_id(&path)?;
    let signal: Signal = parse_json(&body)?;
    engine
        .into_inner()
        .signal(principal.tenant, run_id, &signal.name, signal.payload)
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Accepted().json(json!({"run_id": run_id, "signal": signal.name})))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cancel {
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "workflows",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"), ("id" = String, Path, description = "the run id")),
    request_body = Cancel,
    responses((status = 202, description = "cancelling: compensations run, then the run ends cancelled"),
        (status = 404, description = "no such run for this tenant", body = ErrorBody),
        (status = 409, description = "the run has ended", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `workflows` scope", body = ErrorBody)))]
pub(crate) async fn cancel(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    let run_id = run_id(&path)?;
    let cancel: Cancel = if body.is_empty() {
        Cancel { reason: None }
    } else {
        parse_json(&body)?
    };
    let reason = cancel
        .reason
        .unwrap_or_else(|| "cancelled by request".into());
    engine
        .into_inner()
        .cancel(principal.tenant, run_id, &reason)
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Accepted().json(json!({"run_id": run_id, "cancelling": true})))
}
