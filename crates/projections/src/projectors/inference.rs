//! The projectors of inferences (`usage`, `inferences`, `spend`): what each outcome, and in
//! logs written before the outcome events' v2 each `InferenceRequested` and `RouteChosen`,
//! writes.

use switchyard_events::{Event, InferenceRequested, RecordedEvent, RouteChosen};

use super::{hour, latency_bucket, tenant};
use crate::model::{
    INFERENCE_LOG, INFERENCE_SPEND, INFERENCE_TAGS, LATENCY_HIST, Op, ROUTER_STATS, USAGE_HOURLY,
    Val, sat,
};

pub(super) fn usage(event: &RecordedEvent, decoded: Event) -> Vec<Op> {
    let key = |model: &str| {
        vec![
            ("tenant_id", tenant(event)),
            ("hour", Val::Int(hour(event))),
            ("model", Val::from(model)),
        ]
    };
    // One row of router_stats per hour, policy and model: decisions and rewards.
    let router = |policy: &str, model: &str| {
        Op::upsert(
            &ROUTER_STATS,
            vec![
                ("tenant_id", tenant(event)),
                ("hour", Val::Int(hour(event))),
                ("policy", Val::from(policy)),
                ("model", Val::from(model)),
            ],
        )
    };
    let decided = |route: &RouteChosen| router(&route.policy, &route.model).add("decisions", 1);
    let mut ops = match &decoded {
        Event::InferenceCompleted(done) => vec![
            Op::upsert(&USAGE_HOURLY, key(&done.model))
                .add("requests", 1)
                .add("tokens_in", sat(done.tokens_in))
                .add("tokens_out", sat(done.tokens_out))
                .add("cost_micros", sat(done.cost_micros)),
            Op::upsert(&LATENCY_HIST, {
                let mut key = key(&done.model);
                key.push(("bucket", Val::Int(latency_bucket(done.latency_us))));
                key
            })
            .add("count", 1)
            .add("sum_us", sat(done.latency_us)),
        ],
        Event::InferenceFailed(failed) => vec![
            Op::upsert(&USAGE_HOURLY, key(&failed.model))
                .add("requests", 1)
                .add("failures", 1)
                .add("tokens_in", sat(failed.tokens_in))
                .add("tokens_out", sat(failed.tokens_out))
                .add("cost_micros", sat(failed.cost_micros)),
        ],
        Event::RouteChosen(route) => vec![decided(route)],
        Event::RewardRecorded(reward) => vec![
            router(&reward.policy, &reward.model)
                .add("rewards", 1)
                .add("reward_sum_milli", reward.reward_milli)
                .add("reward_cost_micros", sat(reward.cost_micros)),
        ],
        _ => Vec::new(),
    };
    // Since v2 the outcome carries the decision that v1 logged as `RouteChosen`.
    if let Some(route) = carried(&decoded).1 {
        ops.push(decided(route));
    }
    ops
}

/// The request and the route an inference's outcome carries (v2; `None` for v1 events and
/// every other event).
fn carried(decoded: &Event) -> (Option<&InferenceRequested>, Option<&RouteChosen>) {
    match decoded {
        Event::InferenceCompleted(done) => (done.request.as_ref(), done.route.as_ref()),
        Event::InferenceFailed(failed) => (failed.request.as_ref(), failed.route.as_ref()),
        _ => (None, None),
    }
}

