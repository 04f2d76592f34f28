//! Router v2 in the gateway: the feature store (signals of the request, the tenant and every
//! candidate model, kept current from the event stream), the choice of a model for `auto` by
//! the configured policy (with canary splits and shadow policies), and feedback that becomes a
//! reward for the tenant's router actor.
//!
//! The choice never waits on a mailbox: each tenant's bandit state is read from a cache that the
//! log subscription keeps current (and the feedback handler writes through). Every decision is
//! logged in the inference record's `route` (`RouteChosen`) with its propensity and the
//! features it saw.

/// The logged decisions, read back for off-policy evaluation.
pub mod offline;
mod tasks; // task classes of a request's text, whole words in several languages

use std::collections::VecDeque;
use std::sync::Arc;

use dashmap::DashMap;
use switchyard_actors::Runtime;
use switchyard_actors::router::policy::{Arm, Policy, distribution, sample};
use switchyard_actors::router::{Router, RouterState, Routing};
use switchyard_events::{Event, RecordedEvent, ShadowChoice, StreamVersion, TenantId};
use time::OffsetDateTime;

use crate::config::{ModelConfig, RouterConfig};
use crate::follow::Folder;
use crate::openai::{ChatRequest, Role};

/// The feature set logged today (its layout is [`FEATURE_NAMES`]).
pub const FEATURE_SET: u16 = 1;

/// Request and tenant signals, in logged order (LinUCB's context is these).
pub const REQUEST_FEATURES: [&str; 23] = [
    "bias",
    "log_prompt_tokens",
    "messages",
    "uses_tools",
    "has_system",
    "json_mode",
    "stream",
    "log_max_tokens",
    "temperature",
    "choices",
    "non_ascii_share",
    "task_code",
    "task_math",
    "task_summarize",
    "task_translate",
    "is_question",
    "plan_free",
    "plan_pro",
    "plan_enterprise",
    "budget_left",
    "hour_sin",
    "hour_cos",
    "weekend",
];

/// Per candidate model, after the request features.
pub const MODEL_FEATURES: [&str; 6] = [
    "p50_latency_s",
    "p95_latency_s",
    "error_rate",
    "circuit_open",
    "cost_per_1k_usd",
    "recent_reward",
];

/// Recent health of one model (all tenants), from inference outcomes in the log.
#[derive(Debug, Default)]
struct Health {
    latencies: VecDeque<f64>,
    /// Quantiles recomputed every few samples, so a choice reads two numbers.
    p50: f64,
    p95: f64,
    error_rate: f64,
    reward: f64,
    rewards: u64,
    since_sort: usize,
}

const LATENCY_WINDOW: usize = 256;

impl Health {
    fn observe(&mut self, latency_s: f64, ok: bool) {
        self.error_rate = 0.95 * self.error_rate + if ok { 0.0 } else { 0.05 };
        if ok {
            if self.latencies.len() == LATENCY_WINDOW {
                self.latencies.pop_front();
            }
            self.latencies.push_back(latency_s);
            self.since_sort += 1;
            if self.since_sort >= 16 || self.latencies.len() < 16 {
                let mut sorted: Vec<f64> = self.latencies.iter().copied().collect();
                sorted.sort_by(f64::total_cmp);
                let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
                self.p50 = at(0.5);
                self.p95 = at(0.95);
                self.since_sort = 0;
            }
        }
    }
}

/// What a choice decided, for the inference record's `route` (`RouteChosen`).
#[derive(Debug, Clone)]
pub struct Choice {
    pub model: String,
    pub policy: String,
    pub candidates: Vec<String>,
    pub propensity_ppb: u32,
    pub features_milli: Vec<i64>,
    pub shadow: Vec<ShadowChoice>,
}

/// Facts about the request's tenant that the features need.
#[derive(Debug, Clone, Copy)]
pub struct TenantFacts<'a> {
    pub plan: &'a str,
    /// Share of the monthly budget left (1 without a budget).
    pub budget_left: f64,
}

/// The router of the gateway.
pub struct RouterHub {
    pub config: RouterConfig,
    /// The server's routing: every tenant's until it sets its own.
    pub default: Routing,
    states: DashMap<TenantId, (StreamVersion, Arc<RouterState>)>,
    health: DashMap<String, Health>,
    /// Whether each model's circuit is open (set by the resilience layer).
    open_circuits: DashMap<String, ()>,
    pub runtime: Runtime<Router>,
}

impl std::fmt::Debug for RouterHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterHub").finish_non_exhaustive()
    }
}

fn to_ppb(p: f64) -> u32 {
    (p.clamp(0.0, 1.0) * 1e9).round() as u32
}

