//! The layers' order, the sources they report, and files that are wrong in every way at once.

use std::path::{Path, PathBuf};

use figment::value::{Dict, Value};

use super::show::redact_url;
use super::{File, Given, Layers, check};

const FILE: &str = r#"
default_model = "sim-small"

[server]
listen = "127.0.0.1:7000"
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
input_usd_per_million = "2.50"

[cache]
enabled = true
ttl_seconds = 60

[profiles.dev.server]
feed_ring = 200
no_workflows = true

[profiles.prod]
default_model = "sim-large"

[profiles.prod.server]
feed_ring = 300
admin_token = "a-secret-token-of-length"
database_url = "postgres://app:hunter2@db.internal:5432/switchyard"

[profiles.prod.cache]
ttl_seconds = 600
"#;

fn file(text: &str) -> File {
    File::parse(Path::new("switchyard.toml"), text).unwrap_or_else(|e| panic!("{e:#}"))
}

fn given(environment: &[(&str, &str)], command_line: &[(&str, &str)]) -> Given {
    let mut given = Given::defaults_only().unwrap();
    let dict = |pairs: &[(&str, &str)]| -> Dict {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect()
    };
    given.environment = dict(environment);
    given.command_line = dict(command_line);
    given
}

fn shown(layers: &Layers, key: &str) -> (serde_json::Value, String) {
    let line = layers
        .show()
        .unwrap()
        .into_iter()
        .find(|line| line.key == key)
        .unwrap_or_else(|| panic!("{key} is not shown"));
    (line.value.unwrap_or_default(), line.source)
}

#[test]
fn each_layer_overrides_the_ones_before_it_and_says_so() {
    let file = file(FILE);
    // Defaults and the file alone.
    let layers = Layers::stack(Some(&file), None, given(&[], &[])).unwrap();
    let args = layers.serve_args().unwrap();
    assert_eq!(args.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(args.feed_ring, 100);
    assert_eq!(args.feed_heartbeat_secs, 15, "the flag's default");
    assert!(!args.no_workflows);
    assert_eq!(
        shown(&layers, "server.feed_ring"),
        (100.into(), "file switchyard.toml".into())
    );
    assert_eq!(
        shown(&layers, "server.feed_heartbeat_secs"),
        (15.into(), "default".into())
    );

    // The profile over the file.
    let layers = Layers::stack(Some(&file), Some("dev"), given(&[], &[])).unwrap();
    let args = layers.serve_args().unwrap();
    assert_eq!(args.feed_ring, 200);
    assert!(args.no_workflows, "a switch set by the profile");
    assert_eq!(
        args.shutdown_timeout, 5,
        "the file's value where the profile is silent"
    );
    assert_eq!(
        shown(&layers, "server.feed_ring"),
        (200.into(), "profile dev".into())
    );

    // The environment over the profile, the command line over the environment.
    let layers = Layers::stack(
        Some(&file),
        Some("dev"),
        given(
            &[("feed_ring", "400"), ("shutdown_timeout", "9")],
            &[("feed_ring", "500")],
        ),
    )
    .unwrap();
    let args = layers.serve_args().unwrap();
    assert_eq!(args.feed_ring, 500);
    assert_eq!(args.shutdown_timeout, 9);
    assert_eq!(
        shown(&layers, "server.feed_ring"),
        (500.into(), "flag --feed-ring".into())
    );
    assert_eq!(
        shown(&layers, "server.shutdown_timeout"),
        (9.into(), "env SWITCHYARD_SHUTDOWN_TIMEOUT".into())
    );
}

#[test]
fn a_profile_merges_tables_key_by_key_and_reaches_the_models() {
    let file = file(FILE);
    let config = Layers::stack(Some(&file), Some("prod"), given(&[], &[]))
        .unwrap()
        .model_config()
        .unwrap();
    assert_eq!(config.default_model.as_deref(), Some("sim-large"));
    assert_eq!(config.cache.ttl_seconds, 600);
    assert!(
        config.cache.enabled,
        "the file's key survives the profile's table"
    );
    assert_eq!(config.models.len(), 2);
    let layers = Layers::stack(Some(&file), Some("prod"), given(&[], &[])).unwrap();
    assert_eq!(
        shown(&layers, "cache.ttl_seconds"),
        (600.into(), "profile prod".into())
    );
    assert_eq!(
        shown(&layers, "cache.enabled"),
        (true.into(), "file switchyard.toml".into())
    );
    assert_eq!(
        shown(&layers, "models[1].input_usd_per_million"),
        ("2.50".into(), "file switchyard.toml".into())
    );
    // A value no layer gave is the field's default, and says so.
    assert_eq!(
        shown(&layers, "models[0].context_tokens"),
        (128_000.into(), "default".into())
    );
    assert_eq!(
        shown(&layers, "providers[0].kind"),
        ("sim".into(), "file switchyard.toml".into())
    );
}

#[test]
fn secrets_are_redacted_wherever_they_come_from() {
    let file = file(FILE);
    let layers = Layers::stack(Some(&file), Some("prod"), given(&[], &[])).unwrap();
    let args = layers.serve_args().unwrap();
    assert_eq!(
        args.admin_token.as_deref(),
        Some("a-secret-token-of-length")
    );
    let shown = layers.show().unwrap();
    let text = super::render(Some("prod"), &shown);
    assert!(!text.contains("a-secret-token"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("server.admin_token = \"<redacted>\""),
        "{text}"
    );
    // A URL setting that is not secret in itself still hides a password it carries.
    let layers = Layers::stack(
        Some(&file),
        None,
        given(
            &[],
            &[("admin_oidc_jwks_url", "https://u:pw@idp.example/jwks")],
        ),
    )
    .unwrap();
    assert_eq!(
        self::shown(&layers, "server.admin_oidc_jwks_url").0,
        "https://u:<redacted>@idp.example/jwks"
    );
    assert_eq!(
        redact_url("https://user:pw@example.com/v1?x=1".into()),
        serde_json::Value::from("https://user:<redacted>@example.com/v1?x=1")
    );
    assert_eq!(
        redact_url("redis://token@cache:6379".into()),
        serde_json::Value::from("redis://<redacted>@cache:6379")
    );
    assert_eq!(
        redact_url("http://127.0.0.1:8000/v1".into()),
        serde_json::Value::from("http://127.0.0.1:8000/v1")
    );
}

#[test]
fn a_profile_must_exist_and_needs_a_file() {
    let file = file(FILE);
    let error = Layers::stack(Some(&file), Some("staging"), given(&[], &[]))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("profile staging is not in switchyard.toml"),
        "{error}"
    );
    assert!(error.contains("dev, prod"), "{error}");
    let error = Layers::stack(None, Some("dev"), given(&[], &[]))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("no config file"), "{error}");
}

