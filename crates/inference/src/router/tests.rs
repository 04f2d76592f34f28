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
    let choice = hub.choose(
        &RouterState::default(),
        "key-1",
        &features,
        &candidates,
        None,
        None,
    );
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

/// Off-policy evaluation without a metric counts each decision once, with the reward the
/// router learnt from (its first); with a metric, that metric's rewards (issue 16, item 6).
#[tokio::test]
async fn the_offline_log_counts_a_decision_once_however_many_metrics_it_got() {
    use switchyard_events::{
        EventStore, ExpectedVersion, MemoryStore, Metadata, RewardRecorded, Scope, StreamId,
    };
    let store = MemoryStore::new();
    let tenant = TenantId::new();
    let reward = |id: uuid::Uuid, metric: &str, reward_milli: i64| RewardRecorded {
        inference_id: id,
        metric: metric.into(),
        value_milli: reward_milli,
        reward_milli,
        policy: "thompson".into(),
        model: "sim-large".into(),
        candidates: vec!["sim-small".into(), "sim-large".into()],
        propensity_ppb: 500_000_000,
        feature_set: FEATURE_SET,
        features_milli: vec![1_000],
        cost_micros: 10,
    };
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let events = [
        reward(a, "quality", 900),
        reward(a, "thumbs", 0),
        reward(b, "quality", 100),
    ]
    .into_iter()
    .map(|r| {
        Event::RewardRecorded(r)
            .to_new_event(Metadata::default())
            .unwrap()
    })
    .collect();
    store
        .append(
            tenant,
            &StreamId::of("router", tenant).unwrap(),
            ExpectedVersion::Any,
            events,
        )
        .await
        .unwrap();
    let all = offline::load_log(&store, Scope::All, None).await.unwrap();
    let rewards: Vec<f64> = all.iter().map(|l| l.reward).collect();
    assert_eq!(rewards, [0.9, 0.1]);
    let thumbs = offline::load_log(&store, Scope::All, Some("thumbs"))
        .await
        .unwrap();
    assert_eq!(thumbs.len(), 1);
    assert_eq!(thumbs[0].reward, 0.0);
}

fn hub(config: RouterConfig) -> RouterHub {
    let store: Arc<dyn switchyard_events::EventStore> =
        Arc::new(switchyard_events::MemoryStore::new());
    RouterHub::new(
        config,
        Runtime::new(store, switchyard_actors::RuntimeConfig::default()),
    )
}

/// The default weights make cost count (issue 16, item 2): of two answers judged the same, the
/// cheaper one earns more, and the dearest candidate's price costs half a point of quality.
#[test]
fn by_default_a_cheaper_answer_of_the_same_quality_earns_more() {
    let hub = hub(RouterConfig::default());
    let t = TenantId::new();
    let cheap = hub.reward(t, 1.0, 100, 10_000, 0.0);
    let dear = hub.reward(t, 1.0, 10_000, 10_000, 0.0);
    assert!(cheap > dear, "{cheap} vs {dear}");
    // r = 1 − 0.5·c − 0.1·l on [−0.6, 1], mapped onto [0, 1].
    assert!((dear - (1.0 - 0.5 + 0.6) / 1.6).abs() < 1e-12, "{dear}");
    assert!((hub.reward(t, 1.0, 0, 10_000, 0.0) - 1.0).abs() < 1e-12);
    assert!(hub.reward(t, 0.0, 10_000, 10_000, 60.0).abs() < 1e-12);
}

/// The reward is not clipped (issue 16, item 3): a thumbs-down still tells a cheap answer from
/// a dear one, and the expected reward of quality q is the reward of q (the map is affine), so
/// a policy maximising it maximises q − w·cost, not q·(1 − w·cost).
#[test]
fn a_thumbs_down_still_counts_the_cost_and_the_expectation_is_linear() {
    let hub = hub(RouterConfig::default());
    let t = TenantId::new();
    assert!(hub.reward(t, 0.0, 100, 10_000, 0.0) > hub.reward(t, 0.0, 9_000, 10_000, 0.0));
    for q in [0.2, 0.55, 0.9] {
        for cost in [0, 2_500, 10_000] {
            let expected = q * hub.reward(t, 1.0, cost, 10_000, 1.0)
                + (1.0 - q) * hub.reward(t, 0.0, cost, 10_000, 1.0);
            assert!((expected - hub.reward(t, q, cost, 10_000, 1.0)).abs() < 1e-12);
        }
    }
    // Two models: quality 0.9 at the dearest price against 0.7 at a tenth of it. With cost
    // weighed at 0.5 the cheaper one is worth more, as q − 0.5·c says (0.65 against 0.4).
    let large = 0.9 * hub.reward(t, 1.0, 10_000, 10_000, 0.0)
        + 0.1 * hub.reward(t, 0.0, 10_000, 10_000, 0.0);
    let small =
        0.7 * hub.reward(t, 1.0, 1_000, 10_000, 0.0) + 0.3 * hub.reward(t, 0.0, 1_000, 10_000, 0.0);
    assert!(small > large, "{small} vs {large}");
}
