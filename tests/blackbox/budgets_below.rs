//! Budgets below the tenant (issue 19, item 5): the tenant setting `spend_limits` gives its
//! keys, end users and tags budgets of their own, reserved and settled like the tenant's, on
//! one node and exactly across nodes (Redis).

use serde_json::{Value, json};

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

async fn set_limits(server: &Server, tenant: &str, limits: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .put(server.url(&format!("/v1/admin/tenants/{tenant}/settings/spend_limits")))
        .bearer_auth(TOKEN)
        .json(&json!({"value": limits.to_string()}))
        .send()
        .await
        .unwrap()
}

fn story(user: Option<&str>, tags: &str) -> Value {
    let mut body = json!({"model": "sim-large", "max_tokens": 60,
        "messages": [{"role": "user", "content": "tell me a story"}]});
    if let Some(user) = user {
        body["user"] = json!(user);
    }
    if !tags.is_empty() {
        body["metadata"] = json!({"tags": tags});
    }
    body
}

async fn send(server: &Server, key: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends until refused (at most `n`); how many went through, and the refusal.
async fn until_refused(server: &Server, key: &str, body: &Value, n: usize) -> (usize, Value) {
    for sent in 0..n {
        let (status, answer) = send(server, key, body).await;
        match status {
            200 => {}
            402 => return (sent, answer),
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    panic!("never refused after {n} requests");
}

#[tokio::test]
async fn keys_users_and_tags_have_budgets_of_their_own() {
    let dir = data_dir();
    let server = Server::start_with(&dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let (tenant, key, key_id) = tenant_with_key(&server).await;

    // Hostile settings are refused, naming the problem.
    for bad in [
        json!({"users": {"alice": {}}}),
        json!({"keys": {"not-a-key": {"monthly_usd": "1"}}}),
        json!({"tags": {"two words": {"monthly_usd": "1"}}}),
        json!({"users": {"alice": {"monthly_usd": "lots"}}}),
    ] {
        let response = set_limits(&server, &tenant, &bad).await;
        assert_eq!(response.status(), 422, "{bad}");
    }

    let limits = json!({
        "users": {"*": {"monthly_usd": "0.002"}, "vip": {"monthly_usd": "1"}},
        "tags": {"batch": {"monthly_tokens": 400}},
    });
    assert_eq!(set_limits(&server, &tenant, &limits).await.status(), 200);

    // Every user has a small budget of their own; a refusal names the user.
    let (alice_sent, refusal) = until_refused(&server, &key, &story(Some("alice"), ""), 50).await;
    assert!(alice_sent >= 1, "{refusal}");
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("user \"alice\"") && message.contains("monthly_budget_usd"),
        "{message}"
    );
    // Bob's budget is his own, and a named user's is larger.
    let (status, _) = send(&server, &key, &story(Some("bob"), "")).await;
    assert_eq!(status, 200);
    let (status, _) = send(&server, &key, &story(Some("vip"), "")).await;
    assert_eq!(status, 200);
    // No user: only the tenant's budget (none here).
    for _ in 0..alice_sent + 2 {
        let (status, _) = send(&server, &key, &story(None, "")).await;
        assert_eq!(status, 200);
    }
    // A tag's token budget.
    let (_, refusal) = until_refused(&server, &key, &story(None, "batch,other"), 50).await;
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tag \"batch\"") && message.contains("monthly_token_budget"),
        "{message}"
    );
    // A key's budget: after it is set, this key is refused, and a restart remembers the spend.
    let by_key = json!({"keys": {key_id.clone(): {"monthly_usd": "0.003"}}});
    assert_eq!(set_limits(&server, &tenant, &by_key).await.status(), 200);
    let (_, refusal) = until_refused(&server, &key, &story(None, ""), 50).await;
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("key {key_id}")),
        "{refusal}"
    );
    drop(server);
    let server = Server::start_with(&dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let (status, answer) = send(&server, &key, &story(None, "")).await;
    assert_eq!(
        status, 402,
        "the key's spend is folded from the log again: {answer}"
    );
    // Removing the budgets lifts them.
    let response = reqwest::Client::new()
        .put(server.url(&format!("/v1/admin/tenants/{tenant}/settings/spend_limits")))
        .bearer_auth(TOKEN)
        .json(&json!({"value": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = send(&server, &key, &story(Some("alice"), "batch")).await;
    assert_eq!(status, 200);
}

/// A user's budget holds exactly across two nodes sharing Redis: no overshoot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_users_budget_holds_exactly_across_nodes() {
    let nodes = crate::cluster::cluster(2);
    let (tenant, key, _) = tenant_with_key(&nodes[0]).await;
    let limits = json!({"users": {"*": {"monthly_usd": "0.005"}}});
    assert_eq!(set_limits(&nodes[0], &tenant, &limits).await.status(), 200);
    let head = crate::server::log_head(&nodes[0]).await;
    for node in &nodes {
        crate::cluster::until_key(node, &key, 200).await;
        crate::server::followed_to(node, head).await;
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let tasks: Vec<_> = (0..8)
        .map(|worker| {
            let (bases, key) = (bases.clone(), key.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut ok, mut last) = (0i64, 0u64);
                for i in 0..6 {
                    let response = client
                        .post(format!("{}/v1/chat/completions", bases[(worker + i) % 2]))
                        .bearer_auth(&key)
                        .json(&story(Some("carol"), ""))
                        .send()
                        .await
                        .unwrap();
                    match response.status().as_u16() {
                        200 => {
                            ok += 1;
                            let at: u64 = response.headers()["x-switchyard-position"]
                                .to_str()
                                .unwrap()
                                .parse()
                                .unwrap();
                            last = last.max(at);
                        }
                        402 => {}
                        other => panic!("unexpected {other}"),
                    }
                }
                (ok, last)
            })
        })
        .collect();
    let (mut ok, mut last) = (0, 0);
    for task in tasks {
        let (o, l) = task.await.unwrap();
        ok += o;
        last = last.max(l);
    }
    assert!(ok > 0 && ok < 48, "{ok} of 48 went through");
    let spend: Value = reqwest::Client::new()
        .get(nodes[1].url(&format!(
            "/v1/analytics/spend?group_by=user&min_position={last}&wait_ms=20000"
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let carol = spend["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user"] == "carol")
        .cloned()
        .unwrap_or_else(|| panic!("{spend}"));
    assert_eq!(carol["requests"].as_i64().unwrap(), ok, "{spend}");
    let spent = carol["cost_micros"].as_i64().unwrap();
    assert!(
        spent <= 5_000,
        "carol spent {spent} µ$ of a 5,000 µ$ budget"
    );
}
