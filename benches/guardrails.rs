//! What a tenant's guardrails cost per request, the checks alone (no HTTP, no log): the input
//! rules on a clean prompt and on one with four kinds of PII to redact, the output rules on a
//! whole answer, and a 40-chunk stream through the output guard. The policy is the one
//! `benches/gateway/overhead.py` gives its guardrail arms, so the two figures can be compared:
//! what the checks cost here, and what the whole request pays there (the checks, the request's
//! copy, and two more events in the inference's append).
//!
//! Run: `cargo bench -p switchyard-benches --bench guardrails`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use switchyard_inference::guard::{Guard, StreamGuard};
use switchyard_inference::openai::ChatRequest;

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn policy() -> Guard {
    ok(Guard::compile(
        &json!({
            "pii": {"names": ["Ada Lovelace", "Alan Turing", "Grace Hopper"]},
            "topics": [
                {"name": "weapons", "keywords": ["nerve agent", "dirty bomb"], "patterns": ["(?i)build an? bomb"]},
                {"name": "secret", "keywords": ["project bluebird"]},
                {"name": "self-harm", "patterns": ["(?i)\\bhurt (myself|me)\\b"]}
            ],
            "max_prompt_chars": 20000
        })
        .to_string(),
    ))
}

fn chat(text: &str) -> ChatRequest {
    ok(serde_json::from_value(
        json!({"model": "mock", "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": text}]}),
    ))
}

fn guardrails(c: &mut Criterion) {
    let guard = Arc::new(policy());
    let clean = chat("Say hello and tell me what the weather is like in Paris this weekend.");
    let pii = chat(
        "Say hello to Ada Lovelace at ada@example.com, card 4111 1111 1111 1111, from 10.1.2.3",
    );
    c.bench_function("guardrails: input, clean prompt", |b| {
        b.iter(|| {
            let mut request = clean.clone();
            black_box(guard.check_input(&mut request))
        });
    });
    c.bench_function("guardrails: input, four PII kinds redacted", |b| {
        b.iter(|| {
            let mut request = pii.clone();
            black_box(guard.check_input(&mut request))
        });
    });
    c.bench_function("guardrails: clone of the request alone", |b| {
        b.iter(|| black_box(clean.clone()));
    });
    let answer: Vec<Value> = vec![json!({"index": 0, "message": {"role": "assistant",
        "content": "Hello! This weekend in Paris looks mild and dry, with sunny spells on Saturday and a few clouds on Sunday; take a light jacket for the evenings."},
        "finish_reason": "stop"})];
    c.bench_function("guardrails: output, whole answer", |b| {
        b.iter(|| {
            let mut choices = answer.clone();
            black_box(guard.check_output(&mut choices))
        });
    });
    let words: Vec<String> = "Hello! This weekend in Paris looks mild and dry, with sunny spells on Saturday and a few clouds on Sunday; take a light jacket for the evenings and enjoy the walk along the river before the museums open on Sunday morning."
        .split_inclusive(' ')
        .map(str::to_owned)
        .collect();
    c.bench_function("guardrails: output, a 40-chunk stream", |b| {
        b.iter(|| {
            let mut stream = StreamGuard::new(guard.clone());
            for (i, word) in words.iter().enumerate() {
                let finish = if i + 1 == words.len() {
                    json!("stop")
                } else {
                    Value::Null
                };
                let mut choices =
                    vec![json!({"index": 0, "delta": {"content": word}, "finish_reason": finish})];
                ok(stream.filter(&mut choices));
                black_box(&choices);
            }
        });
    });
}

criterion_group!(benches, guardrails);
criterion_main!(benches);
