//! The pipeline without HTTP, on the memory store: a chosen inference id is answered once and
//! billed once however often it is asked (a workflow step carried out again after a crash or a
//! failover), budgets refuse what they cannot cover, refusals say which rule refused, and both
//! forms of an inference's record fold to the same spend.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::sync::Arc;

use switchyard_actors::tenant::{Limits, RateLimits};
use switchyard_actors::{Runtime, RuntimeConfig};
use switchyard_events::{Event, EventStore, GlobalPosition, MemoryStore, Scope, TenantId};
use switchyard_inference::admission::below::Account;
use switchyard_inference::admission::meter::Meter;
use switchyard_inference::admission::ratelimit::Limiter;
use switchyard_inference::config::Config;
use switchyard_inference::follow::Folder;
use switchyard_inference::openai::ChatRequest;
use switchyard_inference::pipeline::{RecordForm, Recording};
use switchyard_inference::providers::Providers;
use switchyard_inference::resilience::{BreakerSettings, Resilience};
use switchyard_inference::router::RouterHub;
use switchyard_inference::{Accounts, Error, Pipeline, Principal};
use uuid::Uuid;

/// Every tenant with the same limits.
struct Fixed(Limits);

impl Accounts for Fixed {
    fn tenant_limits(&self, _: TenantId) -> Limits {
        self.0
    }
    fn key_limits(&self, _: Uuid) -> RateLimits {
        RateLimits::default()
    }
    fn model_limits(&self, _: TenantId, _: &str) -> RateLimits {
        RateLimits::default()
    }
    fn plan(&self, _: TenantId) -> Option<String> {
        Some("pro".into())
    }
}

fn pipeline(store: Arc<dyn EventStore>, limits: Limits) -> Pipeline {
    let config = Config::default();
    let router = Arc::new(RouterHub::new(
        config.router.clone(),
        Runtime::new(store.clone(), RuntimeConfig::default()),
    ));
    Pipeline {
        providers: Providers::build(&config).unwrap(),
        resilience: Resilience::new(
            &config,
            BreakerSettings::default(),
            store.clone(),
            router.clone(),
        ),
        config,
        store,
        router,
        limiter: Arc::new(Limiter::local()),
        meter: Arc::new(Meter::default()),
        shared_budgets: None,
        accounts: Arc::new(Fixed(limits)),
        recording: switchyard_inference::pipeline::Recording::default(),
        cache: None,
    }
}

fn request(max_tokens: u64) -> ChatRequest {
    serde_json::from_value(serde_json::json!({
        "model": "sim-small",
        "messages": [{"role": "user", "content": "write a line about rivers"}],
        "max_tokens": max_tokens,
    }))
    .unwrap()
}

fn principal() -> Principal {
    Principal {
        tenant: TenantId::new(),
        key_id: Uuid::nil(),
        scopes: Vec::new(),
    }
}

async fn inference_events(store: &dyn EventStore) -> usize {
    store
        .read_all(Scope::All, GlobalPosition::START, 1_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == "InferenceCompleted")
        .count()
}

#[tokio::test]
async fn a_chosen_inference_id_is_billed_once_however_often_it_is_asked() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let pipeline = pipeline(store.clone(), Limits::default());
    let who = principal();
    let id = Uuid::now_v7();
    let first = pipeline
        .complete(None, &who, &request(20), None, Some(id))
        .await
        .unwrap();
    assert_eq!(first.inference_id, id);
    assert!(first.cost_micros > 0);
    let spent = pipeline
        .meter
        .view(who.tenant, time::OffsetDateTime::now_utc())
        .spent_micros;
    assert_eq!(spent, first.cost_micros);
    for _ in 0..3 {
        let again = pipeline
            .complete(None, &who, &request(20), None, Some(id))
            .await
            .unwrap();
        assert_eq!(again.inference_id, id);
        assert_eq!(again.cost_micros, first.cost_micros);
        assert_eq!(again.position, first.position);
        assert_eq!(again.body["usage"], first.body["usage"]);
        assert!(again.body["choices"][0]["message"]["content"].is_string());
    }
    assert_eq!(
        inference_events(store.as_ref()).await,
        1,
        "one inference in the log"
    );
    let after = pipeline
        .meter
        .view(who.tenant, time::OffsetDateTime::now_utc())
        .spent_micros;
    assert_eq!(after, spent, "billed once");
    // Without a chosen id every call is its own inference.
    pipeline
        .complete(None, &who, &request(20), None, None)
        .await
        .unwrap();
    assert_eq!(inference_events(store.as_ref()).await, 2);
}

