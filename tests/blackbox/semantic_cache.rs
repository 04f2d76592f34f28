//! The semantic cache and the local embedding model (issues 19 and 18) on the real binary with
//! the real all-MiniLM-L6-v2 weights (`scripts/embedding-model.sh`): a paraphrase of a
//! question answered before is a hit for a tenant that opted in, within the same conversation
//! only, never across tenants; an unrelated question is a miss; `/v1/embeddings` serves the
//! local model; two nodes sharing Redis share the semantic cache.

use serde_json::{Value, json};

use crate::cluster::{Recipe, until_key};
use crate::gateway::{SIM_CONFIG, chat, inference_events, start};
use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

pub(crate) fn model_dir() -> String {
    let dir = std::env::var("SWITCHYARD_TEST_EMBEDDING_MODEL").unwrap_or_else(|_| {
        format!(
            "{}/.cache/switchyard-models/all-minilm-l6-v2",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    assert!(
        std::path::Path::new(&dir)
            .join("model.safetensors")
            .exists(),
        "the embedding model is required in {dir} (run scripts/embedding-model.sh)"
    );
    dir
}

fn config() -> String {
    format!(
        "{SIM_CONFIG}\n[[providers]]\nname = \"local\"\nkind = \"local\"\nmodel_dir = \"{}\"\n\n\
         [[models]]\nname = \"all-minilm-l6-v2\"\nprovider = \"local\"\nembedding_dimensions = 384\n\n\
         [cache]\nenabled = true\nsemantic_model = \"all-minilm-l6-v2\"\n",
        model_dir()
    )
}

async fn opt_in(server: &Server, tenant: &str, threshold: f64) {
    let response = reqwest::Client::new()
        .put(server.url(&format!(
            "/v1/admin/tenants/{tenant}/settings/semantic_cache"
        )))
        .bearer_auth(TOKEN)
        .json(&json!({"value": json!({"threshold": threshold}).to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

fn ask(system: &str, question: &str) -> Value {
    json!({"model": "sim-small", "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": question}]})
}

/// The answer's `x-switchyard-cache`, its inference id and its text.
async fn send(server: &Server, key: &str, body: &Value) -> (String, String, String) {
    let (cache, id, body) = crate::cache::send(server, key, body).await;
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (cache, id, text)
}

#[tokio::test]
async fn a_paraphrase_is_answered_from_the_cache_within_its_tenant_and_conversation() {
    let dir = data_dir();
    let server = start(&dir, &config());
    let (tenant, key, _) = tenant_with_key(&server).await;
    let (other_tenant, other_key, _) = tenant_with_key(&server).await;
    let (_, exact_only_key, _) = tenant_with_key(&server).await;
    opt_in(&server, &tenant, 0.85).await;
    opt_in(&server, &other_tenant, 0.85).await;

    let (cache, _, first) = send(
        &server,
        &key,
        &ask("be brief", "How do I reset my password?"),
    )
    .await;
    assert_eq!(cache, "miss");
    let paraphrase = ask("be brief", "How can I reset my password?");
    let (cache, id, again) = send(&server, &key, &paraphrase).await;
    assert_eq!(cache, "hit", "a paraphrase");
    assert_eq!(again, first, "the kept answer");
    // Logged as the semantic cache's inference.
    let events = inference_events(&dir, &id).await;
    let route = events
        .iter()
        .find_map(|e| e.inference_route().cloned())
        .unwrap();
    assert_eq!(
        (route.policy.as_str(), route.provider.as_str()),
        ("semantic_cache", "cache")
    );

    // Unrelated, another conversation, another tenant, a tenant that did not opt in: misses.
    for (who, body) in [
        (
            &key,
            ask("be brief", "What is the weather like in Paris today?"),
        ),
        (
            &key,
            ask("answer in French", "How can I reset my password?"),
        ),
        (&other_key, paraphrase.clone()),
        (&exact_only_key, paraphrase.clone()),
    ] {
        let (cache, _, _) = send(&server, who, &body).await;
        assert_eq!(cache, "miss", "{body}");
    }
    // A stream is answered from it too, replayed.
    let mut streamed = ask("be brief", "how do i reset my password");
    streamed["stream"] = json!(true);
    let response = chat(&server, &key, &streamed).await;
    assert_eq!(response.headers()["x-switchyard-cache"], "hit");
    let text = response.text().await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");

    // The `semantic-cache` flag gates it: off for this tenant's keys (0%, no target), a
    // paraphrase misses; targeted at the tenant, it hits again.
    let client = reqwest::Client::new();
    let flag = |definition: Value| {
        client
            .put(server.url("/v1/admin/flags/semantic-cache"))
            .bearer_auth(TOKEN)
            .json(&definition)
            .send()
    };
    assert_eq!(
        flag(json!({"rollout_percent": 0})).await.unwrap().status(),
        200
    );
    let reworded = ask("be brief", "How could I reset my password?");
    let (cache, _, _) = send(&server, &key, &reworded).await;
    assert_eq!(cache, "miss", "the flag is off for this key");
    assert_eq!(
        flag(json!({"rollout_percent": 0, "tenants": [tenant]}))
            .await
            .unwrap()
            .status(),
        200
    );
    let reworded = ask("be brief", "How would I reset my password?");
    let (cache, _, _) = send(&server, &key, &reworded).await;
    assert_eq!(cache, "hit", "the flag targets this tenant");

    // The embedding model itself, through /v1/embeddings.
    let response = reqwest::Client::new()
        .post(server.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "all-minilm-l6-v2", "input": [
            "How do I reset my password?", "How can I reset my password?", "The weather in Paris"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let vector = |i: usize| -> Vec<f64> {
        body["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (a, b, c) = (vector(0), vector(1), vector(2));
    assert_eq!(a.len(), 384);
    assert!(
        dot(&a, &b) > 0.9 && dot(&a, &c) < 0.3,
        "{} {}",
        dot(&a, &b),
        dot(&a, &c)
    );
    // It is not a chat model, and `auto` never picks it.
    let refused = chat(
        &server,
        &key,
        &json!({"model": "all-minilm-l6-v2",
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(refused.status(), 400);
    // Hostile settings are refused.
    for bad in ["{\"threshold\": 0.1}", "{\"threshold\": 2}", "[]", "nope"] {
        let response = reqwest::Client::new()
            .put(server.url(&format!(
                "/v1/admin/tenants/{tenant}/settings/semantic_cache"
            )))
            .bearer_auth(TOKEN)
            .json(&json!({"value": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{bad}");
    }
}

#[tokio::test]
async fn two_nodes_sharing_redis_share_the_semantic_cache() {
    let dir = data_dir();
    let path = dir.join("semantic.toml");
    std::fs::write(&path, config()).unwrap();
    let recipe = Recipe::new().with("SWITCHYARD_CONFIG", path.to_str().unwrap());
    let (a, b) = (recipe.start(), recipe.start());
    let (tenant, key, _) = tenant_with_key(&a).await;
    opt_in(&a, &tenant, 0.85).await;
    // A key issued after the setting: once node B knows it, B has folded the setting too.
    let (later, _) = crate::budgets::second_key(&a, &tenant).await;
    until_key(&b, &later, 200).await;
    let marker = uuid::Uuid::now_v7().simple().to_string();
    let system = format!("conversation {marker}");
    let (cache, _, first) =
        send(&a, &key, &ask(&system, "Where can I download my invoices?")).await;
    assert_eq!(cache, "miss");
    let (cache, _, text) = send(&b, &key, &ask(&system, "Where do I download my invoices?")).await;
    assert_eq!((cache.as_str(), text.as_str()), ("hit", first.as_str()));
}
