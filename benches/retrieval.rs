//! Ingestion throughput and retrieval latency (issue 18): not criterion, because the figures
//! asked for are throughput and p50/p99 at a scale criterion's repetitions cannot afford.
//!
//! - ingest: a generated Markdown corpus (~16 MiB of 16 KiB documents with headings and
//!   paragraphs) through what an upload does on the CPU: text extraction, chunking, and
//!   folding the chunks into a tenant's index (tantivy) with a commit per document; MB/s of
//!   source text. Embedding is not in it (the local model's own figure is in
//!   `benches/embeddings.rs`).
//! - scale: one tenant's index with N chunks (~40 words each, a Zipf-like vocabulary of 50,000
//!   words) and a 384-dimension unit vector per chunk (clustered like embeddings: one of 1,000
//!   random directions plus a random direction of 0.7 its length), then 300 queries per mode: p50 and p99 of keyword (BM25),
//!   vector and hybrid (both, fused by reciprocal rank) — once with the HNSW graph (the
//!   default past 20,000 vectors) and once by exact scan, and the graph's recall@5 against the
//!   scan on the same queries.
//!
//! `cargo bench -p switchyard-benches --bench retrieval` (N = 100,000 and 1,000,000; set
//! `SWITCHYARD_BENCH_CHUNKS=100000` for one size).
#![allow(
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "a benchmark binary: a panic is the failure report, stdout the report"
)]

use std::time::Instant;

use switchyard_events::{DocumentAdded, DocumentChunked, DocumentIndexed, Event};
use switchyard_retrieval::chunk::{ChunkOptions, chunk};
use switchyard_retrieval::extract::{self, Media};
use switchyard_retrieval::index::{TenantIndex, quantize};
use switchyard_retrieval::{Mode, Query};
use uuid::Uuid;

