//! One inference, end to end, without HTTP: [`Pipeline::complete`] (a whole chat answer),
//! [`Pipeline::stream`] (chunks as they arrive) and [`Pipeline::embed`].
//!
//! Each request: choose the model ([`route`]) → request limit of the model and token limits of
//! every tier (the prompt's estimate) → reserve its estimated cost from the budgets (refused
//! when they cannot cover it) → call the provider through the resilience layer (retries with
//! backoff and jitter, then fallbacks, all before the first byte) → settle the budget with the
//! real cost, charge the answer's tokens to the token limits → append the inference's one
//! record, `InferenceCompleted`/`InferenceFailed` carrying the request and the route, to stream
//! `inference-<id>` in a group-committed append ([`ticket`]). The HTTP handlers and the workflow executor both come
//! through here, so both are routed, limited and billed alike.

mod cached;
mod durability;
mod embed;
mod guarded;
mod record;
mod recorded;
mod route;
mod stream;
mod ticket;

use std::sync::Arc;

use serde_json::{Value, json};
use switchyard_actors::router::policy::Policy;
use switchyard_events::EventStore;
use time::OffsetDateTime;
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

pub use cached::CacheStatus;
pub use durability::{Durability, IN_FLIGHT, Recording};
pub use record::RecordForm;
pub use stream::{ChatStream, Frame};

use crate::admission::below::Account;
use crate::admission::meter::{Exhausted, Meter};
use crate::admission::ratelimit::Limiter;
use crate::admission::shared::SharedBudgets;
use crate::admission::{Accounts, Principal, RateStatus};
use crate::config::Config;
use crate::error::Error;
use crate::openai::ChatRequest;
use crate::providers::{Completion, Providers, Usage};
use crate::resilience::Resilience;
use crate::router::RouterHub;

/// Everything an inference needs: the models and their providers, the router, the resilience
/// layer, the limits and budgets, and the log its events go to.
pub struct Pipeline {
    pub config: Config,
    pub providers: Providers,
    pub store: Arc<dyn EventStore>,
    pub router: Arc<RouterHub>,
    pub resilience: Resilience,
    /// Rate-limit state: this process, or Redis when several nodes share limits.
    pub limiter: Arc<Limiter>,
    /// The budget gate (spend folded from the log plus this node's reservations in flight).
    pub meter: Arc<Meter>,
    /// Budgets checked in Redis for every node (`SWITCHYARD_REDIS_URL`); the meter alone
    /// otherwise.
    pub shared_budgets: Option<SharedBudgets>,
    /// Tenants' and keys' limits and plans, as the log says.
    pub accounts: Arc<dyn Accounts>,
    /// Whether an answer waits for its events' fsync ([`Durability`]).
    pub recording: Recording,
    /// The exact response cache, when `[cache]` enables it.
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

/// A whole (not streamed) answer that went through.
#[derive(Debug)]
pub struct Completed {
    /// The OpenAI body (`chat.completion`, or the embedding `list`).
    pub body: Value,
    /// The log position of the inference's events (a read-your-writes token).
    pub position: u64,
    pub inference_id: Uuid,
    pub cost_micros: u64,
    /// The tightest rate-limit tier of each unit.
    pub rate: RateStatus,
    /// What routed it: `named`, the serving policy, `<split>:<policy>` or `override:<policy>`
    /// (empty for an answer given again).
    pub route: String,
    /// Whether the response cache answered it (`None`: the cache was not consulted).
    pub cache: Option<CacheStatus>,
}

/// Where a reservation was taken (its settlement goes to the same place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// This node's meter.
    Local,
    /// The budgets in Redis, shared by every node.
    Shared,
}

impl Pipeline {
    /// Reserves an inference's estimated cost and tokens: in Redis when budgets are shared (a
    /// Redis outage falls back to this node's meter, logged), else in this node's meter.
    pub(super) async fn reserve_budget(
        &self,
        account: &Account,
        id: Uuid,
        limits: &switchyard_actors::tenant::Limits,
        micros: u64,
        tokens: u64,
        gate: Option<Gate>,
    ) -> Result<Gate, Exhausted> {
        let now = OffsetDateTime::now_utc();
        let tenant = account.tenant;
        if let Some(shared) = &self.shared_budgets
            && gate != Some(Gate::Local)
        {
            let seed = self.meter.view(account.clone(), now);
            match shared
                .reserve(account.clone(), id, limits, micros, tokens, &seed, now)
                .await
            {
                Ok(outcome) => return outcome.map(|()| Gate::Shared),
                Err(error) if gate.is_none() => {
                    crate::metrics::INFERENCE
                        .degraded
                        .with_label_values(&["budgets"])
                        .inc();
                    tracing::warn!(%error, %tenant, "shared budgets unavailable; checking this node's meter only");
                }
                Err(error) => {
                    crate::metrics::INFERENCE
                        .degraded
                        .with_label_values(&["budgets"])
                        .inc();
                    tracing::warn!(%error, %tenant, "shared budgets unavailable; the reservation is not extended");
                    return Ok(Gate::Shared);
                }
            }
        }
        self.meter
            .reserve(account.clone(), limits, micros, tokens, now)
            .map(|()| Gate::Local)
    }

    /// Reserves the same amounts from each budget below the tenant, where the tenant's was
    /// taken; a refusal gives back what this call reserved and names the account.
    pub(super) async fn reserve_below(
        &self,
        id: Uuid,
        below: &[(Account, switchyard_actors::tenant::Limits)],
        micros: u64,
        tokens: u64,
        gate: Gate,
    ) -> Result<(), (Account, Exhausted)> {
        for (at, (account, limits)) in below.iter().enumerate() {
            if let Err(exhausted) = self
                .reserve_budget(account, id, limits, micros, tokens, Some(gate))
                .await
            {
                let taken: Vec<Account> = below[..at].iter().map(|(a, _)| a.clone()).collect();
                self.release_budget(&taken, id, micros, tokens, gate).await;
                return Err((account.clone(), exhausted));
            }
        }
        Ok(())
    }