/// When an inference started, in unix milliseconds: the timestamp in its UUIDv7 id (so every
/// event of the stream names the same partition), else the event's commit time.
fn started_ms(event: &RecordedEvent) -> (uuid::Uuid, i64) {
    let id = event
        .stream_id
        .as_str()
        .strip_prefix("inference-")
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .unwrap_or(*event.event_id.as_uuid());
    let ms = match id.get_timestamp() {
        Some(ts) => {
            let (seconds, nanos) = ts.to_unix();
            i64::try_from(seconds).unwrap_or(i64::MAX) * 1000 + i64::from(nanos / 1_000_000)
        }
        None => i64::try_from(event.recorded_at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
    };
    (id, ms)
}

/// Spend below the tenant: each inference's key, user and tags with its outcome.
pub(super) fn spend(event: &RecordedEvent, decoded: Event) -> Vec<Op> {
    let (id, started) = started_ms(event);
    let key = |tag: Option<String>| {
        let mut key = vec![
            ("tenant_id", tenant(event)),
            ("started_ms", Val::Int(started)),
            ("inference_id", Val::Uuid(id)),
        ];
        key.extend(tag.map(|tag| ("tag", Val::Text(tag))));
        key
    };
    let row = Op::upsert(&INFERENCE_SPEND, key(None)).version(event.stream_version.0);
    // Who the inference was for, and its tags: the request's, an event of its own in v1 logs.
    let request = |row: Op, requested: &InferenceRequested| {
        let mut ops = vec![
            row.set("key_id", requested.key_id.to_string())
                .set("user_id", requested.user.clone().unwrap_or_default()),
        ];
        ops.extend(
            requested
                .tags
                .iter()
                .map(|tag| Op::upsert(&INFERENCE_TAGS, key(Some(tag.clone())))),
        );
        ops
    };
    let (row, outcome) = match &decoded {
        Event::InferenceRequested(requested) => {
            return request(row.set("status", "pending"), requested);
        }
        Event::InferenceCompleted(done) => (
            row.set("status", "completed"),
            (done.tokens_in, done.tokens_out, done.cost_micros),
        ),
        Event::InferenceFailed(failed) => (
            row.set("status", "failed"),
            (failed.tokens_in, failed.tokens_out, failed.cost_micros),
        ),
        _ => return Vec::new(),
    };
    let row = row
        .set("tokens_in", outcome.0)
        .set("tokens_out", outcome.1)
        .set("cost_micros", outcome.2);
    match carried(&decoded).0 {
        Some(requested) => request(row, requested),
        None => vec![row],
    }
}

pub(super) fn inferences(event: &RecordedEvent, decoded: Event) -> Vec<Op> {
    let (id, started) = started_ms(event);
    let row = Op::upsert(
        &INFERENCE_LOG,
        vec![
            ("tenant_id", tenant(event)),
            ("started_ms", Val::Int(started)),
            ("inference_id", Val::Uuid(id)),
        ],
    )
    .version(event.stream_version.0)
    .set("position", sat(event.global_position.0));
    let requested = |row: Op, requested: &InferenceRequested| {
        row.set("endpoint", requested.endpoint.as_str())
            .set("model_requested", requested.model_requested.as_str())
            .set("key_id", requested.key_id.to_string())
            .set("stream", i64::from(requested.stream))
    };
    let routed = |row: Op, route: &RouteChosen| {
        row.set("model", route.model.as_str())
            .set("provider", route.provider.as_str())
            .set("policy", route.policy.as_str())
    };
    // Since v2 the outcome carries the request and the route (v1: events of their own, before
    // it); the outcome's model and provider, set after, are the ones that answered.
    let (request, route) = carried(&decoded);
    let row = match request {
        Some(request) => requested(row, request),
        None => row,
    };
    let row = match route {
        Some(route) => routed(row, route),
        None => row,
    };
    let op = match decoded {
        Event::InferenceRequested(request) => requested(row, &request).set("status", "pending"),
        Event::RouteChosen(route) => routed(row, &route),
        Event::InferenceCompleted(done) => row
            .set("status", "completed")
            .set("model", done.model)
            .set("provider", done.provider)
            .set("tokens_in", done.tokens_in)
            .set("tokens_out", done.tokens_out)
            .set("cost_micros", done.cost_micros)
            .set("latency_us", done.latency_us)
            .set("ttft_us", done.ttft_us),
        Event::InferenceFailed(failed) => row
            .set("status", "failed")
            .set("model", failed.model)
            .set("provider", failed.provider)
            .set("tokens_in", failed.tokens_in)
            .set("tokens_out", failed.tokens_out)
            .set("cost_micros", failed.cost_micros)
            .set("latency_us", failed.latency_us)
            .set("error_code", failed.code),
        _ => return Vec::new(),
    };
    vec![op]
}
