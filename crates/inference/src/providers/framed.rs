//! Reading a provider's streamed answer: bytes cut into frames by a [`Framing`] (SSE events, or
//! AWS event-stream messages for Bedrock), each frame made into chunk events by the adapter's
//! handler, within a first-event timeout and an inter-event timeout. A stream that ends before
//! the handler said it was done is `upstream_stream_cut`, never a clean end.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};

use super::http::{Endpoint, MAX_UPSTREAM_BODY, malformed};
use super::{ChunkStream, ProviderError, StreamEvent};

/// What a handler makes of one frame.
#[derive(Debug)]
pub enum Step {
    /// Chunks to pass on (maybe none).
    Emit(Vec<StreamEvent>),
    /// The stream ended cleanly (after these chunks).
    Done(Vec<StreamEvent>),
}

/// How a byte stream is cut into frames.
pub trait Framing: Send + 'static {
    type Frame: Send;

    /// The first whole frame at the front of `buffer`, removed from it; `None` until one is
    /// whole. A frame that can be skipped (an SSE comment) is consumed and not returned.
    fn next_frame(&mut self, buffer: &mut BytesMut) -> Result<Option<Self::Frame>, ProviderError>;
}

/// Server-sent events: a frame is one event's `data`, its lines joined.
#[derive(Debug, Default)]
pub struct Sse;

impl Framing for Sse {
    type Frame = String;

    fn next_frame(&mut self, buffer: &mut BytesMut) -> Result<Option<String>, ProviderError> {
        while let Some((length, separator)) = find_event_end(buffer) {
            let raw = buffer.split_to(length);
            buffer.advance(separator);
            let text =
                std::str::from_utf8(&raw).map_err(|_| malformed("an SSE event is not UTF-8"))?;
            let data: String = text
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect::<Vec<_>>()
                .join("\n");
            if !data.is_empty() {
                return Ok(Some(data));
            }
            // A comment, a keep-alive, or an event name alone.
        }
        Ok(None)
    }
}

/// Where the first whole SSE event ends: (length of the event, length of the separator).
fn find_event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Bytes of a response body, with a broken read mapped to `upstream_stream_cut`.
pub type Bytes = BoxStream<'static, Result<bytes::Bytes, ProviderError>>;

/// Turns a byte stream into chunk events, one frame at a time through `handle` (which says
/// when the stream has ended cleanly). The first bytes must come within `first`, each later
/// read within `between`.
pub fn framed_stream<F, H>(
    bytes: Bytes,
    first: Duration,
    between: Duration,
    framing: F,
    handle: H,
) -> ChunkStream
where
    F: Framing,
    H: FnMut(F::Frame) -> Result<Step, ProviderError> + Send + 'static,
{
    struct State<F, H> {
        bytes: Bytes,
        buffer: BytesMut,
        pending: VecDeque<StreamEvent>,
        /// An error read after `pending`: it goes out once they have.
        failed: Option<ProviderError>,
        started: bool,
        done: bool,
        framing: F,
        handle: H,
    }
    let state = State {
        bytes,
        buffer: BytesMut::new(),
        pending: VecDeque::new(),
        failed: None,
        started: false,
        done: false,
        framing,
        handle,
    };
    futures_util::stream::unfold(state, move |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            if let Some(error) = state.failed.take() {
                return Some((Err(error), state));
            }
            if state.done {
                return None;
            }
            // Handle every whole frame already buffered. The events read before an error in
            // the same buffer still go out first, as they would have had the bytes arrived in
            // smaller pieces.
            loop {
                let step = match state.framing.next_frame(&mut state.buffer) {
                    Ok(None) => break,
                    Ok(Some(frame)) => (state.handle)(frame),
                    Err(error) => Err(error),
                };
                match step {
                    Ok(Step::Emit(events)) => state.pending.extend(events),
                    Ok(Step::Done(events)) => {
                        state.pending.extend(events);
                        state.done = true;
                        break;
                    }
                    Err(error) => {
                        state.done = true;
                        state.failed = Some(error);
                        break;
                    }
                }
            }
            if !state.pending.is_empty() || state.done {
                continue;
            }
            if state.buffer.len() > MAX_UPSTREAM_BODY {
                state.done = true;
                return Some((Err(malformed("a streamed event is too large")), state));
            }
            let wait = if state.started { between } else { first };
            match tokio::time::timeout(wait, state.bytes.next()).await {
                Err(_) => {
                    state.done = true;
                    let what = if state.started {
                        "the provider's stream stalled"
                    } else {
                        "no first token from the provider in time"
                    };
                    return Some((Err(ProviderError::timeout(what)), state));
                }
                Ok(None) => {
                    state.done = true;
                    return Some((
                        Err(ProviderError::retryable(
                            "upstream_stream_cut",
                            "the provider's stream ended before its last event",
                        )),
                        state,
                    ));
                }
                Ok(Some(Err(error))) => {
                    state.done = true;
                    return Some((Err(error), state));
                }
                Ok(Some(Ok(chunk))) => {
                    state.started = true;
                    state.buffer.extend_from_slice(&chunk);
                }
            }
        }
    })
    .boxed()
}

/// An SSE byte stream through `handle`, one event's data at a time.
pub fn sse_stream<H>(bytes: Bytes, first: Duration, between: Duration, handle: H) -> ChunkStream
where
    H: FnMut(&str) -> Result<Step, ProviderError> + Send + 'static,
{
    let mut handle = handle;
    framed_stream(bytes, first, between, Sse, move |data: String| {
        handle(&data)
    })
}

/// A streamed answer's frames through `handle`, within `http`'s timeouts, with its key cut
/// out of any error (what every HTTP adapter does with a stream it opened).
pub fn relay_framed<F, H>(
    http: &Endpoint,
    response: reqwest::Response,
    framing: F,
    handle: H,
) -> ChunkStream
where
    F: Framing,
    H: FnMut(F::Frame) -> Result<Step, ProviderError> + Send + 'static,
{
    let bytes = response.bytes_stream().map_err(|e| {
        ProviderError::retryable(
            "upstream_stream_cut",
            format!("the provider's stream broke: {e}"),
        )
    });
    ProviderError::redact_stream(
        framed_stream(
            bytes.boxed(),
            http.first_token_timeout,
            http.timeout,
            framing,
            handle,
        ),
        http.api_key.as_deref().map(std::sync::Arc::from),
    )
}

/// [`relay_framed`] for an SSE stream.
pub fn relay<H>(http: &Endpoint, response: reqwest::Response, handle: H) -> ChunkStream
where
    H: FnMut(&str) -> Result<Step, ProviderError> + Send + 'static,
{
    let mut handle = handle;
    relay_framed(http, response, Sse, move |data: String| handle(&data))
}
