//! Prometheus metrics of workflow runs, registered once in the default registry (the gateway's
//! `/metrics` gathers it).

use std::sync::LazyLock;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, exponential_buckets,
};

fn register<T: prometheus::core::Collector + Clone + 'static>(collector: T) -> T {
    // A second registration is refused by the registry but the collector still works.
    let _ = prometheus::register(Box::new(collector.clone()));
    collector
}

#[derive(Debug)]
pub(crate) struct Metrics {
    pub started: IntCounterVec,
    pub ended: IntCounterVec,
    pub active: IntGauge,
    pub leader: IntGauge,
    pub steps: IntCounterVec,
    pub step_seconds: HistogramVec,
    pub segments: IntCounter,
    /// Manifests published, by kind and outcome (`created`, `unchanged`, or the refusal's code).
    pub manifests: IntCounterVec,
}

/// Counts a manifest publication's outcome.
pub fn manifest_outcome(kind: &str, outcome: &str) {
    METRICS.manifests.with_label_values(&[kind, outcome]).inc();
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one is a programming error caught by every test"
)]
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    started: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_workflow_runs_started_total",
                "Workflow runs started",
            ),
            &["workflow"],
        )
        .expect("metric"),
    ),
    ended: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_workflow_runs_ended_total",
                "Workflow runs ended, by outcome (completed, failed, cancelled)",
            ),
            &["status"],
        )
        .expect("metric"),
    ),
    active: register(
        IntGauge::new(
            "switchyard_workflow_runs_active",
            "Workflow runs started or recovered on this node and not ended",
        )
        .expect("metric"),
    ),
    leader: register(
        IntGauge::new(
            "switchyard_workflow_engine_leader",
            "1 while this node holds the workflow engine lease and carries out steps",
        )
        .expect("metric"),
    ),
    steps: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_workflow_steps_total",
                "Step attempts carried out, by call kind and outcome",
            ),
            &["kind", "outcome"],
        )
        .expect("metric"),
    ),
    step_seconds: register(
        HistogramVec::new(
            HistogramOpts::new(
                "switchyard_workflow_step_seconds",
                "Duration of one step attempt, by call kind",
            )
            .buckets(exponential_buckets(0.000_5, 2.0, 16).expect("buckets")),
            &["kind"],
        )
        .expect("metric"),
    ),
    segments: register(
        IntCounter::new(
            "switchyard_workflow_segments_total",
            "Runs continued as new in a fresh segment of their stream",
        )
        .expect("metric"),
    ),
    manifests: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_manifests_total",
                "Registry manifests published, by kind and outcome (created, unchanged, or the refusal's code)",
            ),
            &["kind", "outcome"],
        )
        .expect("metric"),
    ),
}
});
