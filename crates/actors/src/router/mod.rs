//! The router actor: one per tenant (stream `router-<tenant>`), folding the rewards of its
//! tenant's inferences into bandit state — per model: pulls, reward sums, a Beta posterior,
//! and LinUCB's inverse design matrix and reward vector. Choosing a model is not a command: the
//! gateway reads this state (kept current from the same events) and applies a [`policy`] to it,
//! so a request never waits on a mailbox; only feedback goes through `decide`.
//!
//! Everything is rebuilt from `RewardRecorded` events after a restart: the state is a fold of
//! its stream, like every actor's.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use switchyard_events::{Event, RewardRecorded, RouterConfigured, TenantId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::actor::Actor;

pub mod ope;
pub mod policy;
pub mod routing;

pub use routing::{RewardWeights, Routing, Split};

#[cfg(test)]
mod tests;

/// Rewards remembered per tenant to refuse a second reward for the same inference and metric
/// (the oldest ids are forgotten first: UUIDv7 sort by time).
pub const REMEMBERED_REWARDS: usize = 100_000;
/// The logged request features LinUCB reads: the first ones of feature set 1 (the gateway's
/// `REQUEST_FEATURES`, from `bias` to `weekend`).
pub const REQUEST_DIM: usize = 23;
/// Where feature set 1 keeps ln(1 + prompt tokens) / 10, and the code and math task classes.
const LOG_PROMPT_TOKENS: usize = 1;
const TASK_CODE: usize = 11;
const TASK_MATH: usize = 12;
/// The length feature's value at about 24 prompt tokens, a short plain request: the centre of
/// LinUCB's length terms.
const LENGTH_CENTRE: f64 = 0.32;
/// Dimensions of LinUCB's context: the request features, then three terms derived from them —
/// the centred length squared, and the centred length times each task class. The chance of a
/// right answer falls along a logistic curve in the prompt's length whose position depends on
/// the task, so a reward model linear in the raw features alone misfits long prompts; these
/// terms let each arm's ridge regression bend with length, per task class. They are computed
/// here, not logged, so logged decisions (feature set 1) keep their layout.
pub const CONTEXT_DIM: usize = REQUEST_DIM + 3;

/// The router actor kind.
#[derive(Debug, Clone, Copy)]
pub struct Router;

/// What one model has earned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmStats {
    pub pulls: u64,
    pub reward_sum: f64,
    pub reward_sq_sum: f64,
    /// The sum of the feedback values (quality, before cost and latency): what a quality
    /// floor is compared with.
    #[serde(default)]
    pub value_sum: f64,
    /// Beta posterior of a reward in [0, 1] (fractional updates), from a uniform prior.
    pub alpha: f64,
    pub beta: f64,
    /// LinUCB: A⁻¹ (row-major, `CONTEXT_DIM`²) kept by Sherman–Morrison updates, and b.
    pub a_inv: Vec<f64>,
    pub b: Vec<f64>,
}

impl Default for ArmStats {
    fn default() -> Self {
        let mut a_inv = vec![0.0; CONTEXT_DIM * CONTEXT_DIM];
        for i in 0..CONTEXT_DIM {
            a_inv[i * CONTEXT_DIM + i] = 1.0;
        }
        ArmStats {
            pulls: 0,
            reward_sum: 0.0,
            reward_sq_sum: 0.0,
            value_sum: 0.0,
            alpha: 1.0,
            beta: 1.0,
            a_inv,
            b: vec![0.0; CONTEXT_DIM],
        }
    }
}

impl ArmStats {
    /// Mean reward so far (`None` before the first).
    pub fn mean(&self) -> Option<f64> {
        (self.pulls > 0).then(|| self.reward_sum / self.pulls as f64)
    }

    /// Mean feedback value (quality) so far (`None` before the first).
    pub fn mean_value(&self) -> Option<f64> {
        (self.pulls > 0).then(|| self.value_sum / self.pulls as f64)
    }

    pub(crate) fn learn(&mut self, reward: f64, value: f64, context: &[f64]) {
        self.pulls += 1;
        self.value_sum += value;
        self.reward_sum += reward;
        self.reward_sq_sum += reward * reward;
        let clipped = reward.clamp(0.0, 1.0);
        self.alpha += clipped;
        self.beta += 1.0 - clipped;
        let x = fit(context);
        // Sherman–Morrison: (A + x xᵀ)⁻¹ = A⁻¹ − (A⁻¹x)(xᵀA⁻¹) / (1 + xᵀA⁻¹x).
        let ax = mat_vec(&self.a_inv, &x);
        let denominator = 1.0 + dot(&x, &ax);
        for i in 0..CONTEXT_DIM {
            for j in 0..CONTEXT_DIM {
                self.a_inv[i * CONTEXT_DIM + j] -= ax[i] * ax[j] / denominator;
            }
        }
        for (b, xi) in self.b.iter_mut().zip(&x) {
            *b += reward * xi;
        }
    }

