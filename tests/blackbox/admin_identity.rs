//! Admin identity (issue 17, item 2): OIDC bearer tokens checked against a JWKS served over
//! HTTP, roles from claims, the static token as break-glass, and the audit log of who did what,
//! read from any node of a two-node cluster on PostgreSQL.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cluster::Recipe;
use crate::idp::{self, AUDIENCE, ISSUER, JwksServer, Key, claims, now};
use crate::server::{Server, TOKEN};

struct Call {
    status: StatusCode,
    request_id: String,
    body: Value,
    challenge: Option<String>,
}

async fn call(node: &Server, token: &str, method: Method, path: &str, body: Option<Value>) -> Call {
    let mut request = reqwest::Client::new()
        .request(method, node.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let request_id = header("x-request-id").unwrap_or_default();
    let challenge = header("www-authenticate");
    let body = response.json().await.unwrap_or(Value::Null);
    Call {
        status,
        request_id,
        body,
        challenge,
    }
}

/// Two nodes on one PostgreSQL schema, both trusting the stand-in IdP.
fn nodes(jwks_url: &str) -> (Server, Server) {
    let recipe = Recipe::new()
        .with("SWITCHYARD_ADMIN_OIDC_ISSUER", ISSUER)
        .with("SWITCHYARD_ADMIN_OIDC_AUDIENCE", AUDIENCE)
        .with("SWITCHYARD_ADMIN_OIDC_JWKS_URL", jwks_url);
    (recipe.start(), recipe.start())
}

#[tokio::test]
async fn roles_from_oidc_tokens_decide_and_the_audit_log_says_who_did_what_on_any_node() {
    let (rsa, ec) = (Key::rsa("rsa-1"), Key::ec("ec-1"));
    let jwks = JwksServer::start(idp::jwks(&[&rsa, &ec])).await;
    let (a, b) = nodes(&jwks.url);

    // A platform admin (RSA-signed) creates two tenants, on different nodes.
    let owner = rsa.sign(&claims("olivia@corp", &["platform-admin"], &[]));
    let made = call(
        &a,
        &owner,
        Method::POST,
        "/v1/admin/tenants",
        Some(json!({"name": "Acme"})),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let acme = made.body["id"].as_str().unwrap().to_owned();
    let create_request = made.request_id.clone();
    let made = call(
        &b,
        &owner,
        Method::POST,
        "/v1/admin/tenants",
        Some(json!({"name": "Globex"})),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let globex = made.body["id"].as_str().unwrap().to_owned();

    // A tenant admin of Acme (EC-signed) manages Acme, on either node, and nothing else.
    let acme_admin = ec.sign(&claims("tom@acme", &["tenant-admin"], &[&acme]));
    let key = call(
        &b,
        &acme_admin,
        Method::POST,
        &format!("/v1/admin/tenants/{acme}/keys"),
        Some(json!({"name": "app"})),
    )
    .await;
    assert_eq!(key.status, 201, "{}", key.body);
    let limits = call(
        &a,
        &acme_admin,
        Method::PUT,
        &format!("/v1/admin/tenants/{acme}/limits"),
        Some(json!({"requests_per_minute": 100})),
    )
    .await;
    assert_eq!(limits.status, 200, "{}", limits.body);
    for (method, path, body) in [
        (
            Method::POST,
            format!("/v1/admin/tenants/{globex}/keys"),
            Some(json!({"name": "x"})),
        ),
        (Method::GET, format!("/v1/admin/tenants/{globex}"), None),
        (
            Method::GET,
            format!("/v1/admin/tenants/{globex}/router"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/admin/tenants/{globex}/suspend"),
            Some(json!({})),
        ),
        (Method::DELETE, format!("/v1/admin/tenants/{acme}"), None),
        (
            Method::POST,
            "/v1/admin/tenants".into(),
            Some(json!({"name": "Mine"})),
        ),
    ] {
        let refused = call(&a, &acme_admin, method.clone(), &path, body).await;
        assert_eq!(refused.status, 403, "{method} {path}: {}", refused.body);
        assert_eq!(refused.body["error"]["code"], "forbidden");
    }
    // Its list shows only Acme.
    let listed = call(&b, &acme_admin, Method::GET, "/v1/admin/tenants", None).await;
    let ids: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [acme.as_str()]);

    // A billing viewer reads, and changes nothing.
    let viewer = rsa.sign(&claims("bill@corp", &["billing-viewer"], &[]));
    assert_eq!(
        call(
            &a,
            &viewer,
            Method::GET,
            &format!("/v1/admin/tenants/{globex}"),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        call(&a, &viewer, Method::GET, "/v1/admin/tenants", None)
            .await
            .body["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        call(
            &a,
            &viewer,
            Method::PUT,
            &format!("/v1/admin/tenants/{globex}/limits"),
            Some(json!({"requests_per_minute": 1}))
        )
        .await
        .status,
        403
    );
    assert_eq!(
        call(&a, &viewer, Method::GET, "/v1/admin/audit", None)
            .await
            .status,
        403
    );
    // A valid token with no role of ours gets nothing.
    let stranger = rsa.sign(&claims("eve@corp", &["admin"], &[]));
    assert_eq!(
        call(&a, &stranger, Method::GET, "/v1/admin/tenants", None)
            .await
            .status,
        403
    );

    // The break-glass token still works.
    let glass = call(
        &a,
        TOKEN,
        Method::PUT,
        &format!("/v1/admin/tenants/{globex}/settings/region"),
        Some(json!({"value": "eu"})),
    )
    .await;
    assert_eq!(glass.status, 200, "{}", glass.body);

    // The audit log, read right away from the other node, has every command with its author.
    let auditor = ec.sign(&claims("ann@corp", &["auditor"], &[]));
    let log = call(&b, &auditor, Method::GET, "/v1/admin/audit", None).await;
    assert_eq!(log.status, 200, "{}", log.body);
    let rows = log.body["data"].as_array().unwrap();
    let find = |event: &str, tenant: &str| -> Value {
        rows.iter()
            .find(|r| r["event_type"] == event && r["tenant_id"] == tenant)
            .unwrap_or_else(|| panic!("no {event} of {tenant} in {rows:#?}"))
            .clone()
    };
    let created = find("TenantCreated", &acme);
    assert_eq!(
        created["actor"],
        json!({"subject": "olivia@corp", "issuer": ISSUER, "role": "platform-admin", "via": "oidc"})
    );
    assert_eq!(created["request_id"], create_request.as_str());
    let issued = find("ApiKeyIssued", &acme);
    assert_eq!(issued["actor"]["subject"], "tom@acme");
    assert_eq!(issued["actor"]["role"], "tenant-admin");
    assert_eq!(
        find("TenantLimitsSet", &acme)["actor"]["subject"],
        "tom@acme"
    );
    let setting = find("TenantSettingSet", &globex);
    assert_eq!(setting["actor"]["subject"], "break-glass");
    assert_eq!(setting["actor"]["via"], "break-glass");
    assert_eq!(setting["request_id"], glass.request_id.as_str());
    // Refused commands wrote nothing: Globex has no key and was not suspended.
    assert!(
        !rows.iter().any(|r| r["tenant_id"] == globex
            && r["event_type"] != "TenantCreated"
            && r["event_type"] != "TenantSettingSet"),
        "{rows:#?}"
    );
    // Newest first.
    let positions: Vec<i64> = rows
        .iter()
        .map(|r| r["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "{positions:?}");

    // Filters: by actor, by tenant, by time; and paging.
    let toms = call(
        &a,
        &auditor,
        Method::GET,
        "/v1/admin/audit?actor=tom@acme",
        None,
    )
    .await;
    let toms = toms.body["data"].as_array().unwrap().clone();
    assert_eq!(toms.len(), 2, "{toms:#?}");
    assert!(toms.iter().all(|r| r["actor"]["subject"] == "tom@acme"));
    let globex_rows = call(
        &a,
        &auditor,
        Method::GET,
        &format!("/v1/admin/audit?tenant={globex}"),
        None,
    )
    .await;
    assert!(
        globex_rows.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["tenant_id"] == globex)
    );
    let future = call(
        &a,
        &auditor,
        Method::GET,
        "/v1/admin/audit?since=2999-01-01T00:00:00Z",
        None,
    )
    .await;
    assert_eq!(future.body["data"], json!([]));
    let mut paged = Vec::new();
    let mut path = "/v1/admin/audit?limit=2".to_owned();
    loop {
        let page = call(&b, &auditor, Method::GET, &path, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        paged.extend(
            page.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["position"].as_i64().unwrap()),
        );
        match page.body["next_before"].as_i64() {
            Some(next) => path = format!("/v1/admin/audit?limit=2&before={next}"),
            None => break,
        }
    }
    assert_eq!(paged, positions);

    // A tenant admin reads its own tenants' part of the audit log only.
    let own = call(&a, &acme_admin, Method::GET, "/v1/admin/audit", None).await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(
        own.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["tenant_id"] == acme),
        "{}",
        own.body
    );
    assert_eq!(
        call(
            &a,
            &acme_admin,
            Method::GET,
            &format!("/v1/admin/audit?tenant={globex}"),
            None
        )
        .await
        .status,
        403
    );
    // Bad parameters are refused clearly.
    for bad in [
        "limit=0",
        "limit=5000",
        "since=yesterday",
        "tenant=acme",
        "unknown=1",
    ] {
        let refused = call(
            &a,
            &auditor,
            Method::GET,
            &format!("/v1/admin/audit?{bad}"),
            None,
        )
        .await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }
    // The keys were read once per node.
    assert!(jwks.hits() <= 2, "{} JWKS reads", jwks.hits());
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_bearer_challenge_and_change_nothing() {
    let key = Key::rsa("rsa-1");
    let jwks = JwksServer::start(idp::jwks(&[&key])).await;
    let (a, _b) = nodes(&jwks.url);
    let head_before = crate::server::log_head(&a).await;
    let good = claims("mallory", &["platform-admin"], &[]);
    let with = |field: &str, value: Value| {
        let mut c = good.clone();
        c[field] = value;
        c
    };
    let unpublished = Key::ec("ec-unpublished");
    let tokens = [
        ("bad signature", Key::rsa("rsa-1").sign(&good)),
        ("key missing from the JWKS", unpublished.sign(&good)),
        ("wrong audience", key.sign(&with("aud", json!("other-app")))),
        (
            "wrong issuer",
            key.sign(&with("iss", json!("https://evil.test/"))),
        ),
        ("expired", key.sign(&with("exp", json!(now() - 3600)))),
        ("alg none", idp::unsigned(&good)),
        (
            "HS256 with public material",
            idp::hmac_signed("rsa-1", key.jwk["n"].as_str().unwrap().as_bytes(), &good),
        ),
        ("garbage", "not.a.jwt".into()),
        ("wrong static token", "test-admin-token-0123456788".into()),
    ];
    for (what, token) in tokens {
        let refused = call(
            &a,
            &token,
            Method::POST,
            "/v1/admin/tenants",
            Some(json!({"name": "X"})),
        )
        .await;
        assert_eq!(refused.status, 401, "{what}: {}", refused.body);
        assert_eq!(refused.body["error"]["code"], "unauthorized", "{what}");
        let challenge = refused.challenge.unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
    }
    let missing = reqwest::Client::new()
        .get(a.url("/v1/admin/tenants"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(
        crate::server::log_head(&a).await,
        head_before,
        "a refused command appended events"
    );
    // Refusals are counted by kind.
    let metrics = reqwest::get(a.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("switchyard_admin_auth_total{outcome=\"invalid\",via=\"oidc\"}")),
        "{metrics}"
    );
}
