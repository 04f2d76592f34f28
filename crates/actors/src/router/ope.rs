//! Off-policy evaluation: what a candidate policy would have earned on the logged traffic,
//! judged from the decisions the serving policy logged with their propensities.
//!
//! The candidate is replayed over the log in order, as it would have run online: at each
//! decision it gives its probability of the logged model from what it has learnt so far, and
//! it learns only from decisions it would have taken itself (the replay method, Li et al.
//! 2011: its own draw must be the logged model), since online it would never have seen the
//! reward of a model it did not choose. A static candidate learns nothing either way. A
//! learning candidate is replayed [`REPLAYS`] times with its own independent draws and each
//! decision's terms are averaged, since its value is an expectation over those draws too.
//!
//! Estimators, each over every logged decision:
//!
//! - **IPS**: mean of w·r, w = π(a|x) / μ(a|x); unbiased, high variance.
//! - **SNIPS**: Σ w·r / Σ w; a little biased, much steadier.
//! - **DR** (doubly robust): mean of Σₐ π(a|x)·q̂(a, x) + w·(r − q̂(a_logged, x)), with q̂ a
//!   ridge regression per model of the reward on the logged context, cross-fitted (a decision's
//!   q̂ is fitted on the other half of the log); unbiased if either the propensities or q̂ are
//!   right, and better than SNIPS when the context tells the models apart.
//!
//! Intervals are 95% percentile bootstraps over the decisions ([`BOOTSTRAP`] resamples, SNIPS
//! recomputed as a ratio in each), which stay honest when a few heavy weights carry much of
//! the estimate, where a normal approximation is far too narrow. The effective sample size
//! (Σw)² / Σw² says how much of the log the candidate really overlaps.

use std::collections::BTreeMap;

use rand::Rng;
use serde::Serialize;

use super::policy::{Arm, Policy, distribution, sample};
use super::{ArmStats, RouterState};

/// Bootstrap resamples per interval.
pub const BOOTSTRAP: usize = 1_000;

/// Passes of a learning candidate over the log, averaged.
pub const REPLAYS: usize = 8;

/// Passes of a learning candidate over resampled logs, to measure how much its path varies.
pub const RESAMPLED_REPLAYS: usize = 24;

