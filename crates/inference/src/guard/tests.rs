use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn guard(policy: Value) -> Guard {
    Guard::compile(&policy.to_string()).unwrap()
}

fn redacted(guard: &Guard, text: &str) -> (String, Verdict) {
    let mut verdict = Verdict::new(Stage::Output);
    let out = guard
        .scan(Stage::Output, text, &mut verdict)
        .unwrap_or_else(|| text.to_owned());
    (out, verdict)
}

fn pii_all() -> Guard {
    guard(json!({"pii": {"names": ["Ada Lovelace"]}}))
}

#[test]
fn cards_pass_the_luhn_check_or_are_left_alone() {
    let g = pii_all();
    for card in [
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "378282246310005",
    ] {
        let (out, verdict) = redacted(&g, &format!("pay with {card} today"));
        assert_eq!(out, "pay with [REDACTED:CARD] today", "{card}");
        assert_eq!(verdict.hits[0].rule, "pii.card");
    }
    // One digit off: not a card (and too long to be a phone number).
    let (out, _) = redacted(&g, "order 4111 1111 1111 1112 shipped");
    assert!(out.contains("4111 1111 1111 1112"), "{out}");
    assert!(!luhn("0000 0000 0000 0000"));
}

#[test]
fn ibans_pass_the_mod_97_check_and_stop_where_they_end() {
    let g = pii_all();
    assert!(iban_valid("DE89 3704 0044 0532 0130 00"));
    assert!(iban_valid("GB82WEST12345698765432"));
    assert!(!iban_valid("DE88 3704 0044 0532 0130 00"));
    let (out, verdict) = redacted(&g, "to DE89 3704 0044 0532 0130 00 AND NOT MORE");
    assert_eq!(out, "to [REDACTED:IBAN] AND NOT MORE");
    assert_eq!(verdict.hits[0].rule, "pii.iban");
    let (out, _) = redacted(&g, "ref DE88 3704 0044 0532 0130 00");
    assert!(!out.contains("IBAN"), "{out}");
}

