//! ConverseStream's answer: AWS event-stream messages (binary frames with a length prelude,
//! typed headers and CRC32 checks, parsed by `aws-smithy-eventstream`), each an event whose
//! `:event-type` header names it and whose payload is JSON:
//!
//! `messageStart` → `contentBlockStart` (a tool use's id and name) → `contentBlockDelta`
//! (text, or a piece of a tool's input JSON) → `contentBlockStop` → `messageStop` (the stop
//! reason) → `metadata` (the usage), the clean end. An `exception` message is an error.

use std::collections::BTreeMap;

use aws_smithy_types::event_stream::Message;
use bytes::BytesMut;
use serde_json::{Value, json};

use super::super::framed::{Framing, Step};
use super::super::http::{MAX_UPSTREAM_BODY, malformed};
use super::super::{ProviderError, StreamEvent};
use super::converse::{finish_reason, usage};

/// The event-stream framing: a message's total length is its first four bytes.
#[derive(Debug, Default)]
pub struct EventStream;

/// Prelude (total length, headers length, prelude CRC) and message CRC.
const FRAME_OVERHEAD: usize = 16;

impl Framing for EventStream {
    type Frame = Message;

    fn next_frame(&mut self, buffer: &mut BytesMut) -> Result<Option<Message>, ProviderError> {
        let Some(prefix) = buffer.get(..4) else {
            return Ok(None);
        };
        let total = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if !(FRAME_OVERHEAD..=MAX_UPSTREAM_BODY).contains(&total) {
            return Err(malformed(format!(
                "an event-stream message claims {total} bytes"
            )));
        }
        if buffer.len() < total {
            return Ok(None);
        }
        let frame = buffer.split_to(total).freeze();
        aws_smithy_eventstream::frame::read_message_from(frame)
            .map(Some)
            .map_err(|e| malformed(format!("an event-stream message does not decode: {e}")))
    }
}

fn header<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|v| v.as_str())
}

/// Turns ConverseStream events into OpenAI chunks.
#[derive(Debug, Default)]
pub struct StreamMapper {
    /// The answer is asked through the structured-output tool: its input is the content.
    pub structured: bool,
    /// Content block index → the tool call's index among the answer's calls.
    tools: BTreeMap<u64, usize>,
    stopped: bool,
}

impl StreamMapper {
    pub fn new(structured: bool) -> Self {
        StreamMapper {
            structured,
            ..StreamMapper::default()
        }
    }

    pub fn step(&mut self, message: Message) -> Result<Step, ProviderError> {
        let payload: Value = serde_json::from_slice(message.payload()).map_err(malformed)?;
        match header(&message, ":message-type") {
            Some("event") => {}
            Some("exception") | Some("error") => {
                let kind = header(&message, ":exception-type")
                    .or_else(|| header(&message, ":error-code"))
                    .unwrap_or("unknown");
                let text = payload
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let detail = format!("the provider sent {kind} mid-stream: {text}");
                return Err(if kind == "validationException" {
                    ProviderError::fatal("upstream_rejected", 400, detail)
                } else {
                    ProviderError::retryable("upstream_stream_error", detail)
                });
            }
            other => {
                return Err(malformed(format!(
                    "an event-stream message of type {other:?}"
                )));
            }
        }
        let chunk = |delta: Value, finish: Option<&str>| {
            Ok(Step::Emit(vec![StreamEvent::Choices(vec![
                json!({"index": 0, "delta": delta, "finish_reason": finish}),
            ])]))
        };
        let block = payload
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match header(&message, ":event-type") {
            Some("messageStart") => chunk(json!({"role": "assistant", "content": ""}), None),
            Some("contentBlockStart") => match payload.pointer("/start/toolUse") {
                Some(_) if self.structured => Ok(Step::Emit(Vec::new())),
                Some(tool) => {
                    let index = self.tools.len();
                    self.tools.insert(block, index);
                    chunk(
                        json!({"tool_calls": [{"index": index, "id": tool.get("toolUseId"),
                            "type": "function", "function": {"name": tool.get("name"), "arguments": ""}}]}),
                        None,
                    )
                }
                None => Ok(Step::Emit(Vec::new())),
            },
            Some("contentBlockDelta") => {
                let delta = payload.get("delta").unwrap_or(&Value::Null);
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    return chunk(json!({"content": text}), None);
                }
                let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str) else {
                    // Reasoning and citations are not part of an OpenAI answer.
                    return Ok(Step::Emit(Vec::new()));
                };
                if self.structured {
                    return chunk(json!({"content": input}), None);
                }
                let index = self.tools.get(&block).copied().ok_or_else(|| {
                    malformed("a tool input arrived for a block that started no tool use")
                })?;
                chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": input}}]}),
                    None,
                )
            }
            Some("contentBlockStop") => Ok(Step::Emit(Vec::new())),
            Some("messageStop") => {
                self.stopped = true;
                let stop = payload.get("stopReason").and_then(Value::as_str);
                chunk(json!({}), Some(finish_reason(stop, self.structured)))
            }
            Some("metadata") => {
                if !self.stopped {
                    return Err(malformed("the usage came before the message stopped"));
                }
                let counted = usage(&payload).ok_or_else(|| malformed("metadata without usage"))?;
                Ok(Step::Done(vec![StreamEvent::Usage(counted)]))
            }
            other => {
                // An event added to the API since: skipped, as the SDKs skip it.
                tracing::debug!(event = ?other, "unknown ConverseStream event skipped");
                Ok(Step::Emit(Vec::new()))
            }
        }
    }
}
