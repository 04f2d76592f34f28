//! The OpenAI-compatible inference path: `GET /v1/models`, `POST /v1/chat/completions` (whole
//! and streamed) and `POST /v1/embeddings`.
//!
//! One request: authenticate the key (memory) → request limits of tenant and key → parse and
//! check the body → choose the model → request limit of the model and token limits of every
//! tier (the prompt's estimate) → reserve its estimated cost from the monthly budget (402 when it
//! cannot) → call the provider, retrying retryable failures with backoff and jitter before the
//! first byte reaches the client → settle the budget with the real cost, charge the answer's
//! tokens to the token limits → append `InferenceRequested`, `RouteChosen` and
//! `InferenceCompleted`/`InferenceFailed` to stream `inference-<id>` in one group-committed
//! append → answer, with `x-switchyard-inference-id`. A stream's events are appended before its
//! `[DONE]`; a stream cut mid-way ends with an `error` event, never a clean end.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use switchyard_events::{
    Event, EventStore, ExpectedVersion, InferenceCompleted, InferenceFailed, InferenceRequested,
    Metadata, RouteChosen, StreamId, TenantId,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::admin::Admin;
use crate::config::{Config, ModelConfig};
use crate::http::{ApiError, Check, ErrorBody, RequestId, enforce, parse_json, tenant_request};
use crate::idempotency::idempotent_with;
use crate::keys::Principal;
use crate::openai::{ChatRequest, EmbeddingsRequest};
use crate::providers::{Completion, ProviderError, Providers, StreamEvent, Usage};
use crate::router::{FEATURE_SET, RouterHub, TenantFacts};
use crate::telemetry::INFERENCE;

/// The response header naming the inference (its stream is `inference-<id>`).
pub const INFERENCE_ID: HeaderName = HeaderName::from_static("x-switchyard-inference-id");
/// The scope a key needs for the inference endpoints (a key with no scopes may do anything).
pub const SCOPE: &str = "inference";

/// What the inference handlers share.
pub struct Gateway {
    pub config: Config,
    pub providers: Providers,
    pub store: Arc<dyn EventStore>,
    pub router: Arc<RouterHub>,
    pub resilience: crate::resilience::Resilience,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

/// Registers the inference routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/models", web::get().to(list_models))
        .route("/v1/chat/completions", web::post().to(chat_completions))
        .route("/v1/embeddings", web::post().to(embeddings));
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the event log cannot be written; retry shortly",
    )
}

/// Authenticates and checks that the key may call the inference endpoints.
async fn principal(
    req: &HttpRequest,
    admin: &Admin,
) -> Result<(Principal, Vec<(HeaderName, HeaderValue)>), ApiError> {
    let (principal, headers) = tenant_request(req, admin).await?;
    if !principal.allows(&[SCOPE]) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key lacks the `inference` scope",
        ));
    }
    Ok((principal, headers))
}

/// `x-switchyard-position`: the log position of what this request appended, for
/// read-your-writes (`min_position` on the analytics API).
pub const POSITION: HeaderName = HeaderName::from_static("x-switchyard-position");

fn position_header(position: u64) -> Option<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(&position.to_string())
        .ok()
        .map(|value| (POSITION, value))
}

fn with_headers(
    mut response: HttpResponse,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> HttpResponse {
    for (name, value) in headers {
        response.headers_mut().insert(name, value);
    }
    response
}

/// The models this server serves, and `auto` (the router chooses).
#[utoipa::path(get, path = "/v1/models", tag = "inference",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "OpenAI model list"),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 429, description = "over a request limit", body = ErrorBody)))]
pub(crate) async fn list_models(
    req: HttpRequest,
    admin: web::Data<Admin>,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let (_, headers) = principal(&req, &admin).await?;
    let mut data: Vec<Value> = gateway
        .config
        .models
        .iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": m.provider}))
        .collect();
    data.push(
        json!({"id": "auto", "object": "model", "created": 0, "owned_by": "switchyard-router"}),
    );
    Ok(with_headers(
        HttpResponse::Ok().json(json!({"object": "list", "data": data})),
        headers,
    ))
}

/// The model that serves a request, and how it was chosen.
struct Route<'a> {
    model: &'a ModelConfig,
    policy: String,
    candidates: Vec<String>,
    propensity_ppb: u32,
    feature_set: u16,
    features_milli: Vec<i64>,
    shadow: Vec<switchyard_events::ShadowChoice>,
}

