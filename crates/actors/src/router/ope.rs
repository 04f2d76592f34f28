//! Off-policy evaluation: what a candidate policy would have earned on the logged traffic,
//! judged from the decisions the serving policy logged with their propensities.
//!
//! The candidate is replayed over the log in order: at each decision it gives its probability
//! of the logged model (from what it had learnt from the earlier rewards), then learns from the
//! logged reward, as it would have online. Estimators:
//!
//! - **IPS**: mean of w·r, w = π(a|x) / μ(a|x); unbiased, high variance.
//! - **SNIPS**: Σ w·r / Σ w; a little biased, much steadier.
//! - **DR** (doubly robust): mean of Σₐ π(a|x)·q̂(a) + w·(r − q̂(a_logged)), with q̂ the mean
//!   reward of each model in the log; unbiased if either the propensities or q̂ are right.
//!
//! Intervals are normal approximations at 95% (the delta method for SNIPS); the effective
//! sample size (Σw)² / Σw² says how much of the log the candidate really overlaps.

use std::collections::BTreeMap;

use rand::Rng;
use serde::Serialize;

use super::policy::{Arm, Policy, distribution};
use super::{ArmStats, RouterState};

/// One logged decision with its outcome.
#[derive(Debug, Clone)]
pub struct Logged {
    pub context: Vec<f64>,
    pub candidates: Vec<String>,
    /// Index of the served model in `candidates`.
    pub chosen: usize,
    /// μ(chosen | context): the serving policy's probability.
    pub propensity: f64,
    pub reward: f64,
    /// The feedback value (quality) the reward came from: what a quality floor reads.
    pub value: f64,
    pub cost_micros: u64,
}

/// An estimate with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    fn from_terms(terms: &[f64]) -> Self {
        let n = terms.len().max(1) as f64;
        let mean = terms.iter().sum::<f64>() / n;
        let var = terms.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let half = 1.96 * (var / n).sqrt();
        Estimate {
            value: mean,
            low: mean - half,
            high: mean + half,
        }
    }

    /// Whether `x` lies in the interval.
    pub fn covers(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// What the evaluation says.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub policy: String,
    pub decisions: usize,
    /// The serving policy's mean reward and cost (what was observed).
    pub logged_reward: Estimate,
    pub logged_cost_micros: f64,
    pub ips: Estimate,
    pub snips: Estimate,
    pub dr: Estimate,
    /// The candidate's cost per request, by IPS.
    pub cost_micros: Estimate,
    pub effective_sample_size: f64,
}

/// Evaluates `policy` on `log` (in the order the decisions were made). `costs` gives each
/// model's typical request cost for cost-aware policies.
pub fn evaluate(
    policy: &Policy,
    log: &[Logged],
    costs: &BTreeMap<String, u64>,
    min_exploration: f64,
    rng: &mut impl Rng,
) -> Report {
    // q̂: each model's mean reward in the log.
    let mut sums: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for entry in log {
        if let Some(model) = entry.candidates.get(entry.chosen) {
            let s = sums.entry(model.as_str()).or_default();
            s.0 += entry.reward;
            s.1 += 1.0;
        }
    }
    let overall = log.iter().map(|e| e.reward).sum::<f64>() / log.len().max(1) as f64;
    let q_hat = |model: &str| {
        sums.get(model)
            .map_or(overall, |(sum, n)| if *n > 0.0 { sum / n } else { overall })
    };

    let mut learnt = RouterState::default();
    let (mut ips, mut dr, mut weights, mut weighted, mut costs_ips) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for entry in log {
        if entry.propensity <= 0.0 || entry.chosen >= entry.candidates.len() {
            continue;
        }
        let arms: Vec<Arm<'_>> = entry
            .candidates
            .iter()
            .map(|model| Arm {
                model,
                cost_micros: costs.get(model).copied().unwrap_or(0),
                stats: learnt.arms.get(model),
                available: true,
            })
            .collect();
        let pi = distribution(policy, &arms, &entry.context, min_exploration, rng);
        let w = pi[entry.chosen] / entry.propensity;
        let direct: f64 = entry
            .candidates
            .iter()
            .zip(&pi)
            .map(|(m, p)| p * q_hat(m))
            .sum();
        let chosen = &entry.candidates[entry.chosen];
        ips.push(w * entry.reward);
        dr.push(direct + w * (entry.reward - q_hat(chosen)));
        weights.push(w);
        weighted.push((w, entry.reward));
        costs_ips.push(w * entry.cost_micros as f64);
        learnt
            .arms
            .entry(chosen.clone())
            .or_insert_with(ArmStats::default)
            .learn(entry.reward, entry.value, &entry.context);
    }
    let sum_w: f64 = weights.iter().sum();
    let sum_w2: f64 = weights.iter().map(|w| w * w).sum();
    let n = weights.len().max(1) as f64;
    let snips_value = if sum_w > 0.0 {
        weighted.iter().map(|(w, r)| w * r).sum::<f64>() / sum_w
    } else {
        0.0
    };
    // Delta method: Var ≈ Σ (w (r − v))² / (Σ w)².
    let snips_var = if sum_w > 0.0 {
        weighted
            .iter()
            .map(|(w, r)| (w * (r - snips_value)).powi(2))
            .sum::<f64>()
            / (sum_w * sum_w)
    } else {
        0.0
    };
    let half = 1.96 * snips_var.sqrt();
    let rewards: Vec<f64> = log.iter().map(|e| e.reward).collect();
    Report {
        policy: policy.name().to_owned(),
        decisions: weights.len(),
        logged_reward: Estimate::from_terms(&rewards),
        logged_cost_micros: log.iter().map(|e| e.cost_micros as f64).sum::<f64>()
            / log.len().max(1) as f64,
        ips: Estimate::from_terms(&ips),
        snips: Estimate {
            value: snips_value,
            low: snips_value - half,
            high: snips_value + half,
        },
        dr: Estimate::from_terms(&dr),
        cost_micros: Estimate::from_terms(&costs_ips),
        effective_sample_size: if sum_w2 > 0.0 {
            sum_w * sum_w / sum_w2
        } else {
            0.0
        }
        .min(n),
    }
}
