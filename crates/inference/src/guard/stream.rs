//! Output rules on a stream, chunk by chunk.
//!
//! A stream's text (and each tool call's arguments) is released with a hold-back: the last [`HOLD`] bytes of each choice wait
//! for the next chunk, and a cut falls only after whitespace and never inside a PII span found
//! in what is held, so a card number or an e-mail split across chunks is still found whole
//! and redacted before any of it goes out. Blocked topics are looked for in what is held plus
//! the tail already sent, so a phrase split across chunks is found too; a block ends the
//! stream with a `content_blocked` error (what went out before it stays out).

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Guard, Stage, Verdict};

/// Bytes of each choice's text held back until more arrives (longer than any PII span the
/// built-in detectors find, and than most blocked phrases).
pub const HOLD: usize = 64;

#[derive(Debug, Default)]
struct Held {
    /// The choice.
    index: u64,
    /// The tool call within the choice whose arguments these are (`None`: its text).
    call: Option<u64>,
    /// Received, not yet released.
    pending: String,
    /// The last [`HOLD`] bytes released (for phrases across the cut).
    tail: String,
}

/// The output guard of one stream.
#[derive(Debug)]
pub struct StreamGuard {
    guard: Arc<Guard>,
    held: Vec<Held>,
    /// The stream's output decision so far.
    pub verdict: Verdict,
    /// The first choice's released text, when an output schema is checked at the end.
    text: Option<String>,
}

impl StreamGuard {
    pub fn new(guard: Arc<Guard>) -> Self {
        let text = guard.output_schema.is_some().then(String::new);
        StreamGuard {
            guard,
            held: Vec::new(),
            verdict: Verdict::new(Stage::Output),
            text,
        }
    }

    /// Filters one chunk's choices in place: each `delta.content`, and each tool call's
    /// `function.arguments`, becomes the text released now (redacted). `Err` names the rule
    /// that blocked.
    pub fn filter(&mut self, choices: &mut [Value]) -> Result<(), String> {
        for choice in choices {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finished = choice
                .get("finish_reason")
                .is_some_and(|reason| !reason.is_null());
            let content = choice
                .pointer("/delta/content")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if content.is_some() || finished {
                let position = self.position(index, None);
                if let Some(content) = &content {
                    self.held[position].pending.push_str(content);
                }
                let released = self.release(position, finished)?;
                if content.is_some() || !released.is_empty() {
                    delta(choice).insert("content".into(), Value::String(released));
                }
            }
            if let Some(Value::Array(calls)) = choice.pointer_mut("/delta/tool_calls") {
                for call in calls.iter_mut() {
                    let at = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let Some(piece) = call
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                    else {
                        continue;
                    };
                    let position = self.position(index, Some(at));
                    self.held[position].pending.push_str(&piece);
                    let released = self.release(position, false)?;
                    if let Some(function) = call.get_mut("function").and_then(Value::as_object_mut)
                    {
                        function.insert("arguments".into(), Value::String(released));
                    }
                }
            }
            if finished {
                // The choice's held arguments go out with its last chunk.
                let rest = self.release_calls(index)?;
                if !rest.is_empty() {
                    let delta = delta(choice);
                    match delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.extend(rest),
                        None => {
                            delta.insert("tool_calls".into(), Value::Array(rest));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every held tool-call argument of choice `index`, released whole.
    fn release_calls(&mut self, index: u64) -> Result<Vec<Value>, String> {
        let mut rest = Vec::new();
        for position in 0..self.held.len() {
            let held = &self.held[position];
            let Some(call) = held.call.filter(|_| held.index == index) else {
                continue;
            };
            if held.pending.is_empty() {
                continue;
            }
            let released = self.release(position, true)?;
            rest.push(json!({"index": call, "function": {"arguments": released}}));
        }
        Ok(rest)
    }

    /// What is still held when the upstream ended without a finish reason, as choices to send.
    pub fn flush(&mut self) -> Result<Vec<Value>, String> {
        let mut choices = Vec::new();
        for position in 0..self.held.len() {
            if self.held[position].pending.is_empty() {
                continue;
            }
            let (index, call) = (self.held[position].index, self.held[position].call);
            let released = self.release(position, true)?;
            let delta = match call {
                None => json!({"content": released}),
                Some(at) => {
                    json!({"tool_calls": [{"index": at, "function": {"arguments": released}}]})
                }
            };
            choices.push(json!({"index": index, "delta": delta, "finish_reason": null}));
        }
        Ok(choices)
    }

    /// The output schema's check of the whole first choice, at the end of the stream.
    pub fn check_schema(&self) -> Result<(), String> {
        match (&self.guard.output_schema, &self.text) {
            (Some(validator), Some(text)) => self.guard.check_schema_text(validator, text),
            _ => Ok(()),
        }
    }

    fn position(&mut self, index: u64, call: Option<u64>) -> usize {
        if let Some(position) = self
            .held
            .iter()
            .position(|h| h.index == index && h.call == call)
        {
            return position;
        }
        self.held.push(Held {
            index,
            call,
            ..Held::default()
        });
        self.held.len() - 1
    }

    /// Releases what of choice `position`'s held text can go (all of it when `last`).
    fn release(&mut self, position: usize, last: bool) -> Result<String, String> {
        let held = &mut self.held[position];
        // Nothing can go before HOLD bytes wait: no scan yet (what is held has not left, so a
        // blocked phrase in it is found when it would).
        if !last && held.pending.len() <= HOLD {
            return Ok(String::new());
        }
        let context = format!("{}{}", held.tail, held.pending);
        self.guard
            .scan_topics(Stage::Output, &context, &mut self.verdict);
        if let Some(rule) = self.verdict.blocked_by() {
            return Err(rule.to_owned());
        }
        let cut = if last {
            held.pending.len()
        } else {
            cut(
                &held.pending,
                &self.guard.spans(Stage::Output, &held.pending),
            )
        };
        if cut == 0 {
            return Ok(String::new());
        }
        let raw: String = held.pending.drain(..cut).collect();
        let released = self
            .guard
            .redact(Stage::Output, &raw, &mut self.verdict)
            .unwrap_or_else(|| raw.clone());
        if let Some(rule) = self.verdict.blocked_by() {
            return Err(rule.to_owned());
        }
        held.tail.push_str(&raw);
        if held.tail.len() > HOLD {
            let mut from = held.tail.len() - HOLD;
            while !held.tail.is_char_boundary(from) {
                from += 1;
            }
            held.tail.drain(..from);
        }
        if held.index == 0
            && held.call.is_none()
            && let Some(text) = &mut self.text
        {
            text.push_str(&released);
        }
        Ok(released)
    }
}

/// A choice's `delta` object (made when it has none).
fn delta(choice: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !choice.get("delta").is_some_and(Value::is_object) {
        choice["delta"] = json!({});
    }
    #[allow(clippy::expect_used, reason = "made an object just above")]
    choice["delta"].as_object_mut().expect("an object")
}

/// The latest place to cut `pending`: just after whitespace, at least [`HOLD`] bytes before
/// its end, and not inside any of `spans` (0: nothing can go yet).
fn cut(pending: &str, spans: &[std::ops::Range<usize>]) -> usize {
    let limit = pending.len().saturating_sub(HOLD);
    pending
        .char_indices()
        .filter(|(_, c)| c.is_whitespace())
        .map(|(at, c)| at + c.len_utf8())
        .take_while(|&at| at <= limit)
        .filter(|&at| !spans.iter().any(|s| s.start < at && at < s.end))
        .last()
        .unwrap_or(0)
}
