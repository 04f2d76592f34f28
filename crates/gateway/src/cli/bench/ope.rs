//! The bench's check of off-policy evaluation: the uniform logger's traffic judged, through
//! `POST /v1/router/evaluate`, for every policy that served with the logger's reward weights,
//! against what that policy earned online over the requests its replay learnt from.

use serde::Serialize;
use serde_json::{Value, json};

use super::{Arm, ArmReport, Client, metrics};

/// OPE on the uniform logger's tenant against what each policy earned online.
#[derive(Debug, Clone, Serialize)]
pub(super) struct OpeCheck {
    pub(super) policy: String,
    /// The policy's own mean reward over its first `learnt_from` requests (all, if static).
    pub(super) online: f64,
    /// The 95% half-width of `online` (it is measured too).
    pub(super) online_ci95: f64,
    pub(super) learnt_from: usize,
    pub(super) ips: Value,
    pub(super) snips: Value,
    pub(super) dr: Value,
    pub(super) covered: [bool; 3],
}

pub(super) async fn ope_check(
    client: &Client,
    runs: &[(Arm, ArmReport)],
) -> anyhow::Result<Vec<OpeCheck>> {
    let Some((logger, logged)) = runs.iter().find(|(a, _)| a.curve == "uniform") else {
        return Ok(Vec::new());
    };
    let mut checks = Vec::new();
    for (arm, run) in runs {
        if arm.curve == "uniform" || arm.weights.cost != logger.weights.cost {
            continue;
        }
        let (report, _) = client
            .json(
                reqwest::Method::POST,
                "/v1/router/evaluate",
                &logged.key,
                &json!({"policy": arm.policy, "min_exploration": arm.min_exploration}),
            )
            .await?;
        let learnt_from = if arm.curve == "static" {
            run.steps.len()
        } else {
            report["learnt_from"].as_u64().unwrap_or(0) as usize
        };
        let rewards: Vec<f64> = run.steps[..learnt_from.clamp(1, run.steps.len())]
            .iter()
            .map(|s| s.reward)
            .collect();
        let online = metrics::mean(&rewards);
        let spread = rewards.iter().map(|r| (r - online).powi(2)).sum::<f64>()
            / (rewards.len().max(2) - 1) as f64;
        let online_ci95 = 1.96 * (spread / rewards.len().max(1) as f64).sqrt();
        // Both are measurements: an interval covers the online value when they overlap.
        let covers = |e: &Value| {
            e["low"].as_f64().unwrap_or(f64::NAN) <= online + online_ci95
                && online - online_ci95 <= e["high"].as_f64().unwrap_or(f64::NAN)
        };
        checks.push(OpeCheck {
            policy: arm.name.clone(),
            online,
            online_ci95,
            learnt_from,
            covered: [
                covers(&report["ips"]),
                covers(&report["snips"]),
                covers(&report["dr"]),
            ],
            ips: report["ips"].clone(),
            snips: report["snips"].clone(),
            dr: report["dr"].clone(),
        });
    }
    Ok(checks)
}
