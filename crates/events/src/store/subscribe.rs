//! Catch-up-then-live subscriptions, shared by every backend: read the log in pages from a
//! position; when a page comes back empty, wait until the head moves (or a poll interval passes,
//! for writers in other processes) and read again. Each event is yielded once, in order, because
//! the next read always starts after the last event yielded.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::stream;
use tokio::sync::watch;

use crate::envelope::RecordedEvent;
use crate::error::Result;
use crate::ids::GlobalPosition;
use crate::store::{EventStore, EventStream, Scope};

/// Events fetched per read while catching up (at most 256 MiB at the 1 MiB payload limit).
const PAGE: usize = 256;

struct Cursor<S> {
    store: S,
    head: watch::Receiver<GlobalPosition>,
    scope: Scope,
    position: GlobalPosition,
    buffer: VecDeque<RecordedEvent>,
    poll: Option<Duration>,
    done: bool,
}

/// Builds a subscription over `store`. `head` moves when this process commits; `poll` bounds the
/// wait for commits made elsewhere (`None` when every writer is in this process).
pub(crate) fn subscribe<S: EventStore + Clone>(
    store: S,
    head: watch::Receiver<GlobalPosition>,
    scope: Scope,
    after: GlobalPosition,
    poll: Option<Duration>,
) -> EventStream {
    let cursor = Cursor {
        store,
        head,
        scope,
        position: after,
        buffer: VecDeque::new(),
        poll,
        done: false,
    };
    Box::pin(stream::unfold(cursor, |mut cursor| async move {
        if cursor.done {
            return None;
        }
        match next(&mut cursor).await {
            Ok(event) => Some((Ok(event), cursor)),
            Err(error) => {
                cursor.done = true;
                Some((Err(error), cursor))
            }
        }
    }))
}

async fn next<S: EventStore>(cursor: &mut Cursor<S>) -> Result<RecordedEvent> {
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Some(event) = cursor.buffer.pop_front() {
            cursor.position = event.global_position;
            return Ok(event);
        }
        // Mark the head as seen *before* reading, so a commit that lands after the read wakes us.
        cursor.head.borrow_and_update();
        match cursor
            .store
            .read_all(cursor.scope, cursor.position, PAGE)
            .await
        {
            Ok(page) if !page.is_empty() => {
                backoff = Duration::from_millis(100);
                cursor.buffer.extend(page);
                continue;
            }
            Ok(_caught_up) => backoff = Duration::from_millis(100),
            Err(error) if error.is_transient() => {
                // The database is restarting or unreachable: wait and read again from the same
                // position, so nothing is skipped.
                tracing::warn!(%error, position = %cursor.position, "subscription read failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(error) => return Err(error),
        }
        // Caught up. The cursor owns a store handle, which keeps the head's sender alive, so
        // `changed` only returns when the head moves.
        let changed = cursor.head.changed();
        match cursor.poll {
            Some(poll) => {
                let _ = tokio::time::timeout(poll, changed).await;
            }
            None => {
                let _ = changed.await;
            }
        }
    }
}
