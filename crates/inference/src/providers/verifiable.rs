//! Verifiable tasks of the simulator: prompts whose right answer an exact scorer can check, in
//! three families, each with a latent difficulty, and the generator of a mixed workload of them
//! (`switchyard sim workload`).
//!
//! - **arithmetic**: "What is 17 + 25?" (`+`, `-`, `*`, `x`, `×`, `plus`, `minus`, `times`): a
//!   number.
//! - **extraction**: a record `name: … | age: … | city: …` to return as a JSON object with those
//!   three keys (age a number).
//! - **classification**: the sentiment of a review, `positive`, `negative` or `neutral`: the
//!   sign of (words from [`POSITIVE`]) − (words from [`NEGATIVE`]).
//!
//! **Difficulty** (a logit) is what the request shows plus what it hides: the family's base,
//! plus [`LENGTH_SLOPE`] · ln(prompt tokens / [`REFERENCE_TOKENS`]), plus 0.5 when tools are
//! offered, plus ε ~ N(0, [`HIDDEN_SD`]²) drawn from the prompt's hash.
//!
//! A model answers right with probability σ(ability(family) − d) when it has an ability for the
//! family, else with its `quality`. Everything is a function of the request's text (and the
//! model's name for the draw), so the simulator stays deterministic and needs no secret
//! channel: the generator writes harder tasks as longer prompts with distracting context.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::openai::{ChatRequest, Role};

/// A family of verifiable task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Arithmetic,
    Extraction,
    Classification,
}

impl Family {
    pub const ALL: [Family; 3] = [
        Family::Arithmetic,
        Family::Extraction,
        Family::Classification,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Arithmetic => "arithmetic",
            Family::Extraction => "extraction",
            Family::Classification => "classification",
        }
    }

    /// The family's difficulty at [`REFERENCE_TOKENS`] prompt tokens.
    fn base(self) -> f64 {
        match self {
            Family::Arithmetic => 0.0,
            Family::Extraction => 0.5,
            Family::Classification => -0.5,
        }
    }
}

/// Difficulty added per unit of ln(prompt tokens).
pub const LENGTH_SLOPE: f64 = 2.0;
/// Prompt tokens at which a family has its base difficulty.
pub const REFERENCE_TOKENS: f64 = 24.0;
/// Standard deviation of the difficulty the request does not show.
pub const HIDDEN_SD: f64 = 0.4;

/// Words that make a review positive.
pub const POSITIVE: &[&str] = &[
    "great",
    "excellent",
    "love",
    "wonderful",
    "fast",
    "reliable",
    "friendly",
    "perfect",
    "delighted",
    "recommend",
];
/// Words that make a review negative.
pub const NEGATIVE: &[&str] = &[
    "terrible",
    "broken",
    "hate",
    "awful",
    "slow",
    "unreliable",
    "rude",
    "disappointed",
    "refund",
    "worst",
];
const NEUTRAL_WORDS: &[&str] = &[
    "the",
    "package",
    "arrived",
    "on",
    "tuesday",
    "it",
    "is",
    "blue",
    "and",
    "the",
    "box",
    "was",
    "medium",
    "sized",
    "with",
    "a",
    "manual",
    "in",
    "three",
    "languages",
];
const NAMES: &[&str] = &[
    "Maria Lopez",
    "Tom Baker",
    "Aiko Tanaka",
    "Lena Fischer",
    "Omar Haddad",
    "Priya Nair",
    "Jonas Berg",
    "Chloé Martin",
    "Kwame Mensah",
    "Sofia Rossi",
];
const CITIES: &[&str] = &[
    "Lyon", "Porto", "Osaka", "Leipzig", "Cairo", "Pune", "Bergen", "Nantes", "Accra", "Turin",
];
/// Context that makes a prompt longer (and so harder) without changing its answer.
const DISTRACTORS: &[&str] = &[
    "This question comes from a long support thread that also discusses shipping delays.",
    "Several colleagues already looked at it and disagreed about the details.",
    "Please be careful, the previous attempt at this was wrong in a subtle way.",
    "Some of the surrounding notes mention other numbers and names that do not matter here.",
    "The customer wrote this late at night after a long day of travel.",
    "Earlier messages in this conversation covered unrelated billing questions.",
];

/// A verifiable task read from a request: its family and right answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verifiable {
    pub family: Family,
    pub right: Value,
}

fn last_user_text(request: &ChatRequest) -> Option<String> {
    Some(
        request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)?
            .text(),
    )
}

/// The verifiable task in the request's last user message, if it holds one.
pub fn read(request: &ChatRequest) -> Option<Verifiable> {
    read_text(&last_user_text(request)?)
}

