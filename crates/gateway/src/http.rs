//! The HTTP API: health, readiness and metrics for now, with the JSON error shape and request
//! ids that every later endpoint shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::json;
use switchyard_events::EventStore;

use crate::telemetry::HTTP;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of a request: the caller's `x-request-id` if it is sane, otherwise a new one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Binds and serves until SIGINT/SIGTERM.
pub async fn serve(store: Arc<dyn EventStore>, listen: SocketAddr) -> anyhow::Result<()> {
    let store = web::Data::from(Arc::new(StoreHandle(store)));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(store.clone())
            .wrap(actix_web::middleware::from_fn(observe))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
            .default_service(web::to(not_found))
    })
    .bind(listen)?;
    for addr in server.addrs() {
        tracing::info!(%addr, "listening");
        // The one line on stdout: scripts and tests read the bound address from it.
        #[expect(
            clippy::print_stdout,
            reason = "the bound address is the binary's output"
        )]
        {
            println!("switchyard listening on http://{addr}");
        }
    }
    server.run().await?;
    Ok(())
}

struct StoreHandle(Arc<dyn EventStore>);

/// Request ids, RED metrics and one log line per request.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(uuid_v7, str::to_owned);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let mut response = next.call(req).await?;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    HTTP.requests
        .with_label_values(&[&method, &route, &status.to_string()])
        .inc();
    HTTP.seconds
        .with_label_values(&[&method, &route])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        request_id,
        method,
        route,
        status,
        micros = elapsed.as_micros() as u64,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

fn uuid_v7() -> String {
    switchyard_events::EventId::new().to_string()
}

/// The one JSON error shape: `{"error": {"code", "message", "request_id"}}`.
fn error(req: &HttpRequest, status: StatusCode, code: &str, message: &str) -> HttpResponse {
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    HttpResponse::build(status)
        .json(json!({"error": {"code": code, "message": message, "request_id": request_id}}))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(req: HttpRequest, store: web::Data<StoreHandle>) -> HttpResponse {
    match store.0.ready().await {
        Ok(head) => HttpResponse::Ok().json(json!({"status": "ready", "event_log_head": head})),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            error(
                &req,
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the event log is not reachable",
            )
        }
    }
}

async fn metrics(req: HttpRequest) -> HttpResponse {
    let mut body = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&prometheus::gather(), &mut body) {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            error(
                &req,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot encode metrics",
            )
        }
    }
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error(&req, StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
