//! The Responses API's stream: a chat stream's chunks turned into its typed events, in the
//! order OpenAI sends them and the SDKs fold them (`response.created`, `response.in_progress`;
//! per output item `response.output_item.added`, then for text `response.content_part.added`
//! and `response.output_text.delta`, for a function call `response.function_call_arguments.delta`;
//! at the end each item's `…done` events and `response.completed`, or `response.incomplete`
//! when the output cap cut it). A stream that fails ends with `response.failed`. Every event
//! carries its `sequence_number`; an item's `output_index` is its place in `output`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{ResponsesRequest, call_item, envelope, text_item};

struct OpenText {
    output_index: usize,
    text: String,
}

struct OpenCall {
    output_index: usize,
    /// The call's place among the response's calls (its item id).
    n: usize,
    /// `{"id", "function": {"name", "arguments"}}`, the arguments as they arrive.
    call: Value,
}

/// The event translator of one streamed response.
pub struct ResponseEvents {
    request: ResponsesRequest,
    id: String,
    model: String,
    sequence: u64,
    next_output: usize,
    text: Option<OpenText>,
    calls: BTreeMap<u64, OpenCall>,
    finish: Option<String>,
    usage: Option<Value>,
}

impl std::fmt::Debug for ResponseEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseEvents")
            .field("id", &self.id)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl ResponseEvents {
    /// A translator for the response to `request`, served as inference `inference_id`.
    pub fn new(request: ResponsesRequest, inference_id: &str) -> Self {
        let model = request.model.clone();
        ResponseEvents {
            request,
            id: inference_id.to_owned(),
            model,
            sequence: 0,
            next_output: 0,
            text: None,
            calls: BTreeMap::new(),
            finish: None,
            usage: None,
        }
    }

    fn event(&mut self, kind: &str, mut body: Value) -> Value {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        body
    }

    fn message_id(&self) -> String {
        format!("msg_{}", self.id)
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Vec<Value> {
        let response = envelope(
            &self.request,
            &self.id,
            &self.model,
            "in_progress",
            Vec::new(),
            None,
        );
        vec![
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
        ]
    }

    /// The events of one frame's data: a `chat.completion.chunk`, or an `{"error": …}` object
    /// (then `response.failed`).
    pub fn chunk(&mut self, data: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some(error) = data.get("error") {
            let items = self.items("incomplete");
            let mut response = envelope(
                &self.request,
                &self.id,
                &self.model,
                "failed",
                items,
                self.usage.as_ref(),
            );
            response["error"] = json!({"code": error.get("code"), "message": error.get("message")});
            out.push(self.event("response.failed", json!({"response": response})));
            return out;
        }
        if let Some(model) = data.get("model").and_then(Value::as_str) {
            model.clone_into(&mut self.model);
        }
        if let Some(usage) = data.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage.clone());
        }
        // A response has one choice.
        let Some(choice) = data.pointer("/choices/0") else {
            return out;
        };
        if let Some(piece) = choice
            .pointer("/delta/content")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
        {
            self.text_delta(piece, &mut out);
        }
        for call in choice
            .pointer("/delta/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.call_delta(call, &mut out);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(reason.to_owned());
        }
        out
    }

    fn text_delta(&mut self, piece: &str, out: &mut Vec<Value>) {
        let item_id = self.message_id();
        let output_index = match &self.text {
            Some(open) => open.output_index,
            None => {
                let output_index = self.next_output;
                self.next_output += 1;
                self.text = Some(OpenText {
                    output_index,
                    text: String::new(),
                });
                let item = json!({"type": "message", "id": item_id, "status": "in_progress",
                                  "role": "assistant", "content": []});
                let added = self.event(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": item}),
                );
                out.push(added);
                let part = self.event(
                    "response.content_part.added",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
                           "part": {"type": "output_text", "text": "", "annotations": []}}),
                );
                out.push(part);
                output_index
            }
        };
        if let Some(open) = &mut self.text {
            open.text.push_str(piece);
        }
        let delta = self.event(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
                   "delta": piece, "logprobs": []}),
        );
        out.push(delta);
    }

    fn call_delta(&mut self, call: &Value, out: &mut Vec<Value>) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        if !self.calls.contains_key(&index) {
            let output_index = self.next_output;
            self.next_output += 1;
            let open = OpenCall {
                output_index,
                n: self.calls.len(),
                call: json!({"id": call.get("id"),
                             "function": {"name": call.pointer("/function/name"), "arguments": ""}}),
            };
            let item = call_item(&self.id, open.n, &open.call, "in_progress");
            self.calls.insert(index, open);
            let added = self.event(
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            );
            out.push(added);
        }
        let Some(piece) = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
        else {
            return;
        };
        let Some(open) = self.calls.get_mut(&index) else {
            return;
        };
        let whole = format!(
            "{}{piece}",
            open.call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or_default()
        );
        open.call["function"]["arguments"] = json!(whole);
        let (output_index, item_id) = (open.output_index, format!("fc_{}_{}", self.id, open.n));
        let delta = self.event(
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": output_index, "delta": piece}),
        );
        out.push(delta);
    }

    /// The output items as they stand, in output order.
    fn items(&self, status: &str) -> Vec<Value> {
        let mut items: Vec<(usize, Value)> = Vec::new();
        if let Some(open) = &self.text {
            items.push((open.output_index, text_item(&self.id, &open.text, status)));
        }
        for open in self.calls.values() {
            items.push((
                open.output_index,
                call_item(&self.id, open.n, &open.call, status),
            ));
        }
        items.sort_by_key(|(at, _)| *at);
        items.into_iter().map(|(_, item)| item).collect()
    }

    /// The clean end: each item's `…done` events, then `response.completed` (or
    /// `response.incomplete` when the output cap cut the answer).
    pub fn done(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        let item_id = self.message_id();
        if let Some((output_index, text)) =
            self.text.as_ref().map(|o| (o.output_index, o.text.clone()))
        {
            let part = json!({"type": "output_text", "text": text, "annotations": []});
            let events = [
                (
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
                           "text": text, "logprobs": []}),
                ),
                (
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
                           "part": part}),
                ),
                (
                    "response.output_item.done",
                    json!({"output_index": output_index,
                           "item": text_item(&self.id, &text, "completed")}),
                ),
            ];
            for (kind, body) in events {
                let event = self.event(kind, body);
                out.push(event);
            }
        }
        let calls: Vec<(usize, usize, Value)> = self
            .calls
            .values()
            .map(|o| (o.output_index, o.n, o.call.clone()))
            .collect();
        for (output_index, n, call) in calls {
            let item = call_item(&self.id, n, &call, "completed");
            let arguments = item["arguments"].clone();
            let done = self.event(
                "response.function_call_arguments.done",
                json!({"item_id": item["id"], "output_index": output_index, "name": item["name"],
                       "arguments": arguments}),
            );
            out.push(done);
            let done = self.event(
                "response.output_item.done",
                json!({"output_index": output_index, "item": item}),
            );
            out.push(done);
        }
        let status = if self.finish.as_deref() == Some("length") {
            "incomplete"
        } else {
            "completed"
        };
        let response = envelope(
            &self.request,
            &self.id,
            &self.model,
            status,
            self.items("completed"),
            self.usage.as_ref(),
        );
        let kind = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        let last = self.event(kind, json!({"response": response}));
        out.push(last);
        out
    }
}
