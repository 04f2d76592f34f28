use serde_json::{Value, json};

use super::*;

fn chat(body: Value) -> ChatRequest {
    serde_json::from_value(body).unwrap()
}

#[test]
fn a_conversation_with_tools_becomes_gemini_contents() {
    let body = request_body(&chat(json!({
        "model": "g", "max_tokens": 40, "temperature": 0.3, "stop": "END",
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"q\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
        ]
    })))
    .unwrap();
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "be brief"}]})
    );
    assert_eq!(
        body["contents"][0],
        json!({"role": "user", "parts": [{"text": "weather?"}]})
    );
    assert_eq!(
        body["contents"][1]["parts"][0],
        json!({"functionCall": {"name": "weather", "args": {"q": 1}}})
    );
    assert_eq!(
        body["contents"][2]["parts"][0],
        json!({"functionResponse": {"name": "weather", "response": {"content": "sunny"}}})
    );
    let config = &body["generationConfig"];
    assert_eq!(config["maxOutputTokens"], 40);
    assert_eq!(config["stopSequences"], json!(["END"]));
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(config["responseJsonSchema"], json!({"type": "object"}));
    assert_eq!(
        body["tools"][0]["functionDeclarations"][0]["name"],
        "weather"
    );
    assert_eq!(
        body["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["weather"]})
    );
    // A tool result that answers no call cannot be named, and is refused.
    let orphan = chat(
        json!({"model": "g", "messages": [{"role": "tool", "tool_call_id": "x", "content": "1"}]}),
    );
    assert_eq!(request_body(&orphan).unwrap_err().status, 400);
}

#[test]
fn candidates_become_choices_and_blocks_fall_back() {
    let answer = json!({"candidates": [
        {"index": 0, "content": {"role": "model", "parts": [{"text": "hel"}, {"text": "lo"}]}, "finishReason": "MAX_TOKENS"},
        {"index": 1, "content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]}, "finishReason": "STOP"}
    ], "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 6}});
    let choices = choices(&answer).unwrap();
    assert_eq!(choices[0]["message"]["content"], "hello");
    assert_eq!(choices[0]["finish_reason"], "length");
    assert_eq!(choices[1]["finish_reason"], "tool_calls");
    assert_eq!(
        choices[1]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"a\":1}"
    );
    assert_eq!(
        usage(&answer),
        Some(Usage {
            prompt_tokens: 4,
            completion_tokens: 6
        })
    );
    let refused =
        super::choices(&json!({"promptFeedback": {"blockReason": "SAFETY"}})).unwrap_err();
    assert!(refused.falls_back(), "{refused:?}");
    assert!(super::choices(&json!({"nothing": 1})).is_err());
}

#[test]
fn a_stream_ends_when_every_candidate_has_finished() {
    let mut started = false;
    let first = stream_step(
        r#"{"candidates": [{"content": {"parts": [{"text": "a"}]}}]}"#,
        &mut started,
    )
    .unwrap();
    let Step::Emit(events) = first else {
        panic!("{first:?}")
    };
    let StreamEvent::Choices(choices) = &events[0] else {
        panic!()
    };
    assert_eq!(choices[0]["delta"]["role"], "assistant");
    let last = stream_step(
        r#"{"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 2}}"#,
        &mut started,
    )
    .unwrap();
    let Step::Done(events) = last else {
        panic!("{last:?}")
    };
    assert!(matches!(
        events[1],
        StreamEvent::Usage(Usage {
            prompt_tokens: 2,
            completion_tokens: 2
        })
    ));
    assert!(stream_step("not json", &mut started).is_err());
    assert!(stream_step(r#"{"error": {"code": 500}}"#, &mut started).is_err());
}
