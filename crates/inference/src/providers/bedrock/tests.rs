use std::time::{Duration, SystemTime};

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::{BufMut, BytesMut};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::converse::{STRUCTURED_TOOL, choice, request_body};
use super::stream::{EventStream, StreamMapper};
use super::*;
use crate::providers::StreamEvent;
use crate::providers::framed::{Framing, framed_stream};

fn chat(body: Value) -> ChatRequest {
    serde_json::from_value(body).unwrap()
}

#[test]
fn a_conversation_with_tools_becomes_converse_messages() {
    let (body, structured) = request_body(&chat(json!({
        "model": "b", "max_tokens": 40, "temperature": 0.3, "top_p": 0.9, "stop": "END", "seed": 4,
        "tools": [{"type": "function", "function": {"name": "weather", "description": "w",
            "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}}],
        "tool_choice": "required",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
            {"role": "user", "content": "weather?"},
            {"role": "user", "content": ""},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"q\":1}"}},
                {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{\"q\":2}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": ""}
        ]
    })))
    .unwrap();
    assert!(!structured);
    assert_eq!(
        body["system"],
        json!([{"text": "be brief"}, {"text": "and kind"}])
    );
    // Blank text is dropped; the two tool results share one user turn, so turns alternate.
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{body}");
    assert_eq!(
        messages[0],
        json!({"role": "user", "content": [{"text": "weather?"}]})
    );
    assert_eq!(
        messages[1]["content"][1],
        json!({"toolUse": {"toolUseId": "c2", "name": "weather", "input": {"q": 2}}})
    );
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(
        messages[2]["content"][0],
        json!({"toolResult": {"toolUseId": "c1", "content": [{"text": "sunny"}]}})
    );
    assert_eq!(
        messages[2]["content"][1]["toolResult"]["content"],
        json!([{"text": "(empty)"}])
    );
    assert_eq!(
        body["inferenceConfig"],
        json!({"maxTokens": 40, "temperature": 0.3, "topP": 0.9, "stopSequences": ["END"]})
    );
    assert_eq!(body["toolConfig"]["toolChoice"], json!({"any": {}}));
    assert_eq!(
        body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"]["q"],
        json!({"type": "integer"})
    );
    // No Converse field carries a seed: it is not sent at all.
    assert!(!body.to_string().contains("seed"));
}

#[test]
fn what_converse_cannot_carry_is_refused_with_the_reason() {
    for (request, says) in [
        (
            json!({"model": "b", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
            "n must be 1",
        ),
        (
            json!({"model": "b", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "http://x"}}]}]}),
            "text parts only",
        ),
        (
            json!({"model": "b", "messages": [{"role": "tool", "content": "1"}]}),
            "tool_call_id",
        ),
        (
            json!({"model": "b", "messages": [{"role": "system", "content": "only a system"}]}),
            "at least one",
        ),
        (
            json!({"model": "b", "messages": [{"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not"}}]}]}),
            "not JSON",
        ),
    ] {
        let error = request_body(&chat(request.clone())).unwrap_err();
        assert_eq!(error.status, 400, "{request}");
        assert!(error.message.contains(says), "{request}: {}", error.message);
    }
}

#[test]
fn a_json_schema_is_asked_as_a_forced_tool_and_its_input_is_the_answer() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let (body, structured) = request_body(&chat(json!({"model": "b",
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
        "tools": [{"type": "function", "function": {"name": "other"}}],
        "messages": [{"role": "user", "content": "where?"}]})))
    .unwrap();
    assert!(structured);
    assert_eq!(
        body["toolConfig"]["toolChoice"],
        json!({"tool": {"name": STRUCTURED_TOOL}})
    );
    assert_eq!(
        body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"],
        schema
    );
    let answer = json!({"output": {"message": {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "t", "name": STRUCTURED_TOOL, "input": {"city": "Oslo"}}}]}},
        "stopReason": "tool_use", "usage": {"inputTokens": 3, "outputTokens": 4}});
    let choice = choice(&answer, true).unwrap();
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        serde_json::from_str::<Value>(choice["message"]["content"].as_str().unwrap()).unwrap(),
        json!({"city": "Oslo"})
    );
    assert!(choice["message"].get("tool_calls").is_none());
}

