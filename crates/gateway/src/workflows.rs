//! Durable workflows over HTTP, and the executor that carries out their calls.
//!
//! - `POST /v1/workflows` (YAML or JSON body) registers a spec; `GET /v1/workflows` lists them.
//! - `POST /v1/fragments`, `POST /v1/tools`: reusable node definitions and HTTP tools.
//! - `POST /v1/workflows/{name}/runs` starts a run; `GET /v1/runs/{id}` (optionally waiting for
//!   its end), `GET /v1/runs/{id}/events` (JSON, or `?format=jsonl`: an episode file),
//!   `POST /v1/runs/{id}/signals`, `POST /v1/runs/{id}/cancel`.
//!
//! `llm` steps go through [`crate::inference::complete`] (routing, limits, budget, billing and
//! the inference's events, as for any request); `tool` steps are HTTP calls with the step's
//! idempotency key in an `Idempotency-Key` header.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_events::JsonEvent;
use switchyard_workflows::spec::LoadOptions;
use switchyard_workflows::{
    Engine, Error as WorkflowError, Executor, StartOptions, StepCall, StepError, StepOutput,
};
use uuid::Uuid;

use crate::admin::Admin;
use crate::http::{ApiError, ErrorBody, parse_json, parse_query, tenant_request};
use crate::inference::Gateway;
use crate::keys::Principal;
use crate::openai::ChatRequest;

/// The scope a key needs for the workflow endpoints (a key with no scopes may do anything).
pub const SCOPE: &str = "workflows";
/// The longest a request may wait for a run to end.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The largest tool answer read.
const MAX_TOOL_RESPONSE: usize = 1 << 20;

/// Carries out `llm` and `tool` calls for the engine.
pub struct StepExecutor {
    admin: web::Data<Admin>,
    gateway: web::Data<Gateway>,
    http: reqwest::Client,
    /// Refuse tools on loopback and private addresses too (`SWITCHYARD_TOOLS_PUBLIC_ONLY`).
    public_only: bool,
}

impl std::fmt::Debug for StepExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepExecutor").finish_non_exhaustive()
    }
}

impl StepExecutor {
    pub fn new(admin: web::Data<Admin>, gateway: web::Data<Gateway>) -> anyhow::Result<Self> {
        Ok(StepExecutor {
            admin,
            gateway,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                // A redirect could lead past the address check below.
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            public_only: std::env::var("SWITCHYARD_TOOLS_PUBLIC_ONLY").is_ok_and(|v| v == "1"),
        })
    }

    /// Refuses tool hosts on link-local addresses (cloud metadata endpoints), unspecified,
    /// multicast or broadcast ones, and with `public_only` loopback and private ones.
    async fn check_host(&self, url: &reqwest::Url) -> Result<(), StepError> {
        let refuse = |message: String| StepError {
            message,
            retryable: false,
        };
        let host = url
            .host_str()
            .ok_or_else(|| refuse("the tool's URL has no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addresses = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| StepError {
                message: format!("cannot resolve {host}: {e}"),
                retryable: true,
            })?;
        for address in addresses {
            let ip = address.ip();
            let (forbidden, private) = match ip {
                std::net::IpAddr::V4(v4) => (
                    v4.is_link_local()
                        || v4.is_unspecified()
                        || v4.is_multicast()
                        || v4.is_broadcast(),
                    v4.is_loopback() || v4.is_private(),
                ),
                std::net::IpAddr::V6(v6) => (
                    v6.is_unicast_link_local() || v6.is_unspecified() || v6.is_multicast(),
                    v6.is_loopback() || v6.is_unique_local(),
                ),
            };
            if forbidden || (self.public_only && private) {
                return Err(refuse(format!(
                    "tool host {host} resolves to {ip}, which tools may not reach"
                )));
            }
        }
        Ok(())
    }

