//! Every budget and token limit refuses end to end on the real binary, with the refusal naming
//! the limit that refused: the daily money budget and the monthly token budget (402
//! `budget_exhausted`), the token limits of a key and of a model (429 with `Retry-After`). The
//! tenant, key or model beside the refused one is still served, and nothing refused is billed.
//!
//! The upstream is the mock (`benches/gateway/mock_upstream.rs`): every answer is 10 tokens in
//! and 5 out, so at $100/M in and $200/M out each answered request costs exactly $0.002 and 15
//! tokens. A request for "hi" with `max_tokens` 5 is estimated at 8 prompt tokens, so admission
//! reserves 13 tokens and $0.0018.

use std::path::Path;

use serde_json::{Value, json};

use crate::gateway::{chat, logged, put, start, tenant_view};
use crate::server::{Mock, Server, TOKEN, data_dir, tenant_with_key};

/// What one answered request costs and counts (the mock's usage at the config's prices).
const COST_MICROS: u64 = 2_000;
const TOKENS: u64 = 15;

fn config(mock: &Mock) -> String {
    let mut config = format!(
        "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\n",
        mock.base
    );
    for model in ["mock-a", "mock-b"] {
        config.push_str(&format!(
            "[[models]]\nname = \"{model}\"\nprovider = \"mock\"\n\
             input_usd_per_million = \"100\"\noutput_usd_per_million = \"200\"\n"
        ));
    }
    config
}

fn ask(model: &str) -> Value {
    json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
}

/// Sends `ask(model)` with `key` until a request is refused (at most `bound` answered first);
/// returns how many were answered and the refusal.
async fn until_refused(
    server: &Server,
    key: &str,
    model: &str,
    bound: u64,
) -> (u64, reqwest::Response) {
    for answered in 0..=bound {
        let response = chat(server, key, &ask(model)).await;
        if response.status() != 200 {
            return (answered, response);
        }
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["usage"]["total_tokens"], TOKENS, "{body}");
    }
    panic!("{bound} requests for {model} answered and none refused");
}

/// `$0.xxxxxx` as the admin API writes micro-dollars.
fn usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// The tenant's spend shows exactly `answered` requests, and nothing is held in reservation.
async fn billed_exactly(server: &Server, tenant: &str, answered: u64) {
    let view = tenant_view(server, tenant).await;
    let budget = &view["budget"];
    assert_eq!(budget["spent_usd"], usd(answered * COST_MICROS), "{view}");
    assert_eq!(
        budget["day_spent_usd"],
        usd(answered * COST_MICROS),
        "{view}"
    );
    assert_eq!(budget["tokens"], answered * TOKENS, "{view}");
    assert_eq!(budget["day_tokens"], answered * TOKENS, "{view}");
    assert_eq!(budget["reserved_usd"], usd(0), "{view}");
}

/// The log holds `answered` inferences, all completed, one event each: a refused request is not
/// an inference.
async fn logged_exactly(dir: &Path, answered: u64) {
    let events = logged(dir).await;
    let count = |kind: &str| events.iter().filter(|(_, t)| t == kind).count() as u64;
    assert_eq!(count("InferenceCompleted"), answered, "{events:?}");
    assert_eq!(
        count("InferenceRequested") + count("RouteChosen"),
        0,
        "{events:?}"
    );
    assert_eq!(count("InferenceFailed"), 0, "{events:?}");
}

/// A 402 `budget_exhausted` that names `budget` (and no other budget) and is not retryable.
async fn assert_budget_refusal(refused: reqwest::Response, budget: &str, others: &[&str]) {
    assert_eq!(refused.status(), 402);
    assert!(
        !refused.headers().contains_key("retry-after"),
        "a spent budget does not come back in seconds"
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exhausted", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("the tenant's {budget} is spent")),
        "{message}"
    );
    for other in others {
        assert!(!message.contains(other), "{message}");
    }
}

/// A 429 `rate_limited` with `Retry-After`, naming the tier's `tokens_per_minute` of 40.
async fn assert_token_limit_refusal(refused: reqwest::Response, tier: &str) {
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // 40 tokens a minute refill one token every 1.5 s: at least a second, at most the minute.
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.headers()["x-ratelimit-limit-tokens"], "40");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{tier} tokens_per_minute is 40")),
        "{message}"
    );
}

