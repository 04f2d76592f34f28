//! Ingestion and retrieval through the binary (issue 18, part 1): documents added on one node
//! and retrieved, deleted and listed on another; the same bytes twice are one document;
//! tenants never see each other's chunks; hostile uploads (empty, bad encodings, scripts in
//! HTML, a PDF bomb, 200 MB) refused with the reason; and, with the real local embedding
//! model, recall@5 of keyword, vector and hybrid retrieval on a generated labelled set.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{Recipe, until_key};
use crate::gateway::{SIM_CONFIG, start};
use crate::semantic_cache::model_dir;
use crate::server::{Server, data_dir, get, tenant_with_key};

async fn upload(node: &Server, key: &str, name: &str, media: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(node.url(&format!("/v1/documents?name={name}")))
        .bearer_auth(key)
        .header("content-type", media)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn retrieve(node: &Server, key: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(node.url("/v1/retrieve"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn documents_of(hits: &Value) -> Vec<String> {
    hits["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_id"].as_str().unwrap().to_owned())
        .collect()
}

/// A one-page PDF whose page says `text`, its content stream deflated; `padding` zero bytes
/// appended to the stream before deflating (a bomb: small on the wire, huge when read).
fn pdf(text: &str, padding: usize) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};
    use std::io::Write as _;
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc
        .add_object(dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier"});
    let resources_id = doc.add_object(dictionary! {"Font" => dictionary! {"F1" => font_id}});
    let mut content = Content {
        operations: vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new("Td", vec![72.into(), 700.into()]),
            Operation::new("Tj", vec![Object::string_literal(text)]),
            Operation::new("ET", vec![]),
        ],
    }
    .encode()
    .unwrap();
    content.extend(std::iter::repeat_n(b' ', padding));
    let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    deflate.write_all(&content).unwrap();
    let stream = Stream::new(
        dictionary! {"Filter" => "FlateDecode"},
        deflate.finish().unwrap(),
    )
    .with_compression(false);
    let content_id = doc.add_object(stream);
    let page_id = doc
        .add_object(dictionary! {"Type" => "Page", "Parent" => pages_id, "Contents" => content_id});
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
            "Resources" => resources_id, "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    doc.trailer.set("Root", catalog_id);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    bytes
}

const HANDBOOK: &str = "# Handbook\n\n## Refunds\n\nRefunds are issued within 14 days of a return.\n\n## Travel\n\nBook trains for trips under 500 km.\n";

#[tokio::test]
async fn documents_added_on_one_node_are_retrieved_and_deleted_on_another_and_never_cross_tenants()
{
    let recipe = Recipe::new();
    let (a, b) = (recipe.start(), recipe.start());
    let (_, alice, _) = tenant_with_key(&a).await;
    let (_, bob, _) = tenant_with_key(&a).await;
    // Keys issued on A are used on B once B has read them.
    until_key(&b, &alice, 200).await;
    until_key(&b, &bob, 200).await;

    let (status, first) = upload(&a, &alice, "handbook.md", "text/markdown", HANDBOOK.into()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(
        first["status"], "ready",
        "no embedding model: keyword only, ready at once"
    );
    let id = first["id"].as_str().unwrap().to_owned();
    // The same bytes again, on the other node: the same document, nothing changes.
    let (status, again) = upload(&b, &alice, "handbook.md", "text/markdown", HANDBOOK.into()).await;
    assert_eq!(
        (status, again["id"].as_str()),
        (200, Some(id.as_str())),
        "{again}"
    );
    // Bob's copy of the same bytes is Bob's own document.
    let (status, bobs) = upload(&b, &bob, "handbook.md", "text/markdown", HANDBOOK.into()).await;
    assert_eq!(status, 201);
    let bob_id = bobs["id"].as_str().unwrap().to_owned();
    assert_ne!(bob_id, id);
    // HTML (its script never indexed) and a PDF.
    let html = "<html><body><h1>Office</h1><script>var password = 'hunter2';</script><p>The office opens at nine.</p></body></html>";
    let (status, body) = upload(&a, &alice, "office.html", "text/html", html.into()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = upload(
        &a,
        &alice,
        "memo.pdf",
        "application/pdf",
        pdf("Parking is free on Sundays", 0),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let pdf_id = body["id"].as_str().unwrap().to_owned();

    // Retrieved on B, each tenant only its own.
    let (status, hits) = retrieve(
        &b,
        &alice,
        json!({"query": "how long do refunds take", "k": 3}),
    )
    .await;
    assert_eq!(status, 200, "{hits}");
    assert_eq!(hits["mode"], "keyword");
    let top = &hits["data"][0];
    assert_eq!(top["document_id"], id.as_str());
    assert_eq!(top["heading_path"], json!(["Handbook", "Refunds"]));
    let (start, end) = (
        top["start"].as_u64().unwrap() as usize,
        top["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(&HANDBOOK[start..end], top["text"].as_str().unwrap());
    let (_, hits) = retrieve(&b, &bob, json!({"query": "refunds"})).await;
    assert_eq!(documents_of(&hits), std::slice::from_ref(&bob_id));
    let (_, hits) = retrieve(&a, &alice, json!({"query": "parking sundays"})).await;
    assert_eq!(documents_of(&hits)[0], pdf_id);
    let (_, hits) = retrieve(&a, &alice, json!({"query": "password hunter2"})).await;
    assert!(hits["data"].as_array().unwrap().is_empty(), "{hits}");
    let (_, hits) = retrieve(
        &a,
        &alice,
        json!({"query": "refunds office parking", "filters": {"document_ids": [pdf_id]}}),
    )
    .await;
    assert!(documents_of(&hits).iter().all(|d| *d == pdf_id));

    // Bob cannot see or delete Alice's document.
    assert_eq!(get(&b, &bob, &format!("/v1/documents/{id}")).await.0, 404);
    let response = reqwest::Client::new()
        .delete(b.url(&format!("/v1/documents/{id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // Deleted on B: gone from A's answers as soon as A has read it.
    let response = reqwest::Client::new()
        .delete(b.url(&format!("/v1/documents/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, hits) = retrieve(
        &a,
        &alice,
        json!({"query": "refunds travel trains", "k": 10}),
    )
    .await;
    assert!(!documents_of(&hits).contains(&id), "{hits}");
    let (status, shown) = get(&a, &alice, &format!("/v1/documents/{id}")).await;
    assert_eq!((status, &shown["status"]), (200, &json!("deleted")));
    let (_, listed) = get(&a, &alice, "/v1/documents").await;
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    assert!(!names.contains(&"handbook.md"));
    // Bob's copy is untouched.
    let (_, hits) = retrieve(&a, &bob, json!({"query": "refunds"})).await;
    assert_eq!(documents_of(&hits), [bob_id]);
}

#[tokio::test]
async fn hostile_uploads_and_queries_are_refused_with_the_reason() {
    let dir = data_dir();
    let server = start(
        &dir,
        &format!(
            "{SIM_CONFIG}\n[retrieval]\nmax_document_bytes = 33554432\npdf_memory_mb = 256\npdf_timeout_ms = 20000\n"
        ),
    );
    let (_, key, _) = tenant_with_key(&server).await;
    for (name, media, body, status, code) in [
        (
            "empty.txt",
            "text/plain",
            Vec::new(),
            422,
            "unreadable_document",
        ),
        (
            "latin1.txt",
            "text/plain",
            b"caf\xe9 au lait".to_vec(),
            422,
            "unreadable_document",
        ),
        (
            "blank.md",
            "text/markdown",
            b"\n\n   \n".to_vec(),
            422,
            "unreadable_document",
        ),
        (
            "image.png",
            "image/png",
            b"\x89PNG\r\n".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "fake.pdf",
            "application/pdf",
            b"%PDF-1.7 nothing else".to_vec(),
            422,
            "unreadable_document",
        ),
        (
            "not.pdf",
            "application/pdf",
            b"hello".to_vec(),
            422,
            "unreadable_document",
        ),
    ] {
        let (got, body) = upload(&server, &key, name, media, body).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{name}: {body}"
        );
    }
    // A PDF bomb: 1 GiB of content from a few MiB, refused within the memory limit.
    let bomb = pdf("boom", 1 << 30);
    assert!(bomb.len() < 8 << 20, "{}", bomb.len());
    let started = std::time::Instant::now();
    let (got, body) = upload(&server, &key, "bomb.pdf", "application/pdf", bomb).await;
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (422, Some("unreadable_document")),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // 200 MB: 413 against the 32 MiB limit.
    let (got, body) = upload(
        &server,
        &key,
        "huge.txt",
        "text/plain",
        vec![b'a'; 200 << 20],
    )
    .await;
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    // The server is fine, and a good document still goes in.
    let (got, body) = upload(&server, &key, "ok.md", "text/markdown", HANDBOOK.into()).await;
    assert_eq!(got, 201);
    let id = body["id"].as_str().unwrap().to_owned();

    // A chat request with `retrieval`: the best chunks go first, as numbered sources, and the
    // chunks used are logged with the inference.
    let ask = |retrieval: Value| {
        json!({"model": "sim-small", "retrieval": retrieval,
               "messages": [{"role": "user", "content": "how long do refunds take"}]})
    };
    let chat = |body: Value| {
        let (server, key) = (&server, &key);
        async move {
            let (status, context, body) =
                crate::registry::chat_with(server, key, body, "x-switchyard-context").await;
            let inference = body["inference_id"].as_str().map(str::to_owned);
            (status, context, inference)
        }
    };
    let (status, context, inference) = chat(ask(json!({"k": 2}))).await;
    assert_eq!(status, 200);
    let context = context.unwrap();
    assert!(context.starts_with(&format!("{id}:")), "{context}");
    let events = crate::gateway::inference_events(&dir, &inference.unwrap()).await;
    match events
        .iter()
        .find_map(switchyard_events::Event::inference_request)
    {
        Some(requested) => {
            assert_eq!(requested.messages, 2, "the sources, then the question");
            let first = context.split(',').next().unwrap();
            assert!(
                requested.tags.contains(&format!("ctx:{first}")),
                "{:?}",
                requested.tags
            );
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        json!({"k": 0}),
        json!({"k": 9}),
        json!({"mode": "vector"}),
        json!({"surprise": 1}),
        json!("yes"),
    ] {
        let (status, _, _) = chat(ask(bad.clone())).await;
        assert_eq!(status, 400, "{bad}");
    }
    // The flag `retrieval-in-chat` off: the request goes as it is, and says so.
    let response = reqwest::Client::new()
        .put(server.url("/v1/admin/flags/retrieval-in-chat"))
        .bearer_auth(crate::server::TOKEN)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut off = None;
    for _ in 0..100 {
        let (status, context, inference) = chat(ask(json!({"k": 2}))).await;
        assert_eq!(status, 200);
        if context.as_deref() == Some("") {
            off = inference;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = crate::gateway::inference_events(&dir, &off.expect("the flag acted")).await;
    match events
        .iter()
        .find_map(switchyard_events::Event::inference_request)
    {
        Some(requested) => {
            assert_eq!(requested.messages, 1);
            assert!(
                requested
                    .tags
                    .contains(&"flag:retrieval-in-chat:off".to_owned())
            );
        }
        other => panic!("{other:?}"),
    }
    for (query, status) in [
        (json!({"query": ""}), 400),
        (json!({"query": "x".repeat(5_000)}), 400),
        (json!({"query": "refunds", "k": 0}), 400),
        (json!({"query": "refunds", "k": 51}), 400),
        (json!({"query": "refunds", "mode": "vector"}), 400),
        (json!({"query": "refunds", "mode": "psychic"}), 422),
        (json!({"query": "refunds", "surprise": 1}), 422),
        (json!({"query": "\"unclosed AND ((( title:"}), 200),
    ] {
        let (got, body) = retrieve(&server, &key, query.clone()).await;
        assert_eq!(got, status, "{query}: {body}");
    }
    for bad in [
        "/v1/documents/not-a-uuid",
        "/v1/documents/01890000-0000-7000-8000-000000000000",
    ] {
        assert_eq!(get(&server, &key, bad).await.0, 404, "{bad}");
    }
    let response = reqwest::Client::new()
        .post(server.url("/v1/documents?name=%00bad"))
        .bearer_auth(&key)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

/// A generated labelled set: 24 made-up products, each with three sections, and per product
/// one question that shares the section's words (keyword-friendly) and one that only says the
/// same thing in other words (meaning-friendly). Recall@5: the right section among the top 5.
#[tokio::test]
async fn recall_at_5_of_keyword_vector_and_hybrid_retrieval_with_the_local_model() {
    let dir = data_dir();
    let config = format!(
        "{SIM_CONFIG}\n[[providers]]\nname = \"local\"\nkind = \"local\"\nmodel_dir = \"{}\"\n\n\
         [[models]]\nname = \"all-minilm-l6-v2\"\nprovider = \"local\"\nembedding_dimensions = 384\n\n\
         [retrieval]\nembedding_model = \"all-minilm-l6-v2\"\n",
        model_dir()
    );
    let server = start(&dir, &config);
    let (_, key, _) = tenant_with_key(&server).await;
    let colours = ["red", "blue", "green", "amber", "violet", "silver"];
    let mut labelled: Vec<(String, String, &str)> = Vec::new();
    let mut ids = Vec::new();
    for i in 0..24 {
        let name = format!("kettle-k{i}");
        let doc = format!(
            "# The {name}\n\n## Warranty\n\nThe {name} warranty lasts {} months; the heating element is covered, the glass jug is not.\n\n\
             ## Cleaning\n\nDescale the {name} every {} weeks with white vinegar, then rinse it twice with clear water.\n\n\
             ## Safety\n\nThe {name} switches itself off when it boils dry, and its {} handle stays cool to the touch.\n",
            6 + i,
            2 + i % 4,
            colours[i % colours.len()]
        );
        let (status, body) = upload(
            &server,
            &key,
            &format!("{name}.md"),
            "text/markdown",
            doc.into(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        ids.push(id.clone());
        labelled.push((format!("{name} warranty months"), id.clone(), "Warranty"));
        labelled.push((
            format!("How long is the {name} guaranteed against defects?"),
            id.clone(),
            "Warranty",
        ));
        labelled.push((format!("descale {name} vinegar"), id.clone(), "Cleaning"));
        labelled.push((
            format!("How do I remove limescale from the {name}?"),
            id.clone(),
            "Cleaning",
        ));
        labelled.push((
            format!("{name} boils dry switches off"),
            id.clone(),
            "Safety",
        ));
        labelled.push((
            format!("Can the {name} overheat if I forget it with no water inside?"),
            id,
            "Safety",
        ));
    }
    // Until every document's vectors are in.
    for id in &ids {
        let mut ready = false;
        for _ in 0..600 {
            let (_, shown) = get(&server, &key, &format!("/v1/documents/{id}")).await;
            if shown["status"] == "ready" {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "document {id} was not indexed");
    }
    let mut recall = Vec::new();
    for mode in ["keyword", "vector", "hybrid"] {
        let mut found = 0;
        for (question, id, section) in &labelled {
            let (status, hits) = retrieve(
                &server,
                &key,
                json!({"query": question, "k": 5, "mode": mode}),
            )
            .await;
            assert_eq!(status, 200, "{hits}");
            if hits["data"].as_array().unwrap().iter().any(|h| {
                h["document_id"] == id.as_str()
                    && h["heading_path"].as_array().unwrap().last() == Some(&json!(section))
            }) {
                found += 1;
            }
        }
        recall.push((mode, f64::from(found) / labelled.len() as f64));
    }
    eprintln!(
        "recall@5 over {} labelled questions: {recall:?}",
        labelled.len()
    );
    let of = |mode: &str| recall.iter().find(|(m, _)| *m == mode).unwrap().1;
    for (mode, r) in &recall {
        assert!(*r >= 0.6, "{mode}: recall@5 {r}");
    }
    assert!(
        of("hybrid") >= of("keyword").max(of("vector")) - 0.05,
        "hybrid should not lose to either alone: {recall:?}"
    );
}
