//! The simulated provider: answers made of words picked deterministically from the prompt (the
//! same request gets the same text), after a latency drawn from the model's distribution,
//! failing at the model's rate. It is a simulator and says so: every answer's model is the
//! simulated model's name, and the text is visibly synthetic.
//!
//! **Verifiable tasks** ([`super::verifiable`]): arithmetic, extraction to JSON and sentiment
//! classification. Such a prompt is answered right with probability σ(ability − difficulty)
//! (the model's ability for the task's family, the prompt's latent difficulty), or with its
//! `quality` when it has no ability for the family; otherwise wrongly (a number off by 1 to 9,
//! a field changed, another label), drawn deterministically from the request. An exact scorer
//! (`switchyard eval`) therefore measures a simulated model's quality from outside, with no
//! secret channel.
//!
//! **Frameworks' structured output and agents** ([`reply`]): with `response_format`
//! `json_schema` the answer is a value that fits the schema ([`schema`]); with tools offered the
//! model calls the ones the prompt is about, with arguments that fit their parameters, and
//! answers from the tool results once they come back ([`tools`]). All of it is drawn from the
//! request, so the same request gets the same answer.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use rand::Rng;
use serde_json::{Value, json};

mod reply;
mod schema;
mod source;
mod text;
mod tools;

use reply::reply;

use super::verifiable::{self, Family, Verifiable};
use super::{ChunkStream, Completion, Embeddings, Provider, ProviderError, StreamEvent, Usage};
use crate::config::{ModelConfig, SimModel};
use crate::openai::ChatRequest;

const WORDS: &[&str] = &[
    "the",
    "switchyard",
    "simulator",
    "answers",
    "with",
    "words",
    "chosen",
    "from",
    "your",
    "prompt",
    "so",
    "that",
    "tests",
    "and",
    "benchmarks",
    "see",
    "the",
    "same",
    "text",
    "every",
    "time",
    "routing",
    "budget",
    "tokens",
    "latency",
    "quality",
    "model",
    "event",
    "log",
    "replay",
    "tenant",
    "stream",
];

/// The simulator (one instance serves every simulated model).
#[derive(Debug, Clone, Copy)]
pub struct Simulator;

fn knobs(model: &ModelConfig) -> SimModel {
    model.sim.unwrap_or(SimModel {
        latency_ms: 0,
        jitter_ms: 0,
        failure_rate: 0.0,
        quality: 0.5,
        max_answer_tokens: 64,
        min_answer_tokens: 1,
        ability: crate::config::Abilities::default(),
    })
}

/// The words of choice `index`, and whether the cap cut them (`finish_reason` "length").
pub fn answer_words(
    model: &ModelConfig,
    request: &ChatRequest,
    index: u32,
) -> (Vec<&'static str>, bool) {
    let mut hasher = blake3::Hasher::new();
    hasher.update(model.name.as_bytes());
    for message in &request.messages {
        hasher.update(message.text().as_bytes());
        hasher.update(&[0]);
    }
    hasher.update(&index.to_le_bytes());
    let digest = hasher.finalize();
    let bytes = digest.as_bytes();
    let sim = knobs(model);
    let fewest = sim.min_answer_tokens.max(1);
    let spread = sim.max_answer_tokens.max(fewest) - fewest + 1;
    let natural = fewest + u64::from(u16::from_le_bytes([bytes[0], bytes[1]])) % spread;
    let cap = request.output_cap().unwrap_or(u64::MAX);
    let count = natural.min(cap);
    let mut reader = blake3::Hasher::new_keyed(digest.as_bytes()).finalize_xof();
    let mut words = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut byte = [0u8; 1];
    for _ in 0..count {
        reader.fill(&mut byte);
        words.push(WORDS[usize::from(byte[0]) % WORDS.len()]);
    }
    (words, natural > cap)
}

/// The chance that `model` answers the verifiable task in `request` right (`None`: the request
/// holds none): σ(ability − difficulty) when the model has an ability for the task's family,
/// else its `quality` (see [`super::verifiable`]).
pub fn chance_correct(model: &ModelConfig, request: &ChatRequest) -> Option<f64> {
    let task = verifiable::read(request)?;
    Some(chance_of(model, request, &task))
}

