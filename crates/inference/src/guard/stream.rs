//! Output rules on a stream, chunk by chunk.
//!
//! A stream's text is released with a hold-back: the last [`HOLD`] bytes of each choice wait
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
    index: u64,
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

    /// Filters one chunk's choices in place: each `delta.content` becomes the text released
    /// now (redacted). `Err` names the rule that blocked.
    pub fn filter(&mut self, choices: &mut [Value]) -> Result<(), String> {
        for choice in choices {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finished = choice
                .get("finish_reason")
                .is_some_and(|reason| !reason.is_null());
            let content = choice.pointer("/delta/content").and_then(Value::as_str);
            if content.is_none() && !finished {
                continue;
            }
            let had_content = content.is_some();
            let position = self.position(index);
            if let Some(content) = content {
                self.held[position].pending.push_str(content);
            }
            let released = self.release(position, finished)?;
            if had_content || !released.is_empty() {
                if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                    delta.insert("content".into(), Value::String(released));
                } else if let Some(object) = choice.as_object_mut() {
                    object.insert("delta".into(), json!({"content": released}));
                }
            }
        }
        Ok(())
    }

    /// What is still held when the upstream ended without a finish reason, as choices to send.
    pub fn flush(&mut self) -> Result<Vec<Value>, String> {
        let mut choices = Vec::new();
        for position in 0..self.held.len() {
            if self.held[position].pending.is_empty() {
                continue;
            }
            let index = self.held[position].index;
            let released = self.release(position, true)?;
            choices.push(
                json!({"index": index, "delta": {"content": released}, "finish_reason": null}),
            );
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

    fn position(&mut self, index: u64) -> usize {
        if let Some(position) = self.held.iter().position(|h| h.index == index) {
            return position;
        }
        self.held.push(Held {
            index,
            ..Held::default()
        });
        self.held.len() - 1
    }

    /// Releases what of choice `position`'s held text can go (all of it when `last`).
    fn release(&mut self, position: usize, last: bool) -> Result<String, String> {
        let held = &mut self.held[position];
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
            && let Some(text) = &mut self.text
        {
            text.push_str(&released);
        }
        Ok(released)
    }
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
