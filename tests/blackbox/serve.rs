//! `switchyard serve` on the embedded default: health, readiness, metrics, errors.

use std::process::Command;

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

#[tokio::test]
async fn a_fresh_server_is_healthy_and_ready_on_the_embedded_store() {
    let dir = data_dir();
    let server = Server::start(&dir);
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["event_log_head"], 0);
    assert!(
        dir.join("events.db").exists(),
        "the SQLite log was not created in the data dir"
    );
}

#[tokio::test]
async fn metrics_expose_http_red_metrics_in_prometheus_text() {
    let server = Server::start(&data_dir());
    reqwest::get(server.url("/healthz")).await.unwrap();
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            r#"switchyard_http_requests_total{method="GET",route="/healthz",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("switchyard_http_request_seconds_bucket"));
}

#[tokio::test]
async fn unknown_paths_get_the_json_error_shape_with_the_request_id() {
    let server = Server::start(&data_dir());
    let client = reqwest::Client::new();
    let response = client
        .get(server.url("/v1/nope"))
        .header("x-request-id", "req-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], "req-abc-123");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["request_id"], "req-abc-123");
    assert!(body["error"]["message"].is_string());
}

#[tokio::test]
async fn hostile_requests_get_4xx_never_5xx() {
    let server = Server::start(&data_dir());
    let client = reqwest::Client::new();
    // A request id with control characters or absurd length is replaced, not echoed.
    let response = client
        .get(server.url("/healthz"))
        .header("x-request-id", "a".repeat(4000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(echoed.len() < 64, "an oversized request id was echoed back");
    // Percent-encoded invalid UTF-8, a huge header, and a wrong method.
    let bad_path = client
        .get(server.url("/%ff%fe/..%2f..%2fetc"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_path.status(), 404);
    // Its own client: the server closes the connection after refusing it.
    let mut many_headers = reqwest::Client::new().get(server.url("/healthz"));
    for i in 0..200 {
        many_headers = many_headers.header(format!("x-junk-{i}"), "j".repeat(512));
    }
    // The server may refuse with 431 or close the connection; it must not fail with a 5xx.
    if let Ok(response) = many_headers.send().await {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let wrong_method = client
        .post(server.url("/healthz"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert!(
        wrong_method.status().is_client_error(),
        "{}",
        wrong_method.status()
    );
    // The server is still up.
    assert_eq!(
        reqwest::get(server.url("/healthz")).await.unwrap().status(),
        200
    );
}

#[test]
fn migrate_creates_the_store_and_help_explains_every_command() {
    let dir = data_dir();
    let status = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("migrate")
        .env("SWITCHYARD_DATA_DIR", &dir)
        .env_remove("SWITCHYARD_DATABASE_URL")
        .status()
        .unwrap();
    assert!(status.success());
    assert!(dir.join("events.db").exists());
    let help = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for word in ["serve", "migrate", "SQLite", "SWITCHYARD_DATABASE_URL"] {
        assert!(
            help.contains(word),
            "--help does not mention {word}:\n{help}"
        );
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("serve")
        .arg("--listen")
        .arg("not-an-address")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid"));
    // The recording options refuse what they do not know, before anything starts.
    for (name, value, says) in [
        (
            "SWITCHYARD_INFERENCE_RECORD",
            "three",
            "\"one\" or \"split\"",
        ),
        ("SWITCHYARD_INFERENCE_RECORD", "", "\"one\" or \"split\""),
        ("SWITCHYARD_BATCH_WINDOW_MS", "1001", "1001"),
        ("SWITCHYARD_BATCH_WINDOW_MS", "-1", "-1"),
        ("SWITCHYARD_BATCH_WINDOW_MS", "5ms", "5ms"),
    ] {
        let bad = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("serve")
            .env("SWITCHYARD_DATA_DIR", &dir)
            .env(name, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(!bad.status.success(), "{name}={value:?} was taken");
        assert!(stderr.contains(says), "{name}={value:?}: {stderr}");
    }
}

/// With `SWITCHYARD_DATABASE_URL`, the log is in PostgreSQL: the tenant's events, written
/// through the binary's API, are rows of `events` in the configured schema, which holds the
/// head the server reports.
#[tokio::test]
async fn the_server_serves_a_postgres_log_when_a_database_url_is_set() {
    use sqlx::Connection;

    let url = std::env::var("SWITCHYARD_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://switchyard:switchyard@127.0.0.1:5432/switchyard_test".into()
    });
    let schema = format!("bb_{}", uuid::Uuid::now_v7().simple());
    let server = Server::start_with(
        &data_dir(),
        &[
            ("SWITCHYARD_DATABASE_URL", &url),
            ("SWITCHYARD_DATABASE_SCHEMA", &schema),
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
        ],
    );
    let (tenant, key, _) = tenant_with_key(&server).await;
    let answer = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let inference = answer.headers()["x-switchyard-inference-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let head = ready.json::<serde_json::Value>().await.unwrap()["event_log_head"]
        .as_i64()
        .unwrap();

    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let tenant_id = uuid::Uuid::parse_str(&tenant).unwrap();
    let streams: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT stream_id, COUNT(*) FROM {schema}.events WHERE tenant_id = $1 \
         GROUP BY stream_id ORDER BY stream_id"
    )))
    .bind(tenant_id)
    .fetch_all(&mut db)
    .await
    .unwrap();
    let count = |stream: &str| {
        streams
            .iter()
            .find(|(id, _)| id == stream)
            .map_or(0, |(_, n)| *n)
    };
    // InferenceCompleted (carrying the request and the route); TenantCreated, ApiKeyIssued.
    assert_eq!(count(&format!("inference-{inference}")), 1, "{streams:?}");
    assert!(count(&format!("tenant-{tenant}")) >= 2, "{streams:?}");
    let max: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT MAX(global_position) FROM {schema}.events"
    )))
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert!(max.unwrap() >= head, "head {head}, table {max:?}");
}

/// Whether a request reached the server's default service: the JSON 404 of a route that is not
/// registered (a registered path asked with another method lands there too).
async fn no_such_endpoint(response: reqwest::Response) -> bool {
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    status == 404 && body["error"]["message"] == "no such endpoint"
}

/// Every operation `/openapi.json` documents is served by the real binary: asked with its
/// method (path parameters filled in, no credentials), it reaches a handler (which may refuse
/// it), never the default "no such endpoint". The other direction, every registered route
/// documented, is the gateway's unit test `every_registered_route_is_documented_and_…`, on the
/// route tables the server registers.
#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let server = Server::start(&data_dir());
    let response = reqwest::get(server.url("/openapi.json")).await.unwrap();
    assert_eq!(response.status(), 200);
    let doc: serde_json::Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let client = reqwest::Client::new();
    let send = |method: &str, path: &str| {
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut request = client.request(method.clone(), server.url(path));
        if method == reqwest::Method::POST || method == reqwest::Method::PUT {
            request = request.json(&serde_json::json!({}));
        }
        request.send()
    };
    // The probe tells an unserved route from a served one.
    assert!(no_such_endpoint(send("get", "/v1/no-such-endpoint").await.unwrap()).await);
    assert!(no_such_endpoint(send("patch", "/healthz").await.unwrap()).await);
    let mut probed = 0;
    let mut unserved = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        // Path parameters: a UUID fits every id, and is a fine model, key or flag name.
        let concrete: String = path
            .split('/')
            .map(|part| {
                if part.starts_with('{') && part.ends_with('}') {
                    "01900000-0000-7000-8000-000000000000"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            probed += 1;
            if no_such_endpoint(send(method, &concrete).await.unwrap()).await {
                unserved.push(format!("{method} {path}"));
            }
        }
    }
    assert!(probed > 0, "/openapi.json documents no operation");
    assert!(
        unserved.is_empty(),
        "documented in /openapi.json but not served: {unserved:?}"
    );
    let create = &doc["components"]["schemas"]["CreateTenant"];
    assert_eq!(
        create["additionalProperties"], false,
        "unknown fields are refused and the schema must say so"
    );
}
