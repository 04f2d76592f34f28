//! The admin API and tenant keys, end to end on the real binary: create, read, issue, use,
//! revoke, restart; hostile input; no leaks between tenants.

use serde_json::{Value, json};

use crate::server::{Server, TOKEN, data_dir};

fn admin(server: &Server) -> (reqwest::Client, String) {
    (reqwest::Client::new(), server.url("/v1/admin/tenants"))
}

async fn create_tenant(server: &Server, name: &str) -> Value {
    let (client, url) = admin(server);
    let response = client
        .post(url)
        .bearer_auth(TOKEN)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn issue_key(server: &Server, tenant: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url(&format!("/v1/admin/tenants/{tenant}/keys")))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn whoami(server: &Server, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(server.url("/v1/tenant"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

fn start(dir: &std::path::Path) -> Server {
    Server::start_with(dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)])
}

#[tokio::test]
async fn tenants_and_keys_work_end_to_end_and_survive_a_restart() {
    let dir = data_dir();
    let (tenant, key, key_id) = {
        let server = start(&dir);
        let tenant = create_tenant(&server, "Acme").await;
        assert_eq!(tenant["plan"], "free");
        assert!(tenant["created_at"].as_str().unwrap().starts_with("20"));
        let id = tenant["id"].as_str().unwrap().to_owned();
        let issued = issue_key(
            &server,
            &id,
            json!({"name": "backend", "scopes": ["inference"]}),
        )
        .await;
        assert_eq!(issued.status(), 201);
        let issued: Value = issued.json().await.unwrap();
        let key = issued["key"].as_str().unwrap().to_owned();
        assert!(key.starts_with("sy_") && key.starts_with(issued["prefix"].as_str().unwrap()));
        let me: Value = whoami(&server, &key).await.json().await.unwrap();
        assert_eq!(
            (me["tenant_id"].as_str(), me["name"].as_str()),
            (Some(id.as_str()), Some("Acme"))
        );
        (id, key, issued["id"].as_str().unwrap().to_owned())
    };
    // Restarted: the tenant, its key and the key's validity all come back from the log.
    let server = start(&dir);
    let shown: Value = reqwest::Client::new()
        .get(server.url(&format!("/v1/admin/tenants/{tenant}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["name"], "Acme");
    assert_eq!(shown["keys"][0]["id"], key_id.as_str());
    assert!(
        shown["keys"][0].get("key").is_none(),
        "the key itself must never be shown again"
    );
    assert!(
        !serde_json::to_string(&shown).unwrap().contains(&key[3..]),
        "the key leaked into the tenant view"
    );
    assert_eq!(whoami(&server, &key).await.status(), 200);

    let revoked = reqwest::Client::new()
        .delete(server.url(&format!("/v1/admin/tenants/{tenant}/keys/{key_id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let refused = whoami(&server, &key).await;
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_token() {
    let server = start(&data_dir());
    let (client, url) = admin(&server);
    for auth in [None, Some("wrong-token-wrong-token"), Some("")] {
        let mut request = client.post(&url).json(&json!({"name": "x"}));
        if let Some(token) = auth {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        assert!(body["error"]["request_id"].is_string());
    }
}

#[tokio::test]
async fn hostile_admin_input_gets_clear_4xx_errors() {
    let server = start(&data_dir());
    let (client, url) = admin(&server);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "invalid_json"),
        (b"{\"name\": 42}".to_vec(), 422, "invalid_request"),
        (
            b"{\"name\": \"x\", \"admin\": true}".to_vec(),
            422,
            "invalid_request",
        ),
        (vec![b'{', 0xff, 0xfe, b'}'], 400, "invalid_json"),
        (b"{\"name\": \"\"}".to_vec(), 422, "invalid_request"),
        (
            b"{\"name\": \"x\", \"plan\": \"DROP TABLE\"}".to_vec(),
            422,
            "invalid_request",
        ),
        (vec![b' '; 10 * 1024 * 1024], 413, "payload_too_large"),
    ];
    for (body, status, code) in cases {
        let response = client
            .post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            status,
            "body {:?}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code);
    }
    let tenant = create_tenant(&server, "Acme").await;
    let id = tenant["id"].as_str().unwrap();
    let past = issue_key(
        &server,
        id,
        json!({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(past.status(), 422);
    let garbage = issue_key(&server, id, json!({"name": "k", "expires_at": "tomorrow"})).await;
    assert_eq!(garbage.status(), 422);
}

#[tokio::test]
async fn unknown_and_foreign_ids_are_not_found() {
    let server = start(&data_dir());
    let a = create_tenant(&server, "A").await;
    let b = create_tenant(&server, "B").await;
    let issued: Value = issue_key(&server, a["id"].as_str().unwrap(), json!({"name": "k"}))
        .await
        .json()
        .await
        .unwrap();
    let client = reqwest::Client::new();
    for path in [
        "/v1/admin/tenants/not-a-uuid".to_owned(),
        format!("/v1/admin/tenants/{}", uuid::Uuid::now_v7()),
    ] {
        let response = client
            .get(server.url(&path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    // A's key id under B's tenant: not found, and A's key still works.
    let foreign = client
        .delete(server.url(&format!(
            "/v1/admin/tenants/{}/keys/{}",
            b["id"].as_str().unwrap(),
            issued["id"].as_str().unwrap()
        )))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    assert_eq!(
        whoami(&server, issued["key"].as_str().unwrap())
            .await
            .status(),
        200
    );
    assert_eq!(whoami(&server, "sy_0000").await.status(), 401);
}

#[tokio::test]
async fn limits_are_set_exactly_and_shown_with_the_tenant() {
    let server = start(&data_dir());
    let tenant = create_tenant(&server, "Acme").await;
    let id = tenant["id"].as_str().unwrap();
    let client = reqwest::Client::new();
    let url = server.url(&format!("/v1/admin/tenants/{id}/limits"));
    let body = json!({"requests_per_minute": 600, "tokens_per_minute": 200000, "monthly_budget_usd": 19.99});
    let set = client
        .put(&url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let shown: Value = client
        .get(server.url(&format!("/v1/admin/tenants/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        shown["limits"],
        json!({"requests_per_minute": 600, "tokens_per_minute": 200000, "monthly_budget_usd": "19.990000",
               "daily_budget_usd": null, "monthly_token_budget": null, "daily_token_budget": null})
    );
    for bad in [
        json!({"requests_per_minute": -1}),
        json!({"requests_per_minute": 0}),
        json!({"monthly_budget_usd": "1.0000001"}),
        json!({"monthly_budget_usd": -5}),
        json!({"daily_budget_usd": "abc"}),
        json!({"daily_token_budget": -1}),
        json!({"burst": 10}),
    ] {
        let response = client
            .put(&url)
            .bearer_auth(TOKEN)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{bad}");
    }
    let unknown = server.url(&format!(
        "/v1/admin/tenants/{}/limits",
        uuid::Uuid::now_v7()
    ));
    assert_eq!(
        client
            .put(unknown)
            .bearer_auth(TOKEN)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

async fn post_with_key(server: &Server, path: &str, key: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url(path))
        .bearer_auth(TOKEN)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_idempotency_key_runs_a_command_once_and_replays_its_response() {
    let dir = data_dir();
    let server = start(&dir);
    let body = json!({"name": "Acme"});
    let first = post_with_key(&server, "/v1/admin/tenants", "create-acme-1", &body).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = post_with_key(&server, "/v1/admin/tenants", "create-acme-1", &body).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotency-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "a retry created a second tenant");

    let other = post_with_key(
        &server,
        "/v1/admin/tenants",
        "create-acme-1",
        &json!({"name": "Other"}),
    )
    .await;
    assert_eq!(other.status(), 422);
    assert_eq!(
        other.json::<Value>().await.unwrap()["error"]["code"],
        "idempotency_key_reused"
    );

    // A new API key is shown once: the replay has the same key id but not the key.
    let id = first["id"].as_str().unwrap();
    let path = format!("/v1/admin/tenants/{id}/keys");
    let issued: Value = post_with_key(&server, &path, "key-1", &json!({"name": "k"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(issued["key"].as_str().unwrap().starts_with("sy_"));
    let replayed: Value = post_with_key(&server, &path, "key-1", &json!({"name": "k"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(replayed["id"], issued["id"]);
    assert!(replayed.get("key").is_none());
    assert_eq!(replayed["key_redacted"], true);

    // Rejections are replayed too, even once their cause is gone: a key refused while the
    // tenant is suspended stays refused under its Idempotency-Key after the tenant is resumed
    // (and a restart), where a fresh key succeeds. Everything survives a restart.
    let admin_post = |path: String, body: Option<Value>| {
        let mut request = reqwest::Client::new()
            .post(server.url(&path))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let suspended = admin_post(
        format!("/v1/admin/tenants/{id}/suspend"),
        Some(json!({"reason": "audit"})),
    )
    .await
    .unwrap();
    assert_eq!(suspended.status(), 200);
    let late = json!({"name": "late"});
    let refused = post_with_key(&server, &path, "while-suspended", &late).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"]["code"],
        "tenant_state"
    );
    let resumed = admin_post(format!("/v1/admin/tenants/{id}/resume"), None)
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    drop(server);
    let server = start(&dir);
    let after: Value = post_with_key(&server, "/v1/admin/tenants", "create-acme-1", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after["id"], first["id"]);
    let rejected = post_with_key(&server, &path, "while-suspended", &late).await;
    assert_eq!(rejected.status(), 409);
    assert_eq!(rejected.headers()["idempotency-replayed"], "true");
    assert_eq!(
        rejected.json::<Value>().await.unwrap()["error"]["code"],
        "tenant_state"
    );
    let fresh = post_with_key(&server, &path, "after-resume", &late).await;
    assert_eq!(fresh.status(), 201, "the cause of the refusal is gone");
    let long_key = "k".repeat(300);
    assert_eq!(
        post_with_key(&server, "/v1/admin/tenants", &long_key, &body)
            .await
            .status(),
        400
    );
}

#[tokio::test]
async fn concurrent_retries_with_one_key_create_one_tenant() {
    let server = start(&data_dir());
    let body = json!({"name": "Racy"});
    let responses = futures_util::future::join_all(
        (0..6).map(|_| post_with_key(&server, "/v1/admin/tenants", "race-1", &body)),
    )
    .await;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        match response.status().as_u16() {
            201 => {
                ids.insert(
                    response.json::<Value>().await.unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            409 => assert_eq!(
                response.json::<Value>().await.unwrap()["error"]["code"],
                "request_in_progress"
            ),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ids.len(), 1, "retries created {} tenants", ids.len());
}

#[tokio::test]
async fn a_tenant_over_its_request_limit_gets_429_with_retry_after() {
    let server = start(&data_dir());
    let tenant = create_tenant(&server, "Limited").await;
    let id = tenant["id"].as_str().unwrap();
    let issued: Value = issue_key(&server, id, json!({"name": "k"}))
        .await
        .json()
        .await
        .unwrap();
    let key = issued["key"].as_str().unwrap();
    let client = reqwest::Client::new();
    let limits = server.url(&format!("/v1/admin/tenants/{id}/limits"));
    let set = client
        .put(&limits)
        .bearer_auth(TOKEN)
        .json(&json!({"requests_per_minute": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    for remaining in ["2", "1", "0"] {
        let ok = whoami(&server, key).await;
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["x-ratelimit-limit-requests"], "3");
        assert_eq!(ok.headers()["x-ratelimit-remaining-requests"], remaining);
    }
    let refused = whoami(&server, key).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["request_id"].is_string());
    // Lifting the limit lets the tenant through again at once.
    client
        .put(&limits)
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(whoami(&server, key).await.status(), 200);
}

/// Two server processes on one log share the tenant's limit exactly through Redis.
#[tokio::test]
async fn two_nodes_share_one_request_limit_through_redis() {
    let redis = std::env::var("SWITCHYARD_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let dir = data_dir();
    let env = [
        ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
        ("SWITCHYARD_REDIS_URL", redis.as_str()),
    ];
    let first = Server::start_with(&dir, &env);
    let second = Server::start_with(&dir, &env);
    let tenant = create_tenant(&first, "Shared").await;
    let id = tenant["id"].as_str().unwrap();
    let issued: Value = issue_key(&first, id, json!({"name": "k"}))
        .await
        .json()
        .await
        .unwrap();
    let key = issued["key"].as_str().unwrap();
    let limits = first.url(&format!("/v1/admin/tenants/{id}/limits"));
    reqwest::Client::new()
        .put(&limits)
        .bearer_auth(TOKEN)
        .json(&json!({"requests_per_minute": 6}))
        .send()
        .await
        .unwrap();
    // The second node learns the key and the limit from the log (it polls the shared file).
    let mut synced = false;
    for _ in 0..100 {
        let probe = reqwest::Client::new()
            .get(second.url("/v1/tenant"))
            .bearer_auth("sy_not_a_key")
            .send()
            .await
            .unwrap();
        assert_eq!(probe.status(), 401);
        let response = reqwest::Client::new()
            .get(second.url("/v1/admin/tenants"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let listed: Value = response.json().await.unwrap();
        if listed["data"].as_array().is_some_and(|d| !d.is_empty()) {
            synced = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(synced, "the second node never saw the tenant");
    // The second node enforces the key and the limit once it has folded the log that far.
    crate::server::followed_to(&second, crate::server::log_head(&first).await).await;
    let mut allowed = 0;
    for i in 0..12 {
        let node = if i % 2 == 0 { &first } else { &second };
        match whoami(node, key).await.status().as_u16() {
            200 => allowed += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        allowed, 6,
        "two nodes together admitted {allowed} requests under a limit of 6"
    );
}

/// An operator suspends a tenant (its keys are refused, and its open feeds end) and resumes it;
/// each twice is refused, an unknown tenant is not found.
#[tokio::test]
async fn a_tenant_is_suspended_and_resumed_through_the_admin_api() {
    let dir = data_dir();
    let server = Server::start_with(&dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let (tenant, key, _) = crate::server::tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let post = |path: String, body: Option<Value>| {
        let mut request = client.post(server.url(&path)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let suspend = format!("/v1/admin/tenants/{tenant}/suspend");
    let resume = format!("/v1/admin/tenants/{tenant}/resume");
    assert_eq!(whoami(&server, &key).await.status(), 200);
    let suspended = post(suspend.clone(), Some(json!({"reason": "unpaid invoice"})))
        .await
        .unwrap();
    assert_eq!(suspended.status(), 200);
    let view: Value = suspended.json().await.unwrap();
    assert_eq!(view["suspended"], true);
    assert_eq!(view["suspension_reason"], "unpaid invoice");
    let refused = whoami(&server, &key).await;
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["message"], "the tenant is suspended");
    let again = post(suspend.clone(), Some(json!({"reason": "x"})))
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let resumed = post(resume.clone(), None).await.unwrap();
    assert_eq!(resumed.status(), 200);
    assert_eq!(whoami(&server, &key).await.status(), 200);
    assert_eq!(post(resume, None).await.unwrap().status(), 409);
    let unknown = post(
        format!("/v1/admin/tenants/{}/suspend", uuid::Uuid::now_v7()),
        Some(json!({"reason": "x"})),
    )
    .await
    .unwrap();
    assert_eq!(unknown.status(), 404);
    let malformed = post(suspend, Some(json!({"why": "x"}))).await.unwrap();
    assert_eq!(malformed.status(), 422);
}
