//! Fuzz targets of the inference crate's boundaries (see `switchyard_events::fuzzing`):
//!
//! - `openai-request`: a client's chat-completion body. Parsing and validating never panic,
//!   and what parses re-serializes to a fixed point.
//! - `sse-reader`: a provider's event stream (OpenAI and Anthropic SSE, Bedrock's binary
//!   event-stream messages), cut into chunks at
//!   generated places. Reading never panics, and the events and errors read do not depend on
//!   where the bytes were cut.

use std::time::Duration;

use futures_util::StreamExt;
use switchyard_events::fuzzing::{JSON_TOKENS, Mutated, Target};

use crate::openai::ChatRequest;
use crate::providers::ProviderError;
use crate::providers::anthropic::StreamMapper;
use crate::providers::bedrock;
use crate::providers::framed::framed_stream;
use crate::providers::openai_compat::{sse_events, sse_stream};

fn request_dictionary() -> Vec<&'static str> {
    let mut tokens = vec![
        "\"model\"",
        "\"messages\"",
        "\"role\"",
        "\"content\"",
        "\"tool\"",
        "\"assistant\"",
        "\"tool_calls\"",
        "\"tool_call_id\"",
        "\"tools\"",
        "\"function\"",
        "\"stream\"",
        "\"max_tokens\"",
        "\"max_completion_tokens\"",
        "\"n\"",
        "\"temperature\"",
        "\"response_format\"",
        "\"json_schema\"",
        "\"image_url\"",
        "\"text\"",
        "\"stop\"",
        "4294967296",
        "-9223372036854775809",
        "1e-400",
        "\"\"",
    ];
    tokens.extend_from_slice(JSON_TOKENS);
    tokens
}

fn request_property(_: &str, bytes: &[u8]) {
    let Ok(request) = serde_json::from_slice::<ChatRequest>(bytes) else {
        return;
    };
    let valid = request.validate().is_ok();
    let _ = request.estimate_prompt_tokens();
    let _ = request.output_cap();
    let first = serde_json::to_vec(&request).expect("a parsed request serializes");
    let again: ChatRequest = serde_json::from_slice(&first).unwrap_or_else(|e| {
        panic!(
            "its own serialization does not parse: {e}\n{}",
            String::from_utf8_lossy(&first)
        )
    });
    assert_eq!(
        again.validate().is_ok(),
        valid,
        "validity changed on a round trip"
    );
    assert_eq!(
        serde_json::to_vec(&again).expect("serializes"),
        first,
        "the serialization is not a fixed point"
    );
}

#[test]
fn openai_request() {
    let target = Target::new("openai-request");
    let dictionary = request_dictionary();
    for (name, bytes) in target.seeds() {
        let parsed: Result<ChatRequest, _> = serde_json::from_slice(bytes);
        let valid = parsed.as_ref().map(|r| r.validate().is_ok());
        assert!(matches!(valid, Ok(true)), "seed {name}: {valid:?}");
        request_property(name, bytes);
    }
    bolero::check!()
        .with_type::<Mutated>()
        .for_each(|input| target.run(&dictionary, input, request_property));
}

/// What a stream read gave: each event or error, as text.
async fn read(name: &str, chunks: Vec<Vec<u8>>) -> Vec<String> {
    let bytes = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, ProviderError>(bytes::Bytes::from(c))),
    )
    .boxed();
    let long = Duration::from_secs(3600);
    let stream = if name.starts_with("anthropic.") {
        let mut mapper = StreamMapper::default();
        sse_stream(bytes, long, long, move |data| mapper.step(data))
    } else if name.starts_with("bedrock.") {
        let mut mapper = bedrock::stream::StreamMapper::new(false);
        framed_stream(bytes, long, long, bedrock::stream::EventStream, move |m| {
            mapper.step(m)
        })
    } else {
        sse_events(bytes, long, long)
    };
    stream
        .map(|item| match item {
            Ok(event) => format!("{event:?}"),
            Err(error) => format!("error {}: {}", error.code, error.message),
        })
        .collect()
        .await
}

/// The bytes cut at the generated offsets (each taken modulo what is left).
fn cut(bytes: &[u8], cuts: &[u16]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    for &at in cuts {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(usize::from(at) % (rest.len() + 1));
        chunks.push(head.to_vec());
        rest = tail;
    }
    chunks.push(rest.to_vec());
    chunks
}

#[test]
fn sse_reader() {
    let target = Target::new("sse-reader");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    for (name, bytes) in target.seeds() {
        let events = runtime.block_on(read(name, vec![bytes.clone()]));
        assert!(!events.is_empty(), "seed {name} reads as nothing");
    }
    let mut dictionary = vec![
        "data: ",
        "data:",
        "\n\n",
        "\r\n\r\n",
        "\r\n",
        "\n",
        ": ping\n\n",
        "event: x\n",
        "data: [DONE]\n\n",
        "\"type\":\"message_stop\"",
        "\"type\":\"content_block_delta\"",
        "\"index\":18446744073709551615",
        "\"contentBlockIndex\":1",
        ":event-type",
        "messageStop",
        "\u{0}\u{0}\u{0}\u{10}",
        "\u{fffd}",
        "\u{0}",
    ];
    dictionary.extend_from_slice(JSON_TOKENS);
    bolero::check!()
        .with_type::<(Mutated, Vec<u16>)>()
        .for_each(|(input, cuts)| {
            target.run(&dictionary, input, |name, bytes| {
                let whole = runtime.block_on(read(name, vec![bytes.to_vec()]));
                let pieces = runtime.block_on(read(name, cut(bytes, cuts)));
                assert_eq!(whole, pieces, "cut at {cuts:?}");
            })
        });
}
