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

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use rand::Rng;
use serde_json::{Value, json};

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

/// The answer's text: a judge's verdict, a verifiable task's answer, or the words.
fn content(request: &ChatRequest, words: &[&str], verifiable: Option<&str>) -> String {
    if let Some(verdict) = request
        .messages
        .last()
        .and_then(|m| simulated_verdict(&m.text()))
    {
        return verdict;
    }
    // An extraction's answer is a JSON object already.
    if let Some(answer) = verifiable.filter(|v| v.starts_with('{')) {
        return answer.to_owned();
    }
    let text = verifiable.map_or_else(|| words.join(" "), str::to_owned);
    let json_mode = request
        .response_format
        .as_ref()
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t == "json_object" || t == "json_schema");
    if json_mode {
        json!({ "answer": text }).to_string()
    } else {
        text
    }
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
            let choices = (0..request.choices())
                .map(|index| {
                    let (words, cut) = answer_words(model, request, index);
                    let verifiable = verifiable_answer(model, request, index);
                    completion_tokens += if verifiable.is_some() { 1 } else { words.len() as u64 };
                    json!({
                        "index": index,
                        "message": {"role": "assistant", "content": content(request, &words, verifiable.as_deref())},
                        "finish_reason": if cut { "length" } else { "stop" },
                        "logprobs": null,
                    })
                })
                .collect();
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
            let mut longest = 0;
            let answers: Vec<_> = (0..request.choices())
                .map(|index| {
                    let (words, cut) = answer_words(model, request, index);
                    let verifiable = verifiable_answer(model, request, index);
                    // A verifiable answer streams as one piece of one token.
                    let (words, cut) = if verifiable.is_some() {
                        (vec!["x"], false)
                    } else {
                        (words, cut)
                    };
                    completion_tokens += words.len() as u64;
                    longest = longest.max(words.len());
                    (index, words, cut, verifiable)
                })
                .collect();
            let json_mode = content(request, &["x"], None) != "x";
            for (index, _, _, _) in &answers {
                events.push(StreamEvent::Choices(vec![json!({
                    "index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": null,
                })]));
            }
            for step in 0..longest {
                for (index, words, _, verifiable) in &answers {
                    if let Some(word) = words.get(step) {
                        let piece = if json_mode || verifiable.is_some() {
                            // A JSON or verifiable answer streams whole: its pieces would not be
                            // JSON, or a number, themselves.
                            if step == 0 {
                                content(request, words, verifiable.as_deref())
                            } else {
                                continue;
                            }
                        } else if step == 0 {
                            (*word).to_owned()
                        } else {
                            format!(" {word}")
                        };
                        events.push(StreamEvent::Choices(vec![json!({
                            "index": index, "delta": {"content": piece}, "finish_reason": null,
                        })]));
                    }
                }
            }
            for (index, _, cut, _) in &answers {
                events.push(StreamEvent::Choices(vec![json!({
                    "index": index, "delta": {}, "finish_reason": if *cut { "length" } else { "stop" },
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
mod tests {
    use super::*;
    use crate::config::Config;

    fn request(max_tokens: Option<u64>) -> ChatRequest {
        serde_json::from_value(json!({
            "model": "sim-small",
            "messages": [{"role": "user", "content": "tell me about event sourcing"}],
            "max_tokens": max_tokens,
        }))
        .unwrap()
    }

    fn ask(text: &str) -> ChatRequest {
        serde_json::from_value(json!({
            "model": "sim-small",
            "messages": [{"role": "user", "content": text}],
        }))
        .unwrap()
    }

    /// The `quality` knob is what an exact scorer measures (issue 16, item 1: it was read
    /// nowhere): over 2,000 arithmetic questions a model of quality q answers about q of them
    /// right, every answer is a number, and a wrong one is off by 1 to 9. Streamed answers are
    /// the same numbers.
    #[tokio::test]
    async fn arithmetic_questions_are_answered_right_at_the_quality_rate() {
        let config = Config::default();
        for (quality, name) in [(0.3, "sim-small"), (0.85, "sim-large")] {
            let mut model = config.model(name).unwrap().clone();
            model.sim = Some(SimModel {
                latency_ms: 0,
                jitter_ms: 0,
                quality,
                ..model.sim.unwrap()
            });
            let mut right = 0;
            for i in 0..2_000i64 {
                let (a, b) = (i * 7 % 113, i * 13 % 97);
                let question = ask(&format!("What is {a} + {b}? Answer with the number only."));
                let answer = Simulator.chat(&model, &question).await.unwrap();
                let text = answer.choices[0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let number: i64 = text.parse().unwrap_or_else(|_| panic!("{text:?}"));
                if number == a + b {
                    right += 1;
                } else {
                    assert!((1..=9).contains(&(number - (a + b)).abs()), "{number}");
                }
                if i < 20 {
                    let stream = Simulator.chat_stream(&model, &question).await.unwrap();
                    let streamed: String = stream
                        .filter_map(|e| async move {
                            match e.unwrap() {
                                StreamEvent::Choices(c) => {
                                    c[0]["delta"]["content"].as_str().map(str::to_owned)
                                }
                                StreamEvent::Usage(_) => None,
                            }
                        })
                        .collect()
                        .await;
                    assert_eq!(streamed, text);
                }
            }
            let rate = f64::from(right) / 2_000.0;
            assert!(
                (rate - quality).abs() < 0.035,
                "{name}: {rate} for quality {quality}"
            );
        }
        // Other words around the operator, and what is not a question.
        let model = config.model("sim-small").unwrap();
        assert!(verifiable_answer(model, &ask("compute 6 times 7"), 0).is_some());
        assert!(verifiable_answer(model, &ask("12 minus 5 please"), 0).is_some());
        assert!(verifiable_answer(model, &ask("tell me about event sourcing"), 0).is_none());
    }

    #[tokio::test]
    async fn the_same_prompt_gets_the_same_answer_and_the_cap_cuts_it() {
        let config = Config::default();
        let mut model = config.model("sim-small").unwrap().clone();
        model.sim = Some(SimModel {
            latency_ms: 0,
            jitter_ms: 0,
            ..model.sim.unwrap()
        });
        let first = Simulator.chat(&model, &request(None)).await.unwrap();
        let second = Simulator.chat(&model, &request(None)).await.unwrap();
        assert_eq!(first.choices, second.choices);
        assert!(first.usage.completion_tokens >= 1);
        let capped = Simulator.chat(&model, &request(Some(1))).await.unwrap();
        assert_eq!(capped.usage.completion_tokens, 1);
        // A stream carries the same words and the same usage.
        let stream = Simulator.chat_stream(&model, &request(None)).await.unwrap();
        let events: Vec<_> = stream.collect().await;
        let mut text = String::new();
        let mut usage = None;
        for event in events {
            match event.unwrap() {
                StreamEvent::Choices(choices) => {
                    if let Some(piece) = choices[0]["delta"]["content"].as_str() {
                        text.push_str(piece);
                    }
                }
                StreamEvent::Usage(u) => usage = Some(u),
            }
        }
        assert_eq!(
            text,
            first.choices[0]["message"]["content"].as_str().unwrap()
        );
        assert_eq!(usage, Some(first.usage));
    }

    #[tokio::test]
    async fn a_model_that_always_fails_fails_retryably() {
        let config = Config::default();
        let mut model = config.model("sim-small").unwrap().clone();
        model.sim = Some(SimModel {
            latency_ms: 0,
            jitter_ms: 0,
            failure_rate: 1.0,
            ..model.sim.unwrap()
        });
        let error = Simulator.chat(&model, &request(None)).await.unwrap_err();
        assert!(error.retryable);
        assert_eq!(error.status, 503);
    }

    #[tokio::test]
    async fn embeddings_are_unit_vectors_of_the_asked_size() {
        let config = Config::default();
        let model = config.model("sim-small").unwrap();
        let out = Simulator
            .embed(model, &["a".into(), "b".into()], Some(8))
            .await
            .unwrap();
        assert_eq!(out.vectors.len(), 2);
        assert_eq!(out.vectors[0].len(), 8);
        let norm: f32 = out.vectors[0].iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_ne!(out.vectors[0], out.vectors[1]);
    }
}
