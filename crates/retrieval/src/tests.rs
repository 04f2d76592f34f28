//! The library end to end on the in-memory log: documents through their actor, folded on two
//! "nodes", searched by keyword, vector and both; isolation, deletion, filters, hostile queries
//! and recall@5 on a generated labelled set.

use std::sync::Arc;
use std::time::Duration;

use switchyard_actors::{Runtime, RuntimeConfig};
use switchyard_events::{
    DocumentAdded, DocumentIndexed, EventStore, GlobalPosition, MemoryStore, Metadata, Scope,
    TenantId,
};
use uuid::Uuid;

use crate::chunk::{ChunkOptions, chunk};
use crate::document::{Document, DocumentCommand, DocumentKey, parts};
use crate::index::quantize;
use crate::{Library, Mode, Query};

/// A toy embedding for the mechanics (hashed bag of words): the real model is tested through
/// the binary.
fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; 64];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
    {
        let h = blake3::hash(word.to_lowercase().as_bytes());
        v[usize::from(h.as_bytes()[0]) % 64] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.into_iter().map(|x| x / norm).collect()
}

struct World {
    store: Arc<dyn EventStore>,
    documents: Runtime<Document>,
}

impl World {
    fn new() -> World {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        World {
            documents: Runtime::new(store.clone(), RuntimeConfig::default()),
            store,
        }
    }

    async fn ingest(&self, tenant: TenantId, name: &str, text: &str) -> Uuid {
        let (key, hash) = DocumentKey::of(tenant, text.as_bytes());
        let send = |command| self.documents.send(&key, command, Metadata::default());
        send(DocumentCommand::Add(DocumentAdded {
            name: name.into(),
            media_type: "text/markdown".into(),
            bytes: text.len() as u64,
            content_hash: hash,
            source: "upload".into(),
            characters: text.chars().count() as u64,
        }))
        .await
        .unwrap();
        let chunks = chunk(text, ChunkOptions::default()).unwrap();
        let vectors: Vec<Vec<i16>> = chunks.iter().map(|c| quantize(&embed(&c.text))).collect();
        for part in parts(chunks, 4_096) {
            send(DocumentCommand::Chunk(part)).await.unwrap();
        }
        send(DocumentCommand::Index(DocumentIndexed {
            model: "toy".into(),
            dimensions: 64,
            first: 0,
            vectors,
        }))
        .await
        .unwrap();
        key.id
    }

    async fn delete(&self, tenant: TenantId, id: Uuid) {
        let key = DocumentKey { tenant, id };
        self.documents
            .send(
                &key,
                DocumentCommand::Delete {
                    reason: "test".into(),
                },
                Metadata::default(),
            )
            .await
            .unwrap();
    }

    /// A node's library, fed the whole log.
    async fn node(&self) -> Arc<Library> {
        let library = Library::start();
        self.feed(&library).await;
        library
    }

    async fn feed(&self, library: &Library) {
        let events = self
            .store
            .read_all(Scope::All, GlobalPosition::START, 1_000_000)
            .await
            .unwrap();
        for event in &events {
            library.offer(event);
        }
        let head = self.store.head().await.unwrap();
        assert!(library.wait_for(head, Duration::from_secs(10)).await);
    }
}

fn ask<'a>(text: &'a str, vector: Option<&'a [f32]>, mode: Mode) -> Query<'a> {
    Query {
        text,
        vector,
        k: 5,
        documents: None,
        mode,
    }
}

const HANDBOOK: &str = "# Handbook\n\n## Refunds\n\nRefunds are issued within 14 days of a return.\n\n## Travel\n\nBook trains for trips under 500 km.\n";