/// A named model, or the router's choice for `auto` (chat only; embeddings' `auto` is the first
/// candidate).
fn route<'a>(
    gateway: &'a Gateway,
    admin: &Admin,
    principal: &Principal,
    requested: &str,
    chat: Option<&ChatRequest>,
    policy: Option<&switchyard_actors::router::policy::Policy>,
) -> Result<Route<'a>, ApiError> {
    let config = &gateway.config;
    if requested != "auto" {
        let model = config.model(requested).ok_or_else(|| {
            ApiError::owned(
                StatusCode::NOT_FOUND,
                "model_not_found".into(),
                format!("the model `{requested}` does not exist; GET /v1/models lists them"),
            )
        })?;
        return Ok(Route {
            model,
            policy: "named".into(),
            candidates: vec![model.name.clone()],
            propensity_ppb: 1_000_000_000,
            feature_set: 0,
            features_milli: Vec::new(),
            shadow: Vec::new(),
        });
    }
    let candidates = config.candidates();
    let no_models = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_models",
            "no model is configured",
        )
    };
    let Some(request) = chat else {
        let model = candidates.first().copied().ok_or_else(no_models)?;
        return Ok(Route {
            model,
            policy: "static".into(),
            candidates: vec![model.name.clone()],
            propensity_ppb: 1_000_000_000,
            feature_set: 0,
            features_milli: Vec::new(),
            shadow: Vec::new(),
        });
    };
    if candidates.is_empty() {
        return Err(no_models());
    }
    let tenant = principal.tenant;
    let now = OffsetDateTime::now_utc();
    let plan = admin.directory.plan(tenant).unwrap_or_default();
    let budget_left = match admin.keys.tenant_limits(tenant).monthly_budget_micros {
        Some(budget) if budget > 0 => {
            let spend = admin.keys.meter.view(tenant, now);
            budget.saturating_sub(spend.spent_micros + spend.reserved_micros) as f64 / budget as f64
        }
        Some(_) => 0.0,
        None => 1.0,
    };
    let facts = TenantFacts {
        plan: &plan,
        budget_left,
    };
    let features = gateway.router.features(request, facts, &candidates, now);
    let sticky = request
        .user
        .clone()
        .unwrap_or_else(|| principal.key_id.to_string());
    let choice = gateway
        .router
        .choose(tenant, &sticky, &features, &candidates, policy);
    let model = config.model(&choice.model).ok_or_else(no_models)?;
    Ok(Route {
        model,
        policy: choice.policy,
        candidates: choice.candidates,
        propensity_ppb: choice.propensity_ppb,
        feature_set: FEATURE_SET,
        features_milli: choice.features_milli,
        shadow: choice.shadow,
    })
}

/// A provider's answer: usage, time to first token (µs), finish reason, attempts.
type Answered = (Usage, u64, String, u32);
/// A provider's failure: the error, the usage delivered before it, attempts.
type Failed = (ProviderError, Usage, u32);

/// Everything known about one inference while it runs, to log it at the end.
struct Inference {
    id: Uuid,
    tenant: TenantId,
    key_id: Uuid,
    metadata: Metadata,
    requested: InferenceRequested,
    route: RouteChosen,
    /// The model that answered (the routed one, or a fallback), its provider and price.
    served_model: String,
    served_provider: String,
    price: switchyard_actors::billing::ModelPrice,
    reserved: u64,
    reserved_tokens: u64,
    /// Output tokens the reservation covers (a stream that outgrows it must extend it).
    reserved_output: u64,
    started: Instant,
    token_checks: Vec<Check>,
}

