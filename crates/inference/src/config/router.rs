//! The `[router]` table of the config: the policy that serves `auto`, its candidates, splits,
//! shadow policies and the reward weights.

use serde::Deserialize;
use switchyard_actors::router::policy::Policy;

use super::ModelConfig;

/// The `[router]` section of the config.
#[derive(Debug, Clone, Deserialize)]
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

/// One split: `share` of the traffic, chosen by a hash of the key (or `user`), gets `policy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    pub name: String,
    pub share: f64,
    pub policy: Policy,
}

/// How feedback becomes a reward: r = quality·value − cost·(cost / dearest candidate's cost)
/// − latency·min(latency s / 10, 1), not clipped, then mapped onto [0, 1] by the affine map that
/// sends the worst possible r (value 0 at the dearest cost and 10 s) to 0 and the best (value 1,
/// free, instant) to 1. The map keeps the order and the expectation of r, so a thumbs-down on a
/// cheap answer scores above one on a dear answer, and every policy maximises E[r]; it keeps the
/// reward a probability for Thompson sampling's Beta posteriors.
///
/// Defaults: quality 1, cost 0.5, latency 0.1: an answer at the dearest candidate's price gives
/// up half a point of quality, so cost counts unless the operator says otherwise.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardWeights {
    #[serde(default = "one")]
    pub quality: f64,
    #[serde(default = "half")]
    pub cost: f64,
    #[serde(default = "tenth")]
    pub latency: f64,
}

impl Default for RewardWeights {
    fn default() -> Self {
        RewardWeights {
            quality: 1.0,
            cost: 0.5,
            latency: 0.1,
        }
    }
}

fn half() -> f64 {
    0.5
}

fn tenth() -> f64 {
    0.1
}

fn one() -> f64 {
    1.0
}

fn default_policy() -> Policy {
    Policy::Thompson
}

fn default_exploration() -> f64 {
    0.02
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
    /// Checks the section against the declared models.
    pub fn validate(&self, models: &[ModelConfig]) -> Result<(), String> {
        let known = |m: &str| models.iter().any(|model| model.name == m);
        for candidate in &self.candidates {
            if !known(candidate) {
                return Err(format!(
                    "router candidate {candidate} is not a declared model"
                ));
            }
        }
        let policies = std::iter::once(&self.serving)
            .chain(self.splits.iter().map(|s| &s.policy))
            .chain(&self.shadow);
        for policy in policies {
            policy.validate()?;
            if let Policy::Static { model } = policy
                && !known(model)
            {
                return Err(format!("static policy's model {model} is not declared"));
            }
        }
        if !(0.0..=0.5).contains(&self.min_exploration) {
            return Err("router.min_exploration must be in [0, 0.5]".into());
        }
        let total: f64 = self.splits.iter().map(|s| s.share).sum();
        if self.splits.iter().any(|s| !(0.0..=1.0).contains(&s.share)) || total > 1.0 {
            return Err("router split shares must be in [0, 1] and add up to at most 1".into());
        }
        Ok(())
    }
}
