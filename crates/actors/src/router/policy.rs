//! Routing policies as pure functions of the router state and the request's context: each
//! returns a probability for every candidate model, and the choice is drawn from it. The
//! probability of the chosen model is the **propensity** logged with the decision — what
//! off-policy evaluation divides by — so every learning policy, deterministic ones included, is
//! given a floor of exploration (`min_exploration` per model) to keep every propensity above
//! zero. A static policy is not: the operator pinned the model, and a pinned model serves every
//! request (the others only while its circuit is open).

use rand::Rng;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use super::ArmStats;

/// Draws used to estimate Thompson sampling's probabilities.
pub const THOMPSON_DRAWS: usize = 512;

/// A routing policy, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Policy {
    /// Always the same model.
    Static { model: String },
    /// The cheapest model whose mean feedback value (quality, before cost and latency) is at
    /// least `quality_floor` (models with fewer than `min_pulls` rewards count as good enough,
    /// so they get tried); the best mean reward when none is.
    Cheapest {
        quality_floor: f64,
        #[serde(default = "default_min_pulls")]
        min_pulls: u64,
    },
    /// The best mean reward, or a uniformly random model with probability `epsilon`.
    EpsilonGreedy { epsilon: f64 },
    /// Thompson sampling on Beta posteriors of the reward.
    Thompson,
    /// LinUCB: per model a ridge regression of the reward on the context, plus `alpha` times
    /// its uncertainty.
    Linucb { alpha: f64 },
}

fn default_min_pulls() -> u64 {
    20
}

impl Policy {
    /// A short name for logs and events.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Static { .. } => "static",
            Policy::Cheapest { .. } => "cheapest",
            Policy::EpsilonGreedy { .. } => "epsilon_greedy",
            Policy::Thompson => "thompson",
            Policy::Linucb { .. } => "linucb",
        }
    }

    /// Checks the knobs.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Policy::Cheapest { quality_floor, .. } if !(0.0..=1.0).contains(quality_floor) => {
                Err("quality_floor must be in [0, 1]".into())
            }
            Policy::EpsilonGreedy { epsilon } if !(0.0..=1.0).contains(epsilon) => {
                Err("epsilon must be in [0, 1]".into())
            }
            Policy::Linucb { alpha } if !(0.0..=100.0).contains(alpha) => {
                Err("alpha must be in [0, 100]".into())
            }
            _ => Ok(()),
        }
    }
}

/// One candidate model as a policy sees it.
#[derive(Debug, Clone)]
pub struct Arm<'a> {
    pub model: &'a str,
    /// Price of a typical request (1k tokens in and out), micro-dollars.
    pub cost_micros: u64,
    /// What the tenant's rewards say about it (`None`: nothing yet).
    pub stats: Option<&'a ArmStats>,
    /// False while its circuit is open: it gets no traffic unless every model is out.
    pub available: bool,
}