fn read_text(text: &str) -> Option<Verifiable> {
    use std::sync::LazyLock;
    static ARITHMETIC: LazyLock<Option<regex::Regex>> = LazyLock::new(|| {
        regex::Regex::new(r"(?i)(-?\d{1,9})\s*(\+|-|\*|×|x|plus|minus|times)\s*(-?\d{1,9})").ok()
    });
    if let Some(record) = read_record(text) {
        return Some(record);
    }
    if let Some(at) = text.to_lowercase().find("classify the sentiment") {
        let rest = &text.get(at..)?.to_lowercase();
        let review = &rest[rest.rfind("review:")? + "review:".len()..];
        let words: Vec<&str> = review
            .split(|ch: char| !ch.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let score = words.iter().filter(|w| POSITIVE.contains(w)).count() as i64
            - words.iter().filter(|w| NEGATIVE.contains(w)).count() as i64;
        let label = match score.signum() {
            1 => "positive",
            -1 => "negative",
            _ => "neutral",
        };
        return Some(Verifiable {
            family: Family::Classification,
            right: json!(label),
        });
    }
    let c = ARITHMETIC.as_ref()?.captures(text)?;
    let a: i64 = c.get(1)?.as_str().parse().ok()?;
    let b: i64 = c.get(3)?.as_str().parse().ok()?;
    let right = match c.get(2)?.as_str().to_lowercase().as_str() {
        "+" | "plus" => a.checked_add(b)?,
        "-" | "minus" => a.checked_sub(b)?,
        _ => a.checked_mul(b)?,
    };
    Some(Verifiable {
        family: Family::Arithmetic,
        right: json!(right),
    })
}

/// `name: … | age: … | city: …` (the last such record in the text).
fn read_record(text: &str) -> Option<Verifiable> {
    let at = text.rfind("name: ")?;
    let line = text[at + "name: ".len()..].lines().next()?;
    let mut fields = line.split(" | ");
    let name = fields.next()?.trim();
    let age: u64 = fields.next()?.strip_prefix("age: ")?.trim().parse().ok()?;
    let city = fields.next()?.strip_prefix("city: ")?.trim();
    let plain = |s: &str| !s.is_empty() && s.chars().count() <= 60;
    if !plain(name) || !plain(city) || age > 999 {
        return None;
    }
    Some(Verifiable {
        family: Family::Extraction,
        right: json!({"name": name, "age": age, "city": city}),
    })
}

/// A uniform draw in [0, 1) from a hash.
fn unit(bytes: &[u8]) -> f64 {
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&bytes[..8]);
    (u64::from_le_bytes(eight) >> 11) as f64 / (1u64 << 53) as f64
}

/// The part of the task's difficulty that the request shows (its family, length and tools).
pub fn visible_difficulty(family: Family, request: &ChatRequest) -> f64 {
    let tokens = request.estimate_prompt_tokens().max(1) as f64;
    let tools = request
        .tools
        .as_ref()
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    family.base() + LENGTH_SLOPE * (tokens / REFERENCE_TOKENS).ln() + if tools { 0.5 } else { 0.0 }
}

/// The chance of a right answer at `ability` for a task whose visible difficulty is
/// `visible`, averaged over the hidden part: E[σ(ability − visible − ε)], ε ~ N(0, HIDDEN_SD²)
/// (what the best router that sees everything a request shows could expect).
pub fn expected_chance(ability: f64, visible: f64) -> f64 {
    // The normal density on ±6 sd, 241 points (trapezoid): far below the draws' noise.
    let points = 241;
    let (mut total, mut weight) = (0.0, 0.0);
    for i in 0..points {
        let z = -6.0 + 12.0 * f64::from(i) / f64::from(points - 1);
        let density = (-z * z / 2.0).exp();
        total += density * logistic(ability - visible - HIDDEN_SD * z);
        weight += density;
    }
    total / weight
}

/// The task's difficulty for `request` (see the module docs).
pub fn difficulty(family: Family, request: &ChatRequest) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"difficulty");
    hasher.update(last_user_text(request).unwrap_or_default().as_bytes());
    let digest = hasher.finalize();
    let bytes = digest.as_bytes();
    // Box–Muller: a standard normal from two uniforms.
    let (u1, u2) = (unit(&bytes[..8]).max(1e-12), unit(&bytes[8..16]));
    let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    visible_difficulty(family, request) + HIDDEN_SD * normal
}

