//! Prometheus metrics of the event log, registered once in the default registry (the gateway's
//! `/metrics` gathers it).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    exponential_buckets,
};

use super::AppendResult;
use crate::error::{Error, Result};

struct Families {
    append_seconds: HistogramVec,
    queue_seconds: HistogramVec,
    appender_seconds: HistogramVec,
    batch_requests: HistogramVec,
    read_seconds: HistogramVec,
    appended: IntCounterVec,
    outcomes: IntCounterVec,
    failed_batches: IntCounterVec,
    head: IntGaugeVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(collector: T) -> T {
    // A second registration (two stores in one process) is refused by the registry but the
    // collector still works, so the error is deliberately ignored.
    let _ = prometheus::register(Box::new(collector.clone()));
    collector
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one is a programming error caught by every test"
)]
static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    let seconds = exponential_buckets(0.000_05, 2.0, 18).expect("valid buckets");
    Families {
        append_seconds: register(
            HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_store_commit_seconds",
                    "Duration of one group-commit transaction",
                )
                .buckets(seconds.clone()),
                &["backend"],
            )
            .expect("valid metric"),
        ),
        queue_seconds: register(
            HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_store_append_queue_seconds",
                    "Time an append waits for the group-commit writer to start the transaction that \
                     carries it (the commit in flight when it arrived, then its own batch forming)",
                )
                .buckets(seconds.clone()),
                &["backend"],
            )
            .expect("valid metric"),
        ),
        appender_seconds: register(
            HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_store_append_seconds",
                    "An append's whole time as its caller sees it: queued, committed and answered \
                     (the wait, the transaction and the caller's wake-up)",
                )
                .buckets(seconds.clone()),
                &["backend"],
            )
            .expect("valid metric"),
        ),
        batch_requests: register(
            HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_store_commit_batch_requests",
                    "Append requests carried by one transaction",
                )
                .buckets(exponential_buckets(1.0, 2.0, 11).expect("valid buckets")),
                &["backend"],
            )
            .expect("valid metric"),
        ),
        read_seconds: register(
            HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_store_read_seconds",
                    "Duration of one read query",
                )
                .buckets(seconds),
                &["backend", "op"],
            )
            .expect("valid metric"),
        ),
        appended: register(
            IntCounterVec::new(
                Opts::new("switchyard_store_events_appended_total", "Events appended"),
                &["backend"],
            )
            .expect("valid metric"),
        ),
        outcomes: register(
            IntCounterVec::new(
                Opts::new(
                    "switchyard_store_appends_total",
                    "Append requests by outcome",
                ),
                &["backend", "outcome"],
            )
            .expect("valid metric"),
        ),
        failed_batches: register(
            IntCounterVec::new(
                Opts::new(
                    "switchyard_store_failed_transactions_total",
                    "Group-commit transactions that failed as a whole",
                ),
                &["backend"],
            )
            .expect("valid metric"),
        ),
        head: register(
            IntGaugeVec::new(
                Opts::new(
                    "switchyard_store_head_position",
                    "Last committed global position",
                ),
                &["backend"],
            )
            .expect("valid metric"),
        ),
    }
});

/// The metrics of one backend.
#[derive(Debug, Clone)]
pub(crate) struct StoreMetrics {
    backend: &'static str,
    commit_seconds: Histogram,
    pub queue_seconds: Histogram,
    pub append_seconds: Histogram,
    batch_requests: Histogram,
    appended: IntCounter,
    pub failed_batches: IntCounter,
    pub head: IntGauge,
}

pub(crate) fn store(backend: &'static str) -> StoreMetrics {
    let f = &*FAMILIES;
    StoreMetrics {
        backend,
        commit_seconds: f.append_seconds.with_label_values(&[backend]),
        queue_seconds: f.queue_seconds.with_label_values(&[backend]),
        append_seconds: f.appender_seconds.with_label_values(&[backend]),
        batch_requests: f.batch_requests.with_label_values(&[backend]),
        appended: f.appended.with_label_values(&[backend]),
        failed_batches: f.failed_batches.with_label_values(&[backend]),
        head: f.head.with_label_values(&[backend]),
    }
}

impl StoreMetrics {
    pub fn observe_batch(&self, requests: usize, elapsed: Duration) {
        self.commit_seconds.observe(elapsed.as_secs_f64());
        self.batch_requests.observe(requests as f64);
    }

    pub fn observe_outcome(&self, outcome: &Result<AppendResult>) {
        let label = match outcome {
            Ok(result) if result.deduplicated => "deduplicated",
            Ok(result) => {
                self.appended.inc_by(result.positions.len() as u64);
                if let Some(last) = result.positions.last() {
                    self.head.set(i64::try_from(last.0).unwrap_or(i64::MAX));
                }
                "appended"
            }
            Err(Error::WrongExpectedVersion { .. }) => "conflict",
            Err(Error::IdempotencyConflict { .. }) => "idempotency_conflict",
            Err(Error::WrongTenant { .. }) => "wrong_tenant",
            Err(_) => "error",
        };
        FAMILIES
            .outcomes
            .with_label_values(&[self.backend, label])
            .inc();
    }

    /// Times a read query.
    pub fn read_timer(&self, op: &'static str) -> prometheus::HistogramTimer {
        FAMILIES
            .read_seconds
            .with_label_values(&[self.backend, op])
            .start_timer()
    }
}

#[expect(
    clippy::expect_used,
    reason = "a static metric definition; a bad one is a programming error caught by every test"
)]
static HOLES_PASSED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "switchyard_subscription_holes_passed_total",
            "Holes in the log's positions that a subscription passed after waiting for them to fill",
        )
        .expect("valid metric"),
    )
});

/// Counts a hole a subscription passed (see `subscribe`).
pub(crate) fn hole_passed() {
    HOLES_PASSED.inc();
}
