//! The feature store, the choice for `auto` and the reward formula.

use super::*;
use crate::config::{Config, Split};

fn request(text: &str) -> ChatRequest {
    serde_json::from_value(serde_json::json!({
        "model": "auto",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}],
        "max_tokens": 100,
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }))
    .unwrap()
}

#[test]
fn at_least_24_named_signals_are_computed_for_every_request() {
    let config = Config::default();
    let candidates: Vec<&ModelConfig> = config.models.iter().collect();
    let store: Arc<dyn switchyard_events::EventStore> =
        Arc::new(switchyard_events::MemoryStore::new());
    let hub = RouterHub::new(
        RouterConfig::default(),
        Runtime::new(store, switchyard_actors::RuntimeConfig::default()),
    );
    let now = OffsetDateTime::UNIX_EPOCH;
    let features = hub.features(
        &request("Please translate this code: ```fn main() {}```?"),
        TenantFacts {
            plan: "pro",
            budget_left: 0.25,
        },
        &candidates,
        now,
    );
    assert_eq!(
        features.len(),
        REQUEST_FEATURES.len() + MODEL_FEATURES.len() * candidates.len()
    );
    assert!(features.len() >= 24);
    let named = |name: &str| features[REQUEST_FEATURES.iter().position(|n| *n == name).unwrap()];
    assert_eq!(named("uses_tools"), 1.0);
    assert_eq!(named("has_system"), 1.0);
    assert_eq!(named("task_code"), 1.0);
    assert_eq!(named("task_translate"), 1.0);
    assert_eq!(named("is_question"), 1.0);
    assert_eq!(named("plan_pro"), 1.0);
    assert_eq!(named("budget_left"), 0.25);
    assert!(features.iter().all(|f| f.is_finite()));
    // A decision logs its propensity and features; splits are sticky.
    let choice = hub.choose(TenantId::new(), "key-1", &features, &candidates, None);
    assert!(choice.propensity_ppb > 0);
    assert_eq!(choice.features_milli.len(), features.len());
    assert_eq!(bucket("key-1"), bucket("key-1"));
    assert!((0.0..1.0).contains(&bucket("key-2")));
}

#[test]
fn a_router_section_is_checked_against_the_models() {
    let config = Config::default();
    let mut router = RouterConfig {
        candidates: vec!["ghost".into()],
        ..RouterConfig::default()
    };
    assert!(router.validate(&config.models).is_err());
    router.candidates.clear();
    router.splits.push(Split {
        name: "canary".into(),
        share: 1.5,
        policy: Policy::Thompson,
    });
    assert!(router.validate(&config.models).is_err());
    router.splits.clear();
    router.serving = Policy::EpsilonGreedy { epsilon: 2.0 };
    assert!(router.validate(&config.models).is_err());
}
