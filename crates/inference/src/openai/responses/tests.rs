use serde_json::{Value, json};

use super::*;

fn request(body: Value) -> ResponsesRequest {
    serde_json::from_value(body).unwrap()
}

#[test]
fn input_items_become_the_chats_messages() {
    let chat = request(json!({
        "model": "m", "instructions": "be brief", "max_output_tokens": 50,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"q\":1}"},
            {"type": "function_call", "call_id": "c2", "name": "time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "message", "role": "assistant", "content": "it is sunny"}
        ],
        "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}}
    }))
    .to_chat()
    .unwrap();
    let roles: Vec<Role> = chat.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::System,
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Assistant
        ]
    );
    assert_eq!(
        chat.messages[2]
            .tool_calls
            .as_ref()
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2,
        "calls in a row are one turn"
    );
    assert_eq!(chat.messages[3].tool_call_id.as_deref(), Some("c1"));
    assert_eq!(chat.max_completion_tokens, Some(50));
    assert_eq!(chat.tools.unwrap()[0]["function"]["name"], json!("weather"));
    assert_eq!(
        chat.tool_choice.unwrap(),
        json!({"type": "function", "function": {"name": "weather"}})
    );
    assert_eq!(
        chat.response_format.unwrap()["json_schema"]["name"],
        json!("w")
    );
}

#[test]
fn what_cannot_be_served_is_refused_with_the_reason() {
    for (body, says) in [
        (json!({"model": "m", "input": []}), "must not be empty"),
        (json!({"model": "m", "input": 3}), "string or an array"),
        (
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
            "not stored",
        ),
        (
            json!({"model": "m", "input": "x", "background": true}),
            "background",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
            "only function tools",
        ),
        (
            json!({"model": "m", "input": [{"type": "reasoning"}]}),
            "not supported",
        ),
        (
            json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
            "role",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "content[0].type",
        ),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}),
            "text.format.type",
        ),
        (
            json!({"model": "m", "input": "x", "temperature": 3}),
            "temperature",
        ),
    ] {
        let error = request(body.clone()).to_chat().unwrap_err();
        assert!(error.to_string().contains(says), "{body}: {error}");
        assert_eq!(error.status(), 400);
    }
    assert!(
        serde_json::from_value::<ResponsesRequest>(
            json!({"model": "m", "input": "x", "conversation": "c"})
        )
        .is_err()
    );
}

fn chat_answer(content: Value, tool_calls: Option<Value>, finish: &str) -> Value {
    let mut message = json!({"role": "assistant", "content": content});
    if let Some(calls) = tool_calls {
        message["tool_calls"] = calls;
    }
    json!({"id": "chatcmpl-abc", "model": "sim-small",
           "choices": [{"index": 0, "message": message, "finish_reason": finish}],
           "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
}

#[test]
fn a_whole_answer_is_a_response_object() {
    let asked = request(json!({"model": "auto", "input": "hi", "max_output_tokens": 3}));
    let body = response_body(&chat_answer(json!("hello there"), None, "length"), &asked);
    assert_eq!(body["id"], "resp_abc");
    assert_eq!(body["object"], "response");
    assert_eq!(body["model"], "sim-small");
    assert_eq!(body["status"], "incomplete");
    assert_eq!(body["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(body["output"][0]["content"][0]["text"], "hello there");
    assert_eq!(body["usage"]["input_tokens"], 7);
    assert_eq!(body["usage"]["total_tokens"], 10);
    let calls =
        json!([{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]);
    let body = response_body(&chat_answer(Value::Null, Some(calls), "tool_calls"), &asked);
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["type"], "function_call");
    assert_eq!(body["output"][0]["call_id"], "call_1");
}

#[test]
fn a_stream_becomes_the_typed_events_in_order() {
    let asked = request(json!({"model": "auto", "input": "hi", "stream": true}));
    let mut events = ResponseEvents::new(asked, "abc");
    let mut all = events.start();
    let chunk = |delta: Value, finish: Value| json!({"model": "sim-small", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    for data in [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "hel"}), Value::Null),
        chunk(json!({"content": "lo"}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("stop")),
        json!({"model": "sim-small", "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 2}}),
    ] {
        all.extend(events.chunk(&data));
    }
    all.extend(events.done());
    let kinds: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (n, event) in all.iter().enumerate() {
        assert_eq!(event["sequence_number"], json!(n));
    }
    let last = &all[all.len() - 1]["response"];
    assert_eq!(last["output"][0]["content"][0]["text"], "hello");
    assert_eq!(last["output"][1]["arguments"], "{\"a\":1}");
    assert_eq!(last["output"][1]["id"], all[6]["item"]["id"]);
    assert_eq!(last["usage"]["output_tokens"], 2);

    let mut failing = ResponseEvents::new(request(json!({"model": "m", "input": "x"})), "f");
    failing.start();
    let failed =
        failing.chunk(&json!({"error": {"code": "upstream_stream_cut", "message": "cut"}}));
    assert_eq!(failed[0]["type"], "response.failed");
    assert_eq!(
        failed[0]["response"]["error"]["code"],
        "upstream_stream_cut"
    );
}