    /// LinUCB's estimate θᵀx and its width √(xᵀA⁻¹x).
    pub fn linucb(&self, context: &[f64]) -> (f64, f64) {
        let x = fit(context);
        let theta = mat_vec(&self.a_inv, &self.b);
        let width = dot(&x, &mat_vec(&self.a_inv, &x)).max(0.0).sqrt();
        (dot(&theta, &x), width)
    }
}

/// LinUCB's context: the logged request features cut or padded to `REQUEST_DIM`, then the
/// derived length terms (see [`CONTEXT_DIM`]).
fn fit(context: &[f64]) -> Vec<f64> {
    let mut x = Vec::with_capacity(CONTEXT_DIM);
    x.extend(context.iter().take(REQUEST_DIM).copied());
    x.resize(REQUEST_DIM, 0.0);
    // Scaled so the terms span about as much as the flags do (a long padded prompt: ~1).
    let length = (x[LOG_PROMPT_TOKENS] - LENGTH_CENTRE) * 5.0;
    x.push(length * length);
    x.push(length * x[TASK_CODE]);
    x.push(length * x[TASK_MATH]);
    x
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn mat_vec(m: &[f64], v: &[f64]) -> Vec<f64> {
    (0..CONTEXT_DIM)
        .map(|i| dot(&m[i * CONTEXT_DIM..(i + 1) * CONTEXT_DIM], v))
        .collect()
}

/// A tenant's router state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouterState {
    pub arms: BTreeMap<String, ArmStats>,
    /// (inference, metric) pairs already rewarded, newest kept.
    pub rewarded: BTreeSet<(Uuid, String)>,
    /// The tenant's own routing (`None`: the server's `[router]` config).
    #[serde(default)]
    pub routing: Option<Routing>,
    /// How many times the tenant's routing was set (0: never).
    #[serde(default)]
    pub revision: u64,
}

/// What the router actor is asked.
#[derive(Debug, Clone, PartialEq)]
pub enum RouterCommand {
    /// Feedback to fold.
    Reward(RewardRecorded),
    /// Set the tenant's routing (`None`: back to the server's), if the revision is still
    /// `expected_revision` when one is given (a read-modify-write such as promoting a split).
    Configure {
        routing: Option<Routing>,
        expected_revision: Option<u64>,
        change: String,
    },
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterRejection {
    #[error("{0}")]
    Invalid(String),
    #[error("the routing is at revision {current}, not the expected one")]
    Stale { current: u64 },
}

fn configure(
    state: &RouterState,
    routing: Option<Routing>,
    expected_revision: Option<u64>,
    change: String,
) -> Result<Vec<Event>, RouterRejection> {
    if let Some(expected) = expected_revision
        && expected != state.revision
    {
        return Err(RouterRejection::Stale {
            current: state.revision,
        });
    }
    if let Some(routing) = &routing {
        routing
            .validate(|_| true)
            .map_err(RouterRejection::Invalid)?;
    }
    if routing == state.routing {
        return Ok(vec![]); // the same document again is no new revision
    }
    let routing_json = routing
        .map(|r| serde_json::to_string(&r))
        .transpose()
        .map_err(|e| RouterRejection::Invalid(e.to_string()))?;
    Ok(vec![Event::RouterConfigured(RouterConfigured {
        revision: state.revision + 1,
        routing_json,
        change,
    })])
}

impl Actor for Router {
    const KIND: &'static str = "router";
    // 2: arms keep the sum of feedback values (a version 1 snapshot is rebuilt from the log).
    // 3: the tenant's routing and its revision.
    const SNAPSHOT_VERSION: u16 = 4;
    type Id = TenantId;
    type State = RouterState;
    type Command = RouterCommand;
    type Rejection = RouterRejection;

    fn tenant(id: &TenantId) -> TenantId {
        *id
    }

