//! Secrets never reach the logs, the stored events or the read models (issue 15): a server
//! logging at `debug` is driven through what handles secrets (keys issued, rotated and used,
//! wrong keys and a wrong admin token, a provider called with its API key, a provider that
//! quotes that key back in its error), then stopped; every log line and every byte of every
//! file in its data directory (the event log and the read models) is searched for each secret.
//! The answers the tenant got must not carry the provider's key either: before
//! `ProviderError::redact`, a provider's refusal that quoted the key went to the tenant, the
//! log and the event log word for word.

use std::path::Path;
use std::process::Stdio;

use reqwest::Method;
use serde_json::json;

use crate::cluster::admin;
use crate::server::{Mock, Server, TOKEN, data_dir, tenant_with_key};

const PROVIDER_KEY: &str = "sk-provider-secret-4c1f9a7e2b";
const WRONG_KEY: &str = "sy_live_wrongSecretGuess0123456789";
const WRONG_TOKEN: &str = "wrong-admin-token-not-this-one-42";

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_an_event_or_a_read_model() {
    let mock = Mock::start();
    let dir = data_dir();
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
             api_key_env = \"SWITCHYARD_TEST_PROVIDER_KEY\"\n\
             [[models]]\nname = \"mock-a\"\nprovider = \"mock\"\ninput_usd_per_million = \"1\"\n\
             [[models]]\nname = \"mock-401-echo\"\nprovider = \"mock\"\n",
            mock.base
        ),
    )
    .unwrap();
    let log = dir.join("server.log");
    let mut server = Server::start_logged(
        &store,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
            ("SWITCHYARD_TEST_PROVIDER_KEY", PROVIDER_KEY),
            ("RUST_LOG", "debug"),
        ],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let client = reqwest::Client::new();
    let (tenant, key, key_id) = tenant_with_key(&server).await;
    let (status, rotated) = admin(
        &client,
        Method::POST,
        &server,
        &format!("/v1/admin/tenants/{tenant}/keys/{key_id}/rotate"),
        Some(json!({"grace_seconds": 3600})),
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    let new_key = rotated["key"].as_str().unwrap().to_owned();

    let mut answers = String::new();
    // Served with the old key and the new one, plain and streamed: the provider got its key.
    for (with, stream) in [(&key, false), (&new_key, true)] {
        let response = client
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(with)
            .json(&json!({"model": "mock-a", "stream": stream,
                          "messages": [{"role": "user", "content": "hello"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        answers.push_str(&response.text().await.unwrap());
    }
    // A provider that quotes the key it was sent in its refusal.
    let response = client
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&new_key)
        .json(&json!({"model": "mock-401-echo",
                      "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert!(
        !response.status().is_success(),
        "the refused call answered {}",
        response.status()
    );
    answers.push_str(&response.text().await.unwrap());
    // Wrong credentials, in every place they can be given.
    for (path, token) in [
        ("/v1/tenant", WRONG_KEY),
        ("/v1/admin/tenants", WRONG_TOKEN),
    ] {
        let response = client
            .get(server.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
        answers.push_str(&response.text().await.unwrap());
    }
    let response = client
        .get(server.url("/v1/tenant"))
        .header("authorization", format!("Basic {WRONG_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = client
        .get(server.url("/v1/tenant"))
        .header("x-api-key", WRONG_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    server.terminate();

    // The provider's key never goes back to the tenant.
    assert!(
        !answers.contains(PROVIDER_KEY),
        "an answer carried the provider's key:\n{answers}"
    );
    let secrets = [
        ("the admin token", TOKEN),
        ("a tenant key", key.as_str()),
        ("a rotated key", new_key.as_str()),
        ("the provider's key", PROVIDER_KEY),
        ("a wrong key", WRONG_KEY),
        ("a wrong admin token", WRONG_TOKEN),
    ];
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().count() > 20,
        "the debug log is too short to mean anything:\n{text}"
    );
    for (what, secret) in secrets {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            lines.is_empty(),
            "{what} is in the log:\n{}",
            lines.join("\n")
        );
        assert!(!metrics.contains(secret), "{what} is in /metrics");
    }
    // Every file of the store: the event log (its WAL too) and the read models.
    let stored = files(&store);
    assert!(
        stored
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "events.db")),
        "no event log in {stored:?}"
    );
    for path in &stored {
        let bytes = std::fs::read(path).unwrap();
        for (what, secret) in secrets {
            assert!(
                !contains(&bytes, secret),
                "{what} is stored in {}",
                path.display()
            );
        }
    }
    // The search is not blind: what is meant to be stored is found there.
    let everything: Vec<u8> = stored
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    let prefix: String = new_key.chars().take(10).collect();
    assert!(
        contains(&everything, &prefix),
        "the new key's prefix {prefix} is not stored"
    );
    assert!(
        contains(&everything, &tenant),
        "the tenant id is not stored"
    );
}
