//! An admitted inference: admission (limits and budget reservation), then settlement and the
//! one append of its record when it ends (see [`super::record`] for its form).

use std::time::Instant;

use switchyard_actors::billing::ModelPrice;
use switchyard_actors::router::policy::Policy;
use switchyard_actors::tenant::Limits;
use switchyard_events::{
    Event, ExpectedVersion, GuardrailChecked, InferenceCompleted, InferenceFailed,
    InferenceRequested, Metadata, RouteChosen, StreamId, TenantId,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::durability::{Durability, Later};
use super::record::inference_record;
use super::{Gate, Pipeline};
use crate::admission::below::Account;
use crate::admission::{Check, Principal, RateStatus, enforce};
use crate::config::ModelConfig;
use crate::error::Error;
use crate::metrics::INFERENCE;
use crate::openai::ChatRequest;
use crate::providers::{ProviderError, Usage};

/// A provider's answer: usage, time to first token (µs), finish reason, attempts.
pub(super) type Answered = (Usage, u64, String, u32);
/// A provider's failure: the error, the usage delivered before it, attempts.
pub(super) type Failed = (ProviderError, Usage, u32);

/// What the request is, for admission: its endpoint, what it asked for and its estimates.
pub(super) struct Ask<'r> {
    pub endpoint: &'static str,
    pub model: &'r str,
    pub stream: bool,
    pub messages: u32,
    pub prompt_estimate: u64,
    pub max_tokens: Option<u64>,
    /// Output tokens reserved from the budget.
    pub output_reservation: u64,
    pub chat: Option<&'r ChatRequest>,
    /// The end user the spend is for, and the request's tags.
    pub user: Option<&'r str>,
    pub tags: Vec<String>,
    /// The inference's id when the caller chose it (a workflow step's, derived from its run,
    /// step and attempt); a fresh UUIDv7 otherwise.
    pub id: Option<Uuid>,
}

/// Everything known about one inference while it runs, to log it at the end.
pub(super) struct Ticket {
    pub id: Uuid,
    /// The caller chose the id (a workflow step's): recorded durably whatever the mode.
    chosen_id: bool,
    pub tenant: TenantId,
    key_id: Uuid,
    metadata: Metadata,
    requested: InferenceRequested,
    pub route: RouteChosen,
    /// The model that answered (the routed one, or a fallback), its provider and price.
    pub served_model: String,
    served_provider: String,
    pub price: ModelPrice,
    /// The share of the price billed, parts per million (below a million: an answer from the
    /// cache).
    price_share_ppm: u64,
    pub reserved: u64,
    pub reserved_tokens: u64,
    /// Output tokens the reservation covers (a stream that outgrows it must extend it).
    pub reserved_output: u64,
    /// Where the reservation was taken: this node's meter or the shared budgets.
    pub gate: Gate,
    /// The budgets below the tenant that hold the same reservation (key, user, tags).
    below: Vec<(Account, Limits)>,
    started: Instant,
    token_checks: Vec<Check>,
    /// The tightest rate-limit tier of each unit at admission.
    pub rate: RateStatus,
    /// The guardrails' decisions, logged before the outcome.
    guardrails: Vec<GuardrailChecked>,
}

impl Ticket {
    /// Records which model answered (a fallback changes model, provider and price).
    pub fn serve(&mut self, model: &ModelConfig) {
        self.served_model.clone_from(&model.name);
        self.served_provider.clone_from(&model.provider);
        self.price = model.price;
    }

    pub fn cost(&self, usage: Usage) -> u64 {
        let full = self
            .price
            .cost(1, usage.prompt_tokens, usage.completion_tokens);
        if self.price_share_ppm >= 1_000_000 {
            return full;
        }
        u64::try_from((u128::from(full) * u128::from(self.price_share_ppm)).div_ceil(1_000_000))
            .unwrap_or(u64::MAX)
    }

