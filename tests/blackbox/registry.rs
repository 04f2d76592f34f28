//! Signed registries through the binary (issue 18, part 2): keys made, manifests signed,
//! verified and published with the CLI; published on one node and seen on another; every
//! refusal with its own code; published versions immutable; a tenant's and an environment's
//! signature requirement; prompts served to chat requests (`prompt: name@version`, logged with
//! the inference) and resolved into workflow nodes (`prompt_ref`).

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster::{Recipe, admin};
use crate::gateway::inference_events;
use crate::server::{Server, TOKEN, data_dir, followed_to, log_head, tenant_with_key};

/// `switchyard registry ARGS` with `env`: (success, stdout, stderr).
fn registry(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .arg("registry")
        .args(args)
        .env_remove("SWITCHYARD_CONFIG")
        .env_remove("SWITCHYARD_API_KEY")
        .env_remove("RUST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A new key file `dir/<file>.key` with id `id`; its public key.
fn keygen(dir: &Path, id: &str, file: &str) -> String {
    let out = dir.join(format!("{file}.key"));
    let (ok, stdout, stderr) =
        registry(&["keygen", "--id", id, "--out", out.to_str().unwrap()], &[]);
    assert!(ok, "{stderr}");
    // Never overwritten.
    let (again, _, _) = registry(&["keygen", "--id", id, "--out", out.to_str().unwrap()], &[]);
    assert!(!again);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("public_key = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned()
}

/// Signs `body` (written to a file) as a manifest with `extra` CLI arguments; its bytes.
fn sign(dir: &Path, body: &Value, kind: &str, version: u32, extra: &[&str]) -> Vec<u8> {
    let source = dir.join(format!("{}.json", uuid::Uuid::now_v7().simple()));
    std::fs::write(&source, body.to_string()).unwrap();
    let out = dir.join(format!("{}.manifest", uuid::Uuid::now_v7().simple()));
    let version = version.to_string();
    let mut args = vec![
        "sign",
        source.to_str().unwrap(),
        "--kind",
        kind,
        "--version",
        &version,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, _, stderr) = registry(&args, &[]);
    assert!(ok, "{stderr}");
    std::fs::read(out).unwrap()
}

fn config(dir: &Path, keys: &str, require: bool) -> PathBuf {
    let path = dir.join("registry.toml");
    std::fs::write(
        &path,
        format!(
            "[[providers]]\nname = \"sim\"\nkind = \"sim\"\n\n[[models]]\nname = \"sim-small\"\nprovider = \"sim\"\n\n[registry]\nrequire_signatures = {require}\n{keys}"
        ),
    )
    .unwrap();
    path
}

async fn publish(node: &Server, key: &str, bytes: &[u8]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(node.url("/v1/registry/manifests"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A chat request: its status, the prompt version served, and its body with the inference id
/// (`x-switchyard-inference-id`) as `inference_id`.
async fn chat(node: &Server, key: &str, body: Value) -> (u16, Option<String>, Value) {
    chat_with(node, key, body, "x-switchyard-prompt").await
}

/// A chat request: its status, the response header `header`, and its body with the inference
/// id (`x-switchyard-inference-id`) as `inference_id`.
pub(crate) async fn chat_with(
    node: &Server,
    key: &str,
    body: Value,
    header: &str,
) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(node.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let value = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (wanted, inference) = (value(header), value("x-switchyard-inference-id"));
    let mut body = response.json().await.unwrap_or(Value::Null);
    if let (Some(id), Some(map)) = (inference, body.as_object_mut()) {
        map.insert("inference_id".into(), json!(id));
    }
    (status, wanted, body)
}

fn summarize(words: &str) -> Value {
    json!({"messages": [
        {"role": "system", "content": format!("Answer in {words} {{{{ words }}}} words.")},
        {"role": "user", "content": "About {{ topic }}:"}
    ]})
}

#[tokio::test]
async fn manifests_signed_with_the_cli_are_published_on_one_node_and_refused_with_reasons_on_every_node()
 {
    let dir = data_dir();
    let new = keygen(&dir, "release-2026", "new");
    let old = keygen(&dir, "release-2025", "old");
    let gone = keygen(&dir, "leaked", "gone");
    keygen(&dir, "stranger", "stranger");
    keygen(&dir, "release-2026", "impostor");
    let keys = format!(
        "[registry.keys.release-2026]\npublic_key = \"{new}\"\n\n[registry.keys.release-2025]\npublic_key = \"{old}\"\nvalid_until = \"2020-01-01T00:00:00Z\"\n\n[registry.keys.leaked]\npublic_key = \"{gone}\"\nrevoked = true\n"
    );
    let config = config(&dir, &keys, false);
    let recipe = Recipe::new().with("SWITCHYARD_CONFIG", config.to_str().unwrap());
    let (a, b) = (recipe.start(), recipe.start());
    let (tenant, key, _) = tenant_with_key(&a).await;
    let key_file = |name: &str| dir.join(format!("{name}.key")).to_str().unwrap().to_owned();

    // Signed and published with the CLI on A.
    let v1 = sign(
        &dir,
        &summarize("about"),
        "prompt",
        1,
        &["--name", "summarize", "--key", &key_file("new")],
    );
    let v1_path = dir.join("v1.manifest");
    std::fs::write(&v1_path, &v1).unwrap();
    let (ok, stdout, stderr) = registry(
        &["publish", v1_path.to_str().unwrap()],
        &[("SWITCHYARD_SERVER", &a.base), ("SWITCHYARD_API_KEY", &key)],
    );
    assert!(ok, "{stderr}");
    let published: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(published["created"], true, "{published}");
    assert_eq!(published["key_id"], "release-2026");
    assert_eq!(published["version"], 1);
    followed_to(&b, log_head(&a).await).await;

    // The same bytes again on B: nothing changes. Other content under version 1, or a gap: 409.
    let (status, body) = publish(&b, &key, &v1).await;
    assert_eq!((status, &body["created"]), (200, &json!(false)), "{body}");
    for (version, expect) in [(1, "cannot change"), (3, "next version")] {
        let other = sign(
            &dir,
            &summarize("exactly"),
            "prompt",
            version,
            &["--name", "summarize", "--key", &key_file("new")],
        );
        let (status, body) = publish(&b, &key, &other).await;
        assert_eq!(status, 409, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expect), "{body}");
    }

    // Every refusal, on B, with its code.
    let two = |extra: &[&str]| {
        let mut args = vec!["--name", "summarize"];
        args.extend_from_slice(extra);
        sign(&dir, &summarize("in"), "prompt", 2, &args)
    };
    let stranger = key_file("stranger");
    let gone_key = key_file("gone");
    let old_key = key_file("old");
    let impostor = key_file("impostor");
    let new_key = key_file("new");
    let mut tampered = v1.clone();
    let at = tampered.iter().position(|b| *b == b'{').unwrap() + 20;
    tampered[at] ^= 0x01;
    let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&v1).unwrap()).unwrap();
    for (bytes, status, code) in [
        (two(&["--key", &stranger]), 403, "unknown_key"),
        (two(&["--key", &gone_key]), 403, "revoked_key"),
        (two(&["--key", &old_key]), 403, "expired_key"),
        (two(&["--key", &impostor]), 403, "bad_signature"),
        (
            two(&["--key", &new_key, "--expires-at", "2020-06-01T00:00:00Z"]),
            403,
            "expired_manifest",
        ),
        (pretty, 400, "not_canonical"),
        (b"not json".to_vec(), 400, "invalid_manifest"),
        (Vec::new(), 400, "invalid_manifest"),
    ] {
        let (got, body) = publish(&b, &key, &bytes).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    let (got, body) = publish(&b, &key, &tampered).await;
    assert!(matches!(got, 400 | 403), "{got} {body}");

    // Unsigned is taken while nothing requires signatures...
    let (status, body) = publish(&b, &key, &two(&[])).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["key_id"], Value::Null);
    // ...and refused once the tenant requires them (set on A, acting on B).
    let (status, body) = admin(
        &reqwest::Client::new(),
        Method::PUT,
        &a,
        &format!("/v1/admin/tenants/{tenant}/settings/require_signatures"),
        Some(json!({"value": "true"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    followed_to(&b, log_head(&a).await).await;
    let unsigned_three = sign(
        &dir,
        &summarize("near"),
        "prompt",
        3,
        &["--name", "summarize"],
    );
    let (status, body) = publish(&b, &key, &unsigned_three).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("unsigned_manifest")),
        "{body}"
    );
    let response = reqwest::Client::new()
        .post(b.url("/v1/tools"))
        .bearer_auth(&key)
        .body("name: lookup\nurl: http://127.0.0.1:9/lookup\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "signature_required", "{body}");

    // The CLI lists what the registry holds, each version with its signer.
    let (ok, stdout, stderr) = registry(
        &["list", "--kind", "prompt"],
        &[("SWITCHYARD_SERVER", &b.base), ("SWITCHYARD_API_KEY", &key)],
    );
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["require_signatures"], true);
    let versions = &listed["data"][0]["versions"];
    assert_eq!(versions[0]["key_id"], "release-2026", "{listed}");
    assert_eq!(versions[1]["signed"], false, "{listed}");
    assert_eq!(versions.as_array().unwrap().len(), 2);

    // The CLI verifies as the server does, against the same config.
    let check = |bytes: &[u8], extra: &[&str]| {
        let path = dir.join(format!("{}.check", uuid::Uuid::now_v7().simple()));
        std::fs::write(&path, bytes).unwrap();
        let mut args = vec!["verify", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        registry(&args, &[("SWITCHYARD_CONFIG", config.to_str().unwrap())])
    };
    let (ok, stdout, _) = check(&v1, &[]);
    assert!(ok && stdout.contains("release-2026"), "{stdout}");
    let (ok, _, stderr) = check(&tampered, &[]);
    assert!(!ok, "{stderr}");
    let (ok, _, stderr) = check(&unsigned_three, &["--require"]);
    assert!(!ok && stderr.contains("unsigned_manifest"), "{stderr}");
    let (ok, _, stderr) = check(&two(&["--key", &gone_key]), &[]);
    assert!(!ok && stderr.contains("revoked_key"), "{stderr}");

    // A chat request names the prompt on B: its messages go first, the version is answered.
    let ask = |prompt: Value, variables: Value| {
        json!({"model": "sim-small", "prompt": prompt, "prompt_variables": variables,
               "messages": [{"role": "user", "content": "the tides"}]})
    };
    let (status, served, body) = chat(
        &b,
        &key,
        ask(json!("summarize@1"), json!({"words": 20, "topic": "sea"})),
    )
    .await;
    assert_eq!(
        (status, served.as_deref()),
        (200, Some("summarize@1")),
        "{body}"
    );
    let (status, served, _) = chat(
        &b,
        &key,
        ask(json!("summarize"), json!({"words": 5, "topic": "sea"})),
    )
    .await;
    assert_eq!((status, served.as_deref()), (200, Some("summarize@2")));
    for (prompt, variables, expect) in [
        (json!("summarize@9"), json!({"words": 1, "topic": "x"}), 404),
        (json!("missing"), json!({}), 404),
        (json!("summarize@1"), json!({"words": 1}), 400),
        (json!("summarize@1"), json!([1]), 400),
        (json!("Bad Name"), json!({}), 400),
        (json!(7), json!({}), 422),
        (Value::Null, json!({"words": 1}), 400),
    ] {
        let (status, _, body) = chat(&b, &key, ask(prompt.clone(), variables)).await;
        assert_eq!(status, expect, "{prompt}: {body}");
    }

    // A workflow node names a prompt: resolved and pinned when the (signed) spec is published.
    let brief = json!({"name": "brief", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarize: {{ input.text }}"}
    ]});
    let (status, body) = publish(
        &b,
        &key,
        &sign(&dir, &brief, "prompt", 1, &["--key", &new_key]),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let spec = json!({"name": "digest", "inputs": {"text": {"type": "string"}},
        "nodes": [{"id": "sum", "kind": "llm", "model": "sim-small", "prompt_ref": "brief"}]});
    let (status, body) = publish(
        &a,
        &key,
        &sign(&dir, &spec, "workflow", 1, &["--key", &new_key]),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, shown) = crate::server::get(&b, &key, "/v1/workflows/digest").await;
    assert_eq!(status, 200, "{shown}");
    let node = &shown["spec"]["nodes"][0];
    assert_eq!(node["prompt_ref"], "brief@1", "{shown}");
    assert_eq!(node["prompt"], "Summarize: {{ input.text }}");
    assert_eq!(node["system"], "Be brief.");
    let started: Value = reqwest::Client::new()
        .post(b.url("/v1/workflows/digest/runs"))
        .bearer_auth(&key)
        .json(&json!({"input": {"text": "a long story"}, "wait_ms": 30000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(started["status"], "completed", "{started}");
    let missing =
        json!({"name": "broken", "nodes": [{"id": "x", "kind": "llm", "prompt_ref": "nope@1"}]});
    let (status, body) = publish(
        &b,
        &key,
        &sign(&dir, &missing, "workflow", 1, &["--key", &new_key]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope@1"),
        "{body}"
    );
}

#[tokio::test]
async fn an_environment_that_requires_signatures_refuses_unsigned_work_and_logs_the_prompt_served()
{
    let dir = data_dir();
    let public = keygen(&dir, "prod-1", "prod");
    let key_file = dir.join("prod.key");
    // A model entry of the config, signed by the platform and loaded at start.
    let model = sign(
        &dir,
        &json!({"name": "sim-signed", "provider": "sim"}),
        "model",
        1,
        &["--key", key_file.to_str().unwrap()],
    );
    let model_path = dir.join("sim-signed.manifest");
    std::fs::write(&model_path, &model).unwrap();
    let config = config(
        &dir,
        &format!(
            "manifests = [{:?}]\n[registry.keys.prod-1]\npublic_key = \"{public}\"\n",
            model_path.to_str().unwrap()
        ),
        true,
    );
    let server = Server::start_with(
        &dir,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
        ],
    );
    let (_, key, _) = tenant_with_key(&server).await;
    let prompt = summarize("about");
    let unsigned = sign(&dir, &prompt, "prompt", 1, &["--name", "summarize"]);
    let (status, body) = publish(&server, &key, &unsigned).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("unsigned_manifest")),
        "{body}"
    );
    for path in ["/v1/workflows", "/v1/tools", "/v1/fragments"] {
        let response = reqwest::Client::new()
            .post(server.url(path))
            .bearer_auth(&key)
            .body("name: x\n")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
    }
    let signed = sign(
        &dir,
        &prompt,
        "prompt",
        1,
        &["--name", "summarize", "--key", key_file.to_str().unwrap()],
    );
    let (status, body) = publish(&server, &key, &signed).await;
    assert_eq!(status, 201, "{body}");
    // A tenant cannot publish config entries.
    let (status, body) = publish(&server, &key, &model).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = chat(
        &server,
        &key,
        json!({"model": "sim-signed", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "the signed model entry serves: {body}");

    let (status, served, body) = chat(
        &server,
        &key,
        json!({"model": "sim-small", "prompt": "summarize@1", "prompt_variables": {"words": 3, "topic": "sea"},
               "metadata": {"tags": ["team-a"]},
               "messages": [{"role": "user", "content": "the tides"}]}),
    )
    .await;
    assert_eq!(
        (status, served.as_deref()),
        (200, Some("summarize@1")),
        "{body}"
    );
    let id = body["inference_id"].as_str().unwrap().to_owned();
    let events = inference_events(&dir, &id).await;
    match events
        .iter()
        .find_map(switchyard_events::Event::inference_request)
    {
        Some(requested) => {
            assert_eq!(
                requested.messages, 3,
                "the prompt's two messages, then the request's"
            );
            assert_eq!(requested.tags, ["team-a", "prompt:summarize:1"]);
        }
        other => panic!("{other:?}"),
    }
}
