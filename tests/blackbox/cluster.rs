//! Several `switchyard serve` processes on one PostgreSQL log (a schema of their own per test),
//! one Redis and the same admin token and key secret: any request may go to any node, and the
//! answer must be the one a single node would give.

use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

fn database_url() -> String {
    std::env::var("SWITCHYARD_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://switchyard:switchyard@127.0.0.1:5432/switchyard_test".into()
    })
}

fn redis_url() -> String {
    std::env::var("SWITCHYARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `n` nodes on one fresh schema, sharing Redis, the admin token and the data dir (so the key
/// secret too). Started one after the other: the first creates the schema and the secret.
pub fn cluster(n: usize, extra: &[(&str, &str)]) -> Vec<Server> {
    let dir = data_dir();
    let schema = format!("cl_{}", uuid::Uuid::now_v7().simple());
    let (url, redis) = (database_url(), redis_url());
    let mut env = vec![
        ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
        ("SWITCHYARD_DATABASE_URL", url.as_str()),
        ("SWITCHYARD_DATABASE_SCHEMA", schema.as_str()),
        ("SWITCHYARD_REDIS_URL", redis.as_str()),
    ];
    env.extend_from_slice(extra);
    (0..n).map(|_| Server::start_with(&dir, &env)).collect()
}

async fn admin(
    client: &reqwest::Client,
    method: reqwest::Method,
    node: &Server,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, node.url(path)).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits (bounded) until `node` authenticates `key` as it should: 200 or 401.
async fn until_key(node: &Server, key: &str, status: u16) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        let got = client
            .get(node.url("/v1/tenant"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if got == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never answered {status} for the key", node.base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_writes_on_any_node_are_what_every_node_reads_and_decides_on() {
    let nodes = cluster(3, &[]);
    let client = reqwest::Client::new();
    let (tenant, key, key_id) = tenant_with_key(&nodes[0]).await;
    let limits = format!("/v1/admin/tenants/{tenant}/limits");
    let get = format!("/v1/admin/tenants/{tenant}");
    // Every node holds a live copy of the tenant before the writes.
    for node in &nodes {
        let (status, _) = admin(&client, reqwest::Method::GET, node, &get, None).await;
        assert_eq!(status, 200);
    }
    // The lost update: 500 on node 2, 600 on node 1, 500 on node 2 again.
    for (node, rpm) in [(1, 500), (0, 600), (1, 500)] {
        let (status, body) = admin(
            &client,
            reqwest::Method::PUT,
            &nodes[node],
            &limits,
            Some(json!({"requests_per_minute": rpm})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        // Read right after the write, on every node: all agree.
        for reader in &nodes {
            let (status, body) = admin(&client, reqwest::Method::GET, reader, &get, None).await;
            assert_eq!(status, 200);
            assert_eq!(
                body["limits"]["requests_per_minute"], rpm,
                "{} after a write on node {node}: {body}",
                reader.base
            );
        }
    }
    // A rejection decided on the head: the key issued through node 1 is revoked through node 2
    // (whose copy of the tenant was loaded before the key existed), and every node refuses it.
    for node in &nodes {
        until_key(node, &key, 200).await;
    }
    let (status, body) = admin(
        &client,
        reqwest::Method::DELETE,
        &nodes[1],
        &format!("/v1/admin/tenants/{tenant}/keys/{key_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for node in &nodes {
        until_key(node, &key, 401).await;
    }
    // Revoking again is refused the same way on every node (the key is known everywhere).
    for node in &nodes {
        let (status, body) = admin(
            &client,
            reqwest::Method::DELETE,
            node,
            &format!("/v1/admin/tenants/{tenant}/keys/{key_id}"),
            None,
        )
        .await;
        assert_ne!(status, 404, "{}: {body}", node.base);
    }
}

const SPEC: &str =
    "name: hello\nnodes:\n  - id: greet\n    kind: llm\n    model: sim-small\n    prompt: hi\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_registered_on_one_node_starts_on_another() {
    let nodes = cluster(2, &[]);
    let client = reqwest::Client::new();
    let (_, key, _) = tenant_with_key(&nodes[0]).await;
    until_key(&nodes[1], &key, 200).await;
    let registered = client
        .post(nodes[0].url("/v1/workflows"))
        .bearer_auth(&key)
        .body(SPEC)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let started = client
        .post(nodes[1].url("/v1/workflows/hello/runs"))
        .bearer_auth(&key)
        .json(&json!({"input": {}}))
        .send()
        .await
        .unwrap();
    let status = started.status().as_u16();
    let body: Value = started.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    let run = body["run_id"].as_str().unwrap();
    let ended: Value = client
        .get(nodes[1].url(&format!("/v1/runs/{run}?wait_ms=20000")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ended["status"], "completed", "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_your_writes_on_every_node() {
    let nodes = cluster(3, &[]);
    let client = reqwest::Client::new();
    let (_, key, _) = tenant_with_key(&nodes[0]).await;
    for node in &nodes {
        until_key(node, &key, 200).await;
    }
    for (i, writer) in nodes.iter().enumerate() {
        let response = client
            .post(writer.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let position: u64 = response.headers()["x-switchyard-position"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // Whichever node holds the projector's lease, every node answers at that position.
        for reader in &nodes {
            let answer = client
                .get(reader.url(&format!(
                    "/v1/analytics/usage?min_position={position}&wait_ms=10000"
                )))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "{}", reader.base);
            let at: u64 = answer.headers()["x-switchyard-position"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(at >= position, "{at} < {position}");
            let body: Value = answer.json().await.unwrap();
            let requests: i64 = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row["requests"].as_i64().unwrap())
                .sum();
            assert_eq!(requests, i as i64 + 1, "{body}");
        }
    }
}

/// Concurrent completions against a $0.01 monthly budget, spread over three nodes: the spend
/// the log records never passes the budget (the overshoot is measured and must be 0), and the
/// budget binds (some requests are refused with 402).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_holds_exactly_across_three_nodes() {
    let nodes = cluster(3, &[]);
    let client = reqwest::Client::new();
    let (tenant, key, _) = tenant_with_key(&nodes[0]).await;
    let (status, body) = admin(
        &client,
        reqwest::Method::PUT,
        &nodes[0],
        &format!("/v1/admin/tenants/{tenant}/limits"),
        Some(json!({"monthly_budget_usd": "0.01", "monthly_token_budget": 5000})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for node in &nodes {
        until_key(node, &key, 200).await;
        // Every node knows the budget before the burst (its key index is folded from the log).
        let (_, view) = admin(
            &client,
            reqwest::Method::GET,
            node,
            &format!("/v1/admin/tenants/{tenant}"),
            None,
        )
        .await;
        assert!(!view["limits"]["monthly_budget_usd"].is_null(), "{view}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let tasks: Vec<_> = (0..12)
        .map(|worker| {
            let (bases, key) = (bases.clone(), key.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut ok, mut refused, mut last) = (0, 0, 0u64);
                for i in 0..8 {
                    let base = &bases[(worker + i) % bases.len()];
                    let response = client
                        .post(format!("{base}/v1/chat/completions"))
                        .bearer_auth(&key)
                        .json(&json!({"model": "sim-large", "messages": [{"role": "user", "content": "tell me a story"}], "max_tokens": 60}))
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
                        402 => refused += 1,
                        other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
                    }
                }
                (ok, refused, last)
            })
        })
        .collect();
    let (mut ok, mut refused, mut last) = (0, 0, 0);
    for task in tasks {
        let (o, r, l) = task.await.unwrap();
        ok += o;
        refused += r;
        last = last.max(l);
    }
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    let usage: Value = client
        .get(nodes[2].url(&format!(
            "/v1/analytics/usage?min_position={last}&wait_ms=20000"
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = usage["data"].as_array().unwrap();
    let spent: i64 = rows
        .iter()
        .map(|r| r["cost_micros"].as_i64().unwrap())
        .sum();
    let tokens: i64 = rows
        .iter()
        .map(|r| r["tokens_in"].as_i64().unwrap() + r["tokens_out"].as_i64().unwrap())
        .sum();
    let requests: i64 = rows.iter().map(|r| r["requests"].as_i64().unwrap()).sum();
    assert_eq!(requests, ok, "{usage}");
    let overshoot = (spent - 10_000).max(0);
    assert_eq!(overshoot, 0, "spent {spent} µ$ of a 10,000 µ$ budget");
    assert!(tokens <= 5_000, "{tokens} tokens of a 5,000-token budget");
}
