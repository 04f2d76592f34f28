//! The local embedding model (all-MiniLM-L6-v2 through candle) on its real weights, which
//! `scripts/embedding-model.sh` unpacks and `scripts/test.sh` points to with
//! `SWITCHYARD_TEST_EMBEDDING_MODEL`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::path::PathBuf;

use switchyard_inference::providers::local::LocalEmbedder;

fn model_dir() -> PathBuf {
    let dir = std::env::var("SWITCHYARD_TEST_EMBEDDING_MODEL").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/switchyard-models/all-minilm-l6-v2")
    });
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("model.safetensors").exists(),
        "the embedding model is required in {} (run scripts/embedding-model.sh)",
        dir.display()
    );
    dir
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn paraphrases_are_close_and_unrelated_sentences_are_not() {
    let model = LocalEmbedder::load(&model_dir()).unwrap();
    assert_eq!(model.dimensions(), 384);
    let inputs: Vec<String> = [
        "How do I reset my password?",
        "I forgot my password, how can I change it?",
        "The weather in Paris is sunny today.",
        "What is the capital of France?",
        "Which city is France's capital?",
    ]
    .map(String::from)
    .to_vec();
    let (vectors, tokens) = model.embed(&inputs).unwrap();
    assert_eq!(vectors.len(), 5);
    assert!(tokens > 20, "{tokens}");
    for v in &vectors {
        assert_eq!(v.len(), 384);
        assert!((dot(v, v) - 1.0).abs() < 1e-4, "unit length");
    }
    let password = dot(&vectors[0], &vectors[1]);
    let capital = dot(&vectors[3], &vectors[4]);
    let unrelated = dot(&vectors[0], &vectors[2]);
    assert!(password > 0.7, "paraphrase similarity {password}");
    assert!(capital > 0.8, "paraphrase similarity {capital}");
    assert!(unrelated < 0.3, "unrelated similarity {unrelated}");
    assert!(dot(&vectors[3], &vectors[2]) < capital - 0.3);
}

#[test]
fn a_sentence_embeds_alike_alone_and_in_a_padded_batch_and_long_input_is_cut() {
    let model = LocalEmbedder::load(&model_dir()).unwrap();
    let short = "A short question about invoices.".to_owned();
    let long = "word ".repeat(2_000);
    let (alone, _) = model.embed(std::slice::from_ref(&short)).unwrap();
    let (batch, tokens) = model.embed(&[long.clone(), short.clone()]).unwrap();
    let drift: f32 = alone[0]
        .iter()
        .zip(&batch[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(drift < 1e-4, "padding changed the embedding by {drift}");
    // The long input is cut at the model's 256 tokens (with [CLS] and [SEP]).
    let (_, long_tokens) = model.embed(&[long]).unwrap();
    assert_eq!(long_tokens, 256);
    assert!(tokens > 256);
    // The same input, the same vector.
    assert_eq!(model.embed(std::slice::from_ref(&short)).unwrap().0, alone);
}

#[test]
fn a_folder_without_the_model_is_a_clear_error() {
    let empty = std::env::temp_dir().join(format!("no-model-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let error = LocalEmbedder::load(&empty).unwrap_err().to_string();
    assert!(
        error.contains("config.json") && error.contains("embedding-model.sh"),
        "{error}"
    );
    std::fs::write(empty.join("config.json"), "{not json").unwrap();
    assert!(LocalEmbedder::load(&empty).is_err());
}
