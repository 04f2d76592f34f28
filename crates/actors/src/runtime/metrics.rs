//! Prometheus metrics of the actor runtime, per actor kind.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use super::Applied;
use crate::error::{Error, Result};

struct Families {
    live: IntGaugeVec,
    activations: IntCounterVec,
    rehydration_seconds: HistogramVec,
    mailbox_depth: HistogramVec,
    conflicts: IntCounterVec,
    commands: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(collector: T) -> T {
    // Registered once per process; a second registration is refused and harmless.
    let _ = prometheus::register(Box::new(collector.clone()));
    collector
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one fails every test"
)]
static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    live: register(
        IntGaugeVec::new(
            Opts::new("switchyard_actors_live", "Actors in memory"),
            &["kind"],
        )
        .expect("metric"),
    ),
    activations: register(
        IntCounterVec::new(
            Opts::new("switchyard_actor_activations_total", "Actor activations"),
            &["kind"],
        )
        .expect("metric"),
    ),
    rehydration_seconds: register(
        HistogramVec::new(
            HistogramOpts::new(
                "switchyard_actor_rehydration_seconds",
                "Time to rebuild an actor from snapshot and log",
            )
            .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 18).expect("buckets")),
            &["kind"],
        )
        .expect("metric"),
    ),
    mailbox_depth: register(
        HistogramVec::new(
            HistogramOpts::new(
                "switchyard_actor_mailbox_depth",
                "Commands waiting in an actor's mailbox at send",
            )
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 10).expect("buckets")),
            &["kind"],
        )
        .expect("metric"),
    ),
    conflicts: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_actor_conflicts_total",
                "Appends that lost a version race and were retried",
            ),
            &["kind"],
        )
        .expect("metric"),
    ),
    commands: register(
        IntCounterVec::new(
            Opts::new("switchyard_actor_commands_total", "Commands by outcome"),
            &["kind", "outcome"],
        )
        .expect("metric"),
    ),
});

/// The metrics of one actor kind.
#[derive(Debug, Clone)]
pub(crate) struct ActorMetrics {
    kind: &'static str,
    pub live: IntGauge,
    pub activations: IntCounter,
    pub rehydration_seconds: Histogram,
    pub mailbox_depth: Histogram,
    pub conflicts: IntCounter,
}

pub(crate) fn actors(kind: &'static str) -> ActorMetrics {
    let f = &*FAMILIES;
    ActorMetrics {
        kind,
        live: f.live.with_label_values(&[kind]),
        activations: f.activations.with_label_values(&[kind]),
        rehydration_seconds: f.rehydration_seconds.with_label_values(&[kind]),
        mailbox_depth: f.mailbox_depth.with_label_values(&[kind]),
        conflicts: f.conflicts.with_label_values(&[kind]),
    }
}

impl ActorMetrics {
    pub fn observe_command<S, R: std::error::Error>(&self, outcome: &Result<Applied<S>, R>) {
        let label = match outcome {
            Ok(applied) if applied.events.is_empty() => "unchanged",
            Ok(_) => "applied",
            Err(Error::Rejected(_)) => "rejected",
            Err(Error::Contended { .. }) => "contended",
            Err(Error::Overloaded) => "overloaded",
            Err(Error::Store(_)) => "store_error",
            Err(Error::Stopped) => "stopped",
        };
        FAMILIES
            .commands
            .with_label_values(&[self.kind, label])
            .inc();
    }
}
