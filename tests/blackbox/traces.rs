//! Traces over OTLP (issue 17, item 1): a real OTLP/HTTP receiver in the test process decodes
//! what the binary exports (`opentelemetry-proto` messages) and the test checks that one trace
//! runs from the client's `traceparent` through the request, admission, routing, the provider
//! call (with `gen_ai.*` attributes) and the append, on through the log to the projectors'
//! batch and to the NATS message's `traceparent` header.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::server::{Server, data_dir, tenant_with_key};

/// One exported span, as the receiver decoded it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf) on a random loopback port.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut reader = BufReader::new(read);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).await.unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).await.unwrap();
                    assert_eq!(path, "/v1/traces");
                    let decoded = decode(&body);
                    sink.lock().unwrap().extend(decoded);
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    write.write_all(answer.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (endpoint, spans)
}

/// `name`, or with a trailing `*` any name it begins.
fn named(span: &Span, name: &str) -> bool {
    match name.strip_suffix('*') {
        Some(prefix) => span.name.starts_with(prefix),
        None => span.name == name,
    }
}

/// The spans of one OTLP export request.
fn decode(body: &[u8]) -> Vec<Span> {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let mut decoded = Vec::new();
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .map(|kv| {
                        let value = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                            Some(AnyValue::StringValue(s)) => s,
                            Some(AnyValue::IntValue(i)) => i.to_string(),
                            Some(AnyValue::DoubleValue(d)) => d.to_string(),
                            Some(AnyValue::BoolValue(b)) => b.to_string(),
                            other => format!("{other:?}"),
                        };
                        (kv.key.clone(), value)
                    })
                    .collect();
                decoded.push(Span {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes,
                });
            }
        }
    }
    decoded
}

/// An OTLP/gRPC receiver (`TraceService/Export` over HTTP/2, by hand with `h2`: the gRPC frame
/// is a flag byte, a 4-byte length and the protobuf message) on a random loopback port.
async fn grpc_receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                // Each request is answered on a task of its own: h2 moves a request's body
                // only while the connection is polled, so reading it inside this loop could
                // wait forever for bytes that arrive in a later read.
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let sink = sink.clone();
                    tokio::spawn(async move {
                        assert_eq!(
                            request.uri().path(),
                            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                        );
                        let mut body = request.into_body();
                        let mut bytes = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            bytes.extend_from_slice(&chunk);
                        }
                        assert_eq!(bytes[0], 0, "a compressed gRPC frame");
                        let length = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
                        sink.lock().unwrap().extend(decode(&bytes[5..5 + length]));
                        let response = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let mut send = respond.send_response(response, false).unwrap();
                        // An empty ExportTraceServiceResponse, then grpc-status 0.
                        send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false)
                            .unwrap();
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        send.send_trailers(trailers).unwrap();
                    });
                }
            });
        }
    });
    (endpoint, spans)
}