#[tokio::test]
async fn a_budget_refuses_what_it_cannot_cover_and_says_which() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let pipeline = pipeline(
        store.clone(),
        Limits {
            monthly_token_budget: Some(100),
            ..Limits::default()
        },
    );
    let who = principal();
    let refused = pipeline
        .complete(None, &who, &request(500), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::BudgetExhausted { .. }),
        "{refused:?}"
    );
    assert_eq!(refused.code(), "budget_exhausted");
    assert_eq!(refused.status(), 402);
    assert!(!refused.retryable());
    assert!(
        refused.to_string().contains("monthly_token_budget"),
        "{refused}"
    );
    assert_eq!(inference_events(store.as_ref()).await, 0, "nothing logged");
    let named: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "no-such-model", "messages": [{"role": "user", "content": "x"}],
    }))
    .unwrap();
    let missing = pipeline
        .complete(None, &who, &named, None, None)
        .await
        .unwrap_err();
    assert_eq!((missing.code(), missing.status()), ("model_not_found", 404));
}

/// The log refuses the inference's append (`FaultyStore`): the caller gets an error, the log
/// holds nothing, and the budget reservation is given back, not left held. Once the log heals
/// the same request is served and billed once.
#[tokio::test]
async fn an_inference_the_log_refuses_is_an_error_that_holds_nothing() {
    use switchyard_events::store::faulty::{Fault, FaultyStore};
    let memory: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let faulty = FaultyStore::new(memory.clone());
    let faults = faulty.faults();
    let pipeline = pipeline(Arc::new(faulty), Limits::default());
    let who = principal();
    let now = time::OffsetDateTime::now_utc;

    faults.set(Fault::FailAppends, true);
    let error = pipeline
        .complete(None, &who, &request(20), None, None)
        .await
        .unwrap_err();
    assert_eq!(error.status(), 503, "{error:?}");
    let view = pipeline.meter.view(who.tenant, now());
    assert_eq!(
        (view.spent_micros, view.reserved_micros),
        (0, 0),
        "{view:?}"
    );
    assert_eq!(inference_events(memory.as_ref()).await, 0);

    faults.heal();
    let served = pipeline
        .complete(None, &who, &request(20), None, None)
        .await
        .unwrap();
    let view = pipeline.meter.view(who.tenant, now());
    assert_eq!(
        (view.spent_micros, view.reserved_micros),
        (served.cost_micros, 0)
    );
    assert_eq!(inference_events(memory.as_ref()).await, 1);
}