/// A stable number in [0, 1) from a string (sticky split assignment).
fn bucket(key: &str) -> f64 {
    let hash = blake3::hash(key.as_bytes());
    let bytes: [u8; 8] = hash.as_bytes()[..8].try_into().unwrap_or([0; 8]);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

impl RouterHub {
    pub fn new(config: RouterConfig, runtime: Runtime<Router>) -> Self {
        RouterHub {
            default: config.routing(),
            config,
            states: DashMap::new(),
            health: DashMap::new(),
            open_circuits: DashMap::new(),
            runtime,
        }
    }

    /// Marks a model's circuit open or closed (routing avoids open ones).
    pub fn set_circuit(&self, model: &str, open: bool) {
        if open {
            self.open_circuits.insert(model.to_owned(), ());
        } else {
            self.open_circuits.remove(model);
        }
    }

    /// The tenant's bandit state as the cache has it.
    pub fn state(&self, tenant: TenantId) -> Arc<RouterState> {
        self.states
            .get(&tenant)
            .map(|s| s.1.clone())
            .unwrap_or_default()
    }

    /// The routing in force for a tenant whose state is `state`: its own, or the server's.
    pub fn routing<'a>(&'a self, state: &'a RouterState) -> &'a Routing {
        state.routing.as_ref().unwrap_or(&self.default)
    }

    /// Stores a newer state (from the feedback handler's own write, or the log).
    pub fn write_through(&self, tenant: TenantId, version: StreamVersion, state: RouterState) {
        let mut entry = self
            .states
            .entry(tenant)
            .or_insert_with(|| (StreamVersion::NONE, Arc::default()));
        if version > entry.0 {
            *entry = (version, Arc::new(state));
        }
    }

    /// The features of a request: the request's and tenant's signals, then six per candidate.
    pub fn features(
        &self,
        request: &ChatRequest,
        tenant: TenantFacts<'_>,
        candidates: &[&ModelConfig],
        now: OffsetDateTime,
    ) -> Vec<f64> {
        let text: String = request
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.text())
            .collect::<Vec<_>>()
            .join("\n");
        let [code, math, summary, translation] = tasks::classes(&text);
        let chars = text.chars().count().max(1) as f64;
        let non_ascii = text.chars().filter(|c| !c.is_ascii()).count() as f64 / chars;
        let json_mode = request
            .response_format
            .as_ref()
            .and_then(|f| f.get("type"))
            .and_then(serde_json::Value::as_str)
            .is_some_and(|t| t != "text");
        let hour = f64::from(now.hour()) + f64::from(now.minute()) / 60.0;
        let angle = hour / 24.0 * std::f64::consts::TAU;
        let weekday = now.weekday().number_from_monday();
        let flag = |b: bool| f64::from(u8::from(b));
        let mut features = vec![
            1.0,
            (1.0 + request.estimate_prompt_tokens() as f64).ln() / 10.0,
            (request.messages.len() as f64 / 10.0).min(10.0),
            flag(
                request
                    .tools
                    .as_ref()
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|t| !t.is_empty()),
            ),
            flag(
                request
                    .messages
                    .iter()
                    .any(|m| matches!(m.role, Role::System | Role::Developer)),
            ),
            flag(json_mode),
            flag(request.stream),
            request
                .output_cap()
                .map_or(0.0, |m| (1.0 + m as f64).ln() / 10.0),
            request.temperature.unwrap_or(1.0) / 2.0,
            f64::from(request.choices()) / 8.0,
            non_ascii,
            flag(code),
            flag(math),
            flag(summary),
            flag(translation),
            flag(text.trim_end().ends_with('?')),
            flag(tenant.plan == "free"),
            flag(tenant.plan == "pro"),
            flag(tenant.plan == "enterprise"),
            tenant.budget_left.clamp(0.0, 1.0),
            angle.sin(),
            angle.cos(),
            flag(weekday >= 6),
        ];
        features.reserve(MODEL_FEATURES.len() * candidates.len());
        for model in candidates {
            let (p50, p95, errors, reward) =
                self.health
                    .get(&model.name)
                    .map_or((0.0, 0.0, 0.0, 0.5), |h| {
                        (
                            h.p50,
                            h.p95,
                            h.error_rate,
                            if h.rewards > 0 { h.reward } else { 0.5 },
                        )
                    });
            let per_1k = model.price.cost(0, 1_000, 1_000) as f64 / 1e6;
            features.extend([
                p50,
                p95,
                errors,
                flag(self.open_circuits.contains_key(&model.name)),
                per_1k,
                reward,
            ]);
        }
        features
    }

    /// Chooses a model for `auto` among `candidates` (in config order) by the routing of the
    /// tenant whose router state is `state`. `policy`, when given, serves instead of its policy
    /// and splits (a workflow run re-executed under another routing policy); its decisions are
    /// logged under `override:<policy>`. `without_splits`, when given, serves the main policy
    /// to a request a split would have taken, logged under `<without_splits>:<policy>` (a
    /// feature flag turned the splits off for it).
    pub fn choose(
        &self,
        state: &RouterState,
        sticky: &str,
        features: &[f64],
        candidates: &[&ModelConfig],
        policy: Option<&Policy>,
        without_splits: Option<&str>,
    ) -> Choice {
        let routing = self.routing(state);
        let context = &features[..REQUEST_FEATURES.len().min(features.len())];
        let arms: Vec<Arm<'_>> = candidates
            .iter()
            .map(|m| Arm {
                model: &m.name,
                cost_micros: m.price.cost(0, 1_000, 1_000),
                stats: state.arms.get(&m.name),
                available: !self.open_circuits.contains_key(&m.name),
            })
            .collect();
        let mut serving = (&routing.policy, routing.policy.name().to_owned());
        if let Some(policy) = policy {
            serving = (policy, format!("override:{}", policy.name()));
        } else if let Some(label) = without_splits
            && !routing.splits.is_empty()
        {
            serving = (
                &routing.policy,
                format!("{label}:{}", routing.policy.name()),
            );
        } else {
            // Sticky split: the same key (or user) always lands in the same bucket.
            let position = bucket(sticky);
            let mut cumulative = 0.0;
            for split in &routing.splits {
                cumulative += split.share;
                if position < cumulative {
                    serving = (
                        &split.policy,
                        format!("{}:{}", split.name, split.policy.name()),
                    );
                    break;
                }
            }
        }
        let mut rng = rand::rng();
        let min = routing.min_exploration;
        let p = distribution(serving.0, &arms, context, min, &mut rng);
        let chosen = sample(&p, &mut rng);
        let shadow = routing
            .shadow
            .iter()
            .map(|policy| {
                let q = distribution(policy, &arms, context, min, &mut rng);
                let pick = sample(&q, &mut rng);
                ShadowChoice {
                    policy: policy.name().to_owned(),
                    model: candidates[pick].name.clone(),
                    propensity_ppb: to_ppb(q[pick]),
                }
            })
            .collect();
        Choice {
            model: candidates[chosen].name.clone(),
            policy: serving.1,
            candidates: candidates.iter().map(|m| m.name.clone()).collect(),
            propensity_ppb: to_ppb(p[chosen]),
            features_milli: features
                .iter()
                .map(|f| (f * 1_000.0).round() as i64)
                .collect(),
            shadow,
        }
    }

    /// The reward of feedback `value` on an inference of `tenant` that cost `cost` and took
    /// `latency_s`, on [0, 1], by the tenant's reward weights
    /// ([`switchyard_actors::router::RewardWeights`] says how).
    pub fn reward(
        &self,
        tenant: TenantId,
        value: f64,
        cost_micros: u64,
        dearest_micros: u64,
        latency_s: f64,
    ) -> f64 {
        let state = self.state(tenant);
        self.routing(&state)
            .reward
            .reward(value, cost_micros, dearest_micros, latency_s)
    }
}