#[test]
fn tool_choice_none_sends_tools_only_when_the_history_needs_them() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let (fresh, _) = request_body(&chat(
        json!({"model": "b", "tools": tools, "tool_choice": "none",
        "messages": [{"role": "user", "content": "x"}]}),
    ))
    .unwrap();
    assert!(fresh.get("toolConfig").is_none());
    let (later, _) = request_body(&chat(json!({"model": "b", "tools": tools, "tool_choice": "none",
        "messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "1"}]})))
    .unwrap();
    assert_eq!(later["toolConfig"]["toolChoice"], json!({"auto": {}}));
}

#[test]
fn answers_become_choices_with_mapped_finish_reasons() {
    for (stop, reason) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ] {
        let answer = json!({"output": {"message": {"role": "assistant", "content": [
            {"text": "hi "}, {"reasoningContent": {"reasoningText": {"text": "hmm"}}}, {"text": "there"},
            {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}}]}},
            "stopReason": stop, "usage": {"inputTokens": 3, "outputTokens": 4, "cacheReadInputTokens": 2}});
        let choice = choice(&answer, false).unwrap();
        assert_eq!(choice["finish_reason"], reason);
        assert_eq!(choice["message"]["content"], "hi there");
        assert_eq!(choice["message"]["tool_calls"][0]["id"], "t1");
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        let usage = converse::usage(&answer).unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (5, 4));
    }
    assert_eq!(
        choice(&json!({"output": {}}), false).unwrap_err().code,
        "upstream_malformed"
    );
}

/// One event-stream message as Bedrock frames it.
pub fn frame(kind: &str, event: &str, payload: &Value) -> Vec<u8> {
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(kind.to_owned().into()),
        ))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event.to_owned().into()),
        ))
        .add_header(Header::new(
            ":exception-type",
            HeaderValue::String(event.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out).unwrap();
    out
}

fn answer_frames() -> Vec<u8> {
    [
        frame("event", "messageStart", &json!({"role": "assistant"})),
        frame(
            "event",
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": "hel"}}),
        ),
        frame(
            "event",
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": "lo"}}),
        ),
        frame(
            "event",
            "contentBlockStop",
            &json!({"contentBlockIndex": 0}),
        ),
        frame(
            "event",
            "contentBlockStart",
            &json!({"contentBlockIndex": 1,
            "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}),
        ),
        frame(
            "event",
            "contentBlockDelta",
            &json!({"contentBlockIndex": 1,
            "delta": {"toolUse": {"input": "{\"a\":"}}}),
        ),
        frame(
            "event",
            "contentBlockDelta",
            &json!({"contentBlockIndex": 1,
            "delta": {"toolUse": {"input": "1}"}}}),
        ),
        frame("event", "futureEvent", &json!({"p": "abc"})),
        frame("event", "messageStop", &json!({"stopReason": "tool_use"})),
        frame(
            "event",
            "metadata",
            &json!({"usage": {"inputTokens": 7, "outputTokens": 9}, "metrics": {"latencyMs": 3}}),
        ),
    ]
    .concat()
}

async fn read(chunks: Vec<Vec<u8>>, structured: bool) -> Vec<Result<StreamEvent, ProviderError>> {
    let bytes = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, ProviderError>(bytes::Bytes::from(c))),
    )
    .boxed();
    let mut mapper = StreamMapper::new(structured);
    let long = Duration::from_secs(5);
    framed_stream(bytes, long, long, EventStream, move |m| mapper.step(m))
        .collect()
        .await
}

fn described(events: &[Result<StreamEvent, ProviderError>]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Ok(StreamEvent::Choices(choices)) => Value::Array(choices.clone()).to_string(),
            Ok(event) => format!("{event:?}"),
            Err(error) => format!("error {}", error.code),
        })
        .collect()
}

#[tokio::test]
async fn a_stream_cut_anywhere_gives_the_same_chunks() {
    let whole = answer_frames();
    let reference = described(&read(vec![whole.clone()], false).await);
    assert_eq!(reference.len(), 8, "{reference:?}");
    assert!(
        reference.iter().all(|e| !e.starts_with("error")),
        "{reference:?}"
    );
    assert!(reference[3].contains("\"id\":\"t1\""), "{reference:?}");
    assert!(reference[6].contains("tool_calls"), "{reference:?}");
    assert!(reference[7].contains("prompt_tokens: 7"), "{reference:?}");
    for cut in [1, 5, 12, 13, 40, whole.len() / 2, whole.len() - 1] {
        let split = vec![whole[..cut].to_vec(), whole[cut..].to_vec()];
        assert_eq!(
            described(&read(split, false).await),
            reference,
            "cut at {cut}"
        );
    }
    let bytewise = whole.iter().map(|b| vec![*b]).collect();
    assert_eq!(described(&read(bytewise, false).await), reference);
}