/// The append committed but its acknowledgement was lost: the caller hears an error. Asked
/// again with the same inference id (a workflow step's retry), it gets the recorded answer,
/// and the log and the budget count the inference once. (The budget's truth is the log: the
/// node's follower folds it into the meter, as the server runs it.)
#[tokio::test]
async fn after_a_lost_acknowledgement_a_retry_with_the_id_is_billed_once() {
    use switchyard_events::store::faulty::{Fault, FaultyStore};
    let memory: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let faulty = FaultyStore::new(memory.clone());
    let faults = faulty.faults();
    let pipeline = pipeline(Arc::new(faulty), Limits::default());
    let follower =
        switchyard_inference::follow::follow(memory.clone(), vec![pipeline.meter.clone()])
            .await
            .unwrap();
    let who = principal();
    let id = Uuid::now_v7();

    faults.set(Fault::LoseAcks, true);
    let lost = pipeline
        .complete(None, &who, &request(20), None, Some(id))
        .await;
    assert!(lost.is_err(), "{lost:?}");
    assert_eq!(
        inference_events(memory.as_ref()).await,
        1,
        "it was committed"
    );
    faults.heal();

    let again = pipeline
        .complete(None, &who, &request(20), None, Some(id))
        .await
        .unwrap();
    assert_eq!(again.inference_id, id);
    assert_eq!(inference_events(memory.as_ref()).await, 1, "not run twice");
    let head = memory.head().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while follower.position() < head {
        assert!(std::time::Instant::now() < deadline, "the follower stalled");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let view = pipeline
        .meter
        .view(who.tenant, time::OffsetDateTime::now_utc());
    assert_eq!(
        (view.spent_micros, view.reserved_micros),
        (again.cost_micros, 0),
        "billed once, nothing held: {view:?}"
    );
}

/// An inference is logged as one event by default, or as the three events releases before it
/// read (`split`, for a cluster in a rolling upgrade). Both hold the same request and route, and
/// a node that folds either log from the start counts the same spend for the tenant and for
/// each account below it (key, user, tags).
#[tokio::test]
async fn both_record_forms_log_the_same_inference_and_the_same_spend() {
    let ask: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "sim-small",
        "messages": [{"role": "user", "content": "write a line about rivers"}],
        "max_tokens": 20,
        "user": "alice",
        "metadata": {"tags": ["team-a", "exp:1"]},
    }))
    .unwrap();
    let mut logged = Vec::new();
    for form in [RecordForm::One, RecordForm::Split] {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let mut pipeline = pipeline(store.clone(), Limits::default());
        pipeline.recording = Recording::default().with_form(form);
        let who = principal();
        let done = pipeline
            .complete(None, &who, &ask, None, None)
            .await
            .unwrap();
        let events = store
            .read_all(Scope::All, GlobalPosition::START, 100)
            .await
            .unwrap();
        let kinds: Vec<(String, u16)> = events
            .iter()
            .map(|e| (e.event_type.clone(), e.schema_version))
            .collect();
        let expected: &[(&str, u16)] = match form {
            RecordForm::One => &[("InferenceCompleted", 2)],
            RecordForm::Split => &[
                ("InferenceRequested", 2),
                ("RouteChosen", 1),
                ("InferenceCompleted", 1),
            ],
        };
        let expected: Vec<(String, u16)> = expected
            .iter()
            .map(|(kind, version)| ((*kind).to_owned(), *version))
            .collect();
        assert_eq!(kinds, expected, "{form}");
        let decoded: Vec<Event> = events
            .iter()
            .map(|e| Event::from_recorded(e).unwrap())
            .collect();
        let request = decoded
            .iter()
            .find_map(Event::inference_request)
            .cloned()
            .unwrap();
        assert_eq!(request.user.as_deref(), Some("alice"));
        assert_eq!(request.tags, ["team-a", "exp:1"]);
        let route = decoded
            .iter()
            .find_map(Event::inference_route)
            .cloned()
            .unwrap();

        // A node started now, folding the log from its start.
        let folded = Meter::default();
        for event in &events {
            Folder::fold(&folded, event);
        }
        let now = time::OffsetDateTime::now_utc();
        assert!(done.cost_micros > 0);
        assert_eq!(folded.view(who.tenant, now).spent_micros, done.cost_micros);
        let below = Account::of_inference(who.tenant, who.key_id, Some("alice"), &request.tags);
        assert_eq!(below.len(), 4, "key, user and two tags");
        for account in below {
            assert_eq!(
                folded.view(account.clone(), now).spent_micros,
                done.cost_micros,
                "{form}: {account:?}"
            );
        }
        logged.push((request, route.policy, route.model, route.candidates));
    }
    assert_eq!(logged[0], logged[1]);
}