    /// Marks the inference as answered from the response cache: served by `model`'s earlier
    /// answer (provider and route policy `cache`), billed at `share` of its price, for a
    /// request that named `requested`.
    pub fn serve_from_cache(
        &mut self,
        model: &ModelConfig,
        share: f64,
        requested: &str,
        policy: &str,
    ) {
        self.serve(model);
        "cache".clone_into(&mut self.served_provider);
        self.price_share_ppm = (share.clamp(0.0, 1.0) * 1e6).round() as u64;
        requested.clone_into(&mut self.requested.model_requested);
        self.route = RouteChosen {
            policy: policy.into(),
            model: model.name.clone(),
            provider: "cache".into(),
            candidates: vec![model.name.clone()],
            propensity_ppb: 1_000_000_000,
            feature_set: 0,
            features_milli: Vec::new(),
            shadow: Vec::new(),
        };
    }

    /// Adds a guardrail decision to the inference's events.
    pub fn guarded(&mut self, checked: GuardrailChecked) {
        self.guardrails.push(checked);
    }

    /// Microseconds since admission.
    pub fn elapsed_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Settles the budget, charges the answer's tokens, and appends the inference's record.
    /// Returns the log position of its outcome event, or 0 when they are recorded after the answer
    /// ([`Durability::Batched`]).
    pub async fn finish(
        &self,
        pipeline: &Pipeline,
        outcome: Result<Answered, Failed>,
    ) -> Result<u64, Error> {
        let now = OffsetDateTime::now_utc();
        let latency_us = self.elapsed_us();
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
                    request: None,
                    route: None,
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
                    request: None,
                    route: None,
                }),
            ),
        };
        let cost = self.cost(usage);
        let tokens = usage.prompt_tokens + usage.completion_tokens;
        self.settle(pipeline, cost, tokens, now, false).await;
        // The prompt's estimate and the output's reservation were taken before the call; now the
        // real tokens are known: the excess is charged, what was not used given back.
        for check in &self.token_checks {
            pipeline
                .limiter
                .settle(&check.key, check.limit, check.cost, tokens)
                .await;
        }
        // One event per inference (two rows more per request cost the log and every subscriber
        // a third of their work) unless the operator asked for the older three (`split`).
        let encoded = inference_record(
            pipeline.recording.form(),
            &self.requested,
            Some(&self.route),
            &self.guardrails,
            last,
            &self.metadata,
        )
        .map_err(|_| Error::Unavailable)?;
        let stream = StreamId::of("inference", self.id).map_err(|_| Error::Unavailable)?;
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
        if pipeline.recording.mode() == Durability::Batched && !self.chosen_id {
            pipeline
                .recording
                .record_later(Later {
                    store: pipeline.store.clone(),
                    tenant: self.tenant,
                    stream,
                    events: encoded,
                    meter: pipeline.meter.clone(),
                    id: self.id,
                    cost,
                    tokens,
                })
                .await;
            return Ok(0);
        }
        let appended = match pipeline
            .store
            .append(self.tenant, &stream, ExpectedVersion::NoStream, encoded)
            .await
        {
            Ok(appended) => appended,
            // A chosen id whose events another attempt recorded first (a step carried out twice
            // at once): that one is billed, this one is not.
            Err(error) if error.is_conflict() => {
                self.settle(pipeline, cost, tokens, now, true).await;
                tracing::info!(inference_id = %self.id, "an inference recorded by another attempt");
                let recorded = pipeline.recorded(self.tenant, self.id).await?;
                return Ok(recorded.map_or(0, |r| r.position));
            }
            Err(error) => {
                self.settle(pipeline, cost, tokens, now, true).await;
                tracing::error!(%error, inference_id = %self.id, "cannot log an inference");
                return Err(Error::Unavailable);
            }
        };
        Ok(appended.last_position().0)
    }
}

