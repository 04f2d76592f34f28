//! A tenant's routing: which policy serves `auto`, among which models, with what exploration
//! floor, reward weights, canary splits and shadow policies. The server's `[router]` config is
//! the default; a tenant's own document (set through the admin API, event `RouterConfigured`)
//! replaces it whole.

use serde::{Deserialize, Serialize};

use super::policy::Policy;

/// Most splits, shadow policies or candidates one routing document may hold.
pub const MAX_ENTRIES: usize = 32;

/// A routing document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// The policy that serves `auto` outside the splits.
    pub policy: Policy,
    /// Models `auto` may choose (all the server's models when empty).
    #[serde(default)]
    pub candidates: Vec<String>,
    /// Smallest probability of each candidate, so every propensity stays above zero (a static
    /// policy ignores it).
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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

impl RewardWeights {
    /// The reward of feedback `value` on an answer that cost `cost_micros` (the dearest
    /// candidate would have cost `dearest_micros`) and took `latency_s`, on [0, 1].
    pub fn reward(&self, value: f64, cost_micros: u64, dearest_micros: u64, latency_s: f64) -> f64 {
        let cost = if dearest_micros > 0 {
            (cost_micros as f64 / dearest_micros as f64).min(1.0)
        } else {
            0.0
        };
        let raw =
            self.quality * value - self.cost * cost - self.latency * (latency_s / 10.0).min(1.0);
        let (worst, best) = (-(self.cost + self.latency), self.quality);
        if best - worst <= f64::EPSILON {
            return 0.5;
        }
        ((raw - worst) / (best - worst)).clamp(0.0, 1.0)
    }
}

fn one() -> f64 {
    1.0
}

fn half() -> f64 {
    0.5
}

fn tenth() -> f64 {
    0.1
}

/// The default exploration floor.
pub fn default_exploration() -> f64 {
    0.02
}

impl Routing {
    /// Checks the document; `known` says whether a model name is served.
    pub fn validate(&self, known: impl Fn(&str) -> bool) -> Result<(), String> {
        if self.candidates.len() > MAX_ENTRIES
            || self.splits.len() > MAX_ENTRIES
            || self.shadow.len() > MAX_ENTRIES
        {
            return Err(format!(
                "at most {MAX_ENTRIES} candidates, splits and shadow policies each"
            ));
        }
        for candidate in &self.candidates {
            if !known(candidate) {
                return Err(format!("router candidate {candidate} is not a model"));
            }
        }
        let policies = std::iter::once(&self.policy)
            .chain(self.splits.iter().map(|s| &s.policy))
            .chain(&self.shadow);
        for policy in policies {
            policy.validate()?;
            if let Policy::Static { model } = policy {
                if !known(model) {
                    return Err(format!("static policy's model {model} is not a model"));
                }
                if !self.candidates.is_empty() && !self.candidates.contains(model) {
                    return Err(format!(
                        "static policy's model {model} is not among the candidates"
                    ));
                }
            }
        }
        if !(0.0..=0.5).contains(&self.min_exploration) {
            return Err("min_exploration must be in [0, 0.5]".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for split in &self.splits {
            let name_ok = !split.name.is_empty()
                && split.name.len() <= 64
                && split
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
            if !name_ok {
                return Err("a split's name must be 1-64 letters, digits or _-.".into());
            }
            if !names.insert(split.name.as_str()) {
                return Err(format!("two splits are named {}", split.name));
            }
        }
        let total: f64 = self.splits.iter().map(|s| s.share).sum();
        if self.splits.iter().any(|s| !(0.0..=1.0).contains(&s.share)) || total > 1.0 + 1e-9 {
            return Err("split shares must be in [0, 1] and add up to at most 1".into());
        }
        let w = self.reward;
        let weight_ok = |x: f64| (0.0..=100.0).contains(&x);
        if !(weight_ok(w.quality) && weight_ok(w.cost) && weight_ok(w.latency)) {
            return Err("reward weights must be in [0, 100]".into());
        }
        if w.quality + w.cost + w.latency <= 0.0 {
            return Err("at least one reward weight must be above 0".into());
        }
        Ok(())
    }

    /// The document with split `name` made the serving policy (and removed from the splits).
    pub fn promoted(&self, name: &str) -> Option<Routing> {
        let at = self.splits.iter().position(|s| s.name == name)?;
        let mut next = self.clone();
        let split = next.splits.remove(at);
        next.policy = split.policy;
        Some(next)
    }

    /// The document without split `name` (its traffic goes back to the serving policy).
    pub fn rolled_back(&self, name: &str) -> Option<Routing> {
        let at = self.splits.iter().position(|s| s.name == name)?;
        let mut next = self.clone();
        next.splits.remove(at);
        Some(next)
    }
}
