//! Feedback and off-policy evaluation over HTTP: `POST /v1/feedback` turns a client's verdict on
//! an inference into a reward for the tenant's router actor; `POST /v1/router/evaluate` judges
//! a candidate policy on the tenant's logged decisions. The CLI's `switchyard router evaluate`
//! reads the same log directly.

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use switchyard_actors::router::ope::{Report, evaluate};
use switchyard_actors::router::policy::Policy;
use switchyard_actors::router::{RouterCommand, RouterRejection};
use switchyard_events::{Event, Metadata, RewardRecorded, Scope, StreamId, StreamVersion};
use uuid::Uuid;

use crate::http::{ApiError, ErrorBody, RequestId, parse_json, scoped_request};
use crate::state::Admin;
use switchyard_inference::Pipeline;
use switchyard_inference::router::offline::{load_log, typical_costs};

crate::api::endpoints! {
    post "/v1/feedback" => feedback,
    post "/v1/router/evaluate" => evaluate_policy,
    get "/v1/router/arms" => arms,
}

/// `POST /v1/feedback`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Feedback {
    /// The `x-switchyard-inference-id` of the answer.
    inference_id: String,
    /// What is judged (`quality`, `thumbs_up`, ...): 1-64 letters, digits or `_-.`.
    metric: String,
    /// The verdict, from 0 (bad) to 1 (good).
    value: f64,
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the event log cannot be read or written; retry shortly",
    )
}

/// Feedback on an inference: a reward for the router (once per inference and metric).
#[utoipa::path(post, path = "/v1/feedback", tag = "router", request_body = Feedback,
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "inference_id, metric, reward (after the configured weights)"),
        (status = 400, description = "invalid feedback", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 404, description = "no such inference for this tenant", body = ErrorBody),
        (status = 409, description = "the inference failed or was not routed by a policy", body = ErrorBody)))]
pub(crate) async fn feedback(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
) -> Result<HttpResponse, ApiError> {
    // Feedback trains the router: the caller of inferences, or a key made for feedback alone.
    let (principal, headers) = scoped_request(&req, &admin, &["feedback", "inference"]).await?;
    let input: Feedback = parse_json(&body)?;
    if !input.value.is_finite() || !(0.0..=1.0).contains(&input.value) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "value must be a number from 0 to 1",
        ));
    }
    let not_found = || ApiError::not_found("no such inference");
    let id: Uuid = input.inference_id.parse().map_err(|_| not_found())?;
    let stream = StreamId::of("inference", id).map_err(|_| not_found())?;
    // In `batched` durability the answer left before its events were written: if this node is
    // still writing them, wait for that (bounded) rather than answer 404.
    pipeline
        .recording
        .settled(id, std::time::Duration::from_secs(5))
        .await;
    // Scoped to the caller's tenant: another tenant's inference is simply not found.
    let events = pipeline
        .store
        .read_stream(
            Scope::Tenant(principal.tenant),
            &stream,
            StreamVersion::NONE,
            16,
        )
        .await
        .map_err(|_| unavailable())?;
    let mut route = None;
    let mut completed = None;
    for recorded in &events {
        match Event::from_recorded(recorded) {
            // v1 logs: the route is an event of its own; since v2 the outcome carries it.
            Ok(Event::RouteChosen(e)) => route = Some(e),
            Ok(Event::InferenceCompleted(mut e)) => {
                if let Some(carried) = e.route.take() {
                    route = Some(carried);
                }
                completed = Some(e);
            }
            _ => {}
        }
    }
    let (Some(route), Some(completed)) = (route, completed) else {
        return Err(if events.is_empty() {
            not_found()
        } else {
            ApiError::new(
                StatusCode::CONFLICT,
                "not_rewardable",
                "the inference did not complete",
            )
        });
    };
    // A request that named its model was not routed: its feedback says nothing about a
    // routing decision, and folding it in would bias the bandit toward what clients pick.
    if route.policy == "cache" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_rewardable",
            "the answer came from the response cache, so no policy routed it",
        ));
    }
    if route.policy == "named" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_rewardable",
            "the request named its model, so no policy routed it; feedback trains the router only on `auto` requests",
        ));
    }
    // The dearest of the models the decision chose among, at this answer's token counts.
    let dearest = route
        .candidates
        .iter()
        .filter_map(|name| pipeline.config.model(name))
        .map(|m| m.price.cost(1, completed.tokens_in, completed.tokens_out))
        .max()
        .unwrap_or(0);
    let reward = pipeline.router.reward(
        principal.tenant,
        input.value,
        completed.cost_micros,
        dearest,
        completed.latency_us as f64 / 1e6,
    );
    let event = RewardRecorded {
        inference_id: id,
        metric: input.metric.clone(),
        value_milli: (input.value * 1_000.0).round() as i64,
        reward_milli: (reward * 1_000.0).round() as i64,
        policy: route.policy,
        model: completed.model,
        candidates: route.candidates,
        propensity_ppb: route.propensity_ppb,
        feature_set: route.feature_set,
        features_milli: route.features_milli,
        cost_micros: completed.cost_micros,
    };
    let metadata = Metadata {
        correlation_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
        traceparent: switchyard_events::trace::current(),
        ..Metadata::default()
    };
    let applied = pipeline
        .router
        .runtime
        .send(&principal.tenant, RouterCommand::Reward(event), metadata)
        .await
        .map_err(|error| match error {
            switchyard_actors::Error::Rejected(RouterRejection::Invalid(message)) => {
                ApiError::owned(StatusCode::BAD_REQUEST, "invalid_request".into(), message)
            }
            _ => unavailable(),
        })?;
    pipeline
        .router
        .write_through(principal.tenant, applied.version, applied.state);
    let mut response = HttpResponse::Ok();
    for header in headers {
        response.insert_header(header);
    }
    Ok(response.json(json!({"inference_id": id, "metric": input.metric, "reward": reward})))
}

