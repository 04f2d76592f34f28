//! The local embedding model (all-MiniLM-L6-v2 through candle) on this machine's CPU: sentences
//! per second one at a time (what the semantic cache pays per question) and in batches of 32
//! (what `/v1/embeddings` and ingestion pay per input), on short questions and on
//! paragraph-length inputs. The model comes from `scripts/embedding-model.sh`
//! (`SWITCHYARD_EMBEDDING_MODEL_DIR`, or its default folder).
//!
//! Run: `cargo bench -p switchyard-benches --bench embeddings`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_inference::providers::local::LocalEmbedder;

fn model_dir() -> PathBuf {
    let dir = std::env::var("SWITCHYARD_EMBEDDING_MODEL_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/switchyard-models/all-minilm-l6-v2",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    PathBuf::from(dir)
}

fn sentences(n: usize, words: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            (0..words)
                .map(|w| {
                    [
                        "invoice", "password", "model", "tenant", "cache", "router", "budget",
                    ][(i + w) % 7]
                })
                .collect::<Vec<_>>()
                .join(" ")
                + &format!(" question {i}?")
        })
        .collect()
}

fn embeddings(c: &mut Criterion) {
    let model = LocalEmbedder::load(&model_dir()).unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("all-MiniLM-L6-v2");
    group.sample_size(20);
    for (name, words) in [
        ("question (12 tokens)", 8),
        ("paragraph (~130 tokens)", 120),
    ] {
        let one = sentences(1, words);
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("one {name}"), |b| {
            b.iter(|| {
                black_box(
                    model
                        .embed(black_box(&one))
                        .unwrap_or_else(|e| panic!("{e}")),
                )
            });
        });
        let batch = sentences(32, words);
        group.throughput(Throughput::Elements(32));
        group.bench_function(format!("batch of 32, {name}"), |b| {
            b.iter(|| {
                black_box(
                    model
                        .embed(black_box(&batch))
                        .unwrap_or_else(|e| panic!("{e}")),
                )
            });
        });
    }
    group.finish();
}

criterion_group!(benches, embeddings);
criterion_main!(benches);
