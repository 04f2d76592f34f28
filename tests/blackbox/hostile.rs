//! Repeated authentication failures from one address (issue 15): refused with 429 and a
//! `Retry-After` once they pass the per-minute allowance, without the key being checked (so a
//! right guess does not get through either), and logged once per block, not per request.

use std::process::Stdio;

use serde_json::Value;

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

const ALLOWANCE: usize = 30;

#[tokio::test]
async fn an_address_failing_key_checks_is_refused_and_logged_once() {
    let dir = data_dir();
    let log = dir.join("stderr.log");
    let server = Server::start_logged(
        &dir,
        &[("SWITCHYARD_ADMIN_TOKEN", TOKEN), ("RUST_LOG", "warn")],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let (_, key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let whoami = |key: String| client.get(server.url("/v1/tenant")).bearer_auth(key).send();
    // A valid key is not counted against the address.
    for _ in 0..ALLOWANCE + 5 {
        assert_eq!(whoami(key.clone()).await.unwrap().status(), 200);
    }
    for attempt in 0..ALLOWANCE {
        let response = whoami(format!("sy_wrong{attempt}")).await.unwrap();
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    for attempt in 0..ALLOWANCE {
        let response = whoami(format!("sy_more{attempt}")).await.unwrap();
        assert_eq!(
            response.status(),
            429,
            "attempt {attempt} past the allowance"
        );
        let retry: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "retry-after {retry}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_auth_failures");
    }
    // While blocked, even the right key is not checked.
    assert_eq!(whoami(key.clone()).await.unwrap().status(), 429);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    let blocks = text
        .lines()
        .filter(|l| l.contains("repeated authentication failures"))
        .count();
    assert_eq!(blocks, 1, "logged {blocks} times:\n{text}");
    assert!(
        !text.contains(&key) && !text.contains("sy_wrong") && !text.contains(TOKEN),
        "a secret reached the log:\n{text}"
    );
}
