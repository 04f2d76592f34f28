//! The `[router]` table of the config: the policy that serves `auto`, its candidates, splits,
//! shadow policies and the reward weights.

use serde::{Deserialize, Serialize};
use switchyard_actors::router::policy::Policy;

use super::ModelConfig;

/// The `[router]` section of the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The policy that serves `auto` (unset: `static` on `default_model` when the config names
    /// one, else Thompson sampling). Resolved into `serving` when the config is read.
    #[serde(default)]
    pub policy: Option<Policy>,
    #[serde(skip, default = "default_policy")]
    pub serving: Policy,
    /// Models `auto` may choose (all models when empty).
    #[serde(default)]
    pub candidates: Vec<String>,
    /// Smallest probability of each candidate, so every propensity stays above zero.
    #[serde(default = "default_exploration")]
    pub min_exploration: f64,
    /// Canary / A-B splits: a sticky share of keys (or of `user`s) served by another policy.
    #[serde(default)]
    pub splits: Vec<Split>,
    /// Policies that choose for every request without serving, to be judged offline.
    #[serde(default)]
    pub shadow: Vec<Policy>,
    /// How feedback becomes a reward.
    #[serde(default)]
    pub reward: RewardWeights,
}

use switchyard_actors::router::routing::default_exploration;
pub use switchyard_actors::router::{RewardWeights, Routing, Split};

fn default_policy() -> Policy {
    Policy::Thompson
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            policy: None,
            serving: default_policy(),
            candidates: Vec::new(),
            min_exploration: default_exploration(),
            splits: Vec::new(),
            shadow: Vec::new(),
            reward: RewardWeights::default(),
        }
    }
}

impl RouterConfig {
    /// The section as a routing document (the default of every tenant without its own).
    pub fn routing(&self) -> Routing {
        Routing {
            policy: self.serving.clone(),
            candidates: self.candidates.clone(),
            min_exploration: self.min_exploration,
            splits: self.splits.clone(),
            shadow: self.shadow.clone(),
            reward: self.reward,
        }
    }

    /// Checks the section against the declared models.
    pub fn validate(&self, models: &[ModelConfig]) -> Result<(), String> {
        self.routing()
            .validate(|m| models.iter().any(|model| model.name == m))
            .map_err(|message| format!("router: {message}"))
    }
}