/// σ(x).
pub fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A wrong answer to `task`, drawn from `bytes`.
pub fn wrong(task: &Verifiable, bytes: &[u8]) -> Value {
    let off = i64::from(bytes[0] % 9) + 1;
    let sign = if bytes[1].is_multiple_of(2) { 1 } else { -1 };
    match task.family {
        Family::Arithmetic => {
            let right = task.right.as_i64().unwrap_or(0);
            json!(
                right
                    .checked_add(sign * off)
                    .unwrap_or(right.wrapping_add(1))
            )
        }
        Family::Extraction => {
            let mut answer = task.right.clone();
            let age = answer["age"].as_u64().unwrap_or(0);
            if bytes[2].is_multiple_of(2) {
                answer["age"] = json!(age + off.unsigned_abs());
            } else {
                let city = answer["city"].as_str().unwrap_or("").to_owned();
                let other = CITIES
                    .iter()
                    .cycle()
                    .skip(usize::from(bytes[3]) % CITIES.len())
                    .find(|c| **c != city)
                    .copied()
                    .unwrap_or("Nowhere");
                answer["city"] = json!(other);
            }
            answer
        }
        Family::Classification => {
            let labels = ["positive", "negative", "neutral"];
            let right = task.right.as_str().unwrap_or("");
            let others: Vec<&str> = labels.into_iter().filter(|l| *l != right).collect();
            json!(others[usize::from(bytes[2]) % others.len()])
        }
    }
}

/// One generated task, as a line of an eval task set.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub id: String,
    pub family: Family,
    pub prompt: String,
    pub expected: Value,
    /// How many distracting sentences it has (0: the plainest form).
    pub padding: usize,
}

impl Generated {
    /// The task-set line: `{id, input, expected, scorer, tags}` (`switchyard eval` reads it).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "input": self.prompt,
            "expected": self.expected,
            "scorer": "exact",
            "tags": [format!("family:{}", self.family.name()), format!("padding:{}", self.padding)],
        })
    }
}

