//! Logs and metrics set-up: JSON logs on stderr (filter with `RUST_LOG`, default `info`), and
//! the Prometheus registry that `/metrics` exposes.

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tracing_subscriber::EnvFilter;

/// Installs the JSON log subscriber (once).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// RED metrics of the HTTP API, by route pattern (never the raw path: ids would explode the
/// label set) and status.
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub seconds: HistogramVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(collector: T) -> T {
    let _ = prometheus::register(Box::new(collector.clone()));
    collector
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one fails every test"
)]
pub static HTTP: LazyLock<HttpMetrics> = LazyLock::new(|| HttpMetrics {
    requests: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric"),
    ),
    seconds: register(
        HistogramVec::new(
            HistogramOpts::new(
                "switchyard_http_request_seconds",
                "HTTP request duration by route",
            )
            .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 18).expect("valid buckets")),
            &["method", "route"],
        )
        .expect("valid metric"),
    ),
});

/// Inference metrics by served model: outcomes, duration (to the last byte) and tokens.
pub struct InferenceMetrics {
    pub circuit_changes: IntCounterVec,
    pub requests: IntCounterVec,
    pub seconds: HistogramVec,
    pub tokens: IntCounterVec,
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one fails every test"
)]
pub static INFERENCE: LazyLock<InferenceMetrics> = LazyLock::new(|| InferenceMetrics {
    circuit_changes: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_circuit_changes_total",
                "Circuit breaker transitions by model and new state",
            ),
            &["model", "to"],
        )
        .expect("valid metric"),
    ),
    requests: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_inference_total",
                "Inferences by served model and outcome (completed, failed)",
            ),
            &["model", "outcome"],
        )
        .expect("valid metric"),
    ),
    seconds: register(
        HistogramVec::new(
            HistogramOpts::new(
                "switchyard_inference_seconds",
                "Inference duration to the last byte, by served model",
            )
            .buckets(prometheus::exponential_buckets(0.000_5, 2.0, 16).expect("valid buckets")),
            &["model"],
        )
        .expect("valid metric"),
    ),
    tokens: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_inference_tokens_total",
                "Tokens by served model and direction (in, out)",
            ),
            &["model", "direction"],
        )
        .expect("valid metric"),
    ),
});
