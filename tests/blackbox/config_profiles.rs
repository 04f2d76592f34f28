//! Config profiles through the binary: `serve --profile` runs with the profile's settings and
//! models, `config show` names the layer of every value, `config check` lists every problem.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

/// The file; `database` adds a PostgreSQL URL with a password to the dev profile (for the
/// tests that do not serve).
fn config_file(dir: &std::path::Path, database: bool) -> std::path::PathBuf {
    let path = dir.join("switchyard.toml");
    let database = if database {
        "database_url = \"postgres://app:hunter2@db.invalid/x\""
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            r#"
[server]
feed_ring = 100
shutdown_timeout = 5

[[providers]]
name = "sim"
kind = "sim"

[[models]]
name = "sim-small"
provider = "sim"

[[models]]
name = "sim-large"
provider = "sim"

[profiles.dev]
default_model = "dev-model"
models = [{{ name = "dev-model", provider = "sim" }}]

[profiles.dev.server]
admin_token = "{TOKEN}"
feed_ring = 200
{database}
"#
        ),
    )
    .unwrap();
    path
}

/// `switchyard` with no SWITCHYARD_* variable of the caller's but `env`.
fn switchyard(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SWITCHYARD_") {
            command.env_remove(key);
        }
    }
    command.args(args).envs(env.iter().copied());
    command.output().unwrap()
}

#[tokio::test]
async fn serve_runs_with_the_profiles_settings_and_models() {
    let dir = data_dir();
    let path = config_file(&dir, false);
    // No SWITCHYARD_ADMIN_TOKEN: the admin token comes from [profiles.dev.server]; the
    // environment's SWITCHYARD_LISTEN still wins over the file.
    let server = Server::start_args(
        &dir,
        &[("SWITCHYARD_PROFILE", "dev")],
        &["--config", path.to_str().unwrap()],
    );
    let (_, key, _) = tenant_with_key(&server).await;
    let models: Value = reqwest::Client::new()
        .get(server.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"dev-model"), "{models}");
    assert!(
        !ids.contains(&"sim-large"),
        "the profile's model list replaces the file's: {models}"
    );
}

#[test]
fn config_show_names_the_layer_of_every_value_and_redacts_secrets() {
    let dir = data_dir();
    let path = config_file(&dir, true);
    let output = switchyard(
        &[
            "config",
            "show",
            "--json",
            "--config",
            path.to_str().unwrap(),
            "--feed-heartbeat-secs",
            "7",
        ],
        &[
            ("SWITCHYARD_PROFILE", "dev"),
            ("SWITCHYARD_SHUTDOWN_TIMEOUT", "3"),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: BTreeMap<String, (Value, String)> = stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (
                v["key"].as_str().unwrap().to_owned(),
                (v["value"].clone(), v["source"].as_str().unwrap().to_owned()),
            )
        })
        .collect();
    let at = |key: &str| {
        lines
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key}: {stdout}"))
    };
    assert_eq!(at("server.feed_ring"), (200.into(), "profile dev".into()));
    assert_eq!(
        at("server.shutdown_timeout"),
        (3.into(), "env SWITCHYARD_SHUTDOWN_TIMEOUT".into())
    );
    assert_eq!(
        at("server.feed_heartbeat_secs"),
        (7.into(), "flag --feed-heartbeat-secs".into())
    );
    assert_eq!(
        at("server.listen"),
        ("127.0.0.1:8080".into(), "default".into())
    );
    assert_eq!(at("server.admin_token").0, "<redacted>");
    assert_eq!(at("server.database_url").0, "<redacted>");
    assert_eq!(
        at("default_model"),
        ("dev-model".into(), "profile dev".into())
    );
    assert_eq!(at("models[0].name").1, "profile dev");
    assert!(
        !stdout.contains("hunter2") && !stdout.contains(TOKEN),
        "{stdout}"
    );

    // The text form says the same, aligned, with the profile on top.
    let output = switchyard(
        &[
            "config",
            "show",
            "--config",
            path.to_str().unwrap(),
            "--profile",
            "dev",
        ],
        &[],
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("# profile: dev\n"), "{text}");
    assert!(text.contains("# profile dev"), "{text}");

    // An unknown profile is refused, naming the ones there are.
    let output = switchyard(
        &[
            "config",
            "show",
            "--config",
            path.to_str().unwrap(),
            "--profile",
            "prod",
        ],
        &[],
    );
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("profile prod is not in") && error.contains("dev"),
        "{error}"
    );
}

#[test]
fn config_check_lists_every_problem_and_fails() {
    let dir = data_dir();
    let good = config_file(&dir, true);
    let output = switchyard(&["config", "check", good.to_str().unwrap()], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        r#"
default_model = "nowhere"

[server]
listen = "not an address"

[[providers]]
name = "remote"
kind = "openai"

[[models]]
name = "a"
provider = "missing"

[profiles.prod.server]
durability = "sometimes"
"#,
    )
    .unwrap();
    let output = switchyard(&["config", "check", bad.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    for expected in ["server.listen", "[profiles.prod] server.durability"] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
    // Empty, binary and missing files are one clear problem each.
    for (name, bytes) in [
        ("empty.toml", &b""[..]),
        ("binary.toml", &[0xff, 0xfe, 0x00][..]),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let output = switchyard(&["config", "check", path.to_str().unwrap()], &[]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        if name == "empty.toml" {
            assert!(
                output.status.success(),
                "an empty file is the defaults: {stdout}"
            );
        } else {
            assert_eq!(output.status.code(), Some(1), "{stdout}");
        }
    }
    let output = switchyard(&["config", "check", "/nonexistent/switchyard.toml"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("cannot read config"));
}
