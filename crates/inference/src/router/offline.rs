//! The router's logged decisions, read back for off-policy evaluation
//! (`switchyard router evaluate`, `POST /v1/router/evaluate`).

use std::collections::BTreeMap;

use switchyard_actors::router::ope::Logged;
use switchyard_events::{Event, EventStore, GlobalPosition, Scope};

use super::FEATURE_SET;
use crate::config::Config;

/// Every rewarded decision of feature set 1 in the log (optionally one tenant's, one metric's),
/// in the order the rewards were recorded. Without a metric each decision counts once, with its
/// first reward (the one the router learnt from), however many metrics it was given.
pub async fn load_log(
    store: &dyn EventStore,
    scope: Scope,
    metric: Option<&str>,
) -> crate::Result<Vec<Logged>> {
    let mut log = Vec::new();
    let mut decisions = std::collections::HashSet::new();
    let mut after = GlobalPosition::START;
    loop {
        let page = store.read_all(scope, after, 5_000).await?;
        let Some(last) = page.last() else { break };
        after = last.global_position;
        for recorded in &page {
            if recorded.event_type != "RewardRecorded" {
                continue;
            }
            let Ok(Event::RewardRecorded(e)) = Event::from_recorded(recorded) else {
                continue;
            };
            if e.feature_set != FEATURE_SET || metric.is_some_and(|m| m != e.metric) {
                continue;
            }
            if metric.is_none() && !decisions.insert(e.inference_id) {
                continue;
            }
            let Some(chosen) = e.candidates.iter().position(|c| *c == e.model) else {
                continue;
            };
            log.push(Logged {
                context: e
                    .features_milli
                    .iter()
                    .map(|f| *f as f64 / 1_000.0)
                    .collect(),
                candidates: e.candidates,
                chosen,
                propensity: f64::from(e.propensity_ppb) / 1e9,
                reward: e.reward_milli as f64 / 1_000.0,
                value: e.value_milli as f64 / 1_000.0,
                cost_micros: e.cost_micros,
            });
        }
    }
    Ok(log)
}

/// Each model's price of a typical request (1k tokens in and out).
pub fn typical_costs(config: &Config) -> BTreeMap<String, u64> {
    config
        .models
        .iter()
        .map(|m| (m.name.clone(), m.price.cost(0, 1_000, 1_000)))
        .collect()
}
