//! The config: parsing, defaults and every refusal of a bad file.

use super::*;
use switchyard_actors::router::policy::Policy;

#[test]
fn the_built_in_config_serves_the_two_simulated_models() {
    let config = Config::default();
    let names: Vec<_> = config.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["sim-small", "sim-large"]);
    assert_eq!(
        config
            .model("sim-large")
            .unwrap()
            .price
            .output_per_million_tokens,
        10_000_000
    );
    assert_eq!(config.router.serving, Policy::Thompson, "auto has a choice");
    assert_eq!(config.candidates().len(), 2);
    let pinned = Config::parse(
        "default_model = \"m\"\n[[providers]]\nname = \"s\"\nkind = \"sim\"\n[[models]]\nname = \"m\"\nprovider = \"s\"",
    )
    .unwrap();
    assert_eq!(pinned.router.serving, Policy::Static { model: "m".into() });
    assert_eq!(
        pinned.candidates().len(),
        1,
        "auto is pinned to the default model"
    );
}

#[test]
fn money_is_parsed_exactly_and_nonsense_is_refused() {
    assert_eq!(usd_to_micros("2.50").unwrap(), 2_500_000);
    assert_eq!(usd_to_micros("0.000001").unwrap(), 1);
    assert_eq!(usd_to_micros("17").unwrap(), 17_000_000);
    for bad in [
        "",
        "-1",
        "1e3",
        "0.0000001",
        "1.2.3",
        "NaN",
        ".5",
        "99999999999999999999",
    ] {
        assert!(usd_to_micros(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn hostile_configs_are_refused_with_the_reason() {
    let cases = [
        (
            "[[models]]\nname = \"m\"\nprovider = \"nowhere\"",
            "not declared",
        ),
        ("[[providers]]\nname = \"p\"\nkind = \"openai\"", "base_url"),
        ("[[providers]]\nname = \"g\"\nkind = \"gemini\"", "base_url"),
        ("[[providers]]\nname = \"b\"\nkind = \"bedrock\"", "region"),
        (
            "[[providers]]\nname = \"b\"\nkind = \"bedrock\"\nregion = \"us-east-1/../x\"",
            "not an AWS region",
        ),
        (
            "[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"http://x\"\nregion = \"us-east-1\"",
            "region is for kind = \"bedrock\"",
        ),
        (
            "[[providers]]\nname = \"p\"\nkind = \"mistral\"\nbase_url = \"http://x\"\napi_version = \"1\"",
            "api_version is for kind = \"azure\"",
        ),
        (
            "[[providers]]\nname = \"p\"\nkind = \"mystery\"",
            "unknown variant",
        ),
        ("surprise = 1", "unknown field"),
        (
            "[[providers]]\nname = \"s\"\nkind = \"sim\"\n[[models]]\nname = \"auto\"\nprovider = \"s\"",
            "router",
        ),
        (
            "[[providers]]\nname = \"s\"\nkind = \"sim\"\n[[models]]\nname = \"m\"\nprovider = \"s\"\nsim = { quality = 3.0 }",
            "between 0 and 1",
        ),
        (
            "[[providers]]\nname = \"s\"\nkind = \"sim\"\n[[models]]\nname = \"m\"\nprovider = \"s\"\ninput_usd_per_million = \"0.1234567\"",
            "input_usd_per_million",
        ),
        ("default_model = \"ghost\"", "not a declared model"),
        (
            "[[providers]]\nname = \"bad name\"\nkind = \"sim\"",
            "must be 1-128",
        ),
        ("[[[", "TOML"),
    ];
    for (text, expected) in cases {
        let error = format!("{:#}", Config::parse(text).unwrap_err());
        assert!(
            error.contains(expected) || (expected == "TOML" && !error.is_empty()),
            "{text:?}: {error}"
        );
    }
}

#[test]
fn the_registry_section_reports_every_bad_key_at_once() {
    let text = "[registry]\nrequire_signatures = true\n\
        [registry.keys.short]\npublic_key = \"AAAA\"\n\
        [registry.keys.late]\npublic_key = \"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"\nvalid_until = \"soon\"\n\
        [registry.keys.ok]\npublic_key = \"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"\n";
    let error = Config::parse(text).unwrap_err().to_string();
    assert!(error.contains("registry.keys.short.public_key"), "{error}");
    assert!(error.contains("registry.keys.late.valid_until"), "{error}");
    assert!(!error.contains("registry.keys.ok"), "{error}");
    for hostile in [
        "[registry]\nkeys = 3",
        "[registry]\nsurprise = true",
        "[registry.keys.k]\npublic_key = \"x\"\nrevoked = \"yes\"",
        "[registry.keys.k]\nrevoked = true",
    ] {
        assert!(Config::parse(hostile).is_err(), "{hostile}");
    }
    let good = Config::parse("[registry]\nrequire_signatures = true\n[registry.keys.ok]\npublic_key = \"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"\n").unwrap();
    assert!(good.registry.require_signatures);
    assert_eq!(good.registry.keys.len(), 1);
}

#[test]
fn model_and_provider_entries_come_from_verified_manifests() {
    use serde_json::json;
    use switchyard_manifests::{Kind, Manifest, SecretKey};
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed("platform", [3; 32]);
    let write = |file: &str, manifest: &Manifest, signed: bool| {
        let path = dir.path().join(file);
        let bytes = if signed {
            manifest.sign(&key).unwrap()
        } else {
            manifest.unsigned().unwrap()
        };
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let provider = Manifest {
        kind: Kind::Provider,
        name: "signed-sim".into(),
        version: 1,
        expires_at: None,
        body: json!({"name": "signed-sim", "kind": "sim"}),
    };
    let model = Manifest {
        kind: Kind::Model,
        name: "sim-signed".into(),
        version: 1,
        expires_at: None,
        body: json!({"name": "sim-signed", "provider": "signed-sim"}),
    };
    let p = write("provider.json", &provider, true);
    let m = write("model.json", &model, true);
    let config = |require: bool, manifests: &[&str]| {
        format!(
            "[registry]\nrequire_signatures = {require}\nmanifests = {manifests:?}\n[registry.keys.platform]\npublic_key = \"{}\"\n",
            key.public_key()
        )
    };
    let loaded = Config::parse(&config(true, &[&p, &m])).unwrap();
    assert!(loaded.model("sim-signed").is_some());
    assert!(loaded.registry.manifests.is_empty(), "taken once loaded");

    // Tampered, unsigned where required, the wrong kind, a name that disagrees, a missing file.
    let mut tampered = std::fs::read(&m).unwrap();
    let at = tampered.len() / 3;
    tampered[at] ^= 0x04;
    let t = dir.path().join("tampered.json");
    std::fs::write(&t, tampered).unwrap();
    let unsigned = write("unsigned.json", &model, false);
    let mut prompt = model.clone();
    prompt.kind = Kind::Prompt;
    let wrong_kind = write("prompt.json", &prompt, true);
    let mut renamed = model;
    renamed.name = "other".into();
    let disagrees = write("renamed.json", &renamed, true);
    for (file, expect) in [
        (t.to_str().unwrap(), "registry.manifests"),
        (unsigned.as_str(), "unsigned_manifest"),
        (
            wrong_kind.as_str(),
            "a prompt manifest where model or provider",
        ),
        (disagrees.as_str(), "the body names sim-signed"),
        ("/nonexistent/x.json", "cannot read"),
    ] {
        let error = Config::parse(&config(true, &[&p, file]))
            .unwrap_err()
            .to_string();
        assert!(error.contains(expect), "{file}: {error}");
    }
    // Unsigned is taken where nothing requires signatures.
    assert!(
        Config::parse(&config(false, &[&p, &unsigned]))
            .unwrap()
            .model("sim-signed")
            .is_some()
    );
}
