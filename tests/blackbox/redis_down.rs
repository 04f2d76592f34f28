//! Redis going down under a running server (issue 15, fault injection). What the server does is
//! stated in the README ("Redis down"): rate limits fail open (the request goes through; the
//! limiter's outage must not become the API's), budgets fall back to the node's own meter (exact
//! on one node, no longer across nodes), and each is counted in
//! `switchyard_shared_state_unavailable_total` and logged. Requests are not held up waiting for
//! Redis. When Redis is back, the limits apply again.
//!
//! The test runs a `redis-server` of its own on a free port, so that it can stop and restart it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::gateway::{chat, put};
use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

const CONFIG: &str = r#"
[[providers]]
name = "sim"
kind = "sim"
[[models]]
name = "sim-small"
provider = "sim"
input_usd_per_million = "1000"
output_usd_per_million = "1000"
sim = { latency_ms = 0 }
"#;

/// A redis-server on `port`, killed on drop.
struct Redis(Child);

impl Redis {
    fn start(port: u16, dir: &std::path::Path) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is required (scripts/services.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis(child)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ask() -> serde_json::Value {
    json!({"model": "sim-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
}

/// The value of `switchyard_shared_state_unavailable_total{what="..."}`.
async fn unavailable(server: &Server, what: &str) -> u64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("switchyard_shared_state_unavailable_total{{what=\"{what}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Sends requests until one is refused with `status`, at most `bound`; how many went through.
async fn answered_until(server: &Server, key: &str, status: u16, bound: usize) -> Option<usize> {
    for answered in 0..bound {
        let response = chat(server, key, &ask()).await;
        if response.status() == status {
            return Some(answered);
        }
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    None
}

#[tokio::test]
async fn with_redis_down_limits_fail_open_budgets_hold_per_node_and_recover() {
    let dir = data_dir();
    let port = free_port();
    let redis = Redis::start(port, &dir);
    let config = dir.join("config.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let server = Server::start_with(
        &store,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
            ("SWITCHYARD_REDIS_URL", &format!("redis://127.0.0.1:{port}")),
        ],
    );
    let (tenant, key, _) = tenant_with_key(&server).await;
    let (other, other_key, _) = tenant_with_key(&server).await;
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/limits"),
        json!({"requests_per_minute": 3}),
    )
    .await;
    // The other tenant has a money budget and no rate limit.
    put(
        &server,
        &format!("/v1/admin/tenants/{other}/limits"),
        json!({"daily_budget_usd": "0.1"}),
    )
    .await;

    // Redis up: three a minute, then 429.
    assert_eq!(answered_until(&server, &key, 429, 10).await, Some(3));
    assert_eq!(unavailable(&server, "rate_limit_check").await, 0);

    drop(redis);
    // Redis down: the limit fails open, promptly.
    let started = Instant::now();
    for n in 0..5 {
        let response = chat(&server, &key, &ask()).await;
        assert_eq!(response.status(), 200, "request {n} with Redis down");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "five requests took {took:?} with Redis down"
    );
    assert!(unavailable(&server, "rate_limit_check").await >= 5);
    // Budgets hold on this node's meter: the budget still refuses, with 402.
    let answered = answered_until(&server, &other_key, 402, 200).await;
    assert!(
        answered.is_some_and(|n| n > 0),
        "the budget never refused: {answered:?}"
    );
    assert!(unavailable(&server, "budgets").await > 0);

    // Redis back (empty: it keeps nothing): the limit applies again.
    let _redis = Redis::start(port, &dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A refusal at all means the limiter is consulted again (the bucket may have been
        // partly spent while the connection came back).
        let answered = answered_until(&server, &key, 429, 10).await;
        if answered.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the limit did not come back with Redis: {answered:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
