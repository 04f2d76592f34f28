//! The read side end to end: after a burst through the gateway and a `kill -9` mid-burst, the
//! analytics API reports exactly the tokens and cost in the log (SQLite and PostgreSQL); an SSE
//! client and a NATS subscriber saw every event; SSE resumes from `Last-Event-ID` without loss;
//! a client that stops reading is cut off instead of buffered; two tenants producing events at
//! once each see all of their own and none of the other's, on SSE, WebSocket and NATS.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

/// One SSE message.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: Option<u64>,
    pub event: String,
    pub data: String,
}

/// Parses complete SSE messages out of `buffer`, leaving a partial one in it.
fn parse_sse(buffer: &mut String) -> (Vec<Sse>, usize) {
    let mut out = Vec::new();
    let mut heartbeats = 0;
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut message = Sse {
            id: None,
            event: "message".into(),
            data: String::new(),
        };
        let mut any = false;
        for line in block.lines() {
            if line.starts_with(": heartbeat") {
                heartbeats += 1;
            } else if let Some(id) = line.strip_prefix("id: ") {
                message.id = id.parse().ok();
                any = true;
            } else if let Some(event) = line.strip_prefix("event: ") {
                message.event = event.to_owned();
                any = true;
            } else if let Some(data) = line.strip_prefix("data: ") {
                message.data.push_str(data);
                any = true;
            }
        }
        if any {
            out.push(message);
        }
    }
    (out, heartbeats)
}

/// Reads the tenant's feed until `stop` says so (or 30 s pass). Returns the messages and the
/// heartbeats seen.
async fn read_feed(
    server: &Server,
    key: &str,
    query: &str,
    last_event_id: Option<u64>,
    stop: impl Fn(&[Sse]) -> bool,
) -> (Vec<Sse>, usize) {
    let client = reqwest::Client::new();
    let mut request = client
        .get(server.url(&format!("/v1/events/stream{query}")))
        .bearer_auth(key);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut messages = Vec::new();
    let mut heartbeats = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !stop(&messages) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("feed stalled after {} messages", messages.len()));
        let Some(chunk) = chunk else { break };
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        let (more, beats) = parse_sse(&mut buffer);
        messages.extend(more);
        heartbeats += beats;
    }
    (messages, heartbeats)
}