#[tokio::test]
async fn tenants_never_see_each_others_chunks() {
    let world = World::new();
    let (a, b, c) = (TenantId::new(), TenantId::new(), TenantId::new());
    let in_a = world.ingest(a, "a.md", HANDBOOK).await;
    let in_b = world
        .ingest(b, "b.md", &HANDBOOK.replace("14 days", "30 days"))
        .await;
    let library = world.node().await;
    for (tenant, own, other) in [(a, in_a, in_b), (b, in_b, in_a)] {
        let q = embed("refunds");
        for mode in [Mode::Keyword, Mode::Vector, Mode::Hybrid] {
            let hits = library
                .search(tenant, &ask("refunds", Some(&q), mode))
                .unwrap();
            assert!(!hits.is_empty(), "{mode:?}");
            assert!(
                hits.iter()
                    .all(|h| h.document_id == own && h.document_id != other)
            );
        }
    }
    assert!(
        library
            .search(c, &ask("refunds", None, Mode::Keyword))
            .unwrap()
            .is_empty()
    );
    let top = &library
        .search(a, &ask("refunds", None, Mode::Keyword))
        .unwrap()[0];
    assert_eq!(top.heading_path, ["Handbook", "Refunds"]);
    assert_eq!(&HANDBOOK[top.start as usize..top.end as usize], top.text);
    assert_eq!(top.document, "a.md");
}

#[tokio::test]
async fn a_deleted_document_is_never_found_again_and_two_nodes_agree() {
    let world = World::new();
    let tenant = TenantId::new();
    let keep = world
        .ingest(tenant, "keep.md", "# Keep\n\nThe archive keeps invoices.\n")
        .await;
    let gone = world.ingest(tenant, "gone.md", HANDBOOK).await;
    let before = world.node().await;
    let q = embed("refunds issued");
    assert!(
        before
            .search(tenant, &ask("refunds issued", Some(&q), Mode::Hybrid))
            .unwrap()
            .iter()
            .any(|h| h.document_id == gone)
    );
    world.delete(tenant, gone).await;
    world.feed(&before).await;
    let fresh = world.node().await;
    for library in [&before, &fresh] {
        for mode in [Mode::Keyword, Mode::Vector, Mode::Hybrid] {
            let hits = library
                .search(tenant, &ask("refunds issued travel", Some(&q), mode))
                .unwrap();
            assert!(
                hits.iter().all(|h| h.document_id == keep),
                "{mode:?} {hits:?}"
            );
        }
        let listed: Vec<Uuid> = library.documents(tenant).iter().map(|d| d.id).collect();
        assert_eq!(listed, [keep]);
    }
    // The same question on two nodes: the same answer.
    let a = before
        .search(tenant, &ask("archive invoices", Some(&q), Mode::Hybrid))
        .unwrap();
    let b = fresh
        .search(tenant, &ask("archive invoices", Some(&q), Mode::Hybrid))
        .unwrap();
    assert_eq!(a, b);
    // Added again after deletion (the same bytes, so the same id): found again.
    assert_eq!(world.ingest(tenant, "gone.md", HANDBOOK).await, gone);
    world.feed(&fresh).await;
    assert!(
        fresh
            .search(tenant, &ask("refunds", None, Mode::Keyword))
            .unwrap()
            .iter()
            .any(|h| h.document_id == gone)
    );
}

#[tokio::test]
async fn filters_and_hostile_queries() {
    let world = World::new();
    let tenant = TenantId::new();
    let one = world.ingest(tenant, "one.md", HANDBOOK).await;
    let two = world
        .ingest(
            tenant,
            "two.md",
            "# Other\n\nRefunds at the other shop take a week.\n",
        )
        .await;
    let library = world.node().await;
    let only = [two];
    let hits = library
        .search(
            tenant,
            &Query {
                documents: Some(&only),
                ..ask("refunds", None, Mode::Keyword)
            },
        )
        .unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h.document_id == two));
    assert!(hits.iter().all(|h| h.document_id != one));
    for hostile in [
        "",
        "\"unclosed",
        "AND OR NOT (((",
        "text:refunds^999 headings:[a TO z]",
        "*",
        &"refunds ".repeat(5_000),
        "\u{0}\u{1}💥",
    ] {
        let hits = library.search(tenant, &ask(hostile, None, Mode::Keyword));
        assert!(hits.is_ok(), "{hostile:?}: {hits:?}");
    }
    // A mode that needs a vector, without one: a clear error.
    assert!(
        library
            .search(tenant, &ask("refunds", None, Mode::Hybrid))
            .is_err()
    );
    assert!(
        library
            .search(TenantId::new(), &ask("refunds", None, Mode::Vector))
            .is_err()
    );
    let none = library.search(
        tenant,
        &Query {
            k: 0,
            ..ask("refunds", None, Mode::Keyword)
        },
    );
    assert!(none.unwrap().is_empty());
}

