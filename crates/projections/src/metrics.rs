//! Prometheus metrics of the read side, registered once in the default registry (the gateway's
//! `/metrics` gathers it).

use std::sync::LazyLock;

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, exponential_buckets,
};

fn register<T: prometheus::core::Collector + Clone + 'static>(collector: T) -> T {
    // A second registration is refused by the registry but the collector still works.
    let _ = prometheus::register(Box::new(collector.clone()));
    collector
}

#[derive(Debug)]
pub(crate) struct Metrics {
    pub position: IntGaugeVec,
    pub lag_events: IntGaugeVec,
    pub lag_seconds: GaugeVec,
    pub events: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub batch_seconds: HistogramVec,
    pub delay_seconds: HistogramVec,
    pub relay_published: IntCounter,
    pub relay_position: IntGauge,
    pub relay_lag_events: IntGauge,
    pub relay_errors: IntCounter,
    pub relay_lag_seconds: Gauge,
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one is a programming error caught by every test"
)]
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let seconds = exponential_buckets(0.000_1, 2.0, 18).expect("valid buckets");
    let by_projector = &["projector"];
    Metrics {
        position: register(
            IntGaugeVec::new(
                Opts::new(
                    "switchyard_projection_position",
                    "Global position of the last event each projector committed",
                ),
                by_projector,
            )
            .expect("valid metric"),
        ),
        lag_events: register(
            IntGaugeVec::new(
                Opts::new(
                    "switchyard_projection_lag_events",
                    "Events in the log that a projector has not committed yet",
                ),
                by_projector,
            )
            .expect("valid metric"),
        ),
        lag_seconds: register(
            GaugeVec::new(
                Opts::new(
                    "switchyard_projection_lag_seconds",
                    "Time from the commit of the last projected event to its projection (0 when caught up)",
                ),
                by_projector,
            )
            .expect("valid metric"),
        ),
        events: register(
            IntCounterVec::new(
                Opts::new(
                    "switchyard_projection_events_total",
                    "Events a projector applied (handled or skipped)",
                ),
                by_projector,
            )
            .expect("valid metric"),
        ),
        dead_letters: register(
            IntCounterVec::new(
                Opts::new(
                    "switchyard_projection_dlq_total",
                    "Events a projector could not apply and put in the dead-letter queue",
                ),
                by_projector,
            )
            .expect("valid metric"),
        ),
        batch_seconds: register(
            HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_projection_batch_seconds",
                    "Time to apply one batch and commit it with the checkpoint",
                )
                .buckets(seconds.clone()),
                by_projector,
            )
            .expect("valid metric"),
        ),
        delay_seconds: register(
            HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_projection_delay_seconds",
                    "Per event: from its commit in the log to the commit of its projection",
                )
                .buckets(seconds),
                by_projector,
            )
            .expect("valid metric"),
        ),
        relay_published: register(
            IntCounter::new(
                "switchyard_relay_published_total",
                "Events published to NATS JetStream and acknowledged",
            )
            .expect("valid metric"),
        ),
        relay_position: register(
            IntGauge::new(
                "switchyard_relay_position",
                "Global position of the last event the relay had acknowledged",
            )
            .expect("valid metric"),
        ),
        relay_lag_events: register(
            IntGauge::new(
                "switchyard_relay_lag_events",
                "Events in the log the relay has not published yet",
            )
            .expect("valid metric"),
        ),
        relay_errors: register(
            IntCounter::new(
                "switchyard_relay_errors_total",
                "Publish or checkpoint failures of the relay (each followed by a retry)",
            )
            .expect("valid metric"),
        ),
        relay_lag_seconds: register(
            Gauge::new(
                "switchyard_relay_lag_seconds",
                "Time from the commit of the last published event to its acknowledgement",
            )
            .expect("valid metric"),
        ),
    }
});
