//! Traces over OTLP: on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set,
//! with the standard `OTEL_*` variables (`OTEL_EXPORTER_OTLP_PROTOCOL` = `http/protobuf`, the
//! default, or `grpc`; `OTEL_TRACES_SAMPLER` and `_ARG`; `OTEL_SERVICE_NAME`; `OTEL_BSP_*`).
//! Off, nothing is built: the spans on the hot path are `debug` spans that no layer enables.
//!
//! Our spans are `tracing` spans, bridged by `tracing-opentelemetry`. The W3C trace context of
//! the current span goes into every event's metadata through [`switchyard_events::trace`], and
//! readers of the log continue the trace from it.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether the environment asks for trace export.
pub fn wanted() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
        && std::env::var("OTEL_TRACES_EXPORTER").map_or(true, |v| v != "none")
        && std::env::var("OTEL_SDK_DISABLED").map_or(true, |v| v != "true")
}

/// The exporter and provider the environment asks for. The gRPC channel's worker runs on
/// `runtime`; `http/protobuf` exports from the batch processor's own thread with a blocking
/// client (built outside the runtime, as a blocking client must be).
pub fn provider(runtime: &tokio::runtime::Runtime) -> Result<SdkTracerProvider, String> {
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|_| "http/protobuf".into());
    let built =
        |e: opentelemetry_otlp::ExporterBuildError| format!("cannot build the OTLP exporter: {e}");
    let builder = SdkTracerProvider::builder();
    let builder = match protocol.as_str() {
        // tonic needs the tokio runtime for its connection and for each export: the batch
        // processor runs as a task on it.
        "grpc" => {
            let _runtime = runtime.enter();
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(built)?;
            builder.with_span_processor(
                opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    exporter,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build(),
            )
        }
        "http/protobuf" => builder.with_batch_exporter(
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(built)?,
        ),
        other => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL {other:?} is not supported: use http/protobuf or grpc"
            ));
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "switchyard".into()),
        )
        .build();
    Ok(builder.with_resource(resource).build())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`, and the hooks
/// that put the trace context into events and take it out again.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    switchyard_events::trace::install(switchyard_events::trace::Hooks {
        current,
        continue_from,
    });
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("switchyard"))
        .with_tracked_inactivity(false)
}

/// The W3C `traceparent` of the current span, when it is sampled.
pub fn current() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    (span_context.is_valid() && span_context.is_sampled()).then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Makes `span` a child of the remote span a `traceparent` names.
pub fn continue_from(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}
