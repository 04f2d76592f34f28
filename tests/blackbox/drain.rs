//! The drain on SIGTERM: `serve` stops accepting, lets requests and streams in flight finish
//! up to `SWITCHYARD_SHUTDOWN_TIMEOUT`, and exits cleanly; past the deadline it cuts them.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

/// A model whose streamed answers take `latency_ms`, spread over 30 tokens.
fn config(latency_ms: u64) -> String {
    format!(
        r#"
[[providers]]
name = "sim"
kind = "sim"
[[models]]
name = "sim-slow"
provider = "sim"
sim = {{ latency_ms = {latency_ms}, min_answer_tokens = 30, max_answer_tokens = 30 }}
"#
    )
}

fn start(timeout_s: &str, latency_ms: u64) -> Server {
    let dir = data_dir();
    let path = dir.join("config.toml");
    std::fs::write(&path, config(latency_ms)).unwrap();
    Server::start_with(
        &dir,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", path.to_str().unwrap()),
            ("SWITCHYARD_SHUTDOWN_TIMEOUT", timeout_s),
        ],
    )
}

fn sigterm(server: &Server) {
    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn open_stream(server: &Server, key: &str) -> reqwest::Response {
    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "sim-slow", "stream": true, "messages": [{"role": "user", "content": "tell me a story"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

#[tokio::test]
async fn a_sigterm_lets_a_stream_in_flight_finish_and_refuses_new_connections() {
    let mut server = start("10", 1_500);
    let (_, key, _) = tenant_with_key(&server).await;
    let response = open_stream(&server, &key).await;
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    sigterm(&server);
    // New connections are refused once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attempt = reqwest::Client::new()
            .get(server.url("/healthz"))
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        if attempt.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The stream in flight ends whole.
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.expect("the stream was cut"));
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let exit = server.wait();
    assert!(exit.success(), "{exit}");
}

#[tokio::test]
async fn past_the_drain_deadline_the_server_cuts_what_is_left_and_exits() {
    let mut server = start("1", 20_000);
    let (_, key, _) = tenant_with_key(&server).await;
    // Streams of 20 s each: far longer than the 1 s deadline.
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(open_stream(&server, &key).await);
    }
    let stopped = Instant::now();
    sigterm(&server);
    let exit = server.wait();
    let took = stopped.elapsed();
    assert!(exit.success(), "{exit}");
    assert!(took < Duration::from_secs(5), "the drain took {took:?}");
    // The streams were cut: none reaches its end.
    for stream in streams {
        let mut body = stream.bytes_stream();
        let mut text = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            text.extend_from_slice(&chunk);
        }
        assert!(
            !String::from_utf8_lossy(&text).contains("[DONE]"),
            "a 20 s stream finished within the 1 s drain"
        );
    }
}
