//! The Grafana dashboards' PromQL against a real Prometheus (issue 17, item 6): Prometheus
//! (Debian's binary, unpacked by `scripts/check-k8s.sh` into the tools cache, or
//! `SWITCHYARD_TEST_PROMETHEUS`) scrapes a running `serve` with traffic, a circuit that opens,
//! an event feed and the NATS relay; then every PromQL query of `deploy/grafana/dashboards/`
//! must return data (the labelled counters that only incidents raise, such as dead letters and
//! dropped feed events, are exposed at 0 from the start, so they return data too).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

/// Queries that return nothing in a healthy run: a counter with labels has no series until
/// its first increment.
const INCIDENT_ONLY: &[(&str, &str)] = &[
    (
        "switchyard_projection_dlq_total",
        "no event was dead-lettered",
    ),
    (
        "switchyard_subscriber_dropped_total",
        "no feed was too slow to keep up",
    ),
];

fn prometheus_binary() -> PathBuf {
    std::env::var_os("SWITCHYARD_TEST_PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/switchyard-tools/prometheus/usr/bin/prometheus")
        })
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every PromQL query of the dashboards, with Grafana's interval variables filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/dashboards");
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut stack = vec![dashboard];
        while let Some(node) = stack.pop() {
            if let Some(panels) = node["panels"].as_array() {
                stack.extend(panels.iter().cloned());
            }
            for target in node["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let expr = expr
                        .replace("$__rate_interval", "30s")
                        .replace("$__interval", "30s");
                    queries.push((
                        path.file_name().unwrap().to_string_lossy().into_owned(),
                        expr,
                    ));
                }
            }
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let binary = prometheus_binary();
    assert!(
        binary.exists(),
        "no Prometheus at {} (scripts/check-k8s.sh unpacks it; or set SWITCHYARD_TEST_PROMETHEUS)",
        binary.display()
    );
    let dir = data_dir();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        r#"
[[providers]]
name = "sim"
kind = "sim"
[[models]]
name = "sim-small"
provider = "sim"
sim = { latency_ms = 0 }
[[models]]
name = "sim-broken"
provider = "sim"
sim = { failure_rate = 1.0 }
"#,
    )
    .unwrap();
    let nats = std::env::var("SWITCHYARD_TEST_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let server = Server::start_with(
        &dir,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
            ("SWITCHYARD_NATS_URL", &nats),
        ],
    );
    let target = server.base.trim_start_matches("http://").to_owned();
    let port = free_port();
    let prom_dir = dir.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Prometheus(
        Command::new(&binary)
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let (_, key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    // An event feed stays open while Prometheus scrapes.
    let feed = client
        .get(server.url("/v1/events/stream"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    // Traffic for a while, so that every rate has two samples or more.
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(8) {
        for (model, stream) in [
            ("sim-small", false),
            ("sim-small", true),
            ("sim-broken", false),
        ] {
            let response = client
                .post(server.url("/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": format!("hi {i}")}]}))
                .send()
                .await
                .unwrap();
            let _ = response.bytes().await;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let query = |expr: String| {
        let client = client.clone();
        async move {
            let answer: Value = client
                .get(
                    reqwest::Url::parse_with_params(
                        &format!("http://127.0.0.1:{port}/api/v1/query"),
                        &[("query", expr.as_str())],
                    )
                    .unwrap(),
                )
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(answer["status"], "success", "{expr}: {answer}");
            answer["data"]["result"].as_array().map_or(0, Vec::len)
        }
    };
    // Prometheus is up and has scraped the server.
    let deadline = Instant::now() + Duration::from_secs(20);
    while query("up{job=\"switchyard\"} == 1".into()).await == 0 {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the server"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let mut empty = Vec::new();
    for (dashboard, expr) in &queries {
        let series = query(expr.clone()).await;
        let excused = INCIDENT_ONLY
            .iter()
            .any(|(metric, _)| expr.contains(metric));
        if series == 0 && !excused {
            empty.push(format!("{dashboard}: {expr}"));
        }
    }
    assert!(empty.is_empty(), "queries without data: {empty:#?}");
    drop(feed);
}
