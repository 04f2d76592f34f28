//! Logs and metrics set-up: JSON logs on stderr for the server (filter with `RUST_LOG`,
//! default `info`), and the HTTP metrics in the Prometheus registry that `/metrics` exposes.
//!
//! The other subcommands are for people: without `RUST_LOG` they print only warnings and
//! errors, as plain lines; with `RUST_LOG` set they log JSON lines like the server.

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber (once): JSON lines for the server or when `RUST_LOG` is set,
/// otherwise plain warnings and errors only. For the server, traces are exported over OTLP
/// when the `OTEL_*` variables ask for it ([`crate::otel`]); the returned provider flushes
/// them at exit.
pub fn init(
    server: bool,
    runtime: &tokio::runtime::Runtime,
) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let asked = std::env::var_os("RUST_LOG").is_some();
    if server || asked {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let logs = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_filter(filter);
        let (provider, problem) = match server && crate::otel::wanted() {
            true => match crate::otel::provider(runtime) {
                Ok(provider) => (Some(provider), None),
                Err(problem) => (None, Some(problem)),
            },
            false => (None, None),
        };
        // Spans only (logs stay in the JSON lines), ours only, `debug` and up: the hot path's
        // spans are `debug`, so without an exporter nothing enables them.
        let traces = provider.as_ref().map(|provider| {
            crate::otel::layer(provider).with_filter(tracing_subscriber::filter::filter_fn(
                |meta| {
                    meta.is_span()
                        && meta.target().starts_with("switchyard")
                        && *meta.level() <= tracing::Level::DEBUG
                },
            ))
        });
        let _ = tracing_subscriber::registry()
            .with(logs)
            .with(traces)
            .try_init();
        if let Some(problem) = problem {
            tracing::error!(%problem, "traces are not exported");
        } else if provider.is_some() {
            tracing::info!("exporting traces over OTLP");
        }
        provider
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("warn"))
            .with_target(false)
            .without_time()
            .with_writer(std::io::stderr)
            .try_init();
        None
    }
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

/// Admin API authentications: `via` is `oidc` or `break-glass` (or `none` for a credential that
/// was neither), `outcome` is `allowed`, `forbidden` (a valid identity without the role) or
/// `invalid` (no valid credential).
#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one fails every test"
)]
pub static ADMIN_AUTH: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_admin_auth_total",
                "Admin API authentications by credential kind and outcome",
            ),
            &["via", "outcome"],
        )
        .expect("valid metric"),
    )
});