/// A server that exports its spans to `endpoint` over `protocol`, a batch every 100 ms.
fn traced_server(dir: &Path, endpoint: &str, protocol: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("SWITCHYARD_ADMIN_TOKEN", crate::server::TOKEN),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    env.extend_from_slice(extra);
    Server::start_with(dir, &env)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of `trace` once every name in `names` is among them (bounded wait).
async fn trace_with(spans: &Mutex<Vec<Span>>, trace: &str, names: &[&str]) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<Span> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace)
            .cloned()
            .collect();
        if names.iter().all(|n| found.iter().any(|s| named(s, n))) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace} lacks some of {names:?}: {:#?}",
            found.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn one_trace_runs_from_the_request_through_the_log_to_the_read_model_and_nats() {
    let (endpoint, spans) = receiver().await;
    let nats = std::env::var("SWITCHYARD_TEST_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let dir = data_dir();
    let server = traced_server(
        &dir,
        &endpoint,
        "http/protobuf",
        &[
            ("OTEL_SERVICE_NAME", "switchyard-test"),
            ("SWITCHYARD_NATS_URL", nats.as_str()),
        ],
    );
    let (tenant, key, _) = tenant_with_key(&server).await;

    // The client's trace: the server continues it and says so in its answer.
    let trace = format!("{:032x}", uuid::Uuid::now_v7().as_u128());
    let client_span = "00f067aa0ba902b7";
    let answer = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{trace}-{client_span}-01"))
        .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "trace me"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let returned = answer.headers()["traceparent"].to_str().unwrap().to_owned();
    assert!(returned.starts_with(&format!("00-{trace}-")), "{returned}");

    let found = trace_with(
        &spans,
        &trace,
        &[
            "POST /v1/chat/completions",
            "admission",
            "route",
            "chat *",
            "append",
            "projector batch",
            "nats publish",
        ],
    )
    .await;
    let by_name = |name: &str| found.iter().find(|s| named(s, name)).unwrap().clone();
    let ids: HashMap<&str, &Span> = found.iter().map(|s| (s.span_id.as_str(), s)).collect();
    // The request's span is the child of the client's.
    let request = by_name("POST /v1/chat/completions");
    assert_eq!(request.parent_span_id, client_span);
    assert_eq!(
        request
            .attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("200")
    );
    // Everything else hangs, through its parents, off the request's span.
    let descends = |span: &Span| {
        let mut at = span;
        for _ in 0..32 {
            if at.span_id == request.span_id {
                return true;
            }
            match ids.get(at.parent_span_id.as_str()) {
                Some(parent) => at = parent,
                None => return false,
            }
        }
        false
    };
    for name in ["admission", "route", "chat *", "append"] {
        assert!(
            descends(&by_name(name)),
            "{name} is not under the request: {found:#?}"
        );
    }
    // The model call speaks the GenAI conventions.
    let call = by_name("chat *");
    let route = by_name("route");
    let routed = route
        .attributes
        .get("switchyard.route.model")
        .cloned()
        .unwrap_or_default();
    assert_eq!(call.name, format!("chat {routed}"));
    assert_eq!(
        call.attributes
            .get("gen_ai.operation.name")
            .map(String::as_str),
        Some("chat")
    );
    assert_eq!(call.attributes.get("gen_ai.request.model"), Some(&routed));
    assert_eq!(
        call.attributes
            .get("switchyard.attempt")
            .map(String::as_str),
        Some("1")
    );
    let tokens: u64 = call
        .attributes
        .get("gen_ai.usage.input_tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(tokens > 0, "{call:?}");
    let propensity: f64 = route.attributes["switchyard.route.propensity"]
        .parse()
        .unwrap();
    assert!(propensity > 0.0 && propensity <= 1.0, "{route:?}");
    // Across the log: the projectors' batch continues the trace from the event's metadata.
    let batch = by_name("projector batch");
    assert!(
        ids.contains_key(batch.parent_span_id.as_str()),
        "the batch's parent is not in the trace: {batch:?}"
    );

    // And the NATS message of the inference carries the trace in its `traceparent` header.
    use async_nats::jetstream::consumer::{DeliverPolicy, pull};
    use futures_util::StreamExt;
    let client = async_nats::connect(&nats).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("SWITCHYARD_EVENTS").await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            filter_subject: format!("events.{tenant}.>"),
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut messages = consumer.messages().await.unwrap();
    loop {
        assert!(
            Instant::now() < deadline,
            "no NATS message of the tenant carries the trace"
        );
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        else {
            continue;
        };
        let _ = message.ack().await;
        let header = message
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .map(|v| v.as_str().to_owned());
        // The admin calls that made the tenant have traces of their own; the completion's
        // events carry the client's.
        if header.is_some_and(|h| h.starts_with(&format!("00-{trace}-"))) {
            break;
        }
    }
}

#[tokio::test]
async fn a_workflow_run_continues_the_trace_of_the_request_that_started_it() {
    let (endpoint, spans) = receiver().await;
    let dir = data_dir();
    let server = traced_server(&dir, &endpoint, "http/protobuf", &[]);
    let (_, key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let spec = "name: traced\ninputs:\n  topic: {type: string}\noutputs:\n  answer: {value: steps.write.output, type: string}\nnodes:\n  - id: write\n    kind: llm\n    model: sim-small\n    prompt: \"Write about {{ input.topic }}\"\n";
    let registered = client
        .post(server.url("/v1/workflows"))
        .bearer_auth(&key)
        .body(spec)
        .send()
        .await
        .unwrap();
    assert_eq!(
        registered.status(),
        201,
        "{}",
        registered.text().await.unwrap()
    );
    let trace = format!("{:032x}", uuid::Uuid::now_v7().as_u128());
    let started = client
        .post(server.url("/v1/workflows/traced/runs"))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"input": {"topic": "tracing"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let found = trace_with(
        &spans,
        &trace,
        &[
            "POST /v1/workflows/{name}/runs",
            "workflow.step",
            "chat sim-small",
            "projector batch",
        ],
    )
    .await;
    let ids: HashMap<&str, &Span> = found.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let step = found.iter().find(|s| s.name == "workflow.step").unwrap();
    assert!(
        ids.contains_key(step.parent_span_id.as_str()),
        "the step's parent is not in the trace: {found:#?}"
    );
    // The model call of the step is under the step.
    let call = found.iter().find(|s| s.name == "chat sim-small").unwrap();
    let mut at = call;
    let mut under_step = false;
    for _ in 0..32 {
        if at.span_id == step.span_id {
            under_step = true;
            break;
        }
        match ids.get(at.parent_span_id.as_str()) {
            Some(parent) => at = parent,
            None => break,
        }
    }
    assert!(
        under_step,
        "the model call is not under the step: {found:#?}"
    );
}

#[tokio::test]
async fn traces_also_go_out_over_grpc() {
    let (endpoint, spans) = grpc_receiver().await;
    let dir = data_dir();
    let server = traced_server(&dir, &endpoint, "grpc", &[]);
    let (_, key, _) = tenant_with_key(&server).await;
    let trace = format!("{:032x}", uuid::Uuid::now_v7().as_u128());
    let answer = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(
            &json!({"model": "sim-small", "messages": [{"role": "user", "content": "over gRPC"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let found = trace_with(
        &spans,
        &trace,
        &["POST /v1/chat/completions", "chat sim-small", "append"],
    )
    .await;
    let request = found
        .iter()
        .find(|s| s.name == "POST /v1/chat/completions")
        .unwrap();
    assert_eq!(request.parent_span_id, "00f067aa0ba902b7");
}