impl Ticket {
    /// Replaces the reservation by the real cost in this node's meter (which also counts the
    /// spend for its views) and, when the budgets are shared, in Redis; `take_back` undoes it
    /// when the inference's events could not be written.
    async fn settle(
        &self,
        pipeline: &Pipeline,
        cost: u64,
        tokens: u64,
        now: OffsetDateTime,
        take_back: bool,
    ) {
        // The log's figures, for Redis to start from when it holds none (shared budgets only).
        let seed = (self.gate == Gate::Shared).then(|| pipeline.meter.view(self.tenant, now));
        if take_back {
            pipeline
                .meter
                .unsettle(self.tenant, self.id, cost, tokens, now);
        } else {
            let (micros, reserved_tokens) = match self.gate {
                Gate::Local => (self.reserved, self.reserved_tokens),
                Gate::Shared => (0, 0),
            };
            pipeline.meter.settle(
                self.tenant,
                self.id,
                micros,
                reserved_tokens,
                cost,
                tokens,
                now,
            );
        }
        for (account, _) in &self.below {
            if take_back {
                pipeline.meter.unsettle_below(account, cost, tokens, now);
            } else {
                let (micros, reserved_tokens) = match self.gate {
                    Gate::Local => (self.reserved, self.reserved_tokens),
                    Gate::Shared => (0, 0),
                };
                pipeline
                    .meter
                    .settle_below(account, micros, reserved_tokens, cost, tokens, now);
            }
            if self.gate == Gate::Shared
                && let Some(shared) = &pipeline.shared_budgets
            {
                let seed = pipeline.meter.view(account.clone(), now);
                if let Err(error) = shared
                    .settle(
                        account.clone(),
                        self.id,
                        cost,
                        tokens,
                        &seed,
                        now,
                        take_back,
                    )
                    .await
                {
                    tracing::warn!(%error, inference_id = %self.id, account = %account.label(), "cannot settle a shared budget below the tenant");
                }
            }
        }
        if let (Some(seed), Some(shared)) = (seed, &pipeline.shared_budgets)
            && let Err(error) = shared
                .settle(self.tenant, self.id, cost, tokens, &seed, now, take_back)
                .await
        {
            // The reservation's lease gives it back; the spend is seeded from the log again
            // when Redis loses it.
            tracing::warn!(%error, inference_id = %self.id, "cannot settle the shared budgets");
        }
    }
}

/// What is left of an exhausted budget, in its unit.
fn left_text(exhausted: &crate::admission::meter::Exhausted) -> String {
    if exhausted.budget.ends_with("_usd") {
        switchyard_actors::billing::usd(exhausted.left)
    } else {
        format!("{} tokens", exhausted.left)
    }
}

impl Ticket {
    /// The budgets below the tenant this inference holds a reservation in, with their limits.
    pub fn below_limits(&self) -> Vec<(Account, Limits)> {
        self.below.clone()
    }
}

