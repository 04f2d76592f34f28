//! `switchyard tenant …` and `switchyard key …` against a running server.

use std::process::Command;

use serde_json::Value;

use crate::server::{Server, data_dir};

fn switchyard(server: &Server, dir: &std::path::Path, args: &[&str]) -> (bool, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_SERVER", &server.base)
        .env("SWITCHYARD_DATA_DIR", dir)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        output.status.success(),
        value,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_manages_tenants_and_keys_with_the_generated_admin_token() {
    let dir = data_dir();
    // No SWITCHYARD_ADMIN_TOKEN: serve generates one into the data dir, and the CLI reads it.
    let server = Server::start(&dir);
    let (ok, created, err) = switchyard(
        &server,
        &dir,
        &["tenant", "create", "--name", "Acme", "--plan", "pro"],
    );
    assert!(ok, "{err}");
    let id = created["id"].as_str().unwrap().to_owned();
    switchyard(&server, &dir, &["tenant", "create", "--name", "Beta"]);

    let (ok, list, err) = switchyard(&server, &dir, &["tenant", "list", "--limit", "1"]);
    assert!(ok, "{err}");
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        list["data"][0]["id"],
        id.as_str(),
        "tenants are listed in creation order"
    );
    let next = list["next_after"].as_str().unwrap().to_owned();
    let (_, rest, _) = switchyard(&server, &dir, &["tenant", "list", "--after", &next]);
    assert_eq!(rest["data"][0]["name"], "Beta");

    let (ok, key, err) = switchyard(
        &server,
        &dir,
        &["key", "create", &id, "--name", "ci", "--scope", "inference"],
    );
    assert!(ok, "{err}");
    assert!(key["key"].as_str().unwrap().starts_with("sy_"));
    let (_, shown, _) = switchyard(&server, &dir, &["tenant", "show", &id]);
    assert_eq!(shown["keys"][0]["scopes"][0], "inference");
    let key_id = key["id"].as_str().unwrap();
    let (ok, revoked, err) = switchyard(&server, &dir, &["key", "revoke", &id, key_id]);
    assert!(ok, "{err}");
    assert_eq!(revoked["revoked"], true);

    let (ok, _, err) = switchyard(&server, &dir, &["tenant", "show", "no-such-tenant"]);
    assert!(!ok);
    assert!(err.contains("not_found"), "{err}");
    let help = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["key", "create", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("printed once"));
}

/// Subcommands are for people: without `RUST_LOG` they print no log lines; with it, JSON lines.
#[test]
fn cli_logs_are_json_only_when_rust_log_asks() {
    let dir = data_dir();
    let migrate = |rust_log: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        command
            .args(["migrate"])
            .env("SWITCHYARD_DATA_DIR", &dir)
            .env_remove("SWITCHYARD_DATABASE_URL")
            .env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let output = command.output().unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let quiet = migrate(None);
    assert!(quiet.trim().is_empty(), "{quiet}");
    let logged = migrate(Some("info"));
    let line = logged
        .lines()
        .find(|l| l.contains("event log schema is up to date"))
        .unwrap_or_else(|| panic!("{logged}"));
    let parsed: Value = serde_json::from_str(line).unwrap();
    assert_eq!(parsed["level"], "INFO");
}