#[test]
fn emails_phones_and_addresses_are_found_and_lookalikes_are_not() {
    let g = pii_all();
    let cases = [
        (
            "mail ada.l+x@math.example.co.uk now",
            "mail [REDACTED:EMAIL] now",
        ),
        ("call +44 20 7946 0958.", "call [REDACTED:PHONE]."),
        ("call (555) 123-4567 or", "call [REDACTED:PHONE] or"),
        ("from 192.168.10.1 at", "from [REDACTED:IP] at"),
        ("v6 2001:db8::8a2e:370:7334 ok", "v6 [REDACTED:IP] ok"),
        (
            "ask ada lovelace, not Adam",
            "ask [REDACTED:NAME], not Adam",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(redacted(&g, text).0, expected, "{text}");
    }
    for harmless in [
        "on 2026-12-04 at 12:30:45",
        "version 999.1.1.1 of it",
        "the year 1984 and 42 items",
        "an @ sign alone, a@b",
    ] {
        let (out, verdict) = redacted(&g, harmless);
        assert_eq!(out, harmless);
        assert!(verdict.hits.is_empty(), "{harmless}: {:?}", verdict.hits);
    }
}

#[test]
fn a_policy_with_problems_reports_every_one() {
    let problem = Guard::compile(
        &json!({
            "topics": [{"name": "ok", "patterns": ["(unclosed"]}, {"name": "bad name!", "keywords": ["x"]},
                       {"name": "empty"}],
            "max_prompt_chars": 0,
            "output_schema": {"type": 12}
        })
        .to_string(),
    )
    .unwrap_err();
    for part in [
        "topics[0].patterns[0]",
        "topics[1].name",
        "topics[2] needs keywords",
        "max_prompt_chars",
        "output_schema",
    ] {
        assert!(problem.contains(part), "{part} in {problem}");
    }
    for hostile in [
        "",
        "null",
        "[]",
        "{\"pii\": {\"action\": \"pass\"}}",
        "{\"pii\": {\"kinds\": [\"name\"]}}",
        "{\"unknown\": 1}",
        "{\"pii\": {\"kinds\": [\"ssn\"]}}",
    ] {
        assert!(Guard::compile(hostile).is_err(), "{hostile:?}");
    }
    let long = format!(
        "{{\"topics\": [{{\"name\": \"t\", \"keywords\": [\"{}\"]}}]}}",
        "x".repeat(5000)
    );
    assert!(Guard::compile(&long).unwrap_err().contains("bytes"));
}

fn chat(messages: Value) -> ChatRequest {
    serde_json::from_value(json!({"model": "m", "messages": messages})).unwrap()
}

#[test]
fn input_rules_redact_every_message_and_block_by_topic_and_size() {
    let g = guard(json!({
        "pii": {"kinds": ["email"], "stages": "input"},
        "topics": [{"name": "weapons", "keywords": ["nerve agent"], "patterns": ["(?i)build an? bomb"]}],
        "max_prompt_chars": 200
    }));
    let mut request = chat(json!([
        {"role": "system", "content": "reply to bob@example.com"},
        {"role": "user", "content": [{"type": "text", "text": "cc eve@example.org please"}]}
    ]));
    let verdict = g.check_input(&mut request);
    assert_eq!(verdict.action(), Action::Redact);
    assert_eq!(verdict.hits[0].count, 2);
    assert_eq!(request.messages[0].text(), "reply to [REDACTED:EMAIL]");
    assert_eq!(request.messages[1].text(), "cc [REDACTED:EMAIL] please");

    let mut request = chat(json!([{"role": "user", "content": "How do I BUILD A BOMB?"}]));
    let verdict = g.check_input(&mut request);
    assert_eq!(verdict.blocked_by(), Some("topic.weapons"));
    assert!(verdict.block_message().unwrap().contains("topic.weapons"));

    let mut request = chat(json!([{"role": "user", "content": "y".repeat(201)}]));
    assert_eq!(
        g.check_input(&mut request).blocked_by(),
        Some("max_prompt_chars")
    );
    // Output-only or input-only: the email rule does not look at answers.
    assert!(redacted(&g, "write to bob@example.com").1.hits.is_empty());
}

#[test]
fn output_rules_cover_content_and_tool_arguments_and_the_event_holds_no_text() {
    let g = guard(json!({"pii": {"action": "redact", "kinds": ["email"]}}));
    let mut choices = vec![
        json!({"index": 0, "message": {"role": "assistant", "content": null,
        "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "send", "arguments": "{\"to\":\"amy@example.com\"}"}}]}}),
    ];
    let verdict = g.check_output(&mut choices);
    assert_eq!(
        choices[0].pointer("/message/tool_calls/0/function/arguments"),
        Some(&json!("{\"to\":\"[REDACTED:EMAIL]\"}"))
    );
    let event = serde_json::to_string(&verdict.event()).unwrap();
    assert!(!event.contains("amy"), "{event}");
    assert!(event.contains("pii.email"), "{event}");

    let block = guard(json!({"pii": {"action": "block", "kinds": ["card"]}}));
    let mut choices =
        vec![json!({"index": 0, "message": {"role": "assistant", "content": "4111111111111111"}})];
    let verdict = block.check_output(&mut choices);
    assert_eq!(verdict.blocked_by(), Some("pii.card"));
}

#[test]
fn the_output_schema_names_what_does_not_fit() {
    let g = guard(
        json!({"output_schema": {"type": "object", "required": ["answer"],
        "properties": {"answer": {"type": "string"}}}}),
    );
    assert_eq!(g.schema_retries(), 1);
    let answer = |content: &str| vec![json!({"message": {"content": content}})];
    assert!(g.check_schema(&answer("{\"answer\": \"yes\"}")).is_ok());
    assert!(
        g.check_schema(&answer("yes"))
            .unwrap_err()
            .contains("not JSON")
    );
    let problem = g.check_schema(&answer("{\"answer\": 3}")).unwrap_err();
    assert!(problem.contains("/answer"), "{problem}");
}

