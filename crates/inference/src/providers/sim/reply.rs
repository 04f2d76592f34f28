//! What a simulated model answers to one request, as one choice: tool calls, a judge's verdict,
//! a value that fits the requested JSON Schema, an answer from tool results, a verifiable
//! task's answer or the words — and how that answer is cut by the output cap and streamed.

use serde_json::{Value, json};

use super::source::Source;
use super::tools::{self, ToolCall};
use super::{answer_words, schema, simulated_verdict, verifiable_answer};
use crate::config::ModelConfig;
use crate::openai::ChatRequest;
use crate::providers::ProviderError;

/// Characters per token of generated JSON (arguments, structured output).
const CHARS_PER_TOKEN: usize = 4;
/// How many pieces a streamed tool call's arguments come in.
const ARGUMENT_PIECES: usize = 3;

/// One choice's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Text, in the pieces it streams in.
    Text {
        pieces: Vec<String>,
        tokens: u64,
        cut: bool,
    },
    /// Calls of the offered tools.
    Tools {
        calls: Vec<ToolCall>,
        tokens: u64,
        cut: bool,
    },
}

impl Reply {
    pub fn tokens(&self) -> u64 {
        match self {
            Reply::Text { tokens, .. } | Reply::Tools { tokens, .. } => *tokens,
        }
    }

    pub fn finish_reason(&self) -> &'static str {
        match self {
            Reply::Text { cut: true, .. } | Reply::Tools { cut: true, .. } => "length",
            Reply::Text { .. } => "stop",
            Reply::Tools { .. } => "tool_calls",
        }
    }

    /// The whole answer's `message`.
    pub fn message(&self) -> Value {
        match self {
            Reply::Text { pieces, .. } => json!({"role": "assistant", "content": pieces.concat()}),
            Reply::Tools { calls, .. } => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": calls.iter().map(ToolCall::to_json).collect::<Vec<_>>(),
            }),
        }
    }

    /// The streamed `delta`s after the first (the role) and before the last (the finish).
    pub fn deltas(&self) -> Vec<Value> {
        match self {
            Reply::Text { pieces, .. } => pieces.iter().map(|p| json!({"content": p})).collect(),
            Reply::Tools { calls, .. } => {
                let mut deltas = Vec::new();
                for (at, call) in calls.iter().enumerate() {
                    deltas.push(
                        json!({"tool_calls": [{"index": at, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": ""}}]}),
                    );
                    for piece in split(&call.arguments, ARGUMENT_PIECES) {
                        deltas.push(json!({"tool_calls": [{"index": at, "function": {"arguments": piece}}]}));
                    }
                }
                deltas
            }
        }
    }

    fn whole(text: String, tokens: u64, cut: bool) -> Self {
        Reply::Text {
            pieces: vec![text],
            tokens,
            cut,
        }
    }

    /// Generated JSON: a token per four characters, cut at the cap as a model's output is.
    fn json(text: String, cap: u64) -> Self {
        let (text, tokens, cut) = cut_json(text, cap);
        Reply::whole(text, tokens, cut)
    }
}

/// Answer `index` of `model` to `request`.
pub fn reply(
    model: &ModelConfig,
    request: &ChatRequest,
    index: u32,
) -> Result<Reply, ProviderError> {
    let cap = request.output_cap().unwrap_or(u64::MAX);
    if let Some(calls) = tools::plan(model, request, index)? {
        let mut budget = cap;
        let mut cut = false;
        let mut kept = Vec::with_capacity(calls.len());
        let mut tokens = 0;
        for mut call in calls {
            if budget == 0 {
                cut = true;
                break;
            }
            let (arguments, used, cut_here) = cut_json(call.arguments, budget);
            call.arguments = arguments;
            budget -= used;
            tokens += used;
            cut |= cut_here;
            kept.push(call);
        }
        return Ok(Reply::Tools {
            calls: kept,
            tokens,
            cut,
        });
    }
    let (words, cut) = answer_words(model, request, index);
    if let Some(verdict) = request
        .messages
        .last()
        .and_then(|m| simulated_verdict(&m.text()))
    {
        return Ok(Reply::whole(verdict, words.len() as u64, cut));
    }
    let verifiable = verifiable_answer(model, request, index);
    if let Some(schema) = requested_schema(request) {
        // A verifiable extraction's answer is the value when it fits the schema.
        let known = verifiable
            .as_deref()
            .and_then(|v| serde_json::from_str::<Value>(v).ok())
            .filter(|v| v.is_object() && schema::fits(schema, v));
        let value = match known {
            Some(value) => value,
            None => schema::generate(
                schema,
                &mut Source::new(model, request, index, "response-schema"),
            )
            .map_err(|reason| {
                ProviderError::fatal(
                    "invalid_request_error",
                    400,
                    format!("response_format.json_schema: {reason}"),
                )
            })?,
        };
        return Ok(Reply::json(value.to_string(), cap));
    }
    if let Some(text) = tools::summary(request) {
        let all: Vec<&str> = text.split(' ').collect();
        let count = all.len().min(usize::try_from(cap).unwrap_or(usize::MAX));
        return Ok(Reply::Text {
            pieces: spaced(&all[..count]),
            tokens: count as u64,
            cut: count < all.len(),
        });
    }
    let json_object = request
        .response_format
        .as_ref()
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t == "json_object" || t == "json_schema");
    if let Some(answer) = verifiable {
        // An extraction's answer is a JSON object already; a number or a label is wrapped in
        // JSON mode. Either is one token, and streams whole.
        return Ok(Reply::whole(
            if json_object && !answer.starts_with('{') {
                json!({ "answer": answer }).to_string()
            } else {
                answer
            },
            1,
            false,
        ));
    }
    if json_object {
        let text = json!({ "answer": words.join(" ") }).to_string();
        return Ok(Reply::whole(text, words.len() as u64, cut));
    }
    Ok(Reply::Text {
        pieces: spaced(&words),
        tokens: words.len() as u64,
        cut,
    })
}

/// `words` as the pieces of a stream: each after a space but the first.
fn spaced(words: &[&str]) -> Vec<String> {
    words
        .iter()
        .enumerate()
        .map(|(at, word)| {
            if at == 0 {
                (*word).to_owned()
            } else {
                format!(" {word}")
            }
        })
        .collect()
}

/// The JSON Schema of `response_format: {"type": "json_schema", "json_schema": {"schema": …}}`.
fn requested_schema(request: &ChatRequest) -> Option<&Value> {
    let format = request.response_format.as_ref()?;
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return None;
    }
    format.pointer("/json_schema/schema")
}

/// `text` as generated JSON under a cap of `cap` tokens: (the text, its tokens, whether cut).
fn cut_json(text: String, cap: u64) -> (String, u64, bool) {
    let chars = text.chars().count();
    let tokens = chars.div_ceil(CHARS_PER_TOKEN).max(1) as u64;
    if tokens <= cap {
        return (text, tokens, false);
    }
    let keep = usize::try_from(cap)
        .unwrap_or(usize::MAX)
        .saturating_mul(CHARS_PER_TOKEN);
    (text.chars().take(keep).collect(), cap, true)
}

/// `text` in up to `n` pieces of about equal length (whole characters).
fn split(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}