impl RouterHub {
    /// Folds a router-stream event into the tenant's cached state, once.
    fn fold_state(&self, recorded: &RecordedEvent, event: &Event) {
        let mut entry = self
            .states
            .entry(recorded.tenant_id)
            .or_insert_with(|| (StreamVersion::NONE, Arc::default()));
        if recorded.stream_version > entry.0 {
            // In place unless a choice still holds the old state (then that one is copied): a
            // tenant's state holds up to REMEMBERED_REWARDS ids, too many to copy per reward.
            let (version, state) = &mut *entry;
            <Router as switchyard_actors::Actor>::apply(Arc::make_mut(state), event);
            *version = recorded.stream_version;
        }
    }
}

impl Folder for RouterHub {
    fn fold(&self, recorded: &RecordedEvent) {
        match recorded.event_type.as_str() {
            "RewardRecorded" | "RouterConfigured" | "InferenceCompleted" | "InferenceFailed" => {}
            _ => return,
        }
        let Ok(event) = Event::from_recorded(recorded) else {
            return;
        };
        match &event {
            Event::RouterConfigured(_) => self.fold_state(recorded, &event),
            Event::RewardRecorded(e) => {
                {
                    let mut health = self.health.entry(e.model.clone()).or_default();
                    let r = e.reward_milli as f64 / 1_000.0;
                    health.reward = if health.rewards == 0 {
                        r
                    } else {
                        0.95 * health.reward + 0.05 * r
                    };
                    health.rewards += 1;
                }
                self.fold_state(recorded, &event);
            }
            Event::InferenceCompleted(e) => self
                .health
                .entry(e.model.clone())
                .or_default()
                .observe(e.latency_us as f64 / 1e6, true),
            Event::InferenceFailed(e) if !e.model.is_empty() => self
                .health
                .entry(e.model.clone())
                .or_default()
                .observe(e.latency_us as f64 / 1e6, false),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