impl Pipeline {
    /// Prepares an inference: model, limits, budget. Nothing is logged for a request refused
    /// here (it cost nothing, and its refusal says why).
    pub(super) async fn admit(
        &self,
        correlation_id: Option<String>,
        principal: &Principal,
        ask: Ask<'_>,
        policy: Option<&Policy>,
    ) -> Result<Ticket, Error> {
        let route = self.route(principal, ask.model, ask.chat, policy)?;
        let model = route.model;
        let prompt_estimate = ask.prompt_estimate;
        if prompt_estimate > model.context_tokens {
            return Err(Error::ContextLength {
                estimate: prompt_estimate,
                model: model.name.clone(),
                limit: model.context_tokens,
            });
        }
        let tenant = principal.tenant;
        let tenant_limits = self.accounts.tenant_limits(tenant);
        let key_limits = self.accounts.key_limits(principal.key_id);
        let model_limits = self.accounts.model_limits(tenant, &model.name);
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
                // The prompt and the output the request may produce, so that concurrent
                // requests cannot together take more than the limit (what is not used is
                // given back when the answer is known).
                let asked = prompt_estimate.saturating_add(ask.output_reservation);
                token_checks.push(Check::tokens(key, tpm, asked.min(tpm)));
            }
        }
        checks.extend(token_checks.iter().cloned());
        let rate = enforce(&self.limiter, &checks).await?;

        let price = model.price;
        let reserved = price.cost(1, prompt_estimate, ask.output_reservation);
        let reserved_tokens = prompt_estimate.saturating_add(ask.output_reservation);
        let id = ask.id.unwrap_or_else(Uuid::now_v7);
        let gate = match self
            .reserve_budget(
                &Account::from(tenant),
                id,
                &tenant_limits,
                reserved,
                reserved_tokens,
                None,
            )
            .await
        {
            Ok(gate) => gate,
            Err(exhausted) => {
                return Err(Error::BudgetExhausted {
                    message: format!(
                        "the tenant's {} is spent: {} left; this request may need up to {} and {reserved_tokens} tokens",
                        exhausted.budget,
                        left_text(&exhausted),
                        switchyard_actors::billing::usd(reserved),
                    ),
                    rate: Box::new(rate),
                });
            }
        };
        let below = self
            .accounts
            .spend_limits(tenant)
            .map(|limits| limits.for_inference(tenant, principal.key_id, ask.user, &ask.tags))
            .unwrap_or_default();
        if let Err((account, exhausted)) = self
            .reserve_below(id, &below, reserved, reserved_tokens, gate)
            .await
        {
            self.release_budget(
                &[Account::from(tenant)],
                id,
                reserved,
                reserved_tokens,
                gate,
            )
            .await;
            return Err(Error::BudgetExhausted {
                message: format!(
                    "the {}'s {} is spent: {} left; this request may need up to {} and {reserved_tokens} tokens",
                    account.label(),
                    exhausted.budget,
                    left_text(&exhausted),
                    switchyard_actors::billing::usd(reserved),
                ),
                rate: Box::new(rate),
            });
        }
        // The request's trace, when traces are exported: the events continue it (even those a
        // `batched` node appends after the answer has gone).
        let metadata = Metadata {
            correlation_id,
            traceparent: switchyard_events::trace::current(),
            ..Metadata::default()
        };
        let provider = self
            .config
            .provider(&model.provider)
            .map_or("", |p| p.name.as_str());
        Ok(Ticket {
            id,
            chosen_id: ask.id.is_some(),
            tenant,
            key_id: principal.key_id,
            metadata,
            requested: InferenceRequested {
                endpoint: ask.endpoint.to_owned(),
                model_requested: ask.model.to_owned(),
                key_id: principal.key_id,
                stream: ask.stream,
                messages: ask.messages,
                prompt_tokens_estimate: prompt_estimate,
                max_tokens: ask.max_tokens,
                user: ask.user.map(str::to_owned),
                tags: ask.tags,
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
            price_share_ppm: 1_000_000,
            reserved,
            reserved_tokens,
            reserved_output: ask.output_reservation,
            gate,
            below,
            started: Instant::now(),
            token_checks,
            rate,
            guardrails: Vec::new(),
        })
    }

    /// Admission of a chat request: its prompt estimate and output reservation (`max_tokens`
    /// × `n`, or the configured default), then [`Pipeline::admit`].
    pub(super) async fn admit_chat(
        &self,
        correlation_id: Option<String>,
        principal: &Principal,
        request: &ChatRequest,
        policy: Option<&Policy>,
        id: Option<Uuid>,
    ) -> Result<Ticket, Error> {
        let reservation = request
            .output_cap()
            .unwrap_or(self.config.default_output_reservation)
            .saturating_mul(u64::from(request.choices()));
        let ask = Ask {
            endpoint: "chat",
            model: &request.model,
            stream: request.stream,
            messages: u32::try_from(request.messages.len()).unwrap_or(u32::MAX),
            prompt_estimate: request.estimate_prompt_tokens(),
            max_tokens: request.output_cap(),
            output_reservation: reservation,
            chat: Some(request),
            user: request.user.as_deref(),
            tags: request.tags(),
            id,
        };
        let span = tracing::debug_span!("admission", switchyard.endpoint = "chat");
        tracing::Instrument::instrument(self.admit(correlation_id, principal, ask, policy), span)
            .await
    }
}
