//! Several `switchyard serve` processes on one PostgreSQL log (a schema of their own per test),
//! one Redis and the same admin token and key secret: any request may go to any node, and the
//! answer must be the one a single node would give.

use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

pub fn database_url() -> String {
    std::env::var("SWITCHYARD_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://switchyard:switchyard@127.0.0.1:5432/switchyard_test".into()
    })
}

fn redis_url() -> String {
    std::env::var("SWITCHYARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// How to start a node of one cluster: its data dir and environment.
pub struct Recipe {
    dir: std::path::PathBuf,
    env: Vec<(String, String)>,
}

impl Recipe {
    /// One fresh schema, shared Redis, the admin token and the data dir (so the key secret).
    pub fn new() -> Recipe {
        let schema = format!("cl_{}", uuid::Uuid::now_v7().simple());
        Recipe {
            dir: data_dir(),
            env: vec![
                ("SWITCHYARD_ADMIN_TOKEN".into(), TOKEN.into()),
                ("SWITCHYARD_DATABASE_URL".into(), database_url()),
                ("SWITCHYARD_DATABASE_SCHEMA".into(), schema),
                ("SWITCHYARD_REDIS_URL".into(), redis_url()),
            ],
        }
    }

    /// With one more environment variable on every node.
    pub fn with(mut self, key: &str, value: &str) -> Recipe {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A node that reaches PostgreSQL at `database_url` instead (through a proxy, say).
    pub fn start_via(&self, database_url: &str) -> Server {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| {
                if k == "SWITCHYARD_DATABASE_URL" {
                    (k.as_str(), database_url)
                } else {
                    (k.as_str(), v.as_str())
                }
            })
            .collect();
        Server::start_with(&self.dir, &env)
    }

    /// A node (started after the others, so the first creates the schema and the secret).
    pub fn start(&self) -> Server {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Server::start_with(&self.dir, &env)
    }
}

/// `n` nodes of one new cluster.
pub fn cluster(n: usize) -> Vec<Server> {
    let recipe = Recipe::new();
    (0..n).map(|_| recipe.start()).collect()
}

pub async fn admin(
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
pub async fn until_key(node: &Server, key: &str, status: u16) {
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
    let nodes = cluster(3);
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

/// A tenant's guardrails written through one node block and redact on every node (each node
/// compiles the policy from the log, none keeps it to itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guardrails_set_on_one_node_hold_on_every_node() {
    let nodes = cluster(2);
    let client = reqwest::Client::new();
    let (tenant, key, _) = tenant_with_key(&nodes[0]).await;
    until_key(&nodes[1], &key, 200).await;
    let policy = json!({"topics": [{"name": "secret", "keywords": ["bluebird"]}]});
    let (status, body) = admin(
        &client,
        reqwest::Method::PUT,
        &nodes[0],
        &format!("/v1/admin/tenants/{tenant}/settings/guardrails"),
        Some(json!({"value": policy.to_string()})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for node in &nodes {
        let mut answer = (0, Value::Null);
        for _ in 0..200 {
            let response = client
                .post(node.url("/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({"model": "sim-small", "messages": [{"role": "user", "content": "about bluebird"}]}))
                .send()
                .await
                .unwrap();
            answer = (response.status().as_u16(), response.json().await.unwrap());
            if answer.0 == 400 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(answer.0, 400, "{}: {}", node.base, answer.1);
        assert_eq!(answer.1["error"]["code"], "content_blocked");
    }
}

/// A tenant's `allowed_models` written through one node is what every node lists and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_allow_list_set_on_one_node_holds_on_every_node() {
    let nodes = cluster(2);
    let client = reqwest::Client::new();
    let (tenant, key, _) = tenant_with_key(&nodes[0]).await;
    until_key(&nodes[1], &key, 200).await;
    let (status, body) = admin(
        &client,
        reqwest::Method::PUT,
        &nodes[1],
        &format!("/v1/admin/tenants/{tenant}/settings/allowed_models"),
        Some(json!({"value": "sim-small"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for node in &nodes {
        let mut listed = Vec::new();
        for _ in 0..200 {
            let body: Value = client
                .get(node.url("/v1/models"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            listed = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>();
            if listed == ["sim-small", "auto"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(listed, ["sim-small", "auto"], "{}", node.base);
        let refused = client
            .post(node.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "sim-large", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 404, "{}", node.base);
    }
}

const SPEC: &str =
    "name: hello\nnodes:\n  - id: greet\n    kind: llm\n    model: sim-small\n    prompt: hi\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_registered_on_one_node_starts_on_another() {
    let nodes = cluster(2);
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
    let nodes = cluster(3);
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
    let nodes = cluster(3);
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
    // Every node enforces the budget once its follower has folded the limits' write.
    let head = crate::server::log_head(&nodes[0]).await;
    for node in &nodes {
        crate::server::followed_to(node, head).await;
    }
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

/// A run's state once it has ended (or after 30 s), read on `node`.
pub async fn ended(client: &reqwest::Client, node: &Server, key: &str, run: &str) -> Value {
    client
        .get(node.url(&format!("/v1/runs/{run}?wait_ms=30000")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One more completion on `writer` (its position marks everything before it), then the number
/// of inferences the read model on `reader` counts for the key's tenant once it has caught up.
async fn logged_inferences(
    client: &reqwest::Client,
    writer: &Server,
    reader: &Server,
    key: &str,
) -> i64 {
    let head: u64 = client
        .post(writer.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "sim-small", "messages": [{"role": "user", "content": "last"}], "max_tokens": 4}))
        .send()
        .await
        .unwrap()
        .headers()["x-switchyard-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let usage: Value = client
        .get(reader.url(&format!(
            "/v1/analytics/usage?min_position={head}&wait_ms=20000"
        )))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    usage["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{usage}"))
        .iter()
        .map(|r| r["requests"].as_i64().unwrap())
        .sum()
}

/// Whether `node` holds the workflow engine lease (its `/metrics` says so).
async fn leads(node: &Server) -> bool {
    let text = reqwest::get(node.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .any(|line| line.trim() == "switchyard_workflow_engine_leader 1")
}

const FAILOVER_SPEC: &str = r#"
name: failover
nodes:
  - id: draft
    kind: llm
    model: sim-small
    prompt: "Draft: {{ input.question }}"
  - id: record
    kind: tool
    tool: record
    args: {draft: "{{ steps.draft.output }}"}
  - id: lookup
    kind: tool
    tool: slow
    args: {question: "{{ input.question }}"}
  - id: polish
    kind: llm
    model: sim-small
    prompt: "Polish: {{ steps.draft.output }}"
"#;

/// The node carrying out the runs is killed (`kill -9`) while four runs wait on a slow tool:
/// the other node takes the engine lease and finishes them, with no restart, carrying out the
/// interrupted step again under the same idempotency key; each model step is one inference.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_engine_fails_over_when_its_node_is_killed() {
    let (tools, seen) = crate::workflows::tool_server_with(60_000, true).await;
    let mut nodes = cluster(2);
    let client = reqwest::Client::new();
    let mut leader = None;
    for _ in 0..100 {
        for (i, node) in nodes.iter().enumerate() {
            if leads(node).await {
                leader = Some(i);
            }
        }
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = leader.expect("one node takes the engine lease");
    let other = 1 - leader;
    assert!(!leads(&nodes[other]).await, "one holder at a time");
    let (_, key, _) = tenant_with_key(&nodes[other]).await;
    until_key(&nodes[leader], &key, 200).await;
    for tool in ["record", "slow"] {
        let response = client
            .post(nodes[other].url("/v1/tools"))
            .bearer_auth(&key)
            .body(format!(
                "name: {tool}\nurl: {tools}/{tool}\ntimeout_ms: 90000\n"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let response = client
        .post(nodes[other].url("/v1/workflows"))
        .bearer_auth(&key)
        .body(FAILOVER_SPEC)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // Started on the node that does not carry runs out: the leader sees them in the log.
    let mut runs = Vec::new();
    for i in 0..4 {
        let started: Value = client
            .post(nodes[other].url("/v1/workflows/failover/runs"))
            .bearer_auth(&key)
            .json(&json!({"input": {"question": format!("question {i}")}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        runs.push(started["run_id"].as_str().unwrap().to_owned());
    }
    // Until every run is inside its slow step (the tool holds the first call of each key).
    for _ in 0..400 {
        let slow = seen
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(path, _)| path == "/slow")
            .count();
        if slow == runs.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let killed_at = std::time::Instant::now();
    drop(nodes.remove(leader)); // SIGKILL
    let survivor = &nodes[0];
    for run in &runs {
        let state = ended(&client, survivor, &key, run).await;
        assert_eq!(state["status"], "completed", "{state}");
    }
    let failover = killed_at.elapsed();
    // The figure docs/SCALING.md quotes (run with --nocapture to see it).
    eprintln!("failover: the last of the runs completed {failover:?} after the kill");
    assert!(failover < Duration::from_secs(20), "{failover:?}");
    assert!(leads(survivor).await);

    // Each tool step was carried out under one key per (run, step, attempt); the interrupted
    // one was called again with the same key, no other step was repeated.
    let calls = seen.lock().unwrap().calls.clone();
    for (path, expected_calls) in [("/record", 1), ("/slow", 2)] {
        let keys: std::collections::BTreeSet<&String> = calls
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, k)| k)
            .collect();
        assert_eq!(keys.len(), runs.len(), "{path}: {calls:?}");
        for key in keys {
            let count = calls.iter().filter(|(p, k)| p == path && k == key).count();
            assert_eq!(count, expected_calls, "{path} {key}: {calls:?}");
        }
    }
    // Two model steps per run, each one inference, billed once (and the probe's own).
    let logged = logged_inferences(&client, survivor, survivor, &key).await;
    assert_eq!(logged, 2 * runs.len() as i64 + 1);
}

const ONE_STEP: &str = "name: one\nnodes:\n  - id: answer\n    kind: llm\n    model: sim-small\n    prompt: \"{{ input.q }}\"\n";

/// Random admin commands, completions and workflow runs spread over three nodes while one node
/// is killed and restarted, checked at the end against a model of what a single node would
/// hold: every node reads the last limits written, the log counts exactly the completions
/// answered plus one inference per run, and every run completes. At least 90% of the
/// operations must succeed (one aimed at the dead node is sent to another), so a run that only
/// erred cannot pass. `SWITCHYARD_TEST_SEED` replays a failing sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_operations_over_nodes_with_a_kill_agree_with_one_node() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("SWITCHYARD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("SWITCHYARD_TEST_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let recipe = Recipe::new();
    let mut nodes: Vec<Option<Server>> = (0..3).map(|_| Some(recipe.start())).collect();
    let client = reqwest::Client::new();
    let first = nodes[0].as_ref().unwrap();
    let mut tenants = Vec::new();
    for _ in 0..2 {
        let (tenant, key, _) = tenant_with_key(first).await;
        let response = client
            .post(first.url("/v1/workflows"))
            .bearer_auth(&key)
            .body(ONE_STEP)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        tenants.push((tenant, key));
    }
    // The model: each tenant's last limits, completions answered, runs started.
    let mut limits: Vec<Option<u32>> = vec![None; tenants.len()];
    let mut answered = vec![0_i64; tenants.len()];
    let mut runs: Vec<Vec<String>> = vec![Vec::new(); tenants.len()];
    let (mut ok, mut total) = (0_u32, 0_u32);
    let (kill_at, restart_at) = (40, 80);
    let mut killed = None;
    for step in 0..120 {
        if step == kill_at {
            let victim = rng.random_range(0..nodes.len());
            nodes[victim] = None; // SIGKILL
            killed = Some(victim);
        }
        if step == restart_at
            && let Some(victim) = killed.take()
        {
            nodes[victim] = Some(recipe.start());
        }
        let live: Vec<&Server> = nodes.iter().flatten().collect();
        let node = live[rng.random_range(0..live.len())];
        let t = rng.random_range(0..tenants.len());
        let (tenant, key) = &tenants[t];
        total += 1;
        match rng.random_range(0..10) {
            0..=2 => {
                let rpm = rng.random_range(300..1_000);
                let (status, _) = admin(
                    &client,
                    reqwest::Method::PUT,
                    node,
                    &format!("/v1/admin/tenants/{tenant}/limits"),
                    Some(json!({"requests_per_minute": rpm})),
                )
                .await;
                if status == 200 {
                    limits[t] = Some(rpm);
                    ok += 1;
                }
            }
            3 => {
                let (status, body) = admin(
                    &client,
                    reqwest::Method::GET,
                    node,
                    &format!("/v1/admin/tenants/{tenant}"),
                    None,
                )
                .await;
                if status == 200 {
                    assert_eq!(
                        body["limits"]["requests_per_minute"].as_u64(),
                        limits[t].map(u64::from),
                        "seed {seed}: {} read stale limits",
                        node.base
                    );
                    ok += 1;
                }
            }
            4..=7 => {
                let response = client
                    .post(node.url("/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&json!({"model": "sim-small", "messages": [{"role": "user", "content": format!("op {step}")}], "max_tokens": 8}))
                    .send()
                    .await;
                if let Ok(response) = response
                    && response.status() == 200
                {
                    answered[t] += 1;
                    ok += 1;
                }
            }
            _ => {
                let response = client
                    .post(node.url("/v1/workflows/one/runs"))
                    .bearer_auth(key)
                    .json(&json!({"input": {"q": format!("run {step}")}}))
                    .send()
                    .await;
                if let Ok(response) = response
                    && response.status() == 201
                {
                    let body: Value = response.json().await.unwrap();
                    runs[t].push(body["run_id"].as_str().unwrap().to_owned());
                    ok += 1;
                }
            }
        }
    }
    assert!(
        f64::from(ok) >= 0.9 * f64::from(total),
        "seed {seed}: only {ok} of {total} operations succeeded"
    );
    let live: Vec<&Server> = nodes.iter().flatten().collect();
    for (t, (tenant, key)) in tenants.iter().enumerate() {
        for node in &live {
            let (_, body) = admin(
                &client,
                reqwest::Method::GET,
                node,
                &format!("/v1/admin/tenants/{tenant}"),
                None,
            )
            .await;
            assert_eq!(
                body["limits"]["requests_per_minute"].as_u64(),
                limits[t].map(u64::from),
                "seed {seed}"
            );
        }
        for run in &runs[t] {
            let state = ended(&client, live[0], key, run).await;
            assert_eq!(state["status"], "completed", "seed {seed}: {state}");
        }
        let requests = logged_inferences(&client, live[0], live[1], key).await;
        assert_eq!(
            requests,
            answered[t] + runs[t].len() as i64 + 1,
            "seed {seed}: the log's inferences for tenant {t}"
        );
    }
}
