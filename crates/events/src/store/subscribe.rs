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

/// Events fetched per read while catching up.
const PAGE: usize = 512;

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
            Ok(Some(event)) => Some((Ok(event), cursor)),
            Ok(None) => None,
            Err(error) => {
                cursor.done = true;
                Some((Err(error), cursor))
            }
        }
    }))
}

async fn next<S: EventStore>(cursor: &mut Cursor<S>) -> Result<Option<RecordedEvent>> {
    loop {
        if let Some(event) = cursor.buffer.pop_front() {
            cursor.position = event.global_position;
            return Ok(Some(event));
        }
        // Mark the head as seen *before* reading, so a commit that lands after the read wakes us.
        cursor.head.borrow_and_update();
        let page = cursor
            .store
            .read_all(cursor.scope, cursor.position, PAGE)
            .await?;
        if !page.is_empty() {
            cursor.buffer.extend(page);
            continue;
        }
        let changed = cursor.head.changed();
        match cursor.poll {
            Some(poll) => {
                if let Ok(Err(_closed)) = tokio::time::timeout(poll, changed).await {
                    // The store's writer is gone; keep polling for other writers.
                    tokio::time::sleep(poll).await;
                }
            }
            None => {
                if changed.await.is_err() {
                    return Ok(None);
                }
            }
        }
    }
}
