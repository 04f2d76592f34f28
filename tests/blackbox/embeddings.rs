//! An embedding model's own dimensions (issue 15, item 8): a request gets them when it asks for
//! none, may ask for fewer, and is refused (400, not billed) when it asks for more.

use serde_json::{Value, json};

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

#[tokio::test]
async fn an_embedding_model_answers_in_its_own_dimensions_and_refuses_more() {
    let dir = data_dir();
    let config = dir.join("switchyard.toml");
    std::fs::write(
        &config,
        "[[providers]]\nname = \"sim\"\nkind = \"sim\"\n\
         [[models]]\nname = \"embed-small\"\nprovider = \"sim\"\nembedding_dimensions = 48\n\
         input_usd_per_million = \"1\"\n",
    )
    .unwrap();
    let server = Server::start_with(
        &dir,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
        ],
    );
    let (tenant, key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let embed = |body: Value| {
        client
            .post(server.url("/v1/embeddings"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let lengths = |answer: &Value| -> Vec<usize> {
        answer["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["embedding"].as_array().unwrap().len())
            .collect()
    };

    let own: Value = embed(json!({"model": "embed-small", "input": ["a", "b"]}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lengths(&own), vec![48, 48], "{own}");
    let fewer: Value = embed(json!({"model": "embed-small", "input": "a", "dimensions": 16}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lengths(&fewer), vec![16], "{fewer}");

    let spent = |view: Value| view["budget"]["tokens"].as_u64().unwrap();
    let view = |client: reqwest::Client| {
        let url = server.url(&format!("/v1/admin/tenants/{tenant}"));
        async move {
            client
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let before = spent(view(client.clone()).await);
    let more = embed(json!({"model": "embed-small", "input": "a", "dimensions": 49}))
        .await
        .unwrap();
    assert_eq!(more.status(), 400);
    let error: Value = more.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("embeds in 48 dimensions"),
        "{error}"
    );
    assert_eq!(
        spent(view(client.clone()).await),
        before,
        "a refusal was billed"
    );
}
