//! Operators' controls over tenants and keys (issue 15, item 11), on one node and across two:
//! rotating a key (a new secret; the old one valid for a grace period, then refused everywhere)
//! and deleting a tenant (its keys revoked, gone from the admin API, every command refused).

use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster::{admin, cluster, until_key};
use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

fn start() -> Server {
    Server::start_with(&data_dir(), &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)])
}

#[tokio::test]
async fn a_rotated_key_hands_over_to_its_replacement_after_the_grace_period() {
    let server = start();
    let client = reqwest::Client::new();
    let (tenant, old_key, old_id) = tenant_with_key(&server).await;
    let rotate = format!("/v1/admin/tenants/{tenant}/keys/{old_id}/rotate");

    // A day's grace: both keys work, the new one with the old one's name and scopes.
    let (status, rotated) = admin(
        &client,
        Method::POST,
        &server,
        &rotate,
        Some(json!({"grace_seconds": 86_400})),
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    assert_ne!(new_id, old_id);
    assert_eq!(rotated["replaces"], old_id.as_str());
    assert_eq!(rotated["name"], "app");
    assert!(rotated["old_key_expires_at"].is_string(), "{rotated}");
    until_key(&server, &old_key, 200).await;
    until_key(&server, &new_key, 200).await;

    // Rotating the new key with no grace: it is refused at once, its replacement works.
    let (status, second) = admin(
        &client,
        Method::POST,
        &server,
        &format!("/v1/admin/tenants/{tenant}/keys/{new_id}/rotate"),
        Some(json!({"grace_seconds": 0})),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    until_key(&server, &new_key, 401).await;
    until_key(&server, second["key"].as_str().unwrap(), 200).await;
    // The old key's grace still runs.
    until_key(&server, &old_key, 200).await;

    // Hostile or impossible rotations.
    for (body, want) in [
        (json!({"grace_seconds": -1}), 422),
        (json!({"grace_seconds": 2_592_001}), 422),
        (json!({"grace": 5}), 422),
        (json!("x"), 422),
    ] {
        let (status, error) =
            admin(&client, Method::POST, &server, &rotate, Some(body.clone())).await;
        assert_eq!(status, want, "{body}: {error}");
    }
    let unknown = format!(
        "/v1/admin/tenants/{tenant}/keys/{}/rotate",
        uuid::Uuid::now_v7()
    );
    assert_eq!(
        admin(&client, Method::POST, &server, &unknown, None)
            .await
            .0,
        404
    );
    let foreign = format!(
        "/v1/admin/tenants/{}/keys/{old_id}/rotate",
        uuid::Uuid::now_v7()
    );
    assert_eq!(
        admin(&client, Method::POST, &server, &foreign, None)
            .await
            .0,
        404
    );
    // A revoked key is not rotated back to life.
    let revoke = format!("/v1/admin/tenants/{tenant}/keys/{old_id}");
    assert_eq!(
        admin(&client, Method::DELETE, &server, &revoke, None)
            .await
            .0,
        200
    );
    until_key(&server, &old_key, 401).await;
    assert_eq!(
        admin(&client, Method::POST, &server, &rotate, None).await.0,
        422
    );
}

#[tokio::test]
async fn a_deleted_tenant_is_gone_and_its_keys_are_refused() {
    let server = start();
    let client = reqwest::Client::new();
    let (tenant, key, _) = tenant_with_key(&server).await;
    let (other, other_key, _) = tenant_with_key(&server).await;
    let path = format!("/v1/admin/tenants/{tenant}");
    until_key(&server, &key, 200).await;

    let (status, deleted) = admin(
        &client,
        Method::DELETE,
        &server,
        &path,
        Some(json!({"reason": "closed"})),
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["keys_revoked"], 1);
    until_key(&server, &key, 401).await;
    assert_eq!(
        admin(&client, Method::GET, &server, &path, None).await.0,
        404
    );
    let (_, list) = admin(&client, Method::GET, &server, "/v1/admin/tenants", None).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&tenant.as_str()), "{list}");
    assert!(ids.contains(&other.as_str()), "{list}");
    // Every command on it is refused as for an unknown tenant; deleting again too.
    for (method, sub, body) in [
        (Method::DELETE, "", None),
        (Method::POST, "/keys", Some(json!({"name": "again"}))),
        (Method::POST, "/suspend", Some(json!({"reason": "x"}))),
        (
            Method::PUT,
            "/limits",
            Some(json!({"requests_per_minute": 5})),
        ),
    ] {
        let (status, body) = admin(
            &client,
            method.clone(),
            &server,
            &format!("{path}{sub}"),
            body,
        )
        .await;
        assert_eq!(status, 404, "{method} {sub}: {body}");
    }
    // The other tenant is untouched; a hostile body is refused and deletes nothing.
    until_key(&server, &other_key, 200).await;
    let other_path = format!("/v1/admin/tenants/{other}");
    let (status, _) = admin(
        &client,
        Method::DELETE,
        &server,
        &other_path,
        Some(json!({"reason": 7})),
    )
    .await;
    assert_eq!(status, 422);
    until_key(&server, &other_key, 200).await;
}

/// Any request may go to any node: a deletion and a rotation made on one node are what the
/// other decides on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_and_deletion_on_one_node_hold_on_another() {
    let nodes = cluster(2);
    let client = reqwest::Client::new();
    let (tenant, key, key_id) = tenant_with_key(&nodes[0]).await;
    until_key(&nodes[1], &key, 200).await;
    let (status, rotated) = admin(
        &client,
        Method::POST,
        &nodes[1],
        &format!("/v1/admin/tenants/{tenant}/keys/{key_id}/rotate"),
        Some(json!({"grace_seconds": 0})),
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    let new_key = rotated["key"].as_str().unwrap();
    for node in &nodes {
        until_key(node, &key, 401).await;
        until_key(node, new_key, 200).await;
    }
    let (status, _): (u16, Value) = admin(
        &client,
        Method::DELETE,
        &nodes[0],
        &format!("/v1/admin/tenants/{tenant}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    for node in &nodes {
        until_key(node, new_key, 401).await;
        let (status, _) = admin(
            &client,
            Method::GET,
            node,
            &format!("/v1/admin/tenants/{tenant}"),
            None,
        )
        .await;
        assert_eq!(status, 404);
    }
}