#[test]
fn a_bad_value_names_its_key_and_its_layer() {
    let bad = file("[server]\nfeed_ring = \"lots\"\n");
    let error = Layers::stack(Some(&bad), None, given(&[], &[]))
        .unwrap()
        .serve_args()
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("server.feed_ring"), "{error}");
    assert!(error.contains("file switchyard.toml"), "{error}");
    let error = Layers::stack(
        Some(&file("")),
        None,
        given(&[("shutdown_timeout", "-1")], &[]),
    )
    .unwrap()
    .serve_args()
    .err()
    .unwrap()
    .to_string();
    assert!(error.contains("env SWITCHYARD_SHUTDOWN_TIMEOUT"), "{error}");

    for (text, expected) in [
        (
            "[server]\nlisten_on = \"x\"\n",
            "server.listen_on is not a serve setting",
        ),
        (
            "[server]\nno_workflows = \"maybe\"\n",
            "is not true or false",
        ),
        ("[server]\nlisten = { a = 1 }\n", "must be a string"),
    ] {
        let error = Layers::stack(Some(&file(text)), None, given(&[], &[]))
            .unwrap()
            .serve_args()
            .err()
            .unwrap_or_else(|| panic!("{text} was taken"))
            .to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

#[test]
fn hostile_profile_sections_are_refused() {
    for (text, expected) in [
        ("profiles = 5\n", "must be a table"),
        ("[profiles]\ndev = 1\n", "[profiles.dev] must be a table"),
        ("[profiles.default]\nx = 1\n", "not `default` or `global`"),
        ("[profiles.\"a b\"]\nx = 1\n", "letters, digits"),
        ("[profiles.dev.profiles.x]\ny = 1\n", "cannot hold profiles"),
        ("[server\n", "is not TOML"),
        ("server = 3\n", "`server` must be a table"),
        (
            "[profiles.dev]\nserver = \"x\"\n",
            "[profiles.dev] `server` must be a table",
        ),
    ] {
        let error = File::parse(Path::new("f.toml"), text)
            .err()
            .unwrap_or_else(|| panic!("{text} was taken"))
            .to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

fn write(text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-layers-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_reports_every_problem_at_once() {
    // Every problem that needs a well-formed document to be seen...
    const WELL_SHAPED: &str = r#"
default_model = "missing"

[[providers]]
name = "sim"
kind = "sim"

[[providers]]
name = "remote"
kind = "openai"

[[models]]
name = "a"
provider = "sim"
input_usd_per_million = "1.1234567"

[[models]]
name = "b"
provider = "nowhere"

[profiles.prod]
default_model = "also-missing"
"#;
    // ...and the same file with problems of shape added.
    let path = write(&format!(
        "colour = \"blue\"\n{WELL_SHAPED}\n[server]\nfeed_ring = \"lots\"\n\n\
         [[models]]\nname = \"c\"\nprovider = \"sim\"\ncolour = \"red\"\n"
    ));
    let problems = check(&path).unwrap();
    let text = problems.join("\n");
    for expected in [
        "server.feed_ring",
        "`colour` is not a config section",
        "models[2]",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    // Shape problems hide the checks that need a well-formed document; fix them and the
    // rest shows, every one of them.
    let path = write(WELL_SHAPED);
    let problems = check(&path).unwrap();
    let text = problems.join("\n");
    for expected in [
        "provider remote needs a base_url",
        "model a: input_usd_per_million",
        "model b: provider nowhere is not declared",
        "default_model missing is not a declared model",
        "[profiles.prod] default_model also-missing is not a declared model",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert!(
        !text.contains("[profiles.prod] provider remote"),
        "a problem of the base is not repeated for each profile:\n{text}"
    );
    assert!(check(&write("[server\n")).unwrap()[0].contains("is not TOML"));
    assert!(
        check(&write(FILE)).unwrap().is_empty(),
        "{:?}",
        check(&write(FILE))
    );
}
