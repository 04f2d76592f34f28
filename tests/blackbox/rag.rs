//! Documents in by every door, and retrieval in workflows (issue 18, part 1): multipart uploads,
//! documents fetched from URLs through the tools' address guard, the workflow `retrieve` node on
//! two nodes, and the `rag` example run with `switchyard run` on the simulated models, citing
//! the chunks it used.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

use crate::cluster::{Recipe, until_key};
use crate::gateway::{SIM_CONFIG, start, start_env};
use crate::server::{Server, data_dir, get, tenant_with_key};
use crate::workflows::switchyard;

fn example(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// One part of a multipart body: field name, filename, content type, bytes.
type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Vec<u8>);

/// `POST /v1/documents` with a multipart body of `parts`.
async fn multipart(node: &Server, key: &str, query: &str, parts: Vec<Part<'_>>) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new();
    for (name, filename, media, bytes) in parts {
        let mut part = reqwest::multipart::Part::bytes(bytes);
        if let Some(filename) = filename {
            part = part.file_name(filename.to_owned());
        }
        if let Some(media) = media {
            part = part.mime_str(media).unwrap();
        }
        form = form.part(name.to_owned(), part);
    }
    let response = reqwest::Client::new()
        .post(node.url(&format!("/v1/documents{query}")))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_json(node: &Server, key: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(node.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Starts a run of workflow `name` on `node`, waiting for its end; answers the run once it
/// was accepted (201) and reached `status`.
async fn run_to_end(node: &Server, key: &str, name: &str, input: Value, status: &str) -> Value {
    let (code, run) = post_json(
        node,
        key,
        &format!("/v1/workflows/{name}/runs"),
        json!({"input": input, "wait_ms": 30000}),
    )
    .await;
    assert_eq!((code, &run["status"]), (201, &json!(status)), "{run}");
    run
}

async fn post_text(node: &Server, key: &str, path: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(node.url(path))
        .bearer_auth(key)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn handbook() -> Vec<u8> {
    std::fs::read(example("examples/documents/handbook.md")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rag_example_runs_with_switchyard_run_and_cites_its_chunks() {
    let dir = data_dir();
    let spec = example("examples/workflows/rag.yaml");
    let document = example("examples/documents/handbook.md");
    let run = |question: &str| {
        switchyard(
            &dir,
            &[
                "run",
                spec.to_str().unwrap(),
                "--document",
                document.to_str().unwrap(),
                "--input",
                &json!({ "question": question }).to_string(),
                "--json",
            ],
        )
    };
    let (ok, out, err) = run("How long do refunds take to appear?");
    assert!(ok, "{out}\n{err}");
    let state: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(state["status"], "completed", "{state}");
    let sources = state["output"]["sources"].as_array().unwrap();
    assert!(!sources.is_empty(), "{state}");
    assert_eq!(
        sources[0], "[1] handbook.md › Acme Cloud handbook › Billing › Refunds",
        "{state}"
    );
    let chunk = &state["output"]["chunks"][0];
    assert!(
        chunk["text"]
            .as_str()
            .unwrap()
            .contains("five to ten business days"),
        "{chunk}"
    );
    // The byte range points into the document's text.
    let text = String::from_utf8(handbook()).unwrap();
    let (start, end) = (
        chunk["start"].as_u64().unwrap() as usize,
        chunk["end"].as_u64().unwrap() as usize,
    );
    assert!(text[start..end].contains("five to ten business days"));
    // The model saw the numbered sources.
    let answer_step = state["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "search")
        .unwrap();
    assert!(
        answer_step["output"]["context"].as_str().unwrap().contains(
            "[1] handbook.md › Acme Cloud handbook › Billing › Refunds\nA customer may ask"
        ),
        "{answer_step}"
    );

    // Re-executed against another model: the search is answered from the recording.
    let run_id = state["run_id"].as_str().unwrap().to_owned();
    let (ok, out, err) = switchyard(&dir, &["replay", &run_id, "--model", "sim-large"]);
    assert!(ok, "{out}\n{err}");
    let compared: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(compared["replay"]["status"], "completed", "{compared}");
    assert_eq!(
        compared["replay"]["output"]["sources"], compared["original"]["output"]["sources"],
        "{compared}"
    );

    // Again, in the same data dir: the same bytes are the same document (no second copy), and
    // another question finds another section.
    let (ok, out, err) = run("How many days are backups kept on the team plan?");
    assert!(ok, "{out}\n{err}");
    let state: Value = serde_json::from_str(&out).unwrap();
    let sources = state["output"]["sources"].as_array().unwrap();
    assert_eq!(
        sources[0], "[1] handbook.md › Acme Cloud handbook › Storage › Backups",
        "{state}"
    );
    let ids: std::collections::BTreeSet<&str> = state["output"]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["document_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one document, not two copies: {state}");

    // A document that is not one is refused before the run starts, with the reason.
    let png = dir.join("logo.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let (ok, out, err) = switchyard(
        &dir,
        &[
            "run",
            spec.to_str().unwrap(),
            "--document",
            png.to_str().unwrap(),
            "--input",
            r#"{"question": "q"}"#,
        ],
    );
    assert!(!ok, "{out}");
    assert!(err.contains("logo.png"), "{err}");
}

const SCOPED: &str = r#"
name: scoped
inputs:
  question: {type: string}
  docs: {type: array}
outputs:
  sources: {value: steps.search.output.citations}
  chunks: {value: steps.search.output.chunks}
nodes:
  - id: search
    kind: retrieve
    query: "{{ input.question }}"
    k: 5
    mode: keyword
    documents: "{{ input.docs }}"
"#;

#[tokio::test]
async fn a_retrieve_step_on_one_node_finds_documents_added_on_another() {
    let recipe = Recipe::new();
    let (a, b) = (recipe.start(), recipe.start());
    let (_, key, _) = tenant_with_key(&a).await;
    let (_, other, _) = tenant_with_key(&a).await;
    until_key(&b, &key, 200).await;
    until_key(&b, &other, 200).await;

    // The handbook as a multipart upload on A; a second document beside it.
    let (status, added) = multipart(
        &a,
        &key,
        "",
        vec![(
            "file",
            Some("handbook.md"),
            Some("text/markdown"),
            handbook(),
        )],
    )
    .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["name"], "handbook.md");
    let handbook_id = added["id"].as_str().unwrap().to_owned();
    let (status, travel) = multipart(
        &a,
        &key,
        "",
        vec![
            ("name", None, None, b"travel policy".to_vec()),
            (
                "file",
                Some("travel.txt"),
                Some("text/plain"),
                b"Refunds for train tickets are claimed from the travel desk within 30 days."
                    .to_vec(),
            ),
        ],
    )
    .await;
    assert_eq!(status, 201, "{travel}");
    assert_eq!(travel["name"], "travel policy", "the name field wins");
    let travel_id = travel["id"].as_str().unwrap().to_owned();

    // Both documents' bytes are metered on the tenant's ledger, once although both nodes
    // fold the same events, and read on either node.
    let travel_bytes = 74;
    let expected = (handbook().len() + travel_bytes) as u64;
    let storage = storage_until(&b, &key, |s| s["stored_bytes"] == expected).await;
    assert_eq!(
        (&storage["documents_added"], &storage["bytes_added"]),
        (&json!(2), &json!(expected)),
        "{storage}"
    );

    // The rag example, registered and run on B.
    let rag = std::fs::read_to_string(example("examples/workflows/rag.yaml")).unwrap();
    let (status, body) = post_text(&b, &key, "/v1/workflows", &rag).await;
    assert_eq!(status, 201, "{body}");
    let run = run_to_end(
        &b,
        &key,
        "rag",
        json!({"question": "When is a refund possible?"}),
        "completed",
    )
    .await;
    let sources = run["output"]["sources"].as_array().unwrap();
    assert!(
        sources.iter().any(
            |s| s == "[1] handbook.md › Acme Cloud handbook › Billing › Refunds"
                || s == "[2] handbook.md › Acme Cloud handbook › Billing › Refunds"
        ),
        "{run}"
    );

    // A node's `documents` narrows the search, from the run's input.
    let (status, body) = post_text(&a, &key, "/v1/workflows", SCOPED).await;
    assert_eq!(status, 201, "{body}");
    for (docs, expected) in [(&travel_id, &travel_id), (&handbook_id, &handbook_id)] {
        let run = run_to_end(
            &b,
            &key,
            "scoped",
            json!({"question": "refunds", "docs": [docs]}),
            "completed",
        )
        .await;
        let chunks = run["output"]["chunks"].as_array().unwrap();
        assert!(!chunks.is_empty(), "{run}");
        assert!(
            chunks.iter().all(|c| c["document_id"] == **expected),
            "{run}"
        );
    }
    // Not an id: the run fails, saying why.
    let run = run_to_end(
        &b,
        &key,
        "scoped",
        json!({"question": "refunds", "docs": ["not-an-id"]}),
        "failed",
    )
    .await;
    assert!(run.to_string().contains("document ids"), "{run}");

    // Deleting a document on one node takes its bytes off the meter.
    let response = reqwest::Client::new()
        .delete(a.url(&format!("/v1/documents/{travel_id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let storage = storage_until(&b, &key, |s| s["documents_deleted"] == 1).await;
    assert_eq!(
        (
            &storage["stored_bytes"],
            &storage["bytes_deleted"],
            &storage["peak_bytes"]
        ),
        (
            &json!(handbook().len()),
            &json!(travel_bytes),
            &json!(expected)
        ),
        "{storage}"
    );

    // Another tenant's run finds nothing of this tenant's.
    let (status, body) = post_text(&b, &other, "/v1/workflows", &rag).await;
    assert_eq!(status, 201, "{body}");
    let run = run_to_end(
        &a,
        &other,
        "rag",
        json!({"question": "When is a refund possible?"}),
        "completed",
    )
    .await;
    assert_eq!(run["output"]["sources"], json!([]), "{run}");

    // Specs with a broken `retrieve` node are refused at registration, each with its field.
    for (node, field) in [
        (r#"{"id": "s", "kind": "retrieve"}"#, "query"),
        (
            r#"{"id": "s", "kind": "retrieve", "query": "q", "k": 0}"#,
            "k",
        ),
        (
            r#"{"id": "s", "kind": "retrieve", "query": "q", "k": 51}"#,
            "k",
        ),
        (
            r#"{"id": "s", "kind": "retrieve", "query": "q", "mode": "fuzzy"}"#,
            "`keyword`, `vector`, `hybrid`",
        ),
        (
            r#"{"id": "s", "kind": "retrieve", "query": "q", "model": "sim-small"}"#,
            "model",
        ),
        (
            r#"{"id": "s", "kind": "retrieve", "query": "{{ input."}"#,
            "query",
        ),
        (
            r#"{"id": "s", "kind": "llm", "prompt": "p", "query": "q"}"#,
            "query",
        ),
    ] {
        let spec = format!(r#"{{"name": "broken", "nodes": [{node}]}}"#);
        let (status, body) = post_text(&a, &key, "/v1/workflows", &spec).await;
        assert_eq!(status, 400, "{node}: {body}");
        assert!(body.to_string().contains(field), "{node}: {body}");
    }
}

/// The tenant's document storage this month as `node`'s invoice shows it, once `done` holds
/// (within 15 s).
async fn storage_until(node: &Server, key: &str, done: impl Fn(&Value) -> bool) -> Value {
    let now = time::OffsetDateTime::now_utc();
    let period = format!("{}-{:02}", now.year(), u8::from(now.month()));
    let mut storage = Value::Null;
    for _ in 0..150 {
        let (status, invoice) = get(node, key, &format!("/v1/billing/invoices/{period}")).await;
        assert_eq!(status, 200, "{invoice}");
        storage = invoice["storage"].clone();
        if done(&storage) {
            return storage;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the storage meter did not get there: {storage}");
}

#[tokio::test]
async fn multipart_uploads_take_one_file_and_refuse_the_rest_with_the_reason() {
    let dir = data_dir();
    let node = start(
        &dir,
        &format!("{SIM_CONFIG}\n[retrieval]\nmax_document_bytes = 65536\n"),
    );
    let (_, key, _) = tenant_with_key(&node).await;

    // The part's type decides the media type: HTML, its script dropped.
    let html = b"<html><body><h1>Notes</h1><p>Visible words.</p><script>secretword()</script></body></html>";
    let (status, added) = multipart(
        &node,
        &key,
        "",
        vec![("file", Some("notes"), Some("text/html"), html.to_vec())],
    )
    .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["media_type"], "text/html");
    assert_eq!(added["name"], "notes");
    let (status, shown) = get(
        &node,
        &key,
        &format!("/v1/documents/{}", added["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        (status, &shown["source"]),
        (200, &json!("upload")),
        "{shown}"
    );
    let (_, found) = post_json(&node, &key, "/v1/retrieve", json!({"query": "secretword"})).await;
    assert_eq!(found["data"], json!([]), "{found}");
    // An octet-stream part: the filename's extension decides; the query's name comes first.
    let (status, added) = multipart(
        &node,
        &key,
        "?name=from-query.md",
        vec![(
            "file",
            Some("readme.md"),
            Some("application/octet-stream"),
            b"# Readme\n\nMultipart words.".to_vec(),
        )],
    )
    .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(
        (&added["name"], &added["media_type"]),
        (&json!("from-query.md"), &json!("text/markdown"))
    );

    let text = |s: &str| s.as_bytes().to_vec();
    for (parts, status, says) in [
        (
            vec![("name", None, None, text("just a name"))],
            400,
            "`file` field",
        ),
        (
            vec![("document", Some("a.txt"), None, text("words"))],
            400,
            "unknown field",
        ),
        (
            vec![
                ("file", Some("a.txt"), None, text("one")),
                ("file", Some("b.txt"), None, text("two")),
            ],
            400,
            "second `file`",
        ),
        (
            vec![("file", Some("big.txt"), None, vec![b'a'; 70_000])],
            413,
            "max_document_bytes",
        ),
        (vec![("file", Some("empty.txt"), None, Vec::new())], 422, ""),
        (
            vec![(
                "file",
                Some("latin1.txt"),
                Some("text/plain"),
                vec![0xe9, 0x74, 0xe9],
            )],
            422,
            "",
        ),
        (
            vec![(
                "file",
                Some("x.png"),
                Some("image/png"),
                b"\x89PNG\r\n".to_vec(),
            )],
            415,
            "",
        ),
        (
            vec![
                ("name", None, None, vec![0xff, 0xfe]),
                ("file", Some("a.txt"), None, text("w")),
            ],
            400,
            "UTF-8",
        ),
    ] {
        let (got, body) = multipart(&node, &key, "", parts).await;
        assert_eq!(got, status, "{body}");
        assert!(body.to_string().contains(says), "{says}: {body}");
    }
    // A body that is not the multipart its header announces.
    for body in [
        "no boundary at all",
        "--wrong\r\ncontent-disposition: form-data; name=\"file\"\r\n\r\nx\r\n--wrong--\r\n",
        "--b\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\ncut off",
    ] {
        let response = reqwest::Client::new()
            .post(node.url("/v1/documents"))
            .bearer_auth(&key)
            .header("content-type", "multipart/form-data; boundary=b")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{body}");
    }
    // Nothing refused was added.
    let (_, listed) = get(&node, &key, "/v1/documents").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");
}

/// A web server on loopback for document fetches: each path answers as its name says.
async fn web_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut reader = BufReader::new(read);
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).await.unwrap();
                    if header.trim_end().is_empty() {
                        break;
                    }
                }
                let answer = |status: &str, headers: &str, body: &[u8]| {
                    let mut out = format!(
                        "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    out.extend_from_slice(body);
                    out
                };
                let bytes = match path.as_str() {
                    "/docs/Hand%20book.md" => answer(
                        "200 OK",
                        "content-type: text/markdown\r\n",
                        &std::fs::read(example("examples/documents/handbook.md")).unwrap(),
                    ),
                    "/page" => answer(
                        "200 OK",
                        "content-type: text/html; charset=utf-8\r\n",
                        b"<h1>Fetched</h1><p>Ferrets fetch far.</p><script>hiddenword()</script>",
                    ),
                    "/to-handbook" => answer(
                        "302 Found",
                        "location: /docs/Hand%20book.md\r\n",
                        b"",
                    ),
                    "/to-metadata" => answer(
                        "302 Found",
                        "location: http://169.254.169.254/latest/meta-data\r\n",
                        b"",
                    ),
                    "/to-file" => answer("302 Found", "location: file:///etc/passwd\r\n", b""),
                    "/loop" => answer("302 Found", "location: /loop\r\n", b""),
                    "/declared-huge" => {
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000000\r\nconnection: close\r\n\r\nstart".to_vec()
                    }
                    "/streamed-huge" => {
                        let _ = write
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n")
                            .await;
                        for _ in 0..100 {
                            if write.write_all(&[b'a'; 16 * 1024]).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        answer("200 OK", "content-type: text/plain\r\n", b"late words")
                    }
                    _ => answer("404 Not Found", "", b"no"),
                };
                let _ = write.write_all(&bytes).await;
            });
        }
    });
    base
}

#[tokio::test]
async fn documents_are_fetched_from_urls_through_the_tools_address_guard() {
    let web = web_server().await;
    let dir = data_dir();
    let node = start(
        &dir,
        &format!(
            "{SIM_CONFIG}\n[retrieval]\nmax_document_bytes = 262144\nfetch_timeout_ms = 1500\n"
        ),
    );
    let (_, key, _) = tenant_with_key(&node).await;
    let fetch = |body: Value| post_json(&node, &key, "/v1/documents", body);

    // A redirect to a document on loopback (allowed unless tools are public-only).
    let (status, added) = fetch(json!({"url": format!("{web}/to-handbook")})).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(
        added["name"], "Hand book.md",
        "the last path segment, decoded"
    );
    assert_eq!(added["media_type"], "text/markdown");
    let id = added["id"].as_str().unwrap().to_owned();
    let (_, shown) = get(&node, &key, &format!("/v1/documents/{id}")).await;
    assert_eq!(
        shown["source"],
        format!("{web}/docs/Hand%20book.md"),
        "{shown}"
    );
    // The same bytes by their direct URL: the same document.
    let (status, again) = fetch(json!({"url": format!("{web}/docs/Hand%20book.md")})).await;
    assert_eq!((status, &again["id"]), (200, &json!(id)), "{again}");
    let (status, found) = post_json(
        &node,
        &key,
        "/v1/retrieve",
        json!({"query": "password reset link"}),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["data"][0]["document_id"], json!(id), "{found}");
    // HTML by its header, a name given, scripts dropped.
    let (status, page) = fetch(json!({"url": format!("{web}/page"), "name": "ferrets"})).await;
    assert_eq!((status, &page["name"]), (201, &json!("ferrets")), "{page}");
    let (_, found) = post_json(&node, &key, "/v1/retrieve", json!({"query": "hiddenword"})).await;
    assert_eq!(found["data"], json!([]), "{found}");

    for (body, status, code) in [
        // Addresses tools may never reach, in several spellings.
        (
            json!({"url": "http://169.254.169.254/latest/meta-data"}),
            403,
            "url_refused",
        ),
        (
            json!({"url": "http://[::ffff:169.254.169.254]/"}),
            403,
            "url_refused",
        ),
        (json!({"url": "http://0.0.0.0/"}), 403, "url_refused"),
        (json!({"url": "http://224.0.0.1/"}), 403, "url_refused"),
        // Redirected there, or off the web.
        (
            json!({"url": format!("{web}/to-metadata")}),
            502,
            "fetch_failed",
        ),
        (
            json!({"url": format!("{web}/to-file")}),
            502,
            "fetch_failed",
        ),
        (json!({"url": format!("{web}/loop")}), 502, "fetch_failed"),
        // Not a URL to fetch.
        (json!({"url": "file:///etc/passwd"}), 400, "invalid_request"),
        (
            json!({"url": "gopher://example.com/"}),
            400,
            "invalid_request",
        ),
        (json!({"url": "not a url"}), 400, "invalid_request"),
        (
            json!({"url": format!("{web}/page"), "depth": 2}),
            422,
            "invalid_request",
        ),
        (
            json!({"link": format!("{web}/page")}),
            422,
            "invalid_request",
        ),
        (json!({"url": "x".repeat(9_000)}), 400, "invalid_request"),
        // The server's answers.
        (
            json!({"url": format!("{web}/missing")}),
            502,
            "fetch_failed",
        ),
        (
            json!({"url": format!("{web}/declared-huge")}),
            413,
            "too_large",
        ),
        (
            json!({"url": format!("{web}/streamed-huge")}),
            413,
            "too_large",
        ),
        (json!({"url": format!("{web}/slow")}), 504, "fetch_timeout"),
        (json!({"url": "http://name.invalid/"}), 502, "fetch_failed"),
    ] {
        let (got, answer) = fetch(body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    // Refused for the reason given, not by accident.
    for (url, says) in [
        (
            format!("{web}/to-metadata"),
            "a redirect to 169.254.169.254 is link-local",
        ),
        (format!("{web}/loop"), "more than 5 redirects"),
        ("x".repeat(9_000), "8192"),
    ] {
        let (_, answer) = fetch(json!({ "url": url })).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{says}: {answer}");
    }
    let (status, body) = post_text(&node, &key, "/v1/documents", "").await;
    assert_eq!(status, 422, "an empty raw body: {body}");
    let (_, listed) = get(&node, &key, "/v1/documents").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");

    // Where tools may reach public addresses only, so may document fetches.
    let public_only = start_env(
        &data_dir(),
        SIM_CONFIG,
        &[("SWITCHYARD_TOOLS_PUBLIC_ONLY", "1")],
    );
    let (_, key, _) = tenant_with_key(&public_only).await;
    let port = web.rsplit(':').next().unwrap();
    for url in [
        format!("{web}/page"),
        format!("http://localhost:{port}/page"),
        format!("http://[::1]:{port}/page"),
        "http://10.0.0.1/".to_owned(),
    ] {
        let (status, body) =
            post_json(&public_only, &key, "/v1/documents", json!({"url": url})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("url_refused")),
            "{url}: {body}"
        );
    }
}

/// A multipart body without a length, whose preamble or part headers never end, is refused,
/// not buffered for as long as it comes.
#[tokio::test]
async fn a_multipart_body_without_a_length_is_bounded() {
    let dir = data_dir();
    let node = start(
        &dir,
        &format!("{SIM_CONFIG}\n[retrieval]\nmax_document_bytes = 65536\n"),
    );
    let (_, key, _) = tenant_with_key(&node).await;
    for head in [
        b"--b\r\ncontent-disposition: form-data; name=\"file\"; x=\"".to_vec(),
        Vec::new(),
    ] {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = std::iter::once(Ok(head))
            .chain((0..400).map(|_| Ok(vec![b'a'; 16 * 1024])))
            .collect();
        let response = reqwest::Client::new()
            .post(node.url("/v1/documents"))
            .bearer_auth(&key)
            .header("content-type", "multipart/form-data; boundary=b")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await;
        // The server may close the connection while the client still sends; when it answers,
        // it refuses: the parser (400) or the upload's bound (413).
        if let Ok(response) = response {
            let status = response.status().as_u16();
            assert!(status == 400 || status == 413, "{status}");
        }
    }
    let (status, listed) = get(&node, &key, "/v1/documents").await;
    assert_eq!((status, listed["data"].as_array().unwrap().len()), (200, 0));
}