/// The probability of choosing each arm.
pub fn distribution(
    policy: &Policy,
    arms: &[Arm<'_>],
    context: &[f64],
    min_exploration: f64,
    rng: &mut impl Rng,
) -> Vec<f64> {
    if arms.is_empty() {
        return Vec::new();
    }
    let any_available = arms.iter().any(|a| a.available);
    let open: Vec<bool> = arms.iter().map(|a| a.available || !any_available).collect();
    let mean = |a: &Arm<'_>| a.stats.and_then(ArmStats::mean);
    let mut p = match policy {
        Policy::Static { model } => one_hot(arms, &open, |a| {
            if a.model == model.as_str() { 1.0 } else { 0.0 }
        }),
        Policy::Cheapest {
            quality_floor,
            min_pulls,
        } => {
            let good = |a: &Arm<'_>| {
                a.stats.is_none_or(|s| s.pulls < *min_pulls)
                    || a.stats
                        .and_then(ArmStats::mean_value)
                        .is_some_and(|q| q >= *quality_floor)
            };
            if arms.iter().zip(&open).any(|(a, o)| *o && good(a)) {
                one_hot(arms, &open, |a| {
                    if good(a) {
                        -(a.cost_micros as f64)
                    } else {
                        f64::NEG_INFINITY
                    }
                })
            } else {
                one_hot(arms, &open, |a| mean(a).unwrap_or(0.0))
            }
        }
        Policy::EpsilonGreedy { epsilon } => {
            // Untried models first (optimistic), then the best mean.
            let greedy = one_hot(arms, &open, |a| mean(a).unwrap_or(f64::INFINITY));
            let k = open.iter().filter(|o| **o).count() as f64;
            greedy
                .iter()
                .zip(&open)
                .map(|(g, o)| {
                    if *o {
                        (1.0 - epsilon) * g + epsilon / k
                    } else {
                        0.0
                    }
                })
                .collect()
        }
        Policy::Thompson => {
            let posteriors: Vec<Option<Beta<f64>>> = arms
                .iter()
                .map(|a| {
                    let (alpha, beta) = a.stats.map_or((1.0, 1.0), |s| (s.alpha, s.beta));
                    Beta::new(alpha.max(1e-6), beta.max(1e-6)).ok()
                })
                .collect();
            let mut wins = vec![0usize; arms.len()];
            for _ in 0..THOMPSON_DRAWS {
                let mut best = None;
                let mut best_draw = f64::NEG_INFINITY;
                for (i, posterior) in posteriors.iter().enumerate() {
                    if !open[i] {
                        continue;
                    }
                    let draw = posterior.as_ref().map_or(0.5, |b| b.sample(rng));
                    if draw > best_draw {
                        best_draw = draw;
                        best = Some(i);
                    }
                }
                if let Some(i) = best {
                    wins[i] += 1;
                }
            }
            wins.iter()
                .map(|w| *w as f64 / THOMPSON_DRAWS as f64)
                .collect()
        }
        Policy::Linucb { alpha } => one_hot(arms, &open, |a| {
            let default = ArmStats::default();
            let (estimate, width) = a.stats.unwrap_or(&default).linucb(context);
            estimate + alpha * width
        }),
    };
    if !matches!(policy, Policy::Static { .. }) {
        explore(&mut p, &open, min_exploration);
    }
    p
}

/// All probability on the best score (ties share it), among open arms.
fn one_hot(arms: &[Arm<'_>], open: &[bool], score: impl Fn(&Arm<'_>) -> f64) -> Vec<f64> {
    let scores: Vec<f64> = arms
        .iter()
        .zip(open)
        .map(|(a, o)| if *o { score(a) } else { f64::NEG_INFINITY })
        .collect();
    let best = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let winners: Vec<bool> = scores
        .iter()
        .zip(open)
        .map(|(s, o)| *o && (*s == best || best == f64::NEG_INFINITY))
        .collect();
    let count = winners.iter().filter(|w| **w).count().max(1) as f64;
    winners
        .iter()
        .map(|w| if *w { 1.0 / count } else { 0.0 })
        .collect()
}

/// Mixes in `floor` per open arm: p' = (1 − k·floor)·p + floor.
fn explore(p: &mut [f64], open: &[bool], floor: f64) {
    let k = open.iter().filter(|o| **o).count() as f64;
    if k == 0.0 {
        return;
    }
    let floor = floor.clamp(0.0, 1.0 / k);
    for (pi, o) in p.iter_mut().zip(open) {
        *pi = if *o {
            (1.0 - k * floor) * *pi + floor
        } else {
            0.0
        };
    }
    let total: f64 = p.iter().sum();
    if total > 0.0 {
        p.iter_mut().for_each(|pi| *pi /= total);
    }
}

/// Draws an index from a distribution.
pub fn sample(p: &[f64], rng: &mut impl Rng) -> usize {
    let mut u: f64 = rng.random();
    for (i, pi) in p.iter().enumerate() {
        if u < *pi {
            return i;
        }
        u -= pi;
    }
    p.iter().rposition(|pi| *pi > 0.0).unwrap_or(0)
}