async fn head(server: &Server) -> u64 {
    let ready: Value = reqwest::get(server.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ready["event_log_head"].as_u64().unwrap()
}

/// Chat completions from `workers` concurrent clients until `stop` (or an error: the server
/// died). Returns how many were answered 200.
async fn burst(server_url: String, key: String, workers: usize, per_worker: u64) -> u64 {
    burst_counting(server_url, key, workers, per_worker, Arc::default()).await
}

/// [`burst`], counting the answered requests in `done` as they come.
async fn burst_counting(
    server_url: String,
    key: String,
    workers: usize,
    per_worker: u64,
    done: Arc<AtomicU64>,
) -> u64 {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (url, key, done) = (server_url.clone(), key.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 0..per_worker {
                let stream = (n + w as u64).is_multiple_of(3);
                let body = json!({
                    "model": "auto",
                    "stream": stream,
                    "messages": [{"role": "user", "content": format!("question {w} {n}")}],
                });
                let Ok(response) = client
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                else {
                    return;
                };
                let ok = response.status() == 200;
                if response.bytes().await.is_err() {
                    return;
                }
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    done.load(Ordering::Relaxed)
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    requests: i64,
    failures: i64,
    tokens_in: i64,
    tokens_out: i64,
    cost_micros: i64,
}

/// Sums the tenant's inference outcomes as the log holds them (read through the feed's
/// catch-up, which reads the log itself).
fn totals_in_log(messages: &[Sse]) -> Totals {
    let mut totals = Totals::default();
    for message in messages {
        if message.event != "InferenceCompleted" && message.event != "InferenceFailed" {
            continue;
        }
        let event: Value = serde_json::from_str(&message.data).unwrap();
        let data = &event["data"];
        totals.requests += 1;
        totals.failures += i64::from(message.event == "InferenceFailed");
        totals.tokens_in += data["tokens_in"].as_i64().unwrap();
        totals.tokens_out += data["tokens_out"].as_i64().unwrap();
        totals.cost_micros += data["cost_micros"].as_i64().unwrap();
    }
    totals
}

async fn usage(server: &Server, key: &str, min_position: u64) -> Totals {
    let response = reqwest::Client::new()
        .get(server.url(&format!(
            "/v1/analytics/usage?min_position={min_position}&wait_ms=20000"
        )))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let position: u64 = response.headers()["x-switchyard-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(position >= min_position);
    let body: Value = response.json().await.unwrap();
    let row = &body["data"][0];
    Totals {
        requests: row["requests"].as_i64().unwrap(),
        failures: row["failures"].as_i64().unwrap(),
        tokens_in: row["tokens_in"].as_i64().unwrap(),
        tokens_out: row["tokens_out"].as_i64().unwrap(),
        cost_micros: row["cost_micros"].as_i64().unwrap(),
    }
}

fn nats_url() -> String {
    std::env::var("SWITCHYARD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn database_url() -> String {
    std::env::var("SWITCHYARD_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://switchyard:switchyard@127.0.0.1:5432/switchyard_test".into()
    })
}

/// Every event id the NATS relay published for `tenant` (read from JetStream with an
/// ephemeral consumer), with how many messages carried each and the event's position.
async fn nats_ids(tenant: &str, expected: usize) -> BTreeMap<String, (usize, u64)> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull};
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("SWITCHYARD_EVENTS").await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("events.{tenant}.>"),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut total = 0;
    while total < expected && tokio::time::Instant::now() < deadline {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .unwrap();
            let event: Value = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(event["event_id"].as_str().unwrap(), id);
            let position = event["global_position"].as_u64().unwrap();
            ids.entry(id).or_insert((0, position)).0 += 1;
            total += 1;
            message.ack().await.unwrap();
        }
    }
    ids
}

async fn the_analytics_api_reports_exactly_the_log(postgres: bool) {
    let dir = data_dir();
    let schema = format!("bb_{}", uuid::Uuid::now_v7().simple());
    let url = database_url();
    let nats = nats_url();
    let mut env = vec![
        ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
        ("SWITCHYARD_NATS_URL", nats.as_str()),
    ];
    if postgres {
        env.push(("SWITCHYARD_DATABASE_URL", url.as_str()));
        env.push(("SWITCHYARD_DATABASE_SCHEMA", schema.as_str()));
    }
    let server = Server::start_with(&dir, &env);
    let (tenant, key, _) = tenant_with_key(&server).await;

    // A burst, and the server killed (SIGKILL) in the middle of it: once 30 of its 240
    // requests are answered, and before the last one is.
    let done = Arc::new(AtomicU64::new(0));
    let burst_task = tokio::spawn(burst_counting(
        server.base.clone(),
        key.clone(),
        6,
        40,
        done.clone(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < 30 {
        assert!(std::time::Instant::now() < deadline, "the burst stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(server);
    let answered_before = burst_task.await.unwrap();
    assert!(
        (30..240).contains(&answered_before),
        "the kill did not land mid-burst: {answered_before} of 240 answered"
    );

    // Restarted on the same data: more traffic, then every total checked against the log.
    let server = Server::start_with(&dir, &env);
    let answered_after = burst(server.base.clone(), key.clone(), 4, 10).await;
    assert_eq!(answered_after, 40);
    let head = head(&server).await;
    let (log, _) = read_feed(&server, &key, "?after=0", None, |m| {
        m.last().is_some_and(|m| m.id.unwrap_or(0) >= head)
            || m.iter()
                .filter(|m| m.event.starts_with("Inference"))
                .count()
                > 100_000
    })
    .await;
    let in_log = totals_in_log(&log);
    assert!(
        in_log.requests >= i64::try_from(answered_before + answered_after).unwrap(),
        "{in_log:?}: every answered request is in the log"
    );
    assert_eq!(usage(&server, &key, head).await, in_log);

    // The feed's events are the tenant's, in order, each once.
    let positions: Vec<u64> = log.iter().filter_map(|m| m.id).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    for message in &log {
        let event: Value = serde_json::from_str(&message.data).unwrap();
        assert_eq!(event["tenant_id"].as_str().unwrap(), tenant);
    }

    // The NATS subscriber saw every event of the tenant, once per event id.
    let ids = nats_ids(&tenant, log.len()).await;
    let feed_ids: BTreeSet<String> = log
        .iter()
        .map(|m| {
            serde_json::from_str::<Value>(&m.data).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // (Events after `head`, such as billing's, may be published too: only those up to it count.)
    let nats_set: BTreeSet<String> = ids
        .iter()
        .filter(|(_, (_, position))| *position <= head)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        nats_set == feed_ids,
        "NATS saw {} of the feed's {} events (and {} others)",
        nats_set.intersection(&feed_ids).count(),
        feed_ids.len(),
        nats_set.difference(&feed_ids).count()
    );
    assert!(
        ids.values().all(|(n, _)| *n == 1),
        "JetStream deduplicated by Nats-Msg-Id"
    );

    // Read-your-writes: the position a completion returns is visible at once.
    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "sim-large", "messages": [{"role": "user", "content": "one more"}]}))
        .send()
        .await
        .unwrap();
    let position: u64 = response.headers()["x-switchyard-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let after = usage(&server, &key, position).await;
    assert_eq!(after.requests, in_log.requests + 1);
    assert_eq!(
        after.tokens_out,
        in_log.tokens_out + body["usage"]["completion_tokens"].as_i64().unwrap()
    );
}

#[tokio::test]
async fn sqlite_analytics_report_exactly_the_log_across_a_kill() {
    the_analytics_api_reports_exactly_the_log(false).await;
}

#[tokio::test]
async fn postgres_analytics_report_exactly_the_log_across_a_kill() {
    the_analytics_api_reports_exactly_the_log(true).await;
}

#[tokio::test]
async fn sse_resumes_from_last_event_id_without_loss() {
    let dir = data_dir();
    let server = Server::start_with(&dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let (_, key, _) = tenant_with_key(&server).await;
    burst(server.base.clone(), key.clone(), 2, 5).await;
    let first_head = head(&server).await;

    // Read part of the feed, then hang up.
    let (first, _) = read_feed(&server, &key, "?after=0", None, |m| m.len() >= 7).await;
    let last_seen = first.last().unwrap().id.unwrap();
    assert!(last_seen < first_head);

    burst(server.base.clone(), key.clone(), 2, 5).await;
    let head = head(&server).await;
    let (rest, _) = read_feed(&server, &key, "", Some(last_seen), |m| {
        m.last().is_some_and(|m| m.id.unwrap_or(0) >= head)
    })
    .await;
    let (everything, _) = read_feed(&server, &key, "?after=0", None, |m| {
        m.last().is_some_and(|m| m.id.unwrap_or(0) >= head)
    })
    .await;
    let resumed: Vec<u64> = first.iter().chain(&rest).filter_map(|m| m.id).collect();
    let all: Vec<u64> = everything.iter().filter_map(|m| m.id).collect();
    assert_eq!(resumed, all, "resuming lost or repeated events");
    assert_eq!(all.last().copied(), Some(head));

    // A type filter, and a bad Last-Event-ID.
    let (only, _) = read_feed(
        &server,
        &key,
        "?after=0&types=InferenceCompleted",
        None,
        |m| m.len() >= 20,
    )
    .await;
    assert!(only.iter().all(|m| m.event == "InferenceCompleted"));
    let bad = reqwest::Client::new()
        .get(server.url("/v1/events/stream"))
        .bearer_auth(&key)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let unauthenticated = reqwest::get(server.url("/v1/events/stream")).await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test]
async fn an_idle_feed_sends_heartbeats() {
    let dir = data_dir();
    let server = Server::start_args(
        &dir,
        &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)],
        &["--feed-heartbeat-secs", "1"],
    );
    let (_, key, _) = tenant_with_key(&server).await;
    let started = std::time::Instant::now();
    let client = reqwest::Client::new();
    let response = client
        .get(server.url("/v1/events/stream"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&chunk[..], b": heartbeat\n\n");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// Starts a server with a 16-event feed ring, opens a feed with the request `head(address, key)`
/// from a client that never reads (4 KiB receive buffer), pushes thousands of inferences for its
/// tenant (an event of 700+ bytes each, with its request and route: megabytes, more than the
/// kernel buffers of a stalled connection hold), then reads what the server sent until it ended the connection, which must
/// be far less than what was produced. Returns that text and the server.
async fn stalled_client(head: impl Fn(&str, &str) -> String) -> (String, Server) {
    let dir = data_dir();
    let config = dir.join("config.toml");
    std::fs::write(&config, crate::gateway::SIM_CONFIG).unwrap();
    let server = Server::start_args(
        &dir,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
        ],
        &["--feed-ring", "16"],
    );
    let (_, key, _) = tenant_with_key(&server).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(address.parse().unwrap()).await.unwrap();
    stream
        .write_all(head(&address, &key).as_bytes())
        .await
        .unwrap();
    // The feed is open once the answer's head has come (the subscription is taken first).
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut byte = [0u8; 1];
        while !received.ends_with(b"\r\n\r\n") {
            assert_eq!(
                stream.read(&mut byte).await.unwrap(),
                1,
                "closed before its head"
            );
            received.push(byte[0]);
        }
    })
    .await
    .expect("the feed's answer head never came");
    let answered = burst(server.base.clone(), key.clone(), 16, 250).await;
    let produced = usize::try_from(answered).unwrap() * 700;
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received))
        .await
        .expect("the server never ended the slow client's connection")
        .unwrap();
    assert!(
        received.len() < produced / 2,
        "{} of {produced} bytes",
        received.len()
    );
    (String::from_utf8_lossy(&received).into_owned(), server)
}

/// A client that stops reading: the server keeps a bounded ring, not a queue per client. Once
/// the client is further behind than the ring, it gets `slow_consumer` with its resume position
/// and the stream ends, having received far less than was produced.
#[tokio::test]
async fn a_slow_sse_client_is_cut_off_instead_of_buffered() {
    let (text, server) = stalled_client(|address, key| {
        format!("GET /v1/events/stream HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\r\n")
    })
    .await;
    assert!(
        text.contains("event: slow_consumer"),
        "no slow_consumer notice"
    );
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "switchyard_subscriber_dropped_total{policy=\"disconnect\",transport=\"sse\"}"
        )),
        "{metrics}"
    );
}

