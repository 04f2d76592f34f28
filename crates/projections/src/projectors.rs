//! The projectors: pure functions from one recorded event to the [`Op`]s it causes.
//!
//! | projector | events | tables |
//! |---|---|---|
//! | `usage` | `InferenceCompleted`, `InferenceFailed`, `RouteChosen` (v1 logs), `RewardRecorded` | `usage_hourly`, `latency_hist`, `router_stats` |
//! | `inferences` | `InferenceCompleted`, `InferenceFailed`; `InferenceRequested`, `RouteChosen` (v1 logs) | `inference_log` |
//! | `spend` | `InferenceCompleted`, `InferenceFailed`; `InferenceRequested` (v1 logs) | `inference_spend`, `inference_tags` |
//! | `billing` | `UsageRecorded`, `InvoiceFinalized`, `InvoicePaid` | `billing_usage`, `invoices`, `ledger` |
//! | `directory` | tenant lifecycle, `ApiKeyIssued`, `ApiKeyRevoked`, `ApiKeyRotated` | `tenants`, `api_keys` |
//! | `workflows` | a run's start, steps, end and segments | `workflow_runs` |
//! | `audit` | every admin command's event (tenant lifecycle, keys, limits, settings, flags, routing) | `admin_audit` |
//!
//! Since v2 an inference is one event, its outcome, carrying the request and the route; a v1 log
//! holds them as `InferenceRequested` and `RouteChosen` before the outcome. Both forms fill the
//! same rows (`crates/projections/tests/projections.rs` checks they agree).

mod inference;

use switchyard_events::{Event, RecordedEvent};

use inference::{inferences, spend, usage};

use crate::model::{
    ADMIN_AUDIT, API_KEYS, BILLING_USAGE, INFERENCE_LOG, INFERENCE_SPEND, INFERENCE_TAGS, INVOICES,
    LATENCY_HIST, LEDGER, Op, ROUTER_STATS, TENANTS, Table, USAGE_HOURLY, Val, WORKFLOW_RUNS, sat,
};

/// A projector: which events it reads, which tables it owns, and what each event writes.
#[derive(Debug)]
pub struct Projector {
    pub name: &'static str,
    pub handles: &'static [&'static str],
    pub tables: &'static [&'static Table],
    pub apply: fn(&RecordedEvent, Event) -> Vec<Op>,
}

impl Projector {
    pub fn handles(&self, event_type: &str) -> bool {
        self.handles.contains(&event_type)
    }

    /// The ops for one event; an event this projector handles but cannot decode is an error
    /// (the event goes to the dead-letter queue).
    pub fn ops(&self, event: &RecordedEvent) -> Result<Vec<Op>, String> {
        if !self.handles(&event.event_type) {
            return Ok(Vec::new());
        }
        let decoded = Event::from_recorded(event).map_err(|error| error.to_string())?;
        Ok((self.apply)(event, decoded))
    }
}

pub static USAGE: Projector = Projector {
    name: "usage",
    handles: &[
        "InferenceCompleted",
        "InferenceFailed",
        "RouteChosen",
        "RewardRecorded",
    ],
    tables: &[&USAGE_HOURLY, &LATENCY_HIST, &ROUTER_STATS],
    apply: usage,
};

pub static INFERENCES: Projector = Projector {
    name: "inferences",
    handles: &[
        "InferenceRequested",
        "RouteChosen",
        "InferenceCompleted",
        "InferenceFailed",
    ],
    tables: &[&INFERENCE_LOG],
    apply: inferences,
};

pub static SPEND: Projector = Projector {
    name: "spend",
    handles: &[
        "InferenceRequested",
        "InferenceCompleted",
        "InferenceFailed",
    ],
    tables: &[&INFERENCE_SPEND, &INFERENCE_TAGS],
    apply: spend,
};

pub static BILLING: Projector = Projector {
    name: "billing",
    handles: &["UsageRecorded", "InvoiceFinalized", "InvoicePaid"],
    tables: &[&BILLING_USAGE, &INVOICES, &LEDGER],
    apply: billing,
};

pub static DIRECTORY: Projector = Projector {
    name: "directory",
    handles: &[
        "TenantCreated",
        "TenantRenamed",
        "TenantSuspended",
        "TenantResumed",
        "ApiKeyIssued",
        "ApiKeyRevoked",
        "ApiKeyRotated",
        "TenantDeleted",
    ],
    tables: &[&TENANTS, &API_KEYS],
    apply: directory,
};

pub static WORKFLOWS: Projector = Projector {
    name: "workflows",
    handles: &[
        "RunStarted",
        "StepStarted",
        "StepCompleted",
        "StepFailed",
        "RunCompleted",
        "RunFailed",
        "RunCancelled",
        "SegmentStarted",
    ],
    tables: &[&WORKFLOW_RUNS],
    apply: workflows,
};