impl Inference {
    /// Records which model answered (a fallback changes model, provider and price).
    fn serve(&mut self, model: &ModelConfig) {
        self.served_model.clone_from(&model.name);
        self.served_provider.clone_from(&model.provider);
        self.price = model.price;
    }

    fn cost(&self, usage: Usage) -> u64 {
        self.price
            .cost(1, usage.prompt_tokens, usage.completion_tokens)
    }

    /// Settles the budget, charges the answer's tokens, and appends the three events.
    async fn finish(
        &self,
        admin: &Admin,
        store: &dyn EventStore,
        outcome: Result<Answered, Failed>,
    ) -> Result<u64, ApiError> {
        let now = OffsetDateTime::now_utc();
        let latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (usage, last) = match &outcome {
            Ok((usage, ttft_us, finish_reason, attempts)) => (
                *usage,
                Event::InferenceCompleted(InferenceCompleted {
                    model: self.served_model.clone(),
                    provider: self.served_provider.clone(),
                    tokens_in: usage.prompt_tokens,
                    tokens_out: usage.completion_tokens,
                    cost_micros: self.cost(*usage),
                    latency_us,
                    ttft_us: *ttft_us,
                    finish_reason: finish_reason.clone(),
                    attempts: *attempts,
                }),
            ),
            Err((error, usage, attempts)) => (
                *usage,
                Event::InferenceFailed(InferenceFailed {
                    model: self.served_model.clone(),
                    provider: self.served_provider.clone(),
                    code: error.code.to_owned(),
                    message: error.message.chars().take(500).collect(),
                    tokens_in: usage.prompt_tokens,
                    tokens_out: usage.completion_tokens,
                    cost_micros: self.cost(*usage),
                    latency_us,
                    attempts: *attempts,
                }),
            ),
        };
        let cost = self.cost(usage);
        let tokens = usage.prompt_tokens + usage.completion_tokens;
        admin.keys.meter.settle(
            self.tenant,
            self.id,
            self.reserved,
            self.reserved_tokens,
            cost,
            tokens,
            now,
        );
        // The prompt's estimate was taken before the call; the answer's tokens are charged now.
        for check in &self.token_checks {
            let extra = tokens.saturating_sub(check.cost);
            if extra > 0 {
                admin.limiter.charge(&check.key, check.limit, extra).await;
            }
        }
        let events = [
            Event::InferenceRequested(self.requested.clone()),
            Event::RouteChosen(self.route.clone()),
            last,
        ];
        let encoded = events
            .iter()
            .map(|e| e.to_new_event(self.metadata.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| unavailable())?;
        let stream = StreamId::of("inference", self.id).map_err(|_| unavailable())?;
        let outcome_label = if outcome.is_ok() {
            "completed"
        } else {
            "failed"
        };
        INFERENCE
            .requests
            .with_label_values(&[&self.served_model, outcome_label])
            .inc();
        INFERENCE
            .seconds
            .with_label_values(&[&self.served_model])
            .observe(self.started.elapsed().as_secs_f64());
        INFERENCE
            .tokens
            .with_label_values(&[&self.served_model, "in"])
            .inc_by(usage.prompt_tokens);
        INFERENCE
            .tokens
            .with_label_values(&[&self.served_model, "out"])
            .inc_by(usage.completion_tokens);
        let appended = match store
            .append(self.tenant, &stream, ExpectedVersion::NoStream, encoded)
            .await
        {
            Ok(appended) => appended,
            Err(error) => {
                admin
                    .keys
                    .meter
                    .unsettle(self.tenant, self.id, cost, tokens, now);
                tracing::error!(%error, inference_id = %self.id, "cannot log an inference");
                return Err(unavailable());
            }
        };
        tracing::info!(
            inference_id = %self.id,
            tenant = %self.tenant,
            key_id = %self.key_id,
            model = %self.served_model,
            outcome = outcome_label,
            tokens_in = usage.prompt_tokens,
            tokens_out = usage.completion_tokens,
            cost_micros = cost,
            latency_us,
            "inference"
        );
        Ok(appended.last_position().0)
    }
}

/// Prepares an inference: model, limits, budget. Nothing is logged for a request refused here
/// (it cost nothing, and its 4xx says why).
#[allow(
    clippy::too_many_arguments,
    reason = "the request's parts, each used once"
)]
async fn admit(
    correlation_id: Option<String>,
    admin: &Admin,
    gateway: &Gateway,
    principal: &Principal,
    endpoint: &str,
    model_requested: &str,
    stream: bool,
    messages: u32,
    prompt_estimate: u64,
    max_tokens: Option<u64>,
    output_reservation: u64,
    chat: Option<&ChatRequest>,
    policy: Option<&switchyard_actors::router::policy::Policy>,
) -> Result<(Inference, Vec<(HeaderName, HeaderValue)>), ApiError> {
    let route = route(gateway, admin, principal, model_requested, chat, policy)?;
    let model = route.model;
    if prompt_estimate > model.context_tokens {
        return Err(ApiError::owned(
            StatusCode::BAD_REQUEST,
            "context_length_exceeded".into(),
            format!(
                "about {prompt_estimate} prompt tokens; {} accepts at most {}",
                model.name, model.context_tokens
            ),
        ));
    }
    let tenant = principal.tenant;
    let tenant_limits = admin.keys.tenant_limits(tenant);
    let key_limits = admin.keys.key_limits(principal.key_id);
    let model_limits = admin.keys.model_limits(tenant, &model.name);
    let mut checks = Vec::with_capacity(4);
    if let Some(rpm) = model_limits.requests_per_minute {
        checks.push(Check::requests(
            format!("rpm:model:{tenant}:{}", model.name),
            rpm,
        ));
    }
    let mut token_checks = Vec::with_capacity(3);
    for (key, tpm) in [
        (format!("tpm:{tenant}"), tenant_limits.tokens_per_minute),
        (
            format!("tpm:key:{}", principal.key_id),
            key_limits.tokens_per_minute,
        ),
        (
            format!("tpm:model:{tenant}:{}", model.name),
            model_limits.tokens_per_minute,
        ),
    ] {
        if let Some(tpm) = tpm {
            token_checks.push(Check::tokens(key, tpm, prompt_estimate.min(tpm)));
        }
    }
    checks.extend(token_checks.iter().cloned());
    let headers = enforce(&admin.limiter, &checks).await?;

    let price = model.price;
    let reserved = price.cost(1, prompt_estimate, output_reservation);
    let now = OffsetDateTime::now_utc();
    let reserved_tokens = prompt_estimate.saturating_add(output_reservation);
    if let Err(exhausted) =
        admin
            .keys
            .meter
            .reserve(tenant, &tenant_limits, reserved, reserved_tokens, now)
    {
        let left = if exhausted.budget.ends_with("_usd") {
            switchyard_actors::billing::usd(exhausted.left)
        } else {
            format!("{} tokens", exhausted.left)
        };
        return Err(ApiError::owned(
            StatusCode::PAYMENT_REQUIRED,
            "budget_exhausted".into(),
            format!(
                "the tenant's {} is spent: {left} left; this request may need up to {} and {reserved_tokens} tokens",
                exhausted.budget,
                switchyard_actors::billing::usd(reserved),
            ),
        )
        .with_headers(headers));
    }
    let metadata = Metadata {
        correlation_id,
        ..Metadata::default()
    };
    let provider = gateway
        .config
        .provider(&model.provider)
        .map_or("", |p| p.name.as_str());
    let inference = Inference {
        id: Uuid::now_v7(),
        tenant,
        key_id: principal.key_id,
        metadata,
        requested: InferenceRequested {
            endpoint: endpoint.to_owned(),
            model_requested: model_requested.to_owned(),
            key_id: principal.key_id,
            stream,
            messages,
            prompt_tokens_estimate: prompt_estimate,
            max_tokens,
        },
        route: RouteChosen {
            policy: route.policy,
            model: model.name.clone(),
            provider: provider.to_owned(),
            candidates: route.candidates,
            propensity_ppb: route.propensity_ppb,
            feature_set: route.feature_set,
            features_milli: route.features_milli,
            shadow: route.shadow,
        },
        served_model: model.name.clone(),
        served_provider: model.provider.clone(),
        price,
        reserved,
        reserved_tokens,
        reserved_output: output_reservation,
        started: Instant::now(),
        token_checks,
    };
    Ok((inference, headers))
}