#[tokio::test]
async fn a_daily_money_budget_refuses_with_402_naming_it_and_bills_nothing_refused() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock));
    let (tenant, key, _) = tenant_with_key(&server).await;
    let (other, other_key, _) = tenant_with_key(&server).await;
    // $0.01 a day: four answers ($0.008) leave room for a fifth's reservation ($0.0018); five
    // ($0.010) leave none. The monthly budget is far from spent.
    let limits = json!({"daily_budget_usd": "0.01", "monthly_budget_usd": "1"});
    for t in [&tenant, &other] {
        put(
            &server,
            &format!("/v1/admin/tenants/{t}/limits"),
            limits.clone(),
        )
        .await;
    }
    let (answered, refused) = until_refused(&server, &key, "mock-a", 10).await;
    assert_eq!(answered, 5);
    assert_budget_refusal(refused, "daily_budget_usd", &["monthly_budget_usd"]).await;
    // Refused again, on every model: the budget is the tenant's.
    for model in ["mock-a", "mock-b"] {
        let again = chat(&server, &key, &ask(model)).await;
        assert_budget_refusal(again, "daily_budget_usd", &["monthly_budget_usd"]).await;
    }
    billed_exactly(&server, &tenant, answered).await;
    let view = tenant_view(&server, &tenant).await;
    assert_eq!(view["budget"]["remaining_usd"], usd(990_000), "{view}");
    // Another tenant with the same budget has spent none of it.
    assert_eq!(
        chat(&server, &other_key, &ask("mock-a")).await.status(),
        200
    );
    billed_exactly(&server, &other, 1).await;
    logged_exactly(&dir, answered + 1).await;
}

#[tokio::test]
async fn a_monthly_token_budget_refuses_with_402_naming_it_and_bills_nothing_refused() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock));
    let (tenant, key, _) = tenant_with_key(&server).await;
    let (other, other_key, _) = tenant_with_key(&server).await;
    // 70 tokens a month: three answers (45) leave room for a fourth's reservation (13), four
    // (60) do not. The daily token budget is far from spent.
    let limits = json!({"monthly_token_budget": 70, "daily_token_budget": 1_000});
    for t in [&tenant, &other] {
        put(
            &server,
            &format!("/v1/admin/tenants/{t}/limits"),
            limits.clone(),
        )
        .await;
    }
    let (answered, refused) = until_refused(&server, &key, "mock-a", 10).await;
    assert_eq!(answered, 4);
    assert_budget_refusal(refused, "monthly_token_budget", &["daily_token_budget"]).await;
    for model in ["mock-a", "mock-b"] {
        let again = chat(&server, &key, &ask(model)).await;
        assert_budget_refusal(again, "monthly_token_budget", &["daily_token_budget"]).await;
    }
    billed_exactly(&server, &tenant, answered).await;
    let view = tenant_view(&server, &tenant).await;
    assert_eq!(view["limits"]["monthly_token_budget"], 70, "{view}");
    assert_eq!(
        chat(&server, &other_key, &ask("mock-a")).await.status(),
        200
    );
    billed_exactly(&server, &other, 1).await;
    logged_exactly(&dir, answered + 1).await;
}