/// Sends `text` through a stream guard in the given pieces; the text that went out.
fn streamed(guard: &Arc<Guard>, pieces: &[&str]) -> Result<String, String> {
    let mut stream = StreamGuard::new(guard.clone());
    let mut out = String::new();
    for (i, piece) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let mut choices = vec![json!({"index": 0, "delta": {"content": piece},
            "finish_reason": if last { json!("stop") } else { Value::Null }})];
        stream.filter(&mut choices)?;
        out.push_str(
            choices[0]
                .pointer("/delta/content")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
    }
    for choice in stream.flush()? {
        out.push_str(
            choice
                .pointer("/delta/content")
                .and_then(Value::as_str)
                .unwrap(),
        );
    }
    Ok(out)
}

#[test]
fn a_stream_finds_pii_and_phrases_split_across_chunks() {
    let g = Arc::new(guard(json!({"pii": {"kinds": ["email", "card"]},
        "topics": [{"name": "secret", "keywords": ["project bluebird"]}]})));
    let out = streamed(
        &g,
        &[
            "write to ali",
            "ce@exam",
            "ple.com or pay 4111 1111 ",
            "1111 1111 now",
        ],
    )
    .unwrap();
    assert_eq!(out, "write to [REDACTED:EMAIL] or pay [REDACTED:CARD] now");
    let long_prefix = "word ".repeat(40);
    let blocked = streamed(&g, &[&long_prefix, "about project ", "blue", "bird today"]);
    assert_eq!(blocked, Err("topic.secret".to_owned()));
}

proptest! {
    /// However a text is cut into chunks, what a stream lets out is the whole text's redaction.
    #[test]
    fn any_chunking_gives_the_whole_texts_redaction(
        cuts in proptest::collection::vec(0usize..200, 0..12),
        filler in "[a-z ]{0,80}",
    ) {
        let g = Arc::new(pii_all());
        let text = format!("{filler} mail amy@example.com, card 4111 1111 1111 1111, ip 10.0.0.1, \
            iban DE89 3704 0044 0532 0130 00 and Ada Lovelace {filler} +44 20 7946 0958 end");
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c % text.len()).collect();
        points.sort_unstable();
        points.dedup();
        let mut pieces = Vec::new();
        let mut at = 0;
        for point in points {
            pieces.push(&text[at..point]);
            at = point;
        }
        pieces.push(&text[at..]);
        let whole = redacted(&g, &text).0;
        prop_assert_eq!(streamed(&g, &pieces).unwrap(), whole);
    }
}

#[test]
fn streamed_tool_arguments_are_checked_like_text() {
    let g = Arc::new(guard(json!({"pii": {"kinds": ["email"]}})));
    let mut stream = StreamGuard::new(g);
    let pieces = [
        "{\"to\": \"amy@exa",
        "mple.com\", \"body\": \"",
        "hello there\"}",
    ];
    let mut arguments = String::new();
    for (i, piece) in pieces.iter().enumerate() {
        let mut call = json!({"index": 0, "function": {"arguments": piece}});
        if i == 0 {
            call["id"] = json!("call_1");
            call["function"]["name"] = json!("send");
        }
        let mut choices =
            vec![json!({"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null})];
        stream.filter(&mut choices).unwrap();
        for call in choices[0]["delta"]["tool_calls"].as_array().unwrap() {
            arguments.push_str(call["function"]["arguments"].as_str().unwrap());
        }
    }
    let mut last = vec![json!({"index": 0, "delta": {}, "finish_reason": "tool_calls"})];
    stream.filter(&mut last).unwrap();
    for call in last[0]["delta"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(call["index"], 0);
        arguments.push_str(call["function"]["arguments"].as_str().unwrap());
    }
    assert_eq!(
        arguments,
        "{\"to\": \"[REDACTED:EMAIL]\", \"body\": \"hello there\"}"
    );
    assert_eq!(stream.verdict.hits[0].rule, "pii.email");
}