/// xorshift64*: a reproducible generator without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A word index with a Zipf-like skew (small indexes are common).
    fn word(&mut self, vocabulary: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((vocabulary as f64).powf(u) as u64).saturating_sub(1) % vocabulary
    }

    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn sentence(rng: &mut Rng, words: usize) -> String {
    (0..words)
        .map(|_| format!("w{}", rng.word(50_000)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn added(name: &str) -> Event {
    Event::DocumentAdded(DocumentAdded {
        name: name.into(),
        media_type: "text/markdown".into(),
        bytes: 0,
        content_hash: String::new(),
        source: "bench".into(),
        characters: 0,
    })
}

fn ingest(rng: &mut Rng) {
    let documents: Vec<String> = (0..1_024)
        .map(|d| {
            let mut doc = format!("# Document {d}\n\n");
            while doc.len() < 16 * 1024 {
                doc.push_str(&format!("## Section {}\n\n", rng.next() % 100));
                for _ in 0..3 {
                    doc.push_str(&sentence(rng, 60));
                    doc.push_str(".\n\n");
                }
            }
            doc
        })
        .collect();
    let bytes: usize = documents.iter().map(String::len).sum();
    let mut index = TenantIndex::new().expect("index");
    let started = Instant::now();
    let mut chunks = 0;
    for (d, doc) in documents.iter().enumerate() {
        let text = extract::text(Media::Markdown, doc.as_bytes()).expect("text");
        let cut = chunk(&text, ChunkOptions::default()).expect("chunks");
        chunks += cut.len();
        let id = Uuid::from_u128(d as u128);
        index.apply(id, &added("doc")).expect("apply");
        let chunked = Event::DocumentChunked(DocumentChunked {
            part: 1,
            parts: 1,
            chunks: cut.into_iter().map(Into::into).collect(),
        });
        index.apply(id, &chunked).expect("apply");
        index.commit().expect("commit");
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "ingest: {:.1} MiB in {} documents, {chunks} chunks, {seconds:.2} s: {:.1} MiB/s (extract + chunk + index, a commit per document)",
        bytes as f64 / (1 << 20) as f64,
        documents.len(),
        bytes as f64 / (1 << 20) as f64 / seconds
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

const DIMENSIONS: usize = 384;

/// A unit vector near one of `centroids` (a clustered corpus, as embeddings are).
fn clustered(rng: &mut Rng, centroids: &[Vec<f32>]) -> Vec<f32> {
    let centre = &centroids[(rng.next() % centroids.len() as u64) as usize];
    let noise = direction(rng);
    let raw: Vec<f32> = centre
        .iter()
        .zip(&noise)
        .map(|(c, e)| c + 0.7 * e)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    raw.into_iter().map(|x| x / norm).collect()
}

/// A random unit vector.
fn direction(rng: &mut Rng) -> Vec<f32> {
    let raw: Vec<f32> = (0..DIMENSIONS).map(|_| rng.unit()).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    raw.into_iter().map(|x| x / norm).collect()
}

fn scale(seed: u64, n: usize) {
    let mut rng = Rng(seed);
    let centroids: Vec<Vec<f32>> = (0..1_000).map(|_| direction(&mut rng)).collect();
    let (graph, _) = build(
        &mut Rng(seed ^ 1),
        n,
        &centroids,
        switchyard_retrieval::ANN_MIN_VECTORS,
    );
    let queries: Vec<(String, Vec<f32>)> = {
        let mut rng = Rng(seed ^ 2);
        (0..300)
            .map(|_| (sentence(&mut rng, 4), clustered(&mut rng, &centroids)))
            .collect()
    };
    let with_graph = measure(&graph, n, "graph", &queries);
    drop(graph);
    let (exact, _) = build(&mut Rng(seed ^ 1), n, &centroids, usize::MAX);
    let scanned = measure(&exact, n, "scan", &queries);
    let (mut found, mut wanted) = (0usize, 0usize);
    for (approximate, truth) in with_graph.iter().zip(&scanned) {
        wanted += truth.len();
        found += truth.iter().filter(|t| approximate.contains(t)).count();
    }
    println!(
        "scale {n}: the graph's vector recall@5 against the exact scan: {:.3} ({found}/{wanted})",
        found as f64 / wanted as f64
    );
}

/// Runs the queries in each mode; answers the vector mode's top 5 per query.
fn measure(
    index: &TenantIndex,
    n: usize,
    arm: &str,
    queries: &[(String, Vec<f32>)],
) -> Vec<Vec<(Uuid, u32)>> {
    let mut vector_hits = Vec::new();
    for mode in [Mode::Keyword, Mode::Vector, Mode::Hybrid] {
        if arm == "scan" && mode == Mode::Keyword {
            continue; // the same BM25 as the graph arm's
        }
        let mut times = Vec::new();
        for (text, vector) in queries {
            let query = Query {
                text,
                vector: Some(vector),
                k: 5,
                documents: None,
                mode,
            };
            let started = Instant::now();
            let hits = index.search(&query).expect("search");
            times.push(started.elapsed().as_secs_f64() * 1e3);
            if mode == Mode::Vector {
                vector_hits.push(hits.iter().map(|h| (h.document_id, h.chunk)).collect());
            }
            std::hint::black_box(hits);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "scale {n} {arm} {mode:?}: p50 {:.2} ms, p99 {:.2} ms (300 queries, k = 5)",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    vector_hits
}

/// One tenant's index of `n` chunks; its vectors get a graph from `graph_from` on.
fn build(rng: &mut Rng, n: usize, centroids: &[Vec<f32>], graph_from: usize) -> (TenantIndex, f64) {
    const PER_DOCUMENT: usize = 1_000;
    let mut index = TenantIndex::with_graph_from(graph_from).expect("index");
    let started = Instant::now();
    for d in 0..n.div_ceil(PER_DOCUMENT) {
        let id = Uuid::from_u128(d as u128 + 1);
        index.apply(id, &added(&format!("doc{d}"))).expect("apply");
        let count = PER_DOCUMENT.min(n - d * PER_DOCUMENT);
        let chunks = (0..count)
            .map(|i| switchyard_events::DocumentChunk {
                index: i as u32,
                text: sentence(rng, 40),
                start: 0,
                end: 0,
                heading_path: vec![format!("Section {}", i % 20)],
                tokens: 60,
            })
            .collect();
        index
            .apply(
                id,
                &Event::DocumentChunked(DocumentChunked {
                    part: 1,
                    parts: 1,
                    chunks,
                }),
            )
            .expect("apply");
        let vectors = (0..count)
            .map(|_| quantize(&clustered(rng, centroids)))
            .collect();
        index
            .apply(
                id,
                &Event::DocumentIndexed(DocumentIndexed {
                    model: "bench".into(),
                    dimensions: DIMENSIONS as u32,
                    first: 0,
                    vectors,
                }),
            )
            .expect("apply");
        if d % 50 == 49 {
            index.commit().expect("commit");
        }
    }
    index.commit().expect("commit");
    let took = started.elapsed().as_secs_f64();
    println!(
        "scale {n}: built in {took:.1} s ({} chunks, graph: {})",
        index.chunk_count(),
        index.approximate()
    );
    (index, took)
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    ingest(&mut rng);
    let seed = rng.next();
    let sizes: Vec<usize> = match std::env::var("SWITCHYARD_BENCH_CHUNKS") {
        Ok(n) => vec![n.parse().expect("SWITCHYARD_BENCH_CHUNKS is a number")],
        Err(_) => vec![100_000, 1_000_000],
    };
    for n in sizes {
        scale(seed, n);
    }
}