/// A second key of `tenant`: (key, key id).
pub(crate) async fn second_key(server: &Server, tenant: &str) -> (String, String) {
    let issued: Value = reqwest::Client::new()
        .post(server.url(&format!("/v1/admin/tenants/{tenant}/keys")))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "second"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        issued["key"].as_str().unwrap().to_owned(),
        issued["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_keys_token_limit_refuses_that_key_alone_with_429_and_retry_after() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock));
    let (tenant, key, key_id) = tenant_with_key(&server).await;
    let (second, second_id) = second_key(&server, &tenant).await;
    // Both keys may take 40 tokens a minute, each its own 40: two answers (30 tokens) leave no
    // room for a third's 13.
    for id in [&key_id, &second_id] {
        put(
            &server,
            &format!("/v1/admin/tenants/{tenant}/keys/{id}/limits"),
            json!({"tokens_per_minute": 40}),
        )
        .await;
    }
    let (answered, refused) = until_refused(&server, &key, "mock-a", 10).await;
    assert!(answered >= 2, "{answered}");
    assert_token_limit_refusal(refused, "the key's").await;
    // The same key is refused on the other model too: the limit is the key's.
    let again = chat(&server, &key, &ask("mock-b")).await;
    assert_token_limit_refusal(again, "the key's").await;
    // The tenant's other key has its own allowance.
    assert_eq!(chat(&server, &second, &ask("mock-a")).await.status(), 200);
    billed_exactly(&server, &tenant, answered + 1).await;
    logged_exactly(&dir, answered + 1).await;
}

#[tokio::test]
async fn a_models_token_limit_refuses_that_model_alone_with_429_and_retry_after() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock));
    let (tenant, key, _) = tenant_with_key(&server).await;
    let (other, other_key, _) = tenant_with_key(&server).await;
    // Both models may take 40 tokens a minute for both tenants.
    for t in [&tenant, &other] {
        for model in ["mock-a", "mock-b"] {
            put(
                &server,
                &format!("/v1/admin/tenants/{t}/models/{model}/limits"),
                json!({"tokens_per_minute": 40}),
            )
            .await;
        }
    }
    let (answered, refused) = until_refused(&server, &key, "mock-a", 10).await;
    assert!(answered >= 2, "{answered}");
    assert_token_limit_refusal(refused, "model mock-a's").await;
    // The other model, with the same key, is served; so is the same model for another tenant.
    assert_eq!(chat(&server, &key, &ask("mock-b")).await.status(), 200);
    assert_eq!(
        chat(&server, &other_key, &ask("mock-a")).await.status(),
        200
    );
    billed_exactly(&server, &tenant, answered + 1).await;
    billed_exactly(&server, &other, 1).await;
    logged_exactly(&dir, answered + 2).await;
}

/// Thirty requests at once against a daily budget that covers five: reservations are taken
/// atomically, so exactly five are answered, the rest refused with 402, and the spend is
/// exactly five answers' (none over the budget, none lost).
#[tokio::test]
async fn concurrent_requests_against_one_budget_answer_exactly_what_it_covers() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock));
    let (tenant, key, _) = tenant_with_key(&server).await;
    put(
        &server,
        &format!("/v1/admin/tenants/{tenant}/limits"),
        json!({"daily_budget_usd": "0.01"}),
    )
    .await;
    let body = ask("mock-a");
    let responses =
        futures_util::future::join_all((0..30).map(|_| chat(&server, &key, &body))).await;
    let mut answered = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => answered += 1,
            402 => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "budget_exhausted", "{body}");
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!(
        answered, 5,
        "answered {answered} of 30 within a budget for 5"
    );
    billed_exactly(&server, &tenant, 5).await;
    logged_exactly(&dir, 5).await;
}

/// Eight concurrent retries of one completion under one `Idempotency-Key`: one runs, the
/// others are told it is in progress or get its recorded answer, and the tenant is billed once.
#[tokio::test]
async fn concurrent_retries_under_one_idempotency_key_are_billed_once() {
    let mock = Mock::start();
    let dir = data_dir();
    let server = start(&dir, &config(&mock));
    let (tenant, key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let send = || {
        client
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("idempotency-key", "retry-me-1")
            .json(&ask("mock-a"))
            .send()
    };
    let responses = futures_util::future::join_all((0..8).map(|_| send())).await;
    let mut ids = std::collections::HashSet::new();
    let mut fresh = 0;
    for response in responses {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 => {
                if !response.headers().contains_key("idempotency-replayed") {
                    fresh += 1;
                }
                let body: Value = response.json().await.unwrap();
                ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            409 => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "request_in_progress", "{body}");
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!(fresh, 1, "{fresh} retries ran the completion");
    assert!(ids.len() <= 1, "different answers: {ids:?}");
    // A retry after it finished gets the recorded answer.
    let replay = send().await.unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    let body: Value = replay.json().await.unwrap();
    if let Some(id) = ids.iter().next() {
        assert_eq!(body["id"], id.as_str());
    }
    billed_exactly(&server, &tenant, 1).await;
    logged_exactly(&dir, 1).await;
}
