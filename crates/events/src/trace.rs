//! The trace context events carry: the port through which the binary's tracing exporter (when
//! one is configured) tells the log which trace the appending code runs in, and lets readers of
//! the log (projectors, the NATS relay, workflow steps) continue that trace.
//!
//! Nothing here depends on OpenTelemetry: the binary installs [`Hooks`] when it exports traces.
//! Without them [`current`] is `None` and [`continue_from`] does nothing, at the cost of one
//! atomic load.

use std::sync::OnceLock;

/// What the exporter provides.
#[derive(Debug, Clone, Copy)]
pub struct Hooks {
    /// The W3C `traceparent` of the current span, if it is sampled into a trace.
    pub current: fn() -> Option<String>,
    /// Makes a span the child of the span a `traceparent` names.
    pub continue_from: fn(&tracing::Span, &str),
}

static HOOKS: OnceLock<Hooks> = OnceLock::new();

/// Installs the exporter's hooks (once; later calls are ignored).
pub fn install(hooks: Hooks) {
    let _ = HOOKS.set(hooks);
}

/// Whether traces are exported (the hooks are installed).
pub fn enabled() -> bool {
    HOOKS.get().is_some()
}

/// The W3C `traceparent` of the current span, when traces are exported.
pub fn current() -> Option<String> {
    HOOKS.get().and_then(|hooks| (hooks.current)())
}

/// Makes `span` continue the trace `traceparent` names (nothing without an exporter, or for a
/// malformed value).
pub fn continue_from(span: &tracing::Span, traceparent: &str) {
    if let Some(hooks) = HOOKS.get() {
        (hooks.continue_from)(span, traceparent);
    }
}

/// Most traces one batch's spans continue.
pub const MAX_TRACES_PER_BATCH: usize = 64;

/// Spans for work done once for a batch of events from many requests: one span per distinct
/// trace among `traceparents` (at most [`MAX_TRACES_PER_BATCH`]), each made by `make` and
/// continuing its trace, so that every request's trace shows the batch that carried it. The
/// first (never absent) is for instrumenting the work; keep the others alive as long.
pub fn batch_spans<'a>(
    make: impl Fn() -> tracing::Span,
    traceparents: impl IntoIterator<Item = Option<&'a str>>,
) -> Vec<tracing::Span> {
    if HOOKS.get().is_none() {
        return vec![make()];
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut spans = Vec::new();
    for parent in traceparents.into_iter().flatten() {
        // `00-<trace id>-...`: one span per trace, not per event.
        let trace = parent.get(..35).unwrap_or(parent);
        if seen.contains(&trace) {
            continue;
        }
        seen.push(trace);
        let span = make();
        continue_from(&span, parent);
        spans.push(span);
        if spans.len() == MAX_TRACES_PER_BATCH {
            break;
        }
    }
    if spans.is_empty() {
        spans.push(make());
    }
    spans
}

/// [`continue_from`] the first of `traceparents` there is.
pub fn continue_from_any<'a>(
    span: &tracing::Span,
    traceparents: impl IntoIterator<Item = Option<&'a str>>,
) {
    if HOOKS.get().is_none() {
        return;
    }
    if let Some(parent) = traceparents.into_iter().flatten().next() {
        continue_from(span, parent);
    }
}
