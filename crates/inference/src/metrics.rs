//! Prometheus metrics of the inference pipeline: outcomes, duration, tokens by served model, and
//! circuit-breaker transitions. Registered in the default registry that `/metrics` exposes.

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

fn register<T: prometheus::core::Collector + Clone + 'static>(collector: T) -> T {
    let _ = prometheus::register(Box::new(collector.clone()));
    collector
}

/// Inference metrics by served model: outcomes, duration (to the last byte) and tokens.
pub struct InferenceMetrics {
    /// Captures of tenants that opt in, by outcome (stored, too_large, failed).
    pub captures: IntCounterVec,
    pub circuit_changes: IntCounterVec,
    /// Calls to shared state (Redis) that failed, and what was done instead.
    pub degraded: IntCounterVec,
    pub requests: IntCounterVec,
    pub seconds: HistogramVec,
    pub tokens: IntCounterVec,
}

impl std::fmt::Debug for InferenceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceMetrics").finish_non_exhaustive()
    }
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one fails every test"
)]
pub static INFERENCE: LazyLock<InferenceMetrics> = LazyLock::new(|| InferenceMetrics {
    captures: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_captures_total",
                "Inference captures by outcome (stored, too_large, failed)",
            ),
            &["outcome"],
        )
        .expect("valid metric"),
    ),
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
    degraded: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_shared_state_unavailable_total",
                "Calls to Redis that failed, by what (rate_limit_check: let through; \
                 rate_limit_charge, rate_limit_refund: lost; budgets: this node's meter only)",
            ),
            &["what"],
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

/// The response cache's lookups and stores.
pub struct CacheMetrics {
    pub lookups: IntCounterVec,
    pub stores: IntCounterVec,
}

impl std::fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMetrics").finish_non_exhaustive()
    }
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one fails every test"
)]
pub static CACHE: LazyLock<CacheMetrics> = LazyLock::new(|| {
    CacheMetrics {
    lookups: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_cache_lookups_total",
                "Response cache lookups by result (hit, miss, expired, error: Redis failed, a miss)",
            ),
            &["result"],
        )
        .expect("valid metric"),
    ),
    stores: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_cache_stores_total",
                "Answers offered to the response cache by result (stored, too_large, error)",
            ),
            &["result"],
        )
        .expect("valid metric"),
    ),
}
});

/// Guardrail decisions and matches.
pub struct GuardrailMetrics {
    /// One per checked stage: `stage` (input, output) and the verdict (pass, redact, block).
    pub decisions: IntCounterVec,
    /// PII found, by kind and what was done with it.
    pub matches: IntCounterVec,
}

impl std::fmt::Debug for GuardrailMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardrailMetrics").finish_non_exhaustive()
    }
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one fails every test"
)]
pub static GUARDRAILS: LazyLock<GuardrailMetrics> = LazyLock::new(|| GuardrailMetrics {
    decisions: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_guardrail_decisions_total",
                "Guardrail verdicts by stage (input, output) and action (pass, redact, block)",
            ),
            &["stage", "action"],
        )
        .expect("valid metric"),
    ),
    matches: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_guardrail_pii_total",
                "Personal data found by the guardrails, by kind and action (redact, block)",
            ),
            &["kind", "action"],
        )
        .expect("valid metric"),
    ),
});

/// Feature-flag decisions the pipeline acted on.
pub struct FlagMetrics {
    pub decisions: IntCounterVec,
}

impl std::fmt::Debug for FlagMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlagMetrics").finish_non_exhaustive()
    }
}

/// `switchyard_flag_decisions_total{flag, on, reason}`: each evaluation of a defined flag on the
/// request path.
#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one fails every test"
)]
pub static FLAGS: LazyLock<FlagMetrics> = LazyLock::new(|| FlagMetrics {
    decisions: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_flag_decisions_total",
                "Feature-flag evaluations on the request path, by flag, answer and reason",
            ),
            &["flag", "on", "reason"],
        )
        .expect("valid metric"),
    ),
});