/// The chance that `model` answers the verifiable task in `request` right, averaged over the
/// part of its difficulty the request does not show (`None`: the request holds no task).
pub fn expected_chance(model: &ModelConfig, request: &ChatRequest) -> Option<f64> {
    let task = verifiable::read(request)?;
    let sim = knobs(model);
    Some(match ability(&sim, task.family) {
        Some(ability) => verifiable::expected_chance(
            ability,
            verifiable::visible_difficulty(task.family, request),
        ),
        None => sim.quality,
    })
}

fn ability(sim: &SimModel, family: Family) -> Option<f64> {
    match family {
        Family::Arithmetic => sim.ability.arithmetic,
        Family::Extraction => sim.ability.extraction,
        Family::Classification => sim.ability.classification,
    }
}

fn chance_of(model: &ModelConfig, request: &ChatRequest, task: &Verifiable) -> f64 {
    let sim = knobs(model);
    match ability(&sim, task.family) {
        Some(ability) => {
            verifiable::logistic(ability - verifiable::difficulty(task.family, request))
        }
        None => sim.quality,
    }
}

/// A verifiable task's answer (see the module docs), or `None` when the request is not one.
pub fn verifiable_answer(model: &ModelConfig, request: &ChatRequest, index: u32) -> Option<String> {
    let task = verifiable::read(request)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"verifiable");
    hasher.update(model.name.as_bytes());
    for message in &request.messages {
        hasher.update(message.text().as_bytes());
        hasher.update(&[0]);
    }
    hasher.update(&index.to_le_bytes());
    let digest = hasher.finalize();
    let bytes = digest.as_bytes();
    let draw = u64::from_le_bytes(bytes[..8].try_into().ok()?) as f64 / (u64::MAX as f64 + 1.0);
    let answer = if draw < chance_of(model, request, &task) {
        task.right
    } else {
        verifiable::wrong(&task, &bytes[8..])
    };
    Some(match answer {
        Value::String(text) => text,
        other => other.to_string(),
    })
}

/// The grading prompt of `switchyard eval`'s LLM judge (see `judge_prompt`).
const JUDGE_MARK: &str = "You are an impartial grader.";

/// A simulated judge's verdict: the share of the reference answer's words found in the output,
/// so that a judged eval on simulated models has a score known in advance.
fn simulated_verdict(prompt: &str) -> Option<String> {
    if !prompt.starts_with(JUDGE_MARK) {
        return None;
    }
    let section = |start: &str, end: &str| -> Option<String> {
        let from = prompt.find(start)? + start.len();
        let to = prompt[from..].find(end)? + from;
        Some(prompt[from..to].to_lowercase())
    };
    let reference = section("REFERENCE ANSWER:\n", "\n\nOUTPUT:\n")?;
    let output = section("\n\nOUTPUT:\n", "\n\nGrade only the OUTPUT")?;
    let words = |text: &str| -> std::collections::BTreeSet<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let wanted = words(&reference);
    let found = words(&output);
    let score = if wanted.is_empty() {
        0.0
    } else {
        wanted.intersection(&found).count() as f64 / wanted.len() as f64
    };
    Some(format!(
        "SCORE: {score:.2}\nREASON: simulated judge: share of the reference answer's words in the output"
    ))
}

