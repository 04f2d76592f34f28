//! Traffic for tests and benchmarks: inferences appended the way the gateway appends them (one
//! event, `InferenceCompleted`/`InferenceFailed` carrying the request and the route, to
//! `inference-<uuid v7>`), or the way logs before v2 hold them (`InferenceRequested`,
//! `RouteChosen`, then the outcome), with the totals a correct read model must show.

use std::collections::HashMap;

use switchyard_events::{
    Event, EventStore, ExpectedVersion, InferenceCompleted, InferenceFailed, InferenceRequested,
    Metadata, NewEvent, Result, RouteChosen, StreamId, TenantId,
};

/// What one tenant's inferences add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: i64,
    pub failures: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_micros: i64,
}

/// One inference as the gateway appends it: its outcome, carrying the request and the route.
pub fn inference_events(model: &str, n: u64, failed: bool) -> Vec<NewEvent> {
    let (requested, route, mut end) = inference(model, n, failed);
    match &mut end {
        Event::InferenceCompleted(done) => {
            done.request = Some(requested);
            done.route = Some(route);
        }
        Event::InferenceFailed(failed) => {
            failed.request = Some(requested);
            failed.route = Some(route);
        }
        _ => {}
    }
    encode(&[end])
}

/// The same inference as a log from before v2 holds it: `InferenceRequested`, `RouteChosen`,
/// then the outcome without them.
pub fn inference_events_v1(model: &str, n: u64, failed: bool) -> Vec<NewEvent> {
    let (requested, route, end) = inference(model, n, failed);
    encode(&[
        Event::InferenceRequested(requested),
        Event::RouteChosen(route),
        end,
    ])
}

fn encode(events: &[Event]) -> Vec<NewEvent> {
    events
        .iter()
        .filter_map(|event| event.to_new_event(Metadata::default()).ok())
        .collect()
}

/// The request, the route and the outcome (without them) of test inference `n`.
fn inference(model: &str, n: u64, failed: bool) -> (InferenceRequested, RouteChosen, Event) {
    let requested = InferenceRequested {
        endpoint: "chat".into(),
        model_requested: "auto".into(),
        key_id: uuid::Uuid::nil(),
        stream: n.is_multiple_of(2),
        messages: 1,
        prompt_tokens_estimate: 10 + n % 7,
        max_tokens: None,
        user: Some(format!("user-{}", n % 3)),
        tags: vec![format!("tag-{}", n % 2)],
    };
    let route = RouteChosen {
        policy: "thompson".into(),
        model: model.into(),
        provider: "sim".into(),
        candidates: vec![model.into()],
        propensity_ppb: 1_000_000_000,
        feature_set: 1,
        features_milli: Vec::new(),
        shadow: Vec::new(),
    };
    let end = if failed {
        Event::InferenceFailed(InferenceFailed {
            model: model.into(),
            provider: "sim".into(),
            code: "upstream_error".into(),
            message: "boom".into(),
            tokens_in: 10 + n % 7,
            tokens_out: 0,
            cost_micros: 0,
            latency_us: 1000 + n,
            attempts: 2,
            request: None,
            route: None,
        })
    } else {
        Event::InferenceCompleted(InferenceCompleted {
            model: model.into(),
            provider: "sim".into(),
            tokens_in: 10 + n % 7,
            tokens_out: 20 + n % 13,
            cost_micros: 30 + n % 11,
            latency_us: 500 + (n * 7919) % 200_000,
            ttft_us: 100,
            finish_reason: "stop".into(),
            attempts: 1,
            request: None,
            route: None,
        })
    };
    (requested, route, end)
}

/// The totals `inference_events(model, n, failed)` adds.
pub fn totals_of(n: u64, failed: bool) -> Totals {
    Totals {
        requests: 1,
        failures: i64::from(failed),
        tokens_in: 10 + (n % 7) as i64,
        tokens_out: if failed { 0 } else { 20 + (n % 13) as i64 },
        cost_micros: if failed { 0 } else { 30 + (n % 11) as i64 },
    }
}

/// Appends `count` inferences spread over `tenants` and two models (every fifth one fails) and
/// returns the totals per tenant.
pub async fn traffic(
    store: &dyn EventStore,
    tenants: &[TenantId],
    count: u64,
) -> Result<HashMap<TenantId, Totals>> {
    let mut totals: HashMap<TenantId, Totals> = HashMap::new();
    for n in 0..count {
        let tenant = tenants[(n as usize) % tenants.len()];
        let model = if n % 3 == 0 { "sim-large" } else { "sim-small" };
        let failed = n % 5 == 4;
        let stream = StreamId::of("inference", uuid::Uuid::now_v7())?;
        store
            .append(
                tenant,
                &stream,
                ExpectedVersion::NoStream,
                inference_events(model, n, failed),
            )
            .await?;
        let add = totals_of(n, failed);
        let entry = totals.entry(tenant).or_default();
        entry.requests += add.requests;
        entry.failures += add.failures;
        entry.tokens_in += add.tokens_in;
        entry.tokens_out += add.tokens_out;
        entry.cost_micros += add.cost_micros;
    }
    Ok(totals)
}