/// A generated labelled set: 40 documents about made-up products, each question answered by
/// one section of one document. With the toy embedding this checks the plumbing of the three
/// modes (the real model's figures are in the black-box test).
#[tokio::test]
async fn recall_at_5_on_a_generated_labelled_set() {
    let world = World::new();
    let tenant = TenantId::new();
    let mut truth = Vec::new();
    for i in 0..40 {
        let doc = format!(
            "# Product zeta{i}\n\n## Warranty\n\nThe zeta{i} warranty lasts {} months and covers the battery.\n\n## Shipping\n\nThe zeta{i} ships from warehouse w{i} within {} days.\n",
            12 + i,
            2 + i % 5
        );
        let id = world.ingest(tenant, &format!("zeta{i}.md"), &doc).await;
        truth.push((
            format!("how long is the warranty of zeta{i}"),
            id,
            "Warranty",
        ));
        truth.push((format!("which warehouse ships zeta{i}"), id, "Shipping"));
    }
    let library = world.node().await;
    for mode in [Mode::Keyword, Mode::Vector, Mode::Hybrid] {
        let found = truth
            .iter()
            .filter(|(question, id, section)| {
                let v = embed(question);
                library
                    .search(tenant, &ask(question, Some(&v), mode))
                    .unwrap()
                    .iter()
                    .any(|h| {
                        h.document_id == *id
                            && h.heading_path.last().map(String::as_str) == Some(*section)
                    })
            })
            .count();
        let recall = found as f64 / truth.len() as f64;
        assert!(recall >= 0.8, "{mode:?}: recall@5 {recall}");
    }
}

/// The vector scan keeps the best `depth` by a bounded heap over a flat matrix whose rows move
/// when a document goes: each chunk's own vector must still find that chunk first, and the
/// order must equal a full sort.
#[tokio::test]
async fn the_vector_scan_equals_a_full_sort_after_deletions() {
    let world = World::new();
    let tenant = TenantId::new();
    let mut ids = Vec::new();
    for i in 0..12 {
        let text = format!(
            "# Doc {i}\n\nalpha{i} beta{} gamma{}\n\ndelta{} epsilon{i} zeta\n",
            i * 7,
            i % 3,
            i * 11
        );
        ids.push((world.ingest(tenant, &format!("d{i}.md"), &text).await, text));
    }
    for (id, _) in ids.iter().step_by(3) {
        world.delete(tenant, *id).await;
    }
    let library = world.node().await;
    for (i, (id, text)) in ids.iter().enumerate() {
        let first = chunk(text, ChunkOptions::default()).unwrap().remove(0);
        let v = embed(&first.text);
        let hits = library
            .search(
                tenant,
                &Query {
                    k: 50,
                    ..ask("", Some(&v), Mode::Vector)
                },
            )
            .unwrap();
        if i % 3 == 0 {
            assert!(hits.iter().all(|h| h.document_id != *id), "deleted {i}");
            continue;
        }
        assert_eq!(hits[0].document_id, *id, "{i}: {hits:?}");
        assert!((hits[0].score - 1.0).abs() < 1e-3, "{}", hits[0].score);
        let mut sorted = hits.clone();
        sorted.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then((a.document_id, a.chunk).cmp(&(b.document_id, b.chunk)))
        });
        assert_eq!(hits, sorted);
    }
}