/// Student's t at 97.5% for `RESAMPLED_REPLAYS - 1` degrees of freedom.
const T_95: f64 = 2.069;

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
    /// The mean of `terms`, with a percentile-bootstrap interval.
    fn mean_of(terms: &[f64], rng: &mut impl Rng) -> Self {
        let value = mean(terms);
        let (low, high) = bootstrap(terms.len(), rng, |picks| {
            picks.iter().map(|&i| terms[i]).sum::<f64>() / picks.len().max(1) as f64
        });
        Estimate { value, low, high }
    }

    /// The interval, each side at least `half` from the value.
    fn at_least(self, half: f64) -> Self {
        Estimate {
            value: self.value,
            low: self.low.min(self.value - half),
            high: self.high.max(self.value + half),
        }
    }

    /// Whether `x` lies in the interval.
    pub fn covers(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

fn mean(terms: &[f64]) -> f64 {
    terms.iter().sum::<f64>() / terms.len().max(1) as f64
}

/// The 2.5% and 97.5% quantiles of `statistic` over [`BOOTSTRAP`] resamples of `n` items.
fn bootstrap(n: usize, rng: &mut impl Rng, statistic: impl Fn(&[usize]) -> f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let mut picks = vec![0usize; n];
    let mut values: Vec<f64> = (0..BOOTSTRAP)
        .map(|_| {
            for pick in picks.iter_mut() {
                *pick = rng.random_range(0..n);
            }
            statistic(&picks)
        })
        .collect();
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
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
    /// Decisions the candidate learnt from (its own draw was the logged model), per replay.
    pub learnt_from: usize,
}

/// A reward model per model: ridge regressions of the reward on the context, one per half of
/// the log, so that each decision is predicted by the half it is not in.
struct RewardModel {
    halves: [BTreeMap<String, ArmStats>; 2],
    overall: f64,
}

impl RewardModel {
    fn fit(log: &[Logged]) -> RewardModel {
        let mut halves: [BTreeMap<String, ArmStats>; 2] = [BTreeMap::new(), BTreeMap::new()];
        for (i, entry) in log.iter().enumerate() {
            if let Some(model) = entry.candidates.get(entry.chosen) {
                halves[i % 2].entry(model.clone()).or_default().learn(
                    entry.reward,
                    entry.value,
                    &entry.context,
                );
            }
        }
        RewardModel {
            halves,
            overall: mean(&log.iter().map(|e| e.reward).collect::<Vec<_>>()),
        }
    }

    /// q̂(model, context) for decision `i` (fitted without it).
    fn predict(&self, i: usize, model: &str, context: &[f64]) -> f64 {
        match self.halves[(i + 1) % 2].get(model) {
            Some(stats) if stats.pulls > 0 => stats.linucb(context).0.clamp(0.0, 1.0),
            _ => self.overall,
        }
    }
}

/// One pass of a candidate over (a sample of) the log: per decision w, w·r, the DR term and
/// w·cost, and how many decisions it learnt from.
struct Replay {
    ws: Vec<f64>,
    ips: Vec<f64>,
    dr: Vec<f64>,
    costs: Vec<f64>,
    learnt_from: usize,
}

impl Replay {
    fn run(
        policy: &Policy,
        decisions: &[(&Logged, &[f64])],
        costs: &BTreeMap<String, u64>,
        min_exploration: f64,
        rng: &mut impl Rng,
    ) -> Replay {
        let n = decisions.len();
        let mut replay = Replay {
            ws: Vec::with_capacity(n),
            ips: Vec::with_capacity(n),
            dr: Vec::with_capacity(n),
            costs: Vec::with_capacity(n),
            learnt_from: 0,
        };
        let mut learnt = RouterState::default();
        for (entry, q) in decisions {
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
            let direct: f64 = pi.iter().zip(q.iter()).map(|(p, q)| p * q).sum();
            replay.ws.push(w);
            replay.ips.push(w * entry.reward);
            replay
                .dr
                .push(direct + w * (entry.reward - q[entry.chosen]));
            replay.costs.push(w * entry.cost_micros as f64);
            // The replay method: learn only what the candidate would have seen online.
            if sample(&pi, rng) == entry.chosen {
                replay.learnt_from += 1;
                learnt
                    .arms
                    .entry(entry.candidates[entry.chosen].clone())
                    .or_insert_with(ArmStats::default)
                    .learn(entry.reward, entry.value, &entry.context);
            }
        }
        replay
    }

    /// IPS, SNIPS and DR over the whole pass.
    fn estimates(&self) -> [f64; 3] {
        let sum_w: f64 = self.ws.iter().sum();
        let sum_ips: f64 = self.ips.iter().sum();
        let snips = if sum_w > 0.0 { sum_ips / sum_w } else { 0.0 };
        [mean(&self.ips), snips, mean(&self.dr)]
    }
}

/// Evaluates `policy` on `log` (in the order the decisions were made). `costs` gives each
/// model's typical request cost for cost-aware policies. The work grows with the log times
/// [`REPLAYS`] + [`RESAMPLED_REPLAYS`] for a learning candidate: run it off the async workers.
pub fn evaluate(
    policy: &Policy,
    log: &[Logged],
    costs: &BTreeMap<String, u64>,
    min_exploration: f64,
    rng: &mut impl Rng,
) -> Report {
    // q̂ of every candidate model at every usable decision, cross-fitted.
    let model = RewardModel::fit(log);
    let predicted: Vec<(&Logged, Vec<f64>)> = log
        .iter()
        .enumerate()
        .filter(|(_, e)| e.propensity > 0.0 && e.chosen < e.candidates.len())
        .map(|(i, e)| {
            let q = e
                .candidates
                .iter()
                .map(|m| model.predict(i, m, &e.context))
                .collect();
            (e, q)
        })
        .collect();
    let decisions: Vec<(&Logged, &[f64])> =
        predicted.iter().map(|(e, q)| (*e, q.as_slice())).collect();
    let n = decisions.len();
    let learns = !matches!(policy, Policy::Static { .. });
    // A learning candidate's path through the log depends on its own draws; its value is the
    // mean over them, so each decision's terms are averaged over [`REPLAYS`] passes (one
    // suffices for a static candidate).
    let passes = if learns { REPLAYS } else { 1 };
    let (mut ws, mut ips, mut dr, mut costs_ips) =
        (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut learnt_from = 0;
    let share = 1.0 / passes as f64;
    for _ in 0..passes {
        let replay = Replay::run(policy, &decisions, costs, min_exploration, rng);
        for (sum, terms) in [
            (&mut ws, &replay.ws),
            (&mut ips, &replay.ips),
            (&mut dr, &replay.dr),
            (&mut costs_ips, &replay.costs),
        ] {
            sum.iter_mut().zip(terms).for_each(|(s, t)| *s += share * t);
        }
        learnt_from += replay.learnt_from;
    }
    // Resampling the decisions with fixed terms misses that a learner's path depends on the
    // rewards it happened to see: its spread is measured by whole replays over resampled
    // logs (kept in time order), and each interval is at least that wide.
    let path_spread: [f64; 3] = if learns && n > 1 {
        let samples: Vec<[f64; 3]> = (0..RESAMPLED_REPLAYS)
            .map(|_| {
                let mut picks: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
                picks.sort_unstable();
                let resampled: Vec<(&Logged, &[f64])> =
                    picks.iter().map(|&i| decisions[i]).collect();
                Replay::run(policy, &resampled, costs, min_exploration, rng).estimates()
            })
            .collect();
        std::array::from_fn(|k| {
            let values: Vec<f64> = samples.iter().map(|s| s[k]).collect();
            let centre = mean(&values);
            let var = values.iter().map(|v| (v - centre).powi(2)).sum::<f64>()
                / (values.len() - 1) as f64;
            // Student's t, 95%, for the resamples' degrees of freedom.
            T_95 * var.sqrt()
        })
    } else {
        [0.0; 3]
    };
    let sum_w: f64 = ws.iter().sum();
    let sum_w2: f64 = ws.iter().map(|w| w * w).sum();
    let snips = |picks: &[usize]| {
        let total: f64 = picks.iter().map(|&i| ws[i]).sum();
        if total > 0.0 {
            picks.iter().map(|&i| ips[i]).sum::<f64>() / total
        } else {
            0.0
        }
    };
    let all: Vec<usize> = (0..n).collect();
    let (snips_low, snips_high) = bootstrap(n, rng, snips);
    let snips = Estimate {
        value: snips(&all),
        low: snips_low,
        high: snips_high,
    };
    let logged: Vec<f64> = log.iter().map(|e| e.reward).collect();
    Report {
        policy: policy.name().to_owned(),
        decisions: n,
        logged_reward: Estimate::mean_of(&logged, rng),
        logged_cost_micros: log.iter().map(|e| e.cost_micros as f64).sum::<f64>()
            / log.len().max(1) as f64,
        ips: Estimate::mean_of(&ips, rng).at_least(path_spread[0]),
        snips: snips.at_least(path_spread[1]),
        dr: Estimate::mean_of(&dr, rng).at_least(path_spread[2]),
        cost_micros: Estimate::mean_of(&costs_ips, rng),
        effective_sample_size: if sum_w2 > 0.0 {
            sum_w * sum_w / sum_w2
        } else {
            0.0
        }
        .min(n as f64),
        learnt_from: learnt_from / passes,
    }
}
