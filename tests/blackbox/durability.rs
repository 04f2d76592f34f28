//! The two durability modes (`SWITCHYARD_DURABILITY`), end to end on the embedded log:
//! - `durable`: every answered inference is in the log after a `kill -9` mid-burst;
//! - `batched`: the answer goes out before the commit (it carries no log position); a `kill -9`
//!   mid-burst loses at most the in-flight window of answered inferences, a clean stop loses
//!   none, the budget gate never admits more than the budget, and every logged inference is one
//!   the log holds once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_events::{EventStore, GlobalPosition, Scope, SqliteStore};

use crate::server::{Mock, Server, TOKEN, data_dir, tenant_with_key};

const BODY: &str = r#"{"model":"mock","messages":[{"role":"user","content":"hello"}]}"#;

fn config(dir: &std::path::Path, mock: &Mock) -> String {
    let path = dir.join("switchyard.toml");
    // The mock answers 10 tokens in and 5 out: $1 and $2 per million make 20 µ$ a request.
    std::fs::write(
        &path,
        format!(
            "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
             [[models]]\nname = \"mock\"\nprovider = \"mock\"\n\
             input_usd_per_million = \"1\"\noutput_usd_per_million = \"2\"\n",
            mock.base
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn start(dir: &std::path::Path, config: &str, durability: &str) -> Server {
    Server::start_with(
        dir,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", config),
            ("SWITCHYARD_DURABILITY", durability),
        ],
    )
}

/// The inference ids of every `InferenceCompleted` in the log, each once.
async fn logged(dir: &std::path::Path) -> HashSet<String> {
    let store = SqliteStore::open(&dir.join("events.db")).await.unwrap();
    let events = store
        .read_all(Scope::All, GlobalPosition::START, 1_000_000)
        .await
        .unwrap();
    let mut ids = HashSet::new();
    for event in events
        .iter()
        .filter(|e| e.event_type == "InferenceCompleted")
    {
        let id = event.stream_id.as_str().trim_start_matches("inference-");
        assert!(ids.insert(id.to_owned()), "inference {id} logged twice");
    }
    ids
}

/// Sends up to `total` chat requests, 32 at a time, until the server dies; returns the inference
/// ids of the 2xx answers and whether each carried a log position.
async fn burst(
    base: String,
    key: String,
    total: usize,
    answered: Arc<AtomicUsize>,
) -> Vec<(String, bool)> {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (client, next, answered) = (client.clone(), next.clone(), answered.clone());
        let (url, key) = (format!("{base}/v1/chat/completions"), key.clone());
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < total {
                let Ok(response) = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(BODY)
                    .send()
                    .await
                else {
                    break; // the server is gone
                };
                if !response.status().is_success() {
                    continue;
                }
                let headers = response.headers().clone();
                if response.bytes().await.is_err() {
                    break;
                }
                let id = headers["x-switchyard-inference-id"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                got.push((id, headers.contains_key("x-switchyard-position")));
                answered.fetch_add(1, Ordering::SeqCst);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    all
}

/// A burst killed (SIGKILL) once `kill_after` answers are in: (answers, inferences logged).
async fn killed_mid_burst(
    durability: &str,
    kill_after: usize,
) -> (Vec<(String, bool)>, HashSet<String>) {
    let mock = Mock::start();
    let dir = data_dir();
    let config = config(&dir, &mock);
    let mut server = start(&dir, &config, durability);
    let (_, key, _) = tenant_with_key(&server).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(burst(server.base.clone(), key, 100_000, answered.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < kill_after {
        assert!(
            Instant::now() < deadline,
            "the burst did not reach {kill_after} answers"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill();
    let answers = load.await.unwrap();
    // Mid-burst: the load was still running when the server died.
    assert!(answers.len() >= kill_after && answers.len() < 100_000);
    (answers, logged(&dir).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_answers_carry_their_position_and_survive_a_kill() {
    let (answers, logged) = killed_mid_burst("durable", 300).await;
    assert!(
        answers.iter().all(|(_, position)| *position),
        "a durable answer without its position"
    );
    let lost: Vec<_> = answers
        .iter()
        .filter(|(id, _)| !logged.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} answered inferences lost: {lost:?}",
        lost.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_answers_go_out_before_the_commit_and_a_kill_loses_at_most_the_window() {
    let (answers, logged) = killed_mid_burst("batched", 300).await;
    // Before the commit: no position to give.
    assert!(
        answers.iter().all(|(_, position)| !*position),
        "a batched answer waited for its commit"
    );
    let lost = answers
        .iter()
        .filter(|(id, _)| !logged.contains(id))
        .count();
    eprintln!(
        "batched: {} answered, {} logged, {lost} answered but lost to the kill",
        answers.len(),
        logged.len()
    );
    assert!(
        lost <= switchyard_inference::pipeline::IN_FLIGHT as usize,
        "{lost} lost, more than the in-flight bound"
    );
    // Most answers are in: the window is a commit's worth, not the burst.
    assert!(lost * 2 < answers.len(), "{lost} of {} lost", answers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_loses_nothing_on_a_clean_stop_and_never_exceeds_the_budget() {
    let mock = Mock::start();
    let dir = data_dir();
    let config = config(&dir, &mock);
    let mut server = start(&dir, &config, "batched");
    let (tenant, key, _) = tenant_with_key(&server).await;
    // 20 µ$ a request; a reservation without max_tokens covers the default output, so the gate
    // admits fewer than budget / 20 µ$ at once, and never more than the budget.
    let client = reqwest::Client::new();
    let limits = client
        .put(server.url(&format!("/v1/admin/tenants/{tenant}/limits")))
        .bearer_auth(TOKEN)
        .json(&json!({"monthly_budget_usd": "0.004"}))
        .send()
        .await
        .unwrap();
    assert!(limits.status().is_success(), "{}", limits.status());
    let answers = burst(server.base.clone(), key, 400, Arc::new(AtomicUsize::new(0))).await;
    assert!(!answers.is_empty());
    assert!(
        answers.len() * 20 <= 4_000,
        "{} answers admitted: {} µ$ for a 4,000 µ$ budget",
        answers.len(),
        answers.len() * 20
    );
    server.terminate();
    let logged = logged(&dir).await;
    let answered: HashSet<String> = answers.into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        answered, logged,
        "a clean stop must record every answered inference"
    );
    // After a restart (durable now), the spend the log holds is the answers' spend.
    let server = start(&dir, &config, "durable");
    let view: Value = client
        .get(server.url(&format!("/v1/admin/tenants/{tenant}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let spent = view["budget"]["spent_usd"].as_str().unwrap();
    assert_eq!(spent, format!("0.{:06}", answered.len() * 20));
}

/// Feedback sent the moment a `batched` answer arrives finds its inference: the node waits for
/// its own append in flight instead of answering 404 (found by `switchyard router bench`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_right_after_a_batched_answer_finds_the_inference() {
    let dir = data_dir();
    let server = Server::start_with(
        &dir,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_DURABILITY", "batched"),
        ],
    );
    let (_, key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let statuses: Vec<u16> = futures_util::future::join_all((0..8).map(|worker| {
        let (client, key, url) = (client.clone(), key.clone(), server.url(""));
        async move {
            let mut statuses = Vec::new();
            for i in 0..10 {
                let answer = client
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&json!({"model": "auto", "messages": [{"role": "user", "content": format!("hi {worker} {i}")}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 200);
                let id = answer.headers()["x-switchyard-inference-id"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let feedback = client
                    .post(format!("{url}/v1/feedback"))
                    .bearer_auth(&key)
                    .json(&json!({"inference_id": id, "metric": "quality", "value": 1.0}))
                    .send()
                    .await
                    .unwrap();
                statuses.push(feedback.status().as_u16());
            }
            statuses
        }
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}