#[tokio::test]
async fn a_structured_stream_streams_the_tool_input_as_content() {
    let events = described(&read(vec![answer_frames()], true).await);
    let content: Vec<&String> = events.iter().filter(|e| e.contains("content")).collect();
    assert!(
        events.iter().all(|e| !e.contains("tool_calls")),
        "{events:?}"
    );
    assert!(
        content.iter().any(|e| e.contains("{\\\"a\\\":")),
        "{events:?}"
    );
    assert!(
        events[events.len() - 2].contains("\"finish_reason\":\"stop\""),
        "{events:?}"
    );
}

#[tokio::test]
async fn hostile_frames_are_errors_never_hangs_or_panics() {
    let good = answer_frames();
    let mut flipped = good.clone();
    flipped[20] ^= 0x40; // inside the first message: its CRC no longer holds
    let mut huge = BytesMut::new();
    huge.put_u32(u32::MAX);
    huge.put_u32(0);
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (vec![flipped], "upstream_malformed"),
        (vec![huge.to_vec()], "upstream_malformed"),
        (
            vec![vec![0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8]],
            "upstream_malformed",
        ),
        (vec![good[..good.len() - 3].to_vec()], "upstream_stream_cut"),
        (
            vec![frame(
                "exception",
                "throttlingException",
                &json!({"message": "slow down"}),
            )],
            "upstream_stream_error",
        ),
        (
            vec![frame(
                "exception",
                "validationException",
                &json!({"message": "bad"}),
            )],
            "upstream_rejected",
        ),
        (
            vec![frame("event", "messageStart", &json!("not an object"))],
            "upstream_stream_cut",
        ),
        (
            vec![frame("event", "metadata", &json!({"usage": {}}))],
            "upstream_malformed",
        ),
        (
            vec![frame(
                "event",
                "contentBlockDelta",
                &json!({"contentBlockIndex": 4,
                "delta": {"toolUse": {"input": "{"}}}),
            )],
            "upstream_malformed",
        ),
    ];
    for (chunks, code) in cases {
        let events = read(chunks, false).await;
        let last = events.last().unwrap().as_ref().unwrap_err();
        assert_eq!(last.code, code, "{events:?}");
    }
}

#[test]
fn the_framing_waits_for_a_whole_message() {
    let whole = frame("event", "messageStart", &json!({"role": "assistant"}));
    let mut buffer = BytesMut::from(&whole[..whole.len() - 1]);
    assert!(EventStream.next_frame(&mut buffer).unwrap().is_none());
    buffer.extend_from_slice(&whole[whole.len() - 1..]);
    assert!(EventStream.next_frame(&mut buffer).unwrap().is_some());
    assert!(buffer.is_empty());
}

#[test]
fn a_signature_covers_the_body_the_headers_and_the_session_token() {
    let identity: Identity =
        Credentials::new("AKIDEXAMPLE", "secret", Some("token".into()), None, "test").into();
    let url =
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-v2%3A1/converse";
    let headers = [("content-type", "application/json")];
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
    let sign = |body: &[u8], region: &str| {
        Bedrock::signature(&identity, region, url, &headers, body, at).unwrap()
    };
    let signed = sign(b"{}", "us-east-1");
    let get = |name: &str| {
        signed
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let authorization = get("authorization").unwrap();
    assert!(
        authorization.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
        ),
        "{authorization}"
    );
    assert_eq!(get("x-amz-date").unwrap(), "20150830T123600Z");
    assert_eq!(get("x-amz-security-token").unwrap(), "token");
    // The same request signs the same; another body or region does not.
    assert_eq!(sign(b"{}", "us-east-1"), signed);
    assert_ne!(sign(b"{ }", "us-east-1"), signed);
    assert_ne!(sign(b"{}", "eu-west-1"), signed);
}