fn latency(sim: &SimModel) -> Duration {
    let jitter = if sim.jitter_ms == 0 {
        0i64
    } else {
        let spread = i64::try_from(sim.jitter_ms).unwrap_or(i64::MAX);
        rand::rng().random_range(-spread..=spread)
    };
    let ms = i64::try_from(sim.latency_ms)
        .unwrap_or(i64::MAX)
        .saturating_add(jitter);
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn maybe_fail(sim: &SimModel) -> Result<(), ProviderError> {
    if sim.failure_rate > 0.0 && rand::rng().random_bool(sim.failure_rate) {
        return Err(ProviderError {
            status: 503,
            ..ProviderError::retryable(
                "upstream_unavailable",
                "the simulator failed this call (its configured failure rate)",
            )
        });
    }
    Ok(())
}

fn prompt_tokens(request: &ChatRequest) -> u64 {
    request.estimate_prompt_tokens()
}

impl Provider for Simulator {
    fn chat<'a>(
        &'a self,
        model: &'a ModelConfig,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let sim = knobs(model);
            let wait = latency(&sim);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            maybe_fail(&sim)?;
            let mut completion_tokens = 0;
            let mut choices = Vec::new();
            for index in 0..request.choices() {
                let answer = reply(model, request, index)?;
                completion_tokens += answer.tokens();
                choices.push(json!({
                    "index": index,
                    "message": answer.message(),
                    "finish_reason": answer.finish_reason(),
                    "logprobs": null,
                }));
            }
            Ok(Completion {
                choices,
                usage: Usage {
                    prompt_tokens: prompt_tokens(request),
                    completion_tokens,
                },
            })
        })
    }

    fn chat_stream<'a>(
        &'a self,
        model: &'a ModelConfig,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            let sim = knobs(model);
            maybe_fail(&sim)?;
            let total = latency(&sim);
            let mut events: Vec<StreamEvent> = Vec::new();
            let mut completion_tokens = 0;
            let mut answers = Vec::new();
            for index in 0..request.choices() {
                let answer = reply(model, request, index)?;
                completion_tokens += answer.tokens();
                answers.push((index, answer.deltas(), answer.finish_reason()));
            }
            let longest = answers.iter().map(|(_, d, _)| d.len()).max().unwrap_or(0);
            for (index, _, _) in &answers {
                events.push(StreamEvent::Choices(vec![json!({
                    "index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": null,
                })]));
            }
            // The choices' pieces interleave, as a model's parallel choices do.
            for step in 0..longest {
                for (index, deltas, _) in &answers {
                    if let Some(delta) = deltas.get(step) {
                        events.push(StreamEvent::Choices(vec![json!({
                            "index": index, "delta": delta, "finish_reason": null,
                        })]));
                    }
                }
            }
            for (index, _, finish) in &answers {
                events.push(StreamEvent::Choices(vec![json!({
                    "index": index, "delta": {}, "finish_reason": finish,
                })]));
            }
            events.push(StreamEvent::Usage(Usage {
                prompt_tokens: prompt_tokens(request),
                completion_tokens,
            }));
            // The latency is spread over the chunks: a first token, then a steady pace.
            let pause = total / u32::try_from(events.len().max(1)).unwrap_or(u32::MAX);
            let stream = futures_util::stream::iter(events).then(move |event| async move {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                Ok(event)
            });
            Ok(stream.boxed())
        })
    }

    fn embed<'a>(
        &'a self,
        model: &'a ModelConfig,
        inputs: &'a [String],
        dimensions: Option<u32>,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        Box::pin(async move {
            let sim = knobs(model);
            maybe_fail(&sim)?;
            let default = crate::openai::DEFAULT_EMBEDDING_DIMENSIONS;
            let dimensions = usize::try_from(dimensions.unwrap_or(default)).unwrap_or(64);
            let vectors = inputs
                .iter()
                .map(|input| {
                    let mut reader = blake3::Hasher::new()
                        .update(model.name.as_bytes())
                        .update(input.as_bytes())
                        .finalize_xof();
                    let mut raw = vec![0u8; dimensions * 2];
                    reader.fill(&mut raw);
                    let mut vector: Vec<f32> = raw
                        .chunks_exact(2)
                        .map(|pair| f32::from(i16::from_le_bytes([pair[0], pair[1]])) / 32_768.0)
                        .collect();
                    let norm = vector
                        .iter()
                        .map(|x| x * x)
                        .sum::<f32>()
                        .sqrt()
                        .max(f32::EPSILON);
                    vector.iter_mut().for_each(|x| *x /= norm);
                    vector
                })
                .collect();
            let prompt_tokens = inputs
                .iter()
                .map(|i| (i.chars().count() as u64).div_ceil(4))
                .sum();
            Ok(Embeddings {
                vectors,
                prompt_tokens,
            })
        })
    }
}

#[cfg(test)]
mod tests;
