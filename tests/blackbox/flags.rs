//! Feature flags through the binary: set on one node, acting on every node (the router's
//! splits gated per request, the decision in the route label), the kill switch, targets, a
//! tenant's own switch, removal, the CLI, and hostile input.

use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster::{admin, cluster};
use crate::server::{Server, TOKEN, data_dir, followed_to, log_head, tenant_with_key};

/// The routes `n` requests of `key` on `node` were served under.
async fn routes(node: &Server, key: &str, n: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    for i in 0..n {
        let response = client
            .post(node.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": format!("hi {i}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        seen.push(
            response
                .headers()
                .get("x-switchyard-route")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
        );
    }
    seen
}

async fn set(node: &Server, name: &str, definition: Value) -> (u16, Value) {
    admin(
        &reqwest::Client::new(),
        Method::PUT,
        node,
        &format!("/v1/admin/flags/{name}"),
        Some(definition),
    )
    .await
}

/// Waits until `other` has read everything `node` wrote.
async fn synced(node: &Server, other: &Server) {
    followed_to(other, log_head(node).await).await;
}

#[tokio::test]
async fn a_flag_set_on_one_node_gates_the_router_splits_on_every_node() {
    let nodes = cluster(2);
    let (a, b) = (&nodes[0], &nodes[1]);
    let client = reqwest::Client::new();
    let (tenant, key, key_id) = tenant_with_key(a).await;
    let routing = json!({
        "policy": {"kind": "static", "model": "sim-small"},
        "splits": [{"name": "canary", "share": 1.0, "policy": {"kind": "static", "model": "sim-large"}}]
    });
    let (status, body) = admin(
        &client,
        Method::PUT,
        a,
        &format!("/v1/admin/tenants/{tenant}/router"),
        Some(routing),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    synced(a, b).await;
    assert!(
        routes(b, &key, 3)
            .await
            .iter()
            .all(|r| r.starts_with("canary:"))
    );

    // Off for everyone (0% and no targets), set on A: B serves the main policy, and says why.
    let (status, body) = set(a, "router-splits", json!({"rollout_percent": 0})).await;
    assert_eq!(status, 200, "{body}");
    synced(a, b).await;
    let gated = routes(b, &key, 3).await;
    assert!(
        gated
            .iter()
            .all(|r| r.starts_with("flag.router-splits.rollout:")),
        "{gated:?}"
    );
    // Targeting the key (set on B this time) turns the splits back on for it, on A too.
    let (status, _) = set(b, "router-splits", json!({"keys": [key_id]})).await;
    assert_eq!(status, 200);
    synced(b, a).await;
    assert!(
        routes(a, &key, 3)
            .await
            .iter()
            .all(|r| r.starts_with("canary:"))
    );
    let (status, answer) = admin(
        &client,
        Method::POST,
        a,
        "/v1/admin/flags/router-splits/evaluate",
        Some(json!({"tenant": tenant, "key_id": key_id})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"flag": "router-splits", "on": true, "reason": "key"})
    );

    // The kill switch beats the target.
    let (status, _) = set(
        a,
        "router-splits",
        json!({"enabled": false, "keys": [key_id], "rollout_percent": 100}),
    )
    .await;
    assert_eq!(status, 200);
    synced(a, b).await;
    assert!(
        routes(b, &key, 2)
            .await
            .iter()
            .all(|r| r.starts_with("flag.router-splits.kill:"))
    );

    // A tenant's own switch, at 0% rollout: on for that tenant only.
    let (status, _) = set(a, "router-splits", json!({"rollout_percent": 0})).await;
    assert_eq!(status, 200);
    let (status, body) = admin(
        &client,
        Method::PUT,
        a,
        &format!("/v1/admin/tenants/{tenant}/flags/router-splits"),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    synced(a, b).await;
    assert!(
        routes(b, &key, 2)
            .await
            .iter()
            .all(|r| r.starts_with("canary:"))
    );

    // Removed: the splits serve as without flags, everywhere; the list is empty.
    let (status, _) = admin(
        &client,
        Method::DELETE,
        b,
        "/v1/admin/flags/router-splits",
        None,
    )
    .await;
    assert_eq!(status, 200);
    synced(b, a).await;
    assert!(
        routes(a, &key, 2)
            .await
            .iter()
            .all(|r| r.starts_with("canary:"))
    );
    let (_, list) = admin(&client, Method::GET, a, "/v1/admin/flags", None).await;
    assert_eq!(list, json!({"data": []}));
}

#[tokio::test]
async fn hostile_flag_input_is_refused_and_changes_nothing() {
    let dir = data_dir();
    let server = Server::start_with(&dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let client = reqwest::Client::new();
    for (name, body, status) in [
        ("ok-name", "{", 400),
        ("ok-name", "[]", 422),
        ("ok-name", r#"{"rollout_percent": 250}"#, 422),
        ("ok-name", r#"{"rollout_percent": "all"}"#, 422),
        ("ok-name", r#"{"keys": ["not-a-uuid"]}"#, 422),
        ("ok-name", r#"{"surprise": true}"#, 422),
        ("Bad%20Name", "{}", 422),
        (&"x".repeat(65), "{}", 422),
    ] {
        let response = client
            .put(server.url(&format!("/v1/admin/flags/{name}")))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{name} {body}");
    }
    let response = client
        .put(server.url("/v1/admin/flags/ok-name"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "no admin token");
    let (status, _) = admin(
        &client,
        Method::DELETE,
        &server,
        "/v1/admin/flags/absent",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = admin(
        &client,
        Method::POST,
        &server,
        "/v1/admin/flags/absent/evaluate",
        Some(json!({"tenant": uuid::Uuid::now_v7()})),
    )
    .await;
    assert_eq!(status, 404);
    let (_, list) = admin(&client, Method::GET, &server, "/v1/admin/flags", None).await;
    assert_eq!(list, json!({"data": []}), "nothing was written");
}

#[tokio::test]
async fn the_cli_sets_lists_evaluates_and_deletes_flags() {
    let dir = data_dir();
    let server = Server::start_with(&dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let (tenant, _, key_id) = tenant_with_key(&server).await;
    let cli = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .env("SWITCHYARD_ADMIN_TOKEN", TOKEN)
            .env("SWITCHYARD_SERVER", server.url(""))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let set = cli(&[
        "flag",
        "set",
        "semantic-cache",
        "--definition",
        r#"{"rollout_percent": 100, "description": "everyone"}"#,
    ]);
    assert_eq!(set["definition"]["rollout_percent"], 100.0);
    let list = cli(&["flag", "list"]);
    assert_eq!(list["data"][0]["name"], "semantic-cache");
    let answer = cli(&[
        "flag",
        "evaluate",
        "semantic-cache",
        "--tenant",
        &tenant,
        "--key",
        &key_id,
    ]);
    assert_eq!(answer["on"], true);
    assert_eq!(answer["reason"], "rollout");
    let deleted = cli(&["flag", "delete", "semantic-cache"]);
    assert_eq!(deleted["deleted"], "semantic-cache");
}