/// The WebSocket feed is two-way: events out, and a chat completion sent over the socket runs
/// through the HTTP path (auth, limits, billing, events) with its tokens streamed back.
#[tokio::test]
async fn a_websocket_carries_events_and_chat_completions() {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let dir = data_dir();
    let config = dir.join("config.toml");
    std::fs::write(&config, crate::gateway::SIM_CONFIG).unwrap();
    let server = Server::start_with(
        &dir,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
        ],
    );
    let (_, key, _) = tenant_with_key(&server).await;
    let registered = reqwest::Client::new()
        .post(server.url("/v1/workflows"))
        .bearer_auth(&key)
        .body("name: ws-hello\nnodes:\n  - id: greet\n    kind: llm\n    model: sim-small\n    prompt: hello from a run\n")
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status().as_u16(), 201);
    let url = server.base.replace("http://", "ws://") + "/v1/events/ws?after=0";
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let ask = |id: &str, stream: bool| {
        Message::text(
            json!({"type": "chat.completions", "id": id, "request": {
                "model": "sim-small", "stream": stream,
                "messages": [{"role": "user", "content": "hello over a socket"}]}})
            .to_string(),
        )
    };
    futures_util::SinkExt::send(&mut socket, ask("c1", true))
        .await
        .unwrap();
    futures_util::SinkExt::send(&mut socket, ask("c2", false))
        .await
        .unwrap();
    futures_util::SinkExt::send(
        &mut socket,
        Message::text(json!({"type": "workflow.start", "id": "w1"}).to_string()),
    )
    .await
    .unwrap();
    futures_util::SinkExt::send(
        &mut socket,
        Message::text(
            json!({"type": "workflow.start", "id": "w2", "request": {"workflow": "ws-hello"}})
                .to_string(),
        ),
    )
    .await
    .unwrap();
    futures_util::SinkExt::send(&mut socket, Message::text("{not json"))
        .await
        .unwrap();

    let mut chunks = 0;
    let mut done_id = None;
    let mut whole = None;
    let mut completed_events = Vec::new();
    let mut errors = Vec::new();
    let mut started_run = None;
    let mut runs_completed = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while done_id.is_none()
        || whole.is_none()
        || completed_events.len() < 2
        || errors.len() < 2
        || started_run.is_none()
        || runs_completed.is_empty()
    {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("socket stalled")
            .unwrap()
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).unwrap();
        match value["type"].as_str().unwrap() {
            "chat.completion.chunk" => {
                assert_eq!(value["id"], "c1");
                chunks += 1;
            }
            "chat.completion.done" => {
                done_id = Some(value["inference_id"].as_str().unwrap().to_owned())
            }
            "chat.completion" => whole = Some(value),
            "error" => errors.push(value),
            "workflow.started" => {
                assert_eq!(value["id"], "w2");
                started_run = Some(value["run_id"].as_str().unwrap().to_owned());
            }
            "event" => {
                if value["event"]["type"] == "InferenceCompleted" {
                    completed_events.push(value["event"]["stream_id"].as_str().unwrap().to_owned());
                }
                if value["event"]["type"] == "RunCompleted" {
                    runs_completed.push(value["event"]["stream_id"].as_str().unwrap().to_owned());
                }
            }
            other => panic!("unexpected {other}: {value}"),
        }
    }
    assert!(chunks >= 2, "{chunks} chunks");
    let done_id = done_id.unwrap();
    assert!(completed_events.contains(&format!("inference-{done_id}")));
    let whole = whole.unwrap();
    assert_eq!(whole["data"]["object"], "chat.completion");
    assert!(
        errors
            .iter()
            .any(|e| e["id"] == "w1" && e["error"]["code"] == "invalid_request"),
        "{errors:?}"
    );
    // A run started over the socket: its events came on the same feed.
    let run = started_run.unwrap();
    assert!(runs_completed.contains(&format!("workflow_run-{run}")));
    assert!(
        errors
            .iter()
            .any(|e| e["error"]["code"] == "invalid_request")
    );

    // Billed and logged like HTTP requests: the two completions and the run's model call.
    let usage: Value = reqwest::Client::new()
        .get(server.url(&format!(
            "/v1/analytics/usage?min_position={}",
            head(&server).await
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["data"][0]["requests"], 3);

    // Without a key, no upgrade.
    let anonymous = server.base.replace("http://", "ws://") + "/v1/events/ws";
    assert!(tokio_tungstenite::connect_async(anonymous).await.is_err());
}

/// A WebSocket client that stops reading is cut off with `slow_consumer`, as the SSE one.
#[tokio::test]
async fn a_slow_websocket_client_is_cut_off_instead_of_buffered() {
    let (text, _server) = stalled_client(|address, key| {
        format!(
            "GET /v1/events/ws HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    })
    .await;
    assert!(
        text.starts_with("HTTP/1.1 101"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(
        text.contains("\"type\":\"slow_consumer\""),
        "no slow_consumer message"
    );
}

/// Reads an SSE body until `event: closed` or its end, at most `limit`; answers the text and
/// how long it took.
async fn read_until_closed(response: reqwest::Response, limit: Duration) -> (String, Duration) {
    let started = std::time::Instant::now();
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while started.elapsed() < limit {
        match tokio::time::timeout(limit, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                text.push_str(&String::from_utf8_lossy(&chunk));
                if text.contains("event: closed") {
                    break;
                }
            }
            _ => break,
        }
    }
    (text, started.elapsed())
}

/// A feed ends (within a second, with its reason) once the key that opened it is revoked, or
/// expires; it does not outlive its key.
#[tokio::test]
async fn an_open_feed_ends_when_its_key_is_revoked_or_expires() {
    let dir = data_dir();
    let server = Server::start_with(&dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let (tenant, key, key_id) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let open = |key: String| {
        client
            .get(server.url("/v1/events/stream"))
            .bearer_auth(key)
            .send()
    };
    let feed = open(key.clone()).await.unwrap();
    assert_eq!(feed.status(), 200);
    // The feed is open (its 200 came after its subscription was taken).
    let reader = tokio::spawn(read_until_closed(feed, Duration::from_secs(10)));
    let revoked_at = std::time::Instant::now();
    let revoked = client
        .delete(server.url(&format!("/v1/admin/tenants/{tenant}/keys/{key_id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let (text, _) = reader.await.unwrap();
    let ended = revoked_at.elapsed();
    assert!(text.contains("event: closed"), "{text}");
    assert!(text.contains("revoked"), "{text}");
    assert!(ended < Duration::from_secs(1), "{ended:?}");

    // A key that expires: the feed ends within a second of its expiry.
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let issued: Value = client
        .post(server.url(&format!("/v1/admin/tenants/{tenant}/keys")))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "short", "expires_at": expires.format(&time::format_description::well_known::Rfc3339).unwrap()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let feed = open(issued["key"].as_str().unwrap().to_owned())
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    let (text, _) = read_until_closed(feed, Duration::from_secs(10)).await;
    let late = time::OffsetDateTime::now_utc() - expires;
    assert!(text.contains("expired"), "{text}");
    assert!(late < time::Duration::seconds(1), "{late:?}");
}

/// The events a NATS subscriber of `events.<tenant>.>` receives (JetStream, from the start)
/// until `enough` says so or 30 s pass.
async fn nats_events(tenant: &str, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull};
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("SWITCHYARD_EVENTS").await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("events.{tenant}.>"),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !enough(&events) && tokio::time::Instant::now() < deadline {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            events.push(serde_json::from_slice(&message.payload).unwrap());
            message.ack().await.unwrap();
        }
    }
    events
}

/// The inference ids of the `InferenceCompleted` events in `events` (JSON events), after
/// checking that every one of them belongs to `tenant`.
fn completed_of(tenant: &str, events: &[Value], feed: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for event in events {
        assert_eq!(
            event["tenant_id"].as_str(),
            Some(tenant),
            "{feed}: another tenant's event: {event}"
        );
        if event["type"] == "InferenceCompleted" {
            let stream = event["stream_id"].as_str().unwrap();
            ids.insert(stream.strip_prefix("inference-").unwrap().to_owned());
        }
    }
    ids
}

/// Two tenants produce events at the same time: each one's SSE feed (live, and caught up from
/// the start of the log), WebSocket feed and NATS subjects carry every inference of its own and
/// no event of the other's.
#[tokio::test]
async fn each_tenant_sees_its_own_events_and_none_of_another_on_every_feed() {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    const N: usize = 3;
    let dir = data_dir();
    let config = dir.join("config.toml");
    std::fs::write(&config, crate::gateway::SIM_CONFIG).unwrap();
    let nats = nats_url();
    let server = Server::start_with(
        &dir,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
            ("SWITCHYARD_NATS_URL", nats.as_str()),
        ],
    );
    let (tenant_a, key_a, _) = tenant_with_key(&server).await;
    let (tenant_b, key_b, _) = tenant_with_key(&server).await;
    let tenants = [(tenant_a, key_a), (tenant_b, key_b)];
    let start = head(&server).await;

    // WebSockets open before the traffic.
    let mut sockets = Vec::new();
    for (_, key) in &tenants {
        let url = server.base.replace("http://", "ws://") + &format!("/v1/events/ws?after={start}");
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        sockets.push(tokio_tungstenite::connect_async(request).await.unwrap().0);
    }
    // Live SSE feeds, then the two tenants' inferences in turn (A, B, A, B, ...): each feed's
    // last own inference comes after inferences of the other tenant.
    let traffic = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let client = reqwest::Client::new();
        let mut ids = [BTreeSet::new(), BTreeSet::new()];
        for _ in 0..N {
            for (i, (_, key)) in tenants.iter().enumerate() {
                let response = client
                    .post(server.url("/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&json!({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                ids[i].insert(
                    response.headers()["x-switchyard-inference-id"]
                        .to_str()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
        ids
    };
    let completed = |messages: &[Sse]| {
        messages
            .iter()
            .filter(|m| m.event == "InferenceCompleted")
            .count()
            >= N
    };
    let live = format!("?after={start}");
    let ((live_a, _), (live_b, _), ids) = tokio::join!(
        read_feed(&server, &tenants[0].1, &live, None, completed),
        read_feed(&server, &tenants[1].1, &live, None, completed),
        traffic,
    );
    let data = |messages: &[Sse]| -> Vec<Value> {
        messages
            .iter()
            .map(|m| serde_json::from_str(&m.data).unwrap())
            .collect()
    };
    for (i, live) in [live_a, live_b].iter().enumerate() {
        let tenant = &tenants[i].0;
        assert_eq!(completed_of(tenant, &data(live), "live SSE"), ids[i]);
        // Caught up from the start of the log.
        let (from_start, _) = read_feed(&server, &tenants[i].1, "?after=0", None, completed).await;
        assert_eq!(
            completed_of(tenant, &data(&from_start), "SSE from the start"),
            ids[i]
        );
        // The WebSocket opened before the traffic.
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while events
            .iter()
            .filter(|e: &&Value| e["type"] == "InferenceCompleted")
            .count()
            < N
        {
            let message = tokio::time::timeout_at(deadline, sockets[i].next())
                .await
                .expect("socket stalled")
                .unwrap()
                .unwrap();
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "event" {
                    events.push(value["event"].clone());
                }
            }
        }
        assert_eq!(completed_of(tenant, &events, "WebSocket"), ids[i]);
        // NATS: the tenant's subjects.
        let published = nats_events(tenant, |events| {
            events
                .iter()
                .filter(|e| e["type"] == "InferenceCompleted")
                .count()
                >= N
        })
        .await;
        assert_eq!(completed_of(tenant, &published, "NATS"), ids[i]);
    }
}

/// A `min_position` past the end of the log can never be reached (every position handed out
/// was committed first): 400 at once, not 503 after the wait. One inside the log is served.
#[tokio::test]
async fn a_min_position_past_the_log_is_a_client_error_not_a_wait() {
    let server = Server::start_with(&data_dir(), &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let (_, key, _) = tenant_with_key(&server).await;
    let at = head(&server).await;
    let client = reqwest::Client::new();
    let get = |position: u64| {
        client
            .get(server.url(&format!(
                "/v1/analytics/usage?min_position={position}&wait_ms=10000"
            )))
            .bearer_auth(&key)
            .send()
    };
    let started = std::time::Instant::now();
    let beyond = get(at + 1_000_000).await.unwrap();
    assert_eq!(beyond.status(), 400);
    assert!(started.elapsed() < Duration::from_secs(5), "it waited");
    let body: Value = beyond.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("past the end of the log"),
        "{body}"
    );
    assert_eq!(get(at).await.unwrap().status(), 200);
}

/// The WebSocket feed too ends within a second of its key's revocation, with a `closed`
/// message naming the reason and a close frame (code 1008, policy).
#[tokio::test]
async fn an_open_websocket_feed_ends_when_its_key_is_revoked() {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let server = Server::start_with(&data_dir(), &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let (tenant, key, key_id) = tenant_with_key(&server).await;
    let url = server.base.replace("http://", "ws://") + "/v1/events/ws";
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let revoked_at = std::time::Instant::now();
    let revoked = reqwest::Client::new()
        .delete(server.url(&format!("/v1/admin/tenants/{tenant}/keys/{key_id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let mut closed_message = None;
    let mut close_frame = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, socket.next()).await {
        match message {
            Ok(Message::Text(text)) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "closed" {
                    closed_message = Some(value);
                }
            }
            Ok(Message::Close(frame)) => {
                close_frame = frame;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let ended = revoked_at.elapsed();
    let closed = closed_message.expect("a `closed` message");
    assert!(
        closed["reason"].as_str().unwrap().contains("revoked"),
        "{closed}"
    );
    let frame = close_frame.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(ended < Duration::from_secs(1), "{ended:?}");
}
