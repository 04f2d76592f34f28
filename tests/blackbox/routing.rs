//! A tenant's own routing through the admin API (issue 16, item 9): set, versioned and in
//! force without a restart, on every node; splits promoted and rolled back; conditional writes
//! that lose no update; hostile documents refused with nothing changed.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster::{admin, cluster};
use crate::server::{Server, TOKEN, data_dir, followed_to, log_head, tenant_with_key};

/// Which models (and under which policy labels) `n` `auto` requests were served by.
async fn served(node: &Server, key: &str, n: usize) -> BTreeMap<(String, String), usize> {
    let client = reqwest::Client::new();
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let response = client
            .post(node.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": format!("hello {i}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let policy = response
            .headers()
            .get("x-switchyard-route")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body: Value = response.json().await.unwrap();
        *seen
            .entry((body["model"].as_str().unwrap().to_owned(), policy))
            .or_default() += 1;
    }
    seen
}

/// The models of `served`, ignoring the policy labels.
fn models(seen: &BTreeMap<(String, String), usize>) -> Vec<String> {
    let mut models: Vec<String> = seen.keys().map(|(m, _)| m.clone()).collect();
    models.dedup();
    models
}

async fn put(
    client: &reqwest::Client,
    node: &Server,
    path: &str,
    body: &str,
    if_match: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = client
        .put(node.url(path))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, etag, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_tenant_switches_policy_without_a_restart_and_every_node_serves_it() {
    let nodes = cluster(2);
    let client = reqwest::Client::new();
    let (tenant, key, _) = tenant_with_key(&nodes[0]).await;
    let (other, _, _) = tenant_with_key(&nodes[0]).await;
    let path = format!("/v1/admin/tenants/{tenant}/router");

    // Before: the server's routing, revision 0.
    let (status, body) = admin(&client, Method::GET, &nodes[1], &path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "server");
    assert_eq!(body["revision"], 0);

    // Pin the tenant on sim-small, through node 0.
    let pinned = json!({"policy": {"kind": "static", "model": "sim-small"}}).to_string();
    let (status, etag, body) = put(&client, &nodes[0], &path, &pinned, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revision"], 1);
    assert_eq!(body["source"], "tenant");
    assert_eq!(etag.as_deref(), Some("\"1\""));
    // Every node reads revision 1 at once (decided at the head of the stream).
    for node in &nodes {
        let (status, body) = admin(&client, Method::GET, node, &path, None).await;
        assert_eq!(status, 200);
        assert_eq!(body["revision"], 1, "{}: {body}", node.base);
        assert_eq!(body["routing"]["policy"]["model"], "sim-small");
    }
    // Every node serves it once it has followed the log to the write; no restart.
    let head = log_head(&nodes[0]).await;
    for node in &nodes {
        followed_to(node, head).await;
        let seen = served(node, &key, 12).await;
        assert_eq!(models(&seen), ["sim-small"], "{}: {seen:?}", node.base);
    }
    // The other tenant still has the server's routing.
    let (_, body) = admin(
        &client,
        Method::GET,
        &nodes[1],
        &format!("/v1/admin/tenants/{other}/router"),
        None,
    )
    .await;
    assert_eq!(body["source"], "server", "{body}");

    // The same document again is no new revision.
    let (status, _, body) = put(&client, &nodes[1], &path, &pinned, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["revision"], 1, "{body}");

    // Conditional writes: two writers read revision 1; the first wins, the second is told.
    let large = json!({"policy": {"kind": "static", "model": "sim-large"}}).to_string();
    let (status, _, body) = put(&client, &nodes[0], &path, &large, Some("\"1\"")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revision"], 2);
    let (status, _, body) = put(&client, &nodes[1], &path, &pinned, Some("\"1\"")).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["error"]["code"], "stale_revision", "{body}");
    let (_, body) = admin(&client, Method::GET, &nodes[1], &path, None).await;
    assert_eq!(body["routing"]["policy"]["model"], "sim-large", "{body}");

    // Back to the server's routing.
    let response = client
        .delete(nodes[1].url(&path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"3\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["source"], "server");
    assert_eq!(body["revision"], 3);
}

#[tokio::test]
async fn a_canary_split_is_promoted_or_rolled_back_and_the_choice_survives_a_restart() {
    let dir = data_dir();
    let env = [("SWITCHYARD_ADMIN_TOKEN", TOKEN)];
    let server = Server::start_with(&dir, &env);
    let client = reqwest::Client::new();
    let (tenant, key, _) = tenant_with_key(&server).await;
    let path = format!("/v1/admin/tenants/{tenant}/router");
    // All traffic in the canary: sim-large, under the split's label.
    let document = json!({
        "policy": {"kind": "static", "model": "sim-small"},
        "splits": [{"name": "canary", "share": 1.0, "policy": {"kind": "static", "model": "sim-large"}}],
        "reward": {"quality": 1.0, "cost": 0.0, "latency": 0.0}
    })
    .to_string();
    let (status, _, body) = put(&client, &server, &path, &document, None).await;
    assert_eq!(status, 200, "{body}");
    let seen = served(&server, &key, 8).await;
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        [("sim-large".to_owned(), "canary:static".to_owned())],
        "{seen:?}"
    );
    // The tenant's reward weights count: quality alone, so a thumbs-up is a reward of 1.
    let response = client
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-switchyard-inference-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let feedback: Value = client
        .post(server.url("/v1/feedback"))
        .bearer_auth(&key)
        .json(&json!({"inference_id": id, "metric": "quality", "value": 1.0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(feedback["reward"], 1.0, "{feedback}");

    // Roll the canary back: sim-small serves again.
    let split = |action: &str| format!("{path}/splits/canary/{action}");
    let (status, body) = admin(&client, Method::POST, &server, &split("rollback"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["routing"]["splits"], json!([]));
    assert_eq!(models(&served(&server, &key, 8).await), ["sim-small"]);
    // A split that is gone cannot be promoted.
    let (status, body) = admin(&client, Method::POST, &server, &split("promote"), None).await;
    assert_eq!(status, 404, "{body}");

    // Put it back and promote it: sim-large serves everything, under the serving label.
    let (status, _, _) = put(&client, &server, &path, &document, None).await;
    assert_eq!(status, 200);
    let (status, body) = admin(&client, Method::POST, &server, &split("promote"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["routing"]["policy"]["model"], "sim-large", "{body}");
    let revision = body["revision"].clone();
    let seen = served(&server, &key, 8).await;
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        [("sim-large".to_owned(), "static".to_owned())],
        "{seen:?}"
    );

    // A restart rebuilds the routing from the log.
    drop(server);
    let server = Server::start_with(&dir, &env);
    let (status, body) = admin(&client, Method::GET, &server, &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["revision"], revision, "{body}");
    assert_eq!(models(&served(&server, &key, 6).await), ["sim-large"]);
}

#[tokio::test]
async fn hostile_routing_documents_are_refused_and_change_nothing() {
    let dir = data_dir();
    let server = Server::start_with(&dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let client = reqwest::Client::new();
    let (tenant, _, _) = tenant_with_key(&server).await;
    let path = format!("/v1/admin/tenants/{tenant}/router");
    let good = json!({"policy": {"kind": "thompson"}, "candidates": ["sim-small", "sim-large"]});
    let (status, _, _) = put(&client, &server, &path, &good.to_string(), None).await;
    assert_eq!(status, 200);
    let split = |share: f64| json!({"name": "a", "share": share, "policy": {"kind": "thompson"}});
    let cases: Vec<(String, u16)> = vec![
        ("not json".into(), 400),
        ("{\"policy\": ".into(), 400),
        ("[]".into(), 422),
        (json!({}).to_string(), 422),
        (json!({"policy": {"kind": "oracle"}}).to_string(), 422),
        (json!({"policy": {"kind": "thompson"}, "extra": 1}).to_string(), 422),
        (json!({"policy": {"kind": "thompson"}, "min_exploration": "lots"}).to_string(), 422),
        (json!({"policy": {"kind": "static", "model": "gpt-17"}}).to_string(), 422),
        (json!({"policy": {"kind": "thompson"}, "candidates": ["ghost"]}).to_string(), 422),
        (json!({"policy": {"kind": "static", "model": "sim-large"}, "candidates": ["sim-small"]}).to_string(), 422),
        (json!({"policy": {"kind": "epsilon_greedy", "epsilon": 1.5}}).to_string(), 422),
        (json!({"policy": {"kind": "linucb", "alpha": -1}}).to_string(), 422),
        (json!({"policy": {"kind": "thompson"}, "min_exploration": 0.9}).to_string(), 422),
        (json!({"policy": {"kind": "thompson"}, "splits": [split(0.7), {"name": "b", "share": 0.7, "policy": {"kind": "thompson"}}]}).to_string(), 422),
        (json!({"policy": {"kind": "thompson"}, "splits": [split(0.1), split(0.1)]}).to_string(), 422),
        (json!({"policy": {"kind": "thompson"}, "splits": [{"name": "no spaces", "share": 0.1, "policy": {"kind": "thompson"}}]}).to_string(), 422),
        (json!({"policy": {"kind": "thompson"}, "reward": {"quality": -1}}).to_string(), 422),
        (json!({"policy": {"kind": "thompson"}, "reward": {"quality": 0, "cost": 0, "latency": 0}}).to_string(), 422),
        (json!({"policy": {"kind": "thompson"}, "shadow": vec![json!({"kind": "thompson"}); 33]}).to_string(), 422),
        (format!("{{\"policy\": {{\"kind\": \"thompson\"}}, \"candidates\": [\"{}\"]}}", "x".repeat(100_000)), 422),
    ];
    for (body, expected) in &cases {
        let (status, _, answer) = put(&client, &server, &path, body, None).await;
        assert_eq!(
            status,
            *expected,
            "{}: {answer}",
            &body[..body.len().min(200)]
        );
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    let (status, _, answer) = put(&client, &server, &path, &good.to_string(), Some("soon")).await;
    assert_eq!(status, 400, "{answer}");
    // Nothing changed: still revision 1, the good document.
    let (_, body) = admin(&client, Method::GET, &server, &path, None).await;
    assert_eq!(body["revision"], 1, "{body}");
    assert_eq!(
        body["routing"]["candidates"],
        json!(["sim-small", "sim-large"])
    );
    // Unknown tenants, bad ids and no token.
    for bad in [
        "/v1/admin/tenants/nope/router",
        "/v1/admin/tenants/018f0000-0000-7000-8000-000000000000/router",
    ] {
        let (status, _, _) = put(&client, &server, bad, &good.to_string(), None).await;
        assert_eq!(status, 404, "{bad}");
    }
    let status = client
        .put(server.url(&path))
        .json(&good)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
}