/// Admission of a chat request: its prompt estimate and output reservation (`max_tokens` × `n`,
/// or the configured default), then [`admit`].
async fn admit_chat(
    correlation_id: Option<String>,
    admin: &Admin,
    gateway: &Gateway,
    principal: &Principal,
    request: &ChatRequest,
    policy: Option<&switchyard_actors::router::policy::Policy>,
) -> Result<(Inference, Vec<(HeaderName, HeaderValue)>), ApiError> {
    let reservation = request
        .output_cap()
        .unwrap_or(gateway.config.default_output_reservation)
        .saturating_mul(u64::from(request.choices()));
    admit(
        correlation_id,
        admin,
        gateway,
        principal,
        "chat",
        &request.model,
        request.stream,
        u32::try_from(request.messages.len()).unwrap_or(u32::MAX),
        request.estimate_prompt_tokens(),
        request.output_cap(),
        reservation,
        Some(request),
        policy,
    )
    .await
}

/// A place in the tenant's bulkhead, or 429 when it already has its most requests in flight.
fn tenant_slot(
    gateway: &Gateway,
    principal: &Principal,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    gateway
        .resilience
        .tenant_slot(principal.tenant)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_concurrent_requests",
                "this tenant has its most requests in flight; retry when one finishes",
            )
            .with_headers(vec![(
                actix_web::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            )])
        })
}