/// `n` tasks of a mixed workload, the same for the same `seed`: a third of each family on
/// average, each with 0 to 6 distracting sentences (more of them: harder).
pub fn workload(n: usize, seed: u64) -> Vec<Generated> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let family = Family::ALL[rng.random_range(0..Family::ALL.len())];
            // Most tasks are plain; a long tail is padded (hard).
            let padding = match rng.random_range(0..10) {
                0..=4 => 0,
                5..=6 => rng.random_range(1..=2),
                _ => rng.random_range(3..=6),
            };
            let context: Vec<&str> = (0..padding)
                .map(|_| DISTRACTORS[rng.random_range(0..DISTRACTORS.len())])
                .collect();
            let context = if context.is_empty() {
                String::new()
            } else {
                format!("{}\n\n", context.join(" "))
            };
            let (prompt, expected) = match family {
                Family::Arithmetic => {
                    let a: i64 = rng.random_range(2..1_000);
                    let b: i64 = rng.random_range(2..1_000);
                    let (op, value) = match rng.random_range(0..3) {
                        0 => ('+', a + b),
                        1 => ('-', a - b),
                        _ => ('*', a * b),
                    };
                    (
                        format!("{context}Compute {a} {op} {b}. Answer with the number only."),
                        json!(value),
                    )
                }
                Family::Extraction => {
                    let name = NAMES[rng.random_range(0..NAMES.len())];
                    let city = CITIES[rng.random_range(0..CITIES.len())];
                    let age: u64 = rng.random_range(18..90);
                    (
                        format!(
                            "{context}Extract the record as JSON with keys name, age and city.\n\nname: {name} | age: {age} | city: {city}"
                        ),
                        json!({"name": name, "age": age, "city": city}),
                    )
                }
                Family::Classification => {
                    let label = rng.random_range(0..3);
                    let mut words: Vec<&str> = (0..rng.random_range(6..12))
                        .map(|_| NEUTRAL_WORDS[rng.random_range(0..NEUTRAL_WORDS.len())])
                        .collect();
                    let (list, count) = match label {
                        0 => (POSITIVE, rng.random_range(1..=3)),
                        1 => (NEGATIVE, rng.random_range(1..=3)),
                        _ => (POSITIVE, 0),
                    };
                    for _ in 0..count {
                        let at = rng.random_range(0..=words.len());
                        words.insert(at, list[rng.random_range(0..list.len())]);
                    }
                    (
                        format!(
                            "{context}Classify the sentiment of this review as positive, negative or neutral. Answer with the label only.\n\nReview: {}",
                            words.join(" ")
                        ),
                        json!(["positive", "negative", "neutral"][label]),
                    )
                }
            };
            Generated {
                id: format!("sim-{seed}-{i:06}"),
                family,
                prompt,
                expected,
                padding,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, SimModel};
    use crate::providers::Provider;

    fn ask(text: &str) -> ChatRequest {
        serde_json::from_value(json!({
            "model": "sim-small",
            "messages": [{"role": "user", "content": text}],
        }))
        .unwrap()
    }

    #[test]
    fn every_generated_task_reads_back_with_its_expected_answer() {
        let tasks = workload(3_000, 7);
        assert_eq!(tasks, workload(3_000, 7), "the same seed, the same tasks");
        for task in &tasks {
            let read = read(&ask(&task.prompt)).unwrap_or_else(|| panic!("{task:?}"));
            assert_eq!(read.family, task.family, "{task:?}");
            assert_eq!(read.right, task.expected, "{task:?}");
            assert_ne!(wrong(&read, &[3, 4, 5, 6]), read.right);
            assert_ne!(wrong(&read, &[8, 1, 2, 7]), read.right);
        }
        for family in Family::ALL {
            let share = tasks.iter().filter(|t| t.family == family).count() as f64 / 3_000.0;
            assert!((0.28..0.39).contains(&share), "{family:?}: {share}");
        }
    }

    #[test]
    fn longer_prompts_are_harder_and_the_hidden_part_is_centred() {
        let tasks = workload(3_000, 11);
        let mean = |padding: &dyn Fn(usize) -> bool| {
            let picked: Vec<f64> = tasks
                .iter()
                .filter(|t| padding(t.padding))
                .map(|t| difficulty(t.family, &ask(&t.prompt)))
                .collect();
            picked.iter().sum::<f64>() / picked.len() as f64
        };
        let plain = mean(&|p| p == 0);
        let padded = mean(&|p| p >= 3);
        assert!(padded > plain + 1.5, "plain {plain}, padded {padded}");
        // The hidden part: the same text at the same length differs only by its noise.
        let noise: Vec<f64> = (0..2_000)
            .map(|i| {
                let text = format!("What is {} + {}?", 100 + i % 900, 100 + i / 7 % 900);
                difficulty(Family::Arithmetic, &ask(&text))
            })
            .collect();
        let centre = noise.iter().sum::<f64>() / noise.len() as f64;
        let sd = (noise.iter().map(|x| (x - centre).powi(2)).sum::<f64>() / 2_000.0).sqrt();
        assert!((sd - HIDDEN_SD).abs() < 0.05, "sd {sd}");
    }

    #[test]
    fn hostile_prompts_are_not_tasks_or_read_safely() {
        for text in [
            "",
            "name: | age: 999999 | city: x",
            "What is 999999999 * 999999999?",
            "Classify the sentiment of this review: ",
            "name: a | age: 1 | city: b",
        ] {
            if let Some(task) = read(&ask(text)) {
                let _ = wrong(&task, &[0, 0, 0, 0]);
            }
        }
        assert_eq!(
            read(&ask("What is 999999999 * 999999999?")).unwrap().right,
            json!(999_999_998_000_000_001_i64)
        );
    }

    /// With abilities, each family is answered right at σ(ability − difficulty): the exact
    /// scorer's pass rate on a generated workload is the mean of those chances, per family,
    /// and an extraction answers a bare JSON object even in JSON mode.
    #[tokio::test]
    async fn abilities_set_each_familys_rate_through_the_difficulty() {
        let config = Config::default();
        let mut model = config.model("sim-small").unwrap().clone();
        model.sim = Some(SimModel {
            ability: crate::config::Abilities {
                arithmetic: Some(1.0),
                extraction: Some(3.0),
                classification: None,
            },
            quality: 0.6,
            latency_ms: 0,
            jitter_ms: 0,
            ..model.sim.unwrap()
        });
        let tasks = workload(3_000, 5);
        for family in Family::ALL {
            let (mut right, mut chance, mut n) = (0.0, 0.0, 0.0);
            for task in tasks.iter().filter(|t| t.family == family) {
                let request: ChatRequest = serde_json::from_value(json!({
                    "model": "sim-small",
                    "messages": [{"role": "user", "content": task.prompt}],
                    "response_format": {"type": "json_object"},
                }))
                .unwrap();
                let answer = super::super::sim::Simulator
                    .chat(&model, &request)
                    .await
                    .unwrap();
                let text = answer.choices[0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let value = if family == Family::Extraction {
                    serde_json::from_str::<Value>(&text).unwrap_or_else(|_| panic!("{text}"))
                } else {
                    serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v.get("answer").cloned())
                        .unwrap_or_else(|| panic!("{text}"))
                };
                let value = match (&value, &task.expected) {
                    (Value::String(s), Value::Number(_)) => {
                        s.parse().map(|n: i64| json!(n)).unwrap_or(value)
                    }
                    _ => value,
                };
                right += f64::from(u8::from(value == task.expected));
                chance += super::super::sim::chance_correct(&model, &request).unwrap();
                n += 1.0;
            }
            let (rate, expected) = (right / n, chance / n);
            assert!(
                (rate - expected).abs() < 0.04,
                "{family:?}: {rate} vs {expected}"
            );
            if family == Family::Classification {
                assert!((expected - 0.6).abs() < 1e-9, "no ability: quality");
            }
        }
    }
}