    async fn llm(&self, call: &StepCall) -> Result<StepOutput, StepError> {
        let r = &call.request;
        let body = json!({
            "model": r["model"],
            "messages": r["messages"],
            "max_tokens": r.get("max_tokens").filter(|v| !v.is_null()),
            "temperature": r.get("temperature").filter(|v| !v.is_null()),
            // `output: json`: ask for JSON mode (the answer is parsed either way).
            "response_format": (r["output"] == "json").then(|| json!({"type": "json_object"})),
        });
        let request: ChatRequest = serde_json::from_value(body).map_err(|e| StepError {
            message: format!("invalid model request: {e}"),
            retryable: false,
        })?;
        request.validate().map_err(|e| StepError {
            message: e.message().to_owned(),
            retryable: false,
        })?;
        if self.admin.keys.is_suspended(call.tenant) {
            return Err(StepError {
                message: "the tenant is suspended".into(),
                retryable: false,
            });
        }
        // The tenant's request limit holds for its runs as for its keys (429: retried later).
        if let Some(rpm) = self
            .admin
            .keys
            .tenant_limits(call.tenant)
            .requests_per_minute
        {
            let checks = [crate::http::Check::requests(
                format!("rpm:{}", call.tenant),
                rpm,
            )];
            crate::http::enforce(&self.admin.limiter, &checks)
                .await
                .map_err(|e| StepError {
                    message: e.message().to_owned(),
                    retryable: true,
                })?;
        }
        // Runs act for their tenant, not for a key: the nil key id stands for the engine.
        let principal = Principal {
            tenant: call.tenant,
            key_id: Uuid::nil(),
            scopes: Vec::new(),
        };
        let Some(_slot) = self.gateway.resilience.tenant_slot(call.tenant) else {
            return Err(StepError {
                message: "the tenant has its most requests in flight".into(),
                retryable: true,
            });
        };
        // A re-execution under another routing policy (`overrides.policy`, for `model: auto`).
        let policy: Option<switchyard_actors::router::policy::Policy> = r
            .get("policy")
            .filter(|p| !p.is_null())
            .map(|p| serde_json::from_value(p.clone()))
            .transpose()
            .map_err(|e| StepError {
                message: format!("invalid routing policy: {e}"),
                retryable: false,
            })?;
        let done = crate::inference::complete(
            Some(call.run_id.to_string()),
            &self.admin,
            &self.gateway,
            &principal,
            &request,
            policy.as_ref(),
        )
        .await
        .map_err(|e| StepError {
            message: format!("{} ({})", e.message(), e.status().as_u16()),
            retryable: e.status() == StatusCode::TOO_MANY_REQUESTS || e.status().is_server_error(),
        })?;
        let text = done.body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let output = if r["output"] == "json" {
            parse_json_answer(&text).ok_or_else(|| StepError {
                message: format!(
                    "the model's answer is not JSON: {}",
                    text.chars().take(200).collect::<String>()
                ),
                retryable: true,
            })?
        } else {
            Value::String(text)
        };
        Ok(StepOutput {
            output,
            inference_id: Some(done.inference_id),
            cost_micros: done.cost_micros,
        })
    }

    async fn tool(&self, call: &StepCall) -> Result<StepOutput, StepError> {
        let Some(tool) = &call.tool else {
            return Err(StepError {
                message: "no tool definition".into(),
                retryable: false,
            });
        };
        let method =
            reqwest::Method::from_bytes(tool.method.as_bytes()).map_err(|e| StepError {
                message: e.to_string(),
                retryable: false,
            })?;
        let args = call.request.get("args").cloned().unwrap_or(Value::Null);
        let mut url = reqwest::Url::parse(&tool.url).map_err(|e| StepError {
            message: format!("tool `{}`: bad url: {e}", tool.name),
            retryable: false,
        })?;
        self.check_host(&url).await?;
        if method == reqwest::Method::GET
            && let Some(map) = args.as_object()
        {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in map {
                pairs.append_pair(key, value.as_str().map_or(&value.to_string(), |s| s));
            }
        }
        let mut request = self
            .http
            .request(method.clone(), url)
            .timeout(call.timeout)
            .header("idempotency-key", &call.idempotency_key)
            .header("x-switchyard-run", call.run_id.to_string())
            .header("x-switchyard-step", &call.step);
        if method != reqwest::Method::GET {
            request = request.json(&args);
        }
        let response = request.send().await.map_err(|e| StepError {
            message: format!("tool `{}`: {e}", tool.name),
            retryable: true,
        })?;
        let status = response.status();
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| StepError {
            message: format!("tool `{}`: {e}", tool.name),
            retryable: true,
        })? {
            if bytes.len() + chunk.len() > MAX_TOOL_RESPONSE {
                return Err(StepError {
                    message: format!(
                        "tool `{}` answered more than {MAX_TOOL_RESPONSE} bytes",
                        tool.name
                    ),
                    retryable: false,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() {
            return Err(StepError {
                message: format!(
                    "tool `{}` answered {status}: {}",
                    tool.name,
                    text.chars().take(200).collect::<String>()
                ),
                retryable: status.is_server_error() || status.as_u16() == 429,
            });
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        tool.check_response(&body).map_err(|message| StepError {
            message: format!("tool `{}`: {message}", tool.name),
            retryable: false,
        })?;
        Ok(StepOutput {
            output: body,
            inference_id: None,
            cost_micros: 0,
        })
    }
}

/// The JSON in a model's answer (also inside a ```json fence).
fn parse_json_answer(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
        .unwrap_or(trimmed);
    serde_json::from_str(inner.trim()).ok()
}

#[async_trait]
impl Executor for StepExecutor {
    async fn call(&self, call: &StepCall) -> Result<StepOutput, StepError> {
        match call.request.get("kind").and_then(Value::as_str) {
            Some("llm") => self.llm(call).await,
            Some("tool") => self.tool(call).await,
            other => Err(StepError {
                message: format!("cannot carry out a call of kind {other:?}"),
                retryable: false,
            }),
        }
    }
}

/// Registers the workflow routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/workflows", web::post().to(register))
        .route("/v1/workflows", web::get().to(list))
        .route("/v1/workflows/{name}", web::get().to(show))
        .route("/v1/workflows/{name}/runs", web::post().to(start))
        .route("/v1/fragments", web::post().to(register_fragment))
        .route("/v1/tools", web::post().to(register_tool))
        .route("/v1/runs/{id}", web::get().to(run))
        .route("/v1/runs/{id}/events", web::get().to(run_events))
        .route("/v1/runs/{id}/signals", web::post().to(signal))
        .route("/v1/runs/{id}/cancel", web::post().to(cancel));
}

async fn principal(req: &HttpRequest, admin: &Admin) -> Result<Principal, ApiError> {
    let (principal, _) = tenant_request(req, admin).await?;
    if !principal.allows(&[SCOPE]) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key lacks the `workflows` scope",
        ));
    }
    Ok(principal)
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
        (status = 403, description = "the key lacks the `workflows` scope", body = ErrorBody)))]