fn provider_error(error: &ProviderError) -> ApiError {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut api = ApiError::owned(status, error.code.into(), error.message.clone());
    if let Some(after) = error.retry_after {
        api = api.with_headers(vec![(
            actix_web::http::header::RETRY_AFTER,
            HeaderValue::from(after.as_secs().max(1)),
        )]);
    }
    api
}

fn inference_headers(body: &Value) -> Vec<(HeaderName, HeaderValue)> {
    body.get("id")
        .and_then(Value::as_str)
        .and_then(|id| {
            id.strip_prefix("chatcmpl-")
                .or_else(|| id.strip_prefix("embd-"))
        })
        .and_then(|id| HeaderValue::from_str(id).ok())
        .map(|value| vec![(INFERENCE_ID, value)])
        .unwrap_or_default()
}

/// OpenAI-compatible chat completions; `stream: true` answers with server-sent events.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "inference",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"),
        ("Idempotency-Key" = Option<String>, Header, description = "same key and body: the same answer, billed once (not for streams)")),
    request_body = ChatRequest,
    responses((status = 200, description = "chat.completion, or text/event-stream of chat.completion.chunk; header x-switchyard-inference-id"),
        (status = 400, description = "invalid request (the message names the field)", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 402, description = "monthly budget spent", body = ErrorBody),
        (status = 404, description = "no such model", body = ErrorBody),
        (status = 429, description = "over a request or token limit (Retry-After)", body = ErrorBody),
        (status = 502, description = "the provider failed after retries", body = ErrorBody),
        (status = 504, description = "the provider timed out", body = ErrorBody)))]