/// The document's form of a routing policy (`switchyard_actors::router::Policy`, which the
/// body is read as).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code, reason = "documents the shape only")]
pub(crate) enum PolicySchema {
    Static {
        model: String,
    },
    Cheapest {
        #[schema(minimum = 0.0, maximum = 1.0)]
        quality_floor: f64,
        min_pulls: Option<u64>,
    },
    EpsilonGreedy {
        #[schema(minimum = 0.0, maximum = 1.0)]
        epsilon: f64,
    },
    Thompson,
    Linucb {
        #[schema(minimum = 0.0, maximum = 100.0)]
        alpha: f64,
    },
}

/// `POST /v1/router/evaluate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Evaluate {
    /// The candidate policy, as in the config's `[router] policy`.
    #[schema(value_type = PolicySchema)]
    policy: Policy,
    /// Only rewards of this metric (all when absent).
    #[serde(default)]
    metric: Option<String>,
    /// The exploration floor the candidate would serve with (the config's when absent; 0
    /// judges the bare policy).
    #[serde(default)]
    min_exploration: Option<f64>,
}

/// Judges a candidate policy on the tenant's logged decisions (IPS, SNIPS, doubly robust).
#[utoipa::path(post, path = "/v1/router/evaluate", tag = "router", request_body = Evaluate,
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "the estimates with 95% intervals, effective sample size, and what the serving policy earned"),
        (status = 400, description = "invalid policy", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `router` (or `analytics`) scope", body = ErrorBody)))]
pub(crate) async fn evaluate_policy(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
) -> Result<HttpResponse, ApiError> {
    let (principal, _) = scoped_request(&req, &admin, &["router", "analytics"]).await?;
    let input: Evaluate = parse_json(&body)?;
    input.policy.validate().map_err(|message| {
        ApiError::owned(StatusCode::BAD_REQUEST, "invalid_request".into(), message)
    })?;
    let min_exploration = input.min_exploration.unwrap_or_else(|| {
        let state = pipeline.router.state(principal.tenant);
        pipeline.router.routing(&state).min_exploration
    });
    if !(0.0..=0.5).contains(&min_exploration) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "min_exploration must be in [0, 0.5]",
        ));
    }
    let log = load_log(
        pipeline.store.as_ref(),
        Scope::Tenant(principal.tenant),
        input.metric.as_deref(),
    )
    .await
    .map_err(|_| unavailable())?;
    // Replaying a learner over a long log is seconds of CPU: off the async workers.
    let costs = typical_costs(&pipeline.config);
    let policy = input.policy;
    let report: Report = web::block(move || {
        let _span =
            tracing::info_span!("ope", policy = policy.name(), decisions = log.len()).entered();
        evaluate(&policy, &log, &costs, min_exploration, &mut rand::rng())
    })
    .await
    .map_err(|_| unavailable())?;
    Ok(HttpResponse::Ok().json(report))
}

/// The tenant's router state: per model, rewards folded so far and their mean.
#[utoipa::path(get, path = "/v1/router/arms", tag = "router",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "per model: pulls (rewards folded), mean reward, Beta posterior"),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `router` (or `analytics`) scope", body = ErrorBody)))]
pub(crate) async fn arms(
    req: HttpRequest,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
) -> Result<HttpResponse, ApiError> {
    let (principal, _) = scoped_request(&req, &admin, &["router", "analytics"]).await?;
    let state = pipeline.router.state(principal.tenant);
    let arms: serde_json::Map<String, serde_json::Value> = state
        .arms
        .iter()
        .map(|(model, arm)| {
            (
                model.clone(),
                json!({"pulls": arm.pulls, "mean_reward": arm.mean(), "alpha": arm.alpha, "beta": arm.beta}),
            )
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "policy": pipeline.router.routing(&state).policy.name(),
        "routing_revision": state.revision,
        "arms": arms,
    })))
}