    fn decide(
        state: &RouterState,
        command: RouterCommand,
        _now: OffsetDateTime,
    ) -> Result<Vec<Event>, RouterRejection> {
        let reward = match command {
            RouterCommand::Reward(reward) => reward,
            RouterCommand::Configure {
                routing,
                expected_revision,
                change,
            } => return configure(state, routing, expected_revision, change),
        };
        if reward.metric.is_empty()
            || reward.metric.len() > 64
            || !reward
                .metric
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(RouterRejection::Invalid(
                "metric must be 1-64 letters, digits or _-.".into(),
            ));
        }
        if !(0..=1_000).contains(&reward.reward_milli) {
            return Err(RouterRejection::Invalid("reward must be in [0, 1]".into()));
        }
        if reward.model.is_empty() || reward.propensity_ppb == 0 {
            return Err(RouterRejection::Invalid(
                "the decision has no model or no propensity".into(),
            ));
        }
        if state
            .rewarded
            .contains(&(reward.inference_id, reward.metric.clone()))
        {
            return Ok(vec![]); // feedback sent twice counts once
        }
        Ok(vec![Event::RewardRecorded(reward)])
    }

    fn apply(state: &mut RouterState, event: &Event) {
        match event {
            Event::RewardRecorded(e) => {
                // One pull per decision: the first reward of an inference (whatever its
                // metric) trains the arm; a second metric on it is recorded, not learned again.
                let learnt = state
                    .rewarded
                    .range((e.inference_id, String::new())..)
                    .next()
                    .is_some_and(|(id, _)| *id == e.inference_id);
                if !learnt {
                    let context: Vec<f64> = e
                        .features_milli
                        .iter()
                        .map(|f| *f as f64 / 1_000.0)
                        .collect();
                    state.arms.entry(e.model.clone()).or_default().learn(
                        e.reward_milli as f64 / 1_000.0,
                        e.value_milli as f64 / 1_000.0,
                        &context,
                    );
                }
                state.rewarded.insert((e.inference_id, e.metric.clone()));
                while state.rewarded.len() > REMEMBERED_REWARDS {
                    state.rewarded.pop_first();
                }
            }
            Event::RouterConfigured(e) => {
                state.revision = e.revision;
                // Validated when written; a document this build cannot read serves the default.
                state.routing = e
                    .routing_json
                    .as_deref()
                    .and_then(|doc| serde_json::from_str(doc).ok());
            }
            Event::TenantCreated(_)
            | Event::TenantRenamed(_)
            | Event::TenantSuspended(_)
            | Event::TenantResumed(_)
            | Event::TenantFlagSet(_)
            | Event::FeatureFlagSet(_)
            | Event::TenantSettingSet(_)
            | Event::ApiKeyIssued(_)
            | Event::ApiKeyRevoked(_)
            | Event::ApiKeyRotated(_)
            | Event::TenantDeleted(_)
            | Event::TenantLimitsSet(_)
            | Event::IdempotencyKeyClaimed(_)
            | Event::IdempotentResponseRecorded(_)
            | Event::IdempotencyKeyReleased(_)
            | Event::QuotaReserved(_)
            | Event::QuotaSettled(_)
            | Event::QuotaReleased(_)
            | Event::UsageRecorded(_)
            | Event::InvoiceFinalized(_)
            | Event::CreditNoteIssued(_)
            | Event::StorageMetered(_)
            | Event::BillingDaySet(_)
            | Event::PriceBookPublished(_)
            | Event::InvoicePaid(_)
            | Event::RateLimitSet(_)
            | Event::InferenceRequested(_)
            | Event::RouteChosen(_)
            | Event::InferenceCompleted(_)
            | Event::InferenceFailed(_)
            | Event::GuardrailChecked(_)
            | Event::InferenceCaptured(_)
            | Event::CapturesDeleted(_)
            | Event::CircuitChanged(_)
            | Event::WorkflowRegistered(_)
            | Event::FragmentRegistered(_)
            | Event::ToolRegistered(_)
            | Event::PromptRegistered(_)
            | Event::ManifestSigned(_)
            | Event::DocumentAdded(_)
            | Event::DocumentChunked(_)
            | Event::DocumentIndexed(_)
            | Event::DocumentDeleted(_)
            | Event::RunStarted(_)
            | Event::StepStarted(_)
            | Event::StepCompleted(_)
            | Event::StepFailed(_)
            | Event::TimerStarted(_)
            | Event::TimerFired(_)
            | Event::SignalReceived(_)
            | Event::RunCancelRequested(_)
            | Event::RunCompleted(_)
            | Event::RunFailed(_)
            | Event::RunCancelled(_)
            | Event::RunContinued(_)
            | Event::SegmentStarted(_) => {}
        }
    }
}