pub(crate) async fn chat_completions(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let (principal, _) = principal(&req, &admin).await?;
    let request: ChatRequest = parse_json(&body)?;
    request.validate()?;
    let slot = tenant_slot(&gateway, &principal)?;
    if request.stream {
        return chat_stream(req, admin, gateway, principal, request, slot).await;
    }
    let store = gateway.store.clone();
    let tenant = principal.tenant;
    let mut rate = Vec::new();
    let mut position = 0_u64;
    let response = idempotent_with(
        store.as_ref(),
        &req,
        tenant,
        &body,
        |_| {},
        inference_headers,
        || async {
            let done = complete(
                correlation(&req),
                &admin,
                &gateway,
                &principal,
                &request,
                None,
            )
            .await?;
            rate = done.headers;
            position = done.position;
            Ok((StatusCode::OK, done.body))
        },
    )
    .await?;
    if position > 0 {
        rate.extend(position_header(position));
    }
    Ok(with_headers(response, rate))
}

/// The request id of an HTTP request, as the correlation id of what it logs.
fn correlation(req: &HttpRequest) -> Option<String> {
    req.extensions().get::<RequestId>().map(|r| r.0.clone())
}

/// A whole (not streamed) chat completion that went through.
pub(crate) struct Completed {
    /// The `chat.completion` body.
    pub body: Value,
    /// The log position of the inference's events.
    pub position: u64,
    pub inference_id: Uuid,
    pub cost_micros: u64,
    /// Rate-limit headers of the tightest tier.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A whole chat completion: admission (route, limits, budget), the provider through the
/// resilience layer, settlement and the inference's events. The HTTP handler and workflow
/// `llm` steps both come through here, so both are routed, limited and billed alike.
pub(crate) async fn complete(
    correlation_id: Option<String>,
    admin: &Admin,
    gateway: &Gateway,
    principal: &Principal,
    request: &ChatRequest,
    policy: Option<&switchyard_actors::router::policy::Policy>,
) -> Result<Completed, ApiError> {
    let (mut inference, headers) =
        admit_chat(correlation_id, admin, gateway, principal, request, policy).await?;
    let routed = gateway
        .config
        .model(&inference.route.model)
        .ok_or_else(unavailable)?;
    let (outcome, attempts, served) = gateway
        .resilience
        .call(
            &gateway.config,
            &gateway.providers,
            routed,
            |model, provider| async move { provider.chat(model, request).await },
        )
        .await;
    inference.serve(served);
    let store = gateway.store.as_ref();
    match outcome {
        Ok(Completion { choices, usage }) => {
            let ttft = u64::try_from(inference.started.elapsed().as_micros()).unwrap_or(0);
            let finish = choices
                .first()
                .and_then(|c| c.get("finish_reason"))
                .and_then(Value::as_str)
                .unwrap_or("stop")
                .to_owned();
            let position = inference
                .finish(admin, store, Ok((usage, ttft, finish, attempts)))
                .await?;
            Ok(Completed {
                body: json!({
                    "id": format!("chatcmpl-{}", inference.id),
                    "object": "chat.completion",
                    "created": OffsetDateTime::now_utc().unix_timestamp(),
                    "model": inference.served_model,
                    "choices": choices,
                    "usage": {
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                    },
                    "system_fingerprint": null,
                }),
                position,
                inference_id: inference.id,
                cost_micros: inference.cost(usage),
                headers,
            })
        }
        Err(error) => {
            inference
                .finish(
                    admin,
                    store,
                    Err((error.clone(), Usage::default(), attempts)),
                )
                .await?;
            Err(provider_error(&error))
        }
    }
}

/// The streamed form: the provider is called (with retries) before the response starts; from
/// then on chunks pass through as they arrive.
async fn chat_stream(
    req: HttpRequest,
    admin: web::Data<Admin>,
    gateway: web::Data<Gateway>,
    principal: Principal,
    request: ChatRequest,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<HttpResponse, ApiError> {
    let prompt = request.estimate_prompt_tokens();
    let (mut inference, headers) = admit_chat(
        correlation(&req),
        &admin,
        &gateway,
        &principal,
        &request,
        None,
    )
    .await?;
    let store = gateway.store.clone();
    let routed = gateway
        .config
        .model(&inference.route.model)
        .ok_or_else(unavailable)?;
    let request_ref = &request;
    let (opened, attempts, served) = gateway
        .resilience
        .call(
            &gateway.config,
            &gateway.providers,
            routed,
            |model, provider| async move { provider.chat_stream(model, request_ref).await },
        )
        .await;
    inference.serve(served);
    let mut upstream = match opened {
        Ok(stream) => stream,
        Err(error) => {
            inference
                .finish(
                    &admin,
                    store.as_ref(),
                    Err((error.clone(), Usage::default(), attempts)),
                )
                .await?;
            return Err(provider_error(&error));
        }
    };
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    let id = inference.id;
    let chunk_id = format!("chatcmpl-{id}");
    let created = OffsetDateTime::now_utc().unix_timestamp();
    let served = inference.served_model.clone();
    tokio::spawn(async move {
        let _slot = slot; // the tenant's bulkhead slot, held until the stream ends
        let frame = |value: &Value| -> Result<Bytes, std::convert::Infallible> {
            Ok(Bytes::from(format!("data: {value}\n\n")))
        };
        let chunk = |choices: Value, usage: Value| {
            json!({"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                   "model": served, "choices": choices, "usage": usage})
        };
        let mut usage: Option<Usage> = None;
        let mut pieces = 0u64;
        let mut ttft_us = None;
        let mut finish_reason = String::from("stop");
        let mut failure: Option<ProviderError> = None;
        while let Some(item) = upstream.next().await {
            match item {
                Ok(StreamEvent::Choices(choices)) => {
                    ttft_us.get_or_insert_with(|| {
                        u64::try_from(inference.started.elapsed().as_micros()).unwrap_or(0)
                    });
                    for choice in &choices {
                        if choice
                            .pointer("/delta/content")
                            .and_then(Value::as_str)
                            .is_some_and(|c| !c.is_empty())
                        {
                            pieces += 1;
                        }
                        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                            reason.clone_into(&mut finish_reason);
                        }
                    }
                    // An answer longer than its reservation extends it, or is cut when the
                    // budget cannot cover more (the tokens sent so far are billed).
                    if pieces > inference.reserved_output {
                        let extra = inference.reserved_output.max(16);
                        let micros = inference.price.cost(0, 0, extra);
                        let limits = admin.keys.tenant_limits(inference.tenant);
                        let now = OffsetDateTime::now_utc();
                        match admin.keys.meter.reserve(
                            inference.tenant,
                            &limits,
                            micros,
                            extra,
                            now,
                        ) {
                            Ok(()) => {
                                inference.reserved_output += extra;
                                inference.reserved += micros;
                                inference.reserved_tokens += extra;
                            }
                            Err(exhausted) => {
                                failure = Some(ProviderError::fatal(
                                    "budget_exhausted",
                                    402,
                                    format!("the tenant's {} ran out mid-stream", exhausted.budget),
                                ));
                                break;
                            }
                        }
                    }
                    let out = chunk(Value::Array(choices), Value::Null);
                    if sender.send(frame(&out)).await.is_err() {
                        failure = Some(ProviderError::fatal(
                            "client_disconnected",
                            499,
                            "the client went away mid-stream",
                        ));
                        break;
                    }
                }
                Ok(StreamEvent::Usage(counted)) => usage = Some(counted),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        // A stream without a usage count (cut, or a provider that sends none) is billed for
        // the prompt estimate and the pieces delivered.
        let usage = usage.unwrap_or(Usage {
            prompt_tokens: prompt,
            completion_tokens: pieces,
        });
        let ttft = ttft_us.unwrap_or(0);
        let logged = match &failure {
            None => {
                inference
                    .finish(
                        &admin,
                        store.as_ref(),
                        Ok((usage, ttft, finish_reason, attempts)),
                    )
                    .await
            }
            Some(error) => {
                inference
                    .finish(
                        &admin,
                        store.as_ref(),
                        Err((error.clone(), usage, attempts)),
                    )
                    .await
            }
        };
        match (failure, logged) {
            (None, Ok(_)) => {
                if include_usage {
                    let last = chunk(
                        json!([]),
                        json!({
                            "prompt_tokens": usage.prompt_tokens,
                            "completion_tokens": usage.completion_tokens,
                            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                        }),
                    );
                    let _ = sender.send(frame(&last)).await;
                }
                let _ = sender
                    .send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
                    .await;
            }
            (Some(error), _) => {
                let event = json!({"error": {"code": error.code, "message": error.message, "inference_id": id}});
                let _ = sender.send(frame(&event)).await;
            }
            (None, Err(error)) => {
                let mut event = error.to_json();
                event["error"]["inference_id"] = json!(id);
                let _ = sender.send(frame(&event)).await;
            }
        }
    });
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header((INFERENCE_ID, id.to_string()));
    for header in headers {
        response.insert_header(header);
    }
    Ok(response.streaming(body))
}

/// OpenAI-compatible embeddings.
#[utoipa::path(post, path = "/v1/embeddings", tag = "inference",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    request_body = EmbeddingsRequest,
    responses((status = 200, description = "OpenAI embedding list; header x-switchyard-inference-id"),
        (status = 400, description = "invalid request", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 402, description = "monthly budget spent", body = ErrorBody),
        (status = 429, description = "over a limit", body = ErrorBody)))]
pub(crate) async fn embeddings(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let (principal, _) = principal(&req, &admin).await?;
    let _slot = tenant_slot(&gateway, &principal)?;
    let request: EmbeddingsRequest = parse_json(&body)?;
    let inputs = request.inputs()?;
    let estimate: u64 = inputs
        .iter()
        .map(|i| (i.chars().count() as u64).div_ceil(4))
        .sum();
    let (mut inference, headers) = admit(
        correlation(&req),
        &admin,
        &gateway,
        &principal,
        "embeddings",
        &request.model,
        false,
        u32::try_from(inputs.len()).unwrap_or(u32::MAX),
        estimate,
        None,
        0,
        None,
        None,
    )
    .await?;
    let store = gateway.store.clone();
    let routed = gateway
        .config
        .model(&inference.route.model)
        .ok_or_else(unavailable)?;
    let (inputs_ref, dimensions) = (&inputs, request.dimensions);
    let (outcome, attempts, served) = gateway
        .resilience
        .call(
            &gateway.config,
            &gateway.providers,
            routed,
            |model, provider| async move { provider.embed(model, inputs_ref, dimensions).await },
        )
        .await;
    inference.serve(served);
    match outcome {
        Ok(embedded) => {
            let usage = Usage {
                prompt_tokens: embedded.prompt_tokens,
                completion_tokens: 0,
            };
            let position = inference
                .finish(
                    &admin,
                    store.as_ref(),
                    Ok((usage, 0, "stop".into(), attempts)),
                )
                .await?;
            let data: Vec<Value> = embedded
                .vectors
                .iter()
                .enumerate()
                .map(|(index, v)| {
                    // The SDKs ask for base64 (little-endian f32s) by default: smaller on the wire.
                    let embedding = if request.encoding_format.as_deref() == Some("base64") {
                        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                        json!(base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            bytes
                        ))
                    } else {
                        json!(v)
                    };
                    json!({"object": "embedding", "index": index, "embedding": embedding})
                })
                .collect();
            let mut response = HttpResponse::Ok();
            response.insert_header((INFERENCE_ID, inference.id.to_string()));
            if let Some(header) = position_header(position) {
                response.insert_header(header);
            }
            for header in headers {
                response.insert_header(header);
            }
            Ok(response.json(json!({
                "object": "list",
                "data": data,
                "model": inference.served_model,
                "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
            })))
        }
        Err(error) => {
            inference
                .finish(
                    &admin,
                    store.as_ref(),
                    Err((error.clone(), Usage::default(), attempts)),
                )
                .await?;
            Err(provider_error(&error))
        }
    }
}