/// The events of admin commands: the tenant actor's and the routing changes.
pub const ADMIN_EVENTS: &[&str] = &[
    "TenantCreated",
    "TenantRenamed",
    "TenantSuspended",
    "TenantResumed",
    "TenantDeleted",
    "ApiKeyIssued",
    "ApiKeyRevoked",
    "ApiKeyRotated",
    "TenantLimitsSet",
    "RateLimitSet",
    "TenantSettingSet",
    "TenantFlagSet",
    "FeatureFlagSet",
    "RouterConfigured",
];

pub static AUDIT: Projector = Projector {
    name: "audit",
    handles: ADMIN_EVENTS,
    tables: &[&ADMIN_AUDIT],
    apply: audit,
};

/// Every projector, in the order they are started and listed.
pub static ALL: [&Projector; 7] = [
    &USAGE,
    &INFERENCES,
    &SPEND,
    &BILLING,
    &DIRECTORY,
    &WORKFLOWS,
    &AUDIT,
];

/// The projector called `name`.
pub fn by_name(name: &str) -> Option<&'static Projector> {
    ALL.iter().copied().find(|projector| projector.name == name)
}

fn tenant(event: &RecordedEvent) -> Val {
    Val::Uuid(*event.tenant_id.as_uuid())
}

fn unix_us(event: &RecordedEvent) -> i64 {
    i64::try_from(event.recorded_at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// The start of the UTC hour the event was committed in, in unix seconds.
fn hour(event: &RecordedEvent) -> i64 {
    let seconds = event.recorded_at.unix_timestamp();
    seconds - seconds.rem_euclid(3600)
}

/// Latency histogram buckets: bucket 0 is below 1 ms, then four buckets per doubling, so
/// bucket `b` ends at `1000 · 2^(b/4)` µs. Capped at bucket 100 (about 35 000 s).
pub fn latency_bucket(latency_us: u64) -> i64 {
    if latency_us < 1000 {
        return 0;
    }
    let octaves = (latency_us as f64 / 1000.0).log2() * 4.0;
    (octaves.floor() as i64 + 1).min(100)
}

/// The upper bound (µs) of a latency bucket.
pub fn bucket_upper_us(bucket: i64) -> f64 {
    1000.0 * 2f64.powf(bucket as f64 / 4.0)
}

fn billing(event: &RecordedEvent, decoded: Event) -> Vec<Op> {
    let ledger = |kind: &str, period: &str, model: &str, amount: i64| {
        Op::upsert(
            &LEDGER,
            vec![
                ("tenant_id", tenant(event)),
                ("position", Val::from(event.global_position.0)),
            ],
        )
        .set("kind", kind)
        .set("period", period)
        .set("model", model)
        .set("amount_micros", amount)
        .set("at_us", unix_us(event))
    };
    let invoice = |period: &str| {
        Op::upsert(
            &INVOICES,
            vec![("tenant_id", tenant(event)), ("period", Val::from(period))],
        )
        .version(event.stream_version.0)
    };
    match decoded {
        Event::UsageRecorded(usage) => vec![
            Op::upsert(
                &BILLING_USAGE,
                vec![
                    ("tenant_id", tenant(event)),
                    ("period", Val::from(usage.period.as_str())),
                    ("model", Val::from(usage.model.as_str())),
                ],
            )
            .add("requests", sat(usage.requests))
            .add("tokens_in", sat(usage.tokens_in))
            .add("tokens_out", sat(usage.tokens_out))
            .add("tool_calls", sat(usage.tool_calls))
            .add("cost_micros", sat(usage.cost_micros)),
            ledger("usage", &usage.period, &usage.model, sat(usage.cost_micros)),
        ],
        Event::InvoiceFinalized(finalized) => vec![
            invoice(&finalized.period)
                .set("total_micros", finalized.total_micros)
                .set("status", "finalized")
                .set("finalized_at_us", unix_us(event)),
            ledger(
                "invoice",
                &finalized.period,
                "",
                sat(finalized.total_micros),
            ),
        ],
        Event::InvoicePaid(paid) => vec![
            invoice(&paid.period)
                .set("status", "paid")
                .set("paid_at_us", unix_us(event)),
            ledger("payment", &paid.period, "", 0),
        ],
        _ => Vec::new(),
    }
}

/// One audit row per admin event; the actor columns are empty for an event written without one
/// (before the audit log existed, or by a local command such as `switchyard tenant` offline).
fn audit(event: &RecordedEvent, _: Event) -> Vec<Op> {
    let actor = event.metadata.actor.as_ref();
    let text = |value: Option<&String>| Val::from(value.map_or("", String::as_str));
    vec![
        Op::upsert(
            &ADMIN_AUDIT,
            vec![("position", Val::Int(sat(event.global_position.0)))],
        )
        .set("tenant_id", tenant(event))
        .set("recorded_us", Val::Int(unix_us(event)))
        .set("stream", Val::from(event.stream_id.as_str()))
        .set("event_type", Val::from(event.event_type.as_str()))
        .set("subject", text(actor.map(|a| &a.subject)))
        .set("issuer", text(actor.and_then(|a| a.issuer.as_ref())))
        .set("role", text(actor.map(|a| &a.role)))
        .set("via", text(actor.map(|a| &a.via)))
        .set("request_id", text(event.metadata.correlation_id.as_ref())),
    ]
}

fn directory(event: &RecordedEvent, decoded: Event) -> Vec<Op> {
    let row =
        || Op::upsert(&TENANTS, vec![("tenant_id", tenant(event))]).version(event.stream_version.0);
    let key = |key_id: uuid::Uuid| {
        Op::upsert(
            &API_KEYS,
            vec![("tenant_id", tenant(event)), ("key_id", Val::Uuid(key_id))],
        )
        .version(event.stream_version.0)
    };
    let op = match decoded {
        Event::TenantCreated(created) => row()
            .set("name", created.name)
            .set("plan", created.plan)
            .set("status", "active")
            .set("created_at_us", unix_us(event)),
        Event::TenantRenamed(renamed) => row().set("name", renamed.name),
        Event::TenantSuspended(_) => row().set("status", "suspended"),
        Event::TenantResumed(_) => row().set("status", "active"),
        Event::TenantDeleted(_) => row().set("status", "deleted"),
        Event::ApiKeyIssued(issued) => key(issued.key_id)
            .set("name", issued.name)
            .set("prefix", issued.prefix)
            .set("scopes", issued.scopes.join(","))
            .set("created_at_us", unix_us(event))
            .set("expires_at_unix", issued.expires_at_unix.unwrap_or(0)),
        Event::ApiKeyRevoked(revoked) => key(revoked.key_id).set("revoked_at_us", unix_us(event)),
        Event::ApiKeyRotated(rotated) => {
            key(rotated.key_id).set("expires_at_unix", rotated.old_expires_at_unix)
        }
        _ => return Vec::new(),
    };
    vec![op]
}

/// The run a `workflow_run-<run id>[.<segment>]` stream belongs to.
fn run_of(event: &RecordedEvent) -> Option<uuid::Uuid> {
    let id = event.stream_id.as_str().strip_prefix("workflow_run-")?;
    uuid::Uuid::parse_str(id.split('.').next()?).ok()
}

fn workflows(event: &RecordedEvent, decoded: Event) -> Vec<Op> {
    let Some(run) = run_of(event) else {
        return Vec::new();
    };
    // Versioned by global position: it grows across the run's segments, stream versions do not.
    let row = Op::upsert(
        &WORKFLOW_RUNS,
        vec![("tenant_id", tenant(event)), ("run_id", Val::Uuid(run))],
    )
    .version(event.global_position.0);
    let op = match decoded {
        Event::RunStarted(started) => row
            .set("workflow", started.workflow)
            .set("workflow_version", i64::from(started.version))
            .set("status", "running")
            .set("started_ms", sat(started.at_ms))
            .set(
                "parent_run",
                started
                    .parent_run
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
            )
            .set(
                "replay_of",
                started.replay_of.map(|r| r.to_string()).unwrap_or_default(),
            ),
        Event::StepStarted(_) => row.add("steps", 1),
        Event::StepFailed(_) => row.add("failed_steps", 1),
        Event::StepCompleted(done) => row.add("cost_micros", sat(done.cost_micros)),
        Event::SegmentStarted(segment) => row.set("segment", i64::from(segment.segment)),
        Event::RunCompleted(done) => row
            .set("status", "completed")
            .set("ended_ms", sat(done.at_ms)),
        Event::RunFailed(failed) => row
            .set("status", "failed")
            .set("ended_ms", sat(failed.at_ms))
            .set("error", failed.error.chars().take(500).collect::<String>()),
        Event::RunCancelled(cancelled) => row
            .set("status", "cancelled")
            .set("ended_ms", sat(cancelled.at_ms))
            .set(
                "error",
                cancelled.reason.chars().take(500).collect::<String>(),
            ),
        _ => return Vec::new(),
    };
    vec![op]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for us in [0, 999, 1000, 1189, 1190, 2000, 10_000, 1_000_000, u64::MAX] {
            let bucket = latency_bucket(us);
            assert!(bucket >= last, "{us} µs in bucket {bucket} after {last}");
            if us < 1_000_000_000 {
                assert!(
                    (us as f64) < bucket_upper_us(bucket),
                    "{us} µs above bucket {bucket}"
                );
                if bucket > 0 {
                    assert!((us as f64) >= bucket_upper_us(bucket - 1));
                }
            }
            last = bucket;
        }
        assert_eq!(latency_bucket(u64::MAX), 100);
    }

    #[test]
    fn projector_names_are_unique_and_found() {
        for projector in ALL {
            assert_eq!(
                by_name(projector.name).map(|p| p.name),
                Some(projector.name)
            );
        }
        assert!(by_name("nope").is_none());
    }
}