    /// Gives back reservations of a request refused before it ran.
    pub(super) async fn release_budget(
        &self,
        accounts: &[Account],
        id: Uuid,
        micros: u64,
        tokens: u64,
        gate: Gate,
    ) {
        let now = OffsetDateTime::now_utc();
        for account in accounts {
            match (gate, &self.shared_budgets) {
                (Gate::Shared, Some(shared)) => {
                    let seed = self.meter.view(account.clone(), now);
                    if let Err(error) = shared
                        .settle(account.clone(), id, 0, 0, &seed, now, false)
                        .await
                    {
                        tracing::warn!(%error, inference_id = %id, "cannot give back a shared reservation; its lease will");
                    }
                }
                _ => self.meter.release(account, micros, tokens),
            }
        }
    }

    /// A place in the tenant's bulkhead, or [`Error::TooManyConcurrent`] when it already has
    /// its most requests in flight. Held for the whole request (streams included).
    pub fn tenant_slot(
        &self,
        tenant: switchyard_events::TenantId,
    ) -> Result<OwnedSemaphorePermit, Error> {
        self.resilience
            .tenant_slot(tenant)
            .ok_or(Error::TooManyConcurrent)
    }

    /// A whole chat completion: admission (route, limits, budget), the provider through the
    /// resilience layer, settlement and the inference's events. `policy` replaces the tenant's
    /// routing policy for `auto` (re-execution of a recorded run under another policy).
    /// `inference_id` is the caller's id for it (a workflow step attempt's): when that
    /// inference is already recorded, it is answered again without a second charge.
    pub async fn complete(
        &self,
        correlation_id: Option<String>,
        principal: &Principal,
        request: &ChatRequest,
        policy: Option<&Policy>,
        inference_id: Option<Uuid>,
    ) -> Result<Completed, Error> {
        if let Some(id) = inference_id
            && let Some(recorded) = self.recorded(principal.tenant, id).await?
        {
            return self.answer_again(id, request, recorded).await;
        }
        let guarded = self
            .guard_input(correlation_id.as_deref(), principal, request, "chat")
            .await?;
        let request = guarded.as_ref().map_or(request, |g| &g.request);
        let input = guarded.as_ref().map(|g| &g.input);
        let cached = if policy.is_none() {
            let salt = guarded.as_ref().map(|g| g.guard.fingerprint());
            self.cache_lookup(principal, request, inference_id, salt)
                .await
        } else {
            None
        };
        if let Some((_, Some(entry))) = &cached {
            return self
                .answer_cached(correlation_id, principal, request, entry, input)
                .await;
        }
        let plan = cached.map(|(plan, _)| plan);
        let mut ticket = self
            .admit_chat(correlation_id, principal, request, policy, inference_id)
            .await?;
        if let Some(input) = input {
            ticket.guarded(input.clone());
        }
        let routed = self
            .config
            .model(&ticket.route.model)
            .ok_or(Error::Unavailable)?;
        let (outcome, attempts, served) = self
            .resilience
            .call(
                "chat",
                &self.config,
                &self.providers,
                routed,
                |model, provider| async move {
                    let answer = provider.chat(model, request).await;
                    if let Ok(done) = &answer {
                        let span = tracing::Span::current();
                        span.record("gen_ai.usage.input_tokens", done.usage.prompt_tokens);
                        span.record("gen_ai.usage.output_tokens", done.usage.completion_tokens);
                    }
                    answer
                },
            )
            .await;
        ticket.serve(served);
        match outcome {
            Ok(completion) => {
                let (Completion { choices, usage }, attempts) = match &guarded {
                    Some(guarded) => {
                        self.guard_output(guarded, &mut ticket, completion, attempts)
                            .await?
                    }
                    None => (completion, attempts),
                };
                let ttft = ticket.elapsed_us();
                let finish = choices
                    .first()
                    .and_then(|c| c.get("finish_reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("stop")
                    .to_owned();
                let position = ticket
                    .finish(self, Ok((usage, ttft, finish, attempts)))
                    .await?;
                if let Some(plan) = &plan {
                    plan.keep(&ticket.served_model, choices.clone(), usage)
                        .await;
                }
                if let Some(policy) = self.accounts.capture(principal.tenant) {
                    crate::capture::spawn(
                        self.store.clone(),
                        policy,
                        crate::capture::Captured {
                            tenant: principal.tenant,
                            inference_id: ticket.id,
                            request,
                            model: &ticket.served_model,
                            choices: choices.clone(),
                            usage,
                        },
                    );
                }
                Ok(Completed {
                    body: chat_body(ticket.id, &ticket.served_model, choices, usage),
                    position,
                    inference_id: ticket.id,
                    cost_micros: ticket.cost(usage),
                    rate: ticket.rate,
                    route: ticket.route.policy.clone(),
                    cache: plan.map(|_| CacheStatus::Miss),
                })
            }
            Err(error) => {
                ticket
                    .finish(self, Err((error.clone(), Usage::default(), attempts)))
                    .await?;
                Err(Error::Provider(error))
            }
        }
    }
}

/// A whole answer's `chat.completion` body.
fn chat_body(id: Uuid, model: &str, choices: Vec<Value>, usage: Usage) -> Value {
    json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": OffsetDateTime::now_utc().unix_timestamp(),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
        "system_fingerprint": null,
    })
}
