//! Spend attribution below the tenant (issue 19, item 5): `user` and tags on requests, logged
//! with each inference and summed per API key, end user and tag by `/v1/analytics/spend`.

use serde_json::{Value, json};

use crate::budgets::second_key;
use crate::gateway::{chat, inference_events};
use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

/// Sends a chat request with an optional `x-switchyard-tags`; its status, id and position.
async fn ask(server: &Server, key: &str, body: &Value, tags: Option<&str>) -> (u16, String, u64) {
    let mut request = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body);
    if let Some(tags) = tags {
        request = request.header("x-switchyard-tags", tags);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (id, position) = (
        header("x-switchyard-inference-id"),
        header("x-switchyard-position").parse().unwrap_or(0),
    );
    (response.status().as_u16(), id, position)
}

async fn spend(server: &Server, key: &str, by: &str, position: u64) -> Vec<Value> {
    let response = reqwest::Client::new()
        .get(server.url(&format!(
            "/v1/analytics/spend?group_by={by}&min_position={position}&wait_ms=20000"
        )))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["data"].as_array().unwrap().clone()
}

/// The row of `name` in `rows` under `field`: (requests, cost).
fn row(rows: &[Value], field: &str, name: &str) -> (i64, i64) {
    let found = rows
        .iter()
        .find(|r| r[field] == name)
        .unwrap_or_else(|| panic!("no {field} {name} in {rows:?}"));
    (
        found["requests"].as_i64().unwrap(),
        found["cost_micros"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn spend_is_attributed_to_keys_users_and_tags() {
    let dir = data_dir();
    let server = Server::start_with(&dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let (tenant, key, key_id) = tenant_with_key(&server).await;
    let (batch, batch_id) = second_key(&server, &tenant).await;
    let hello = |user: Option<&str>, tags: Value| {
        let mut body =
            json!({"model": "sim-small", "messages": [{"role": "user", "content": "hello"}]});
        if let Some(user) = user {
            body["user"] = json!(user);
        }
        if !tags.is_null() {
            body["metadata"] = json!({"tags": tags});
        }
        body
    };

    // Hostile attribution is refused before it costs anything.
    for (body, header) in [
        (hello(Some(""), Value::Null), None),
        (hello(Some("a\u{7}b"), Value::Null), None),
        (hello(None, json!("spaced tag")), None),
        (hello(None, json!([1, 2])), None),
        (hello(None, Value::Null), Some("ok,not ok")),
        (
            hello(None, Value::Null),
            Some(
                &*(0..17)
                    .map(|i| format!("t{i}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ),
    ] {
        let (status, _, _) = ask(&server, &key, &body, header).await;
        assert_eq!(status, 400, "{body} {header:?}");
    }

    let mut last = 0;
    let mut alice_ids = Vec::new();
    for _ in 0..3 {
        let (status, id, position) = ask(
            &server,
            &key,
            &hello(Some("alice"), json!("team-a, exp:1")),
            None,
        )
        .await;
        assert_eq!(status, 200);
        alice_ids.push(id);
        last = last.max(position);
    }
    let (status, _, position) = ask(
        &server,
        &key,
        &hello(Some("bob"), Value::Null),
        Some("team-b"),
    )
    .await;
    assert_eq!(status, 200);
    last = last.max(position);
    let (status, _, position) = ask(
        &server,
        &batch,
        &hello(None, json!(["team-a"])),
        Some("team-a,nightly"),
    )
    .await;
    assert_eq!(status, 200);
    last = last.max(position);

    // The log carries the attribution.
    match inference_events(&dir, &alice_ids[0])
        .await
        .iter()
        .find_map(switchyard_events::Event::inference_request)
    {
        Some(requested) => {
            assert_eq!(requested.user.as_deref(), Some("alice"));
            assert_eq!(requested.tags, ["team-a", "exp:1"]);
        }
        other => panic!("{other:?}"),
    }

    let users = spend(&server, &key, "user", last).await;
    let (alice, alice_cost) = row(&users, "user", "alice");
    let (bob, bob_cost) = row(&users, "user", "bob");
    let (nobody, nobody_cost) = row(&users, "user", "");
    assert_eq!((alice, bob, nobody), (3, 1, 1));
    assert!(alice_cost > 0 && bob_cost > 0 && nobody_cost > 0);

    let keys = spend(&server, &key, "key", last).await;
    assert_eq!(row(&keys, "key_id", &key_id), (4, alice_cost + bob_cost));
    assert_eq!(row(&keys, "key_id", &batch_id), (1, nobody_cost));

    // A request with several tags counts under each; a tag given twice counts once.
    let tags = spend(&server, &key, "tag", last).await;
    assert_eq!(row(&tags, "tag", "team-a"), (4, alice_cost + nobody_cost));
    assert_eq!(row(&tags, "tag", "exp:1").0, 3);
    assert_eq!(row(&tags, "tag", "team-b"), (1, bob_cost));
    assert_eq!(row(&tags, "tag", "nightly"), (1, nobody_cost));
    assert_eq!(tags.len(), 4, "{tags:?}");

    // Another tenant sees none of it; a bad grouping is a 400.
    let (_, other_key, _) = tenant_with_key(&server).await;
    assert!(spend(&server, &other_key, "user", last).await.is_empty());
    let response = reqwest::Client::new()
        .get(server.url("/v1/analytics/spend?group_by=model"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // The chat API itself still answers without any attribution.
    let plain = chat(&server, &key, &hello(None, Value::Null)).await;
    assert_eq!(plain.status(), 200);
}
