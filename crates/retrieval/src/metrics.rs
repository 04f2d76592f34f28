//! Prometheus metrics of the retrieval indexes, registered once in the default registry (the
//! gateway's `/metrics` gathers it).

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, exponential_buckets,
};

fn register<T: prometheus::core::Collector + Clone + 'static>(collector: T) -> T {
    // A second registration is refused by the registry but the collector still works.
    let _ = prometheus::register(Box::new(collector.clone()));
    collector
}

#[derive(Debug)]
pub(crate) struct Metrics {
    pub indexed: IntCounter,
    pub index_seconds: Histogram,
    pub chunks: IntGauge,
    pub query_seconds: HistogramVec,
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one is a programming error caught by every test"
)]
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    indexed: register(
        IntCounter::new(
            "switchyard_retrieval_events_indexed_total",
            "Document events folded into this node's retrieval indexes",
        )
        .expect("metric"),
    ),
    index_seconds: register(
        Histogram::with_opts(
            HistogramOpts::new(
                "switchyard_retrieval_index_batch_seconds",
                "Time to apply and commit one batch of document events",
            )
            .buckets(exponential_buckets(0.0005, 2.0, 16).expect("buckets")),
        )
        .expect("metric"),
    ),
    chunks: register(
        IntGauge::new(
            "switchyard_retrieval_chunks",
            "Chunks held in this node's retrieval indexes, every tenant",
        )
        .expect("metric"),
    ),
    query_seconds: register(
        HistogramVec::new(
            HistogramOpts::new(
                "switchyard_retrieval_query_seconds",
                "Time to answer one retrieval query from the index, by mode",
            )
            .buckets(exponential_buckets(0.0001, 2.0, 16).expect("buckets")),
            &["mode"],
        )
        .expect("metric"),
    ),
});