pub(crate) async fn register(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
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
        (status = 403, description = "the key lacks the `workflows` scope", body = ErrorBody)))]
pub(crate) async fn register_fragment(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
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
        (status = 403, description = "the key lacks the `workflows` scope", body = ErrorBody)))]
pub(crate) async fn register_tool(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
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
        answer = view(&state);
    }
    Ok(HttpResponse::Created().json(answer))
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

/// A run's state as the API shows it.
pub(crate) fn view(state: &switchyard_workflows::run::RunState) -> Value {
    use switchyard_workflows::run::StepStatus;
    let steps: Vec<Value> = state
        .steps
        .iter()
        .map(|(key, step)| {
            let (status, output) = match &step.status {
                StepStatus::Running => ("running", None),
                // A step finished before a continue-as-new keeps its output in `outputs` only.
                StepStatus::Completed { output } if output.is_null() => {
                    ("completed", state.outputs.get(key).cloned())
                }
                StepStatus::Completed { output } => ("completed", Some(output.clone())),
                StepStatus::Failed { .. } => ("failed", None),
                StepStatus::Timer { .. } => ("waiting", None),
                StepStatus::Fired => ("fired", None),
            };
            json!({
                "step": key,
                "node": step.node,
                "attempt": step.attempt,
                "status": status,
                "output": output,
                "error": (!step.error.is_empty()).then_some(&step.error),
            })
        })
        .collect();
    let waiting_for = state.cursor.as_ref().and_then(|cursor| {
        let node = state.spec.as_ref()?.node(cursor)?;
        (node.kind == switchyard_workflows::spec::NodeKind::HumanInput).then(|| {
            json!({
                "signal": node.id,
                "question": node.question.as_ref().map(|q| {
                    switchyard_workflows::template::render(q, &state.context(None)).unwrap_or_else(|_| q.clone())
                }),
                "schema": node.schema,
            })
        })
    });
    json!({
        "run_id": state.run_id,
        "workflow": state.workflow,
        "version": state.version,
        "status": state.status.as_str(),
        "current": state.cursor,
        "waiting_for": waiting_for,
        "steps": steps,
        "output": state.output,
        "error": state.error,
        "cost_micros": state.cost_micros,
        "started_at_ms": state.started_ms,
        "ended_at_ms": state.ended_ms,
        "segment": state.segment,
        "replay_of": state.replay_of,
        "parent": state.parent.as_ref().map(|(run, step)| json!({"run_id": run, "step": step})),
    })
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
    Ok(HttpResponse::Ok().json(view(&state)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// `json` (default) or `jsonl` (an episode file for `switchyard replay`).
    format: Option<String>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "workflows",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"), ("id" = String, Path, description = "the run id"),
        ("format" = Option<String>, Query, description = "json (default) or jsonl (an episode file)")),
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
    match query.format.as_deref() {
        None | Some("json") => {
            let data: Vec<JsonEvent> = events
                .iter()
                .filter_map(|e| JsonEvent::from_recorded(e).ok())
                .collect();
            Ok(HttpResponse::Ok().json(json!({"data": data})))
        }
        Some("jsonl") => {
            let text = switchyard_workflows::replay::episode_text(&events).map_err(api_error)?;
            Ok(HttpResponse::Ok()
                .content_type("application/x-ndjson")
                .body(text))
        }
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "`format` is `json` or `jsonl`",
        )),
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

/// Builds the engine of a server: the executor over the gateway, then recovery of the runs a
/// previous process left unfinished.
pub async fn start_engine(
    store: Arc<dyn switchyard_events::EventStore>,
    admin: web::Data<Admin>,
    gateway: web::Data<Gateway>,
) -> anyhow::Result<Arc<Engine>> {
    let executor = Arc::new(StepExecutor::new(admin, gateway)?);
    let engine = Engine::new(store, executor);
    let recovered = engine.recover().await?;
    if recovered > 0 {
        tracing::info!(runs = recovered, "resuming interrupted workflow runs");
    }
    Ok(engine)
}
