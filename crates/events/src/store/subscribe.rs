//! Catch-up-then-live subscriptions, shared by every backend: read the log in pages from a
//! position; when a page comes back empty, wait until the head moves (or a poll interval passes,
//! for writers in other processes) and read again. Each event is yielded once, in order, because
//! the next read always starts after the last event yielded.
//!
//! Live, a subscription to every tenant takes this process's commits from the writer's feed
//! (the events of each committed batch, built once for all subscriptions) instead of reading
//! them back: only the events that follow the last one yielded without a gap are taken. A gap
//! (another process's commit, a batch too large to feed) or a feed that ran ahead of a slow
//! subscription sends it back to reading the store, from the same position.
//!
//! **Holes.** Every backend gives positions densely, in commit order (PostgreSQL under one
//! advisory lock), so a read of every tenant that finds position n+2 but not n+1 has met a
//! transaction that is not committed yet: something wrote past the store's lock. The
//! subscription does not pass the hole: it reads again (after 5, 10, ... 200 ms) until the hole
//! fills, and only after [`HOLE_PATIENCE`] does it log an error and go on (a hole that never
//! fills is a rolled-back foreign write). A tenant's read has holes by nature (other tenants'
//! events) and is not checked.

use std::collections::VecDeque;
use std::time::Duration;

use std::sync::Arc;

use futures_util::stream;
use tokio::sync::{broadcast, watch};

use crate::envelope::RecordedEvent;
use crate::error::Result;
use crate::ids::GlobalPosition;
use crate::store::{EventStore, EventStream, Scope};

/// Events fetched per read while catching up (at most 256 MiB at the 1 MiB payload limit).
const PAGE: usize = 256;

/// How long a read of every tenant waits for a hole in the positions to fill before it passes.
pub const HOLE_PATIENCE: Duration = Duration::from_secs(30);

struct Cursor<S> {
    store: S,
    head: watch::Receiver<GlobalPosition>,
    /// The writer's feed (subscriptions to every tenant in a process that writes).
    feed: Option<broadcast::Receiver<Arc<[RecordedEvent]>>>,
    scope: Scope,
    position: GlobalPosition,
    /// The head up to which the store was read or the feed taken: a wake-up reads the store only
    /// when the head moved past it (or the poll interval passed), not after every fed batch.
    seen: GlobalPosition,
    /// The next wait ends by reading the store (the start, a poll interval passed, a lag).
    must_read: bool,
    buffer: VecDeque<RecordedEvent>,
    poll: Option<Duration>,
    done: bool,
    /// Since when the read has found a hole after `position` (see the module docs).
    hole_since: Option<std::time::Instant>,
}

/// Builds a subscription over `store`. `head` moves when this process commits; `poll` bounds the
/// wait for commits made elsewhere (`None` when every writer is in this process).
pub(crate) fn subscribe<S: EventStore + Clone>(
    store: S,
    head: watch::Receiver<GlobalPosition>,
    feed: Option<broadcast::Receiver<Arc<[RecordedEvent]>>>,
    scope: Scope,
    after: GlobalPosition,
    poll: Option<Duration>,
) -> EventStream {
    let cursor = Cursor {
        store,
        head,
        feed,
        scope,
        position: after,
        seen: after,
        must_read: true,
        buffer: VecDeque::new(),
        poll,
        done: false,
        hole_since: None,
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
        if cursor.take_from_feed() {
            continue;
        }
        // Mark the head as seen *before* reading, so a commit that lands after the read wakes us.
        let head = *cursor.head.borrow_and_update();
        if cursor.must_read || head > cursor.seen {
            match cursor
                .store
                .read_all(cursor.scope, cursor.position, PAGE)
                .await
            {
                Ok(page) if !page.is_empty() => {
                    backoff = Duration::from_millis(100);
                    let whole = page.len();
                    let page = cursor.without_holes(page);
                    if page.is_empty() {
                        // A hole right after the position: read again shortly.
                        let waited = cursor.hole_since.map_or(0, |t| t.elapsed().as_millis());
                        let pause = Duration::from_millis(5 << (waited / 50).min(5))
                            .min(Duration::from_millis(200));
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    if page.len() < whole {
                        // The rest follows a hole: read again from the last event kept.
                        cursor.must_read = true;
                    }
                    cursor.buffer.extend(page);
                    continue;
                }
                Ok(_caught_up) => {
                    backoff = Duration::from_millis(100);
                    cursor.must_read = false;
                    cursor.seen = cursor.seen.max(head);
                }
                Err(error) if error.is_transient() => {
                    // The database is restarting or unreachable: wait and read again from the
                    // same position, so nothing is skipped.
                    tracing::warn!(%error, position = %cursor.position, "subscription read failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(error) => return Err(error),
            }
        }
        // Caught up: a batch fed while the read ran is taken at once.
        if cursor.take_from_feed() {
            continue;
        }
        // The cursor owns a store handle, which keeps the head's sender alive, so `changed`
        // only returns when the head moves; a fed batch wakes it too.
        let poll = cursor.poll.unwrap_or(Duration::MAX);
        let Cursor {
            head,
            feed,
            buffer,
            position,
            seen,
            must_read,
            ..
        } = cursor;
        let woken = async {
            match feed {
                Some(feed) => tokio::select! {
                    _ = head.changed() => {}
                    batch = feed.recv() => match batch {
                        Ok(batch) => {
                            let (taken, complete) = absorb(buffer, *position, &batch);
                            if let Some(last) = taken {
                                *seen = (*seen).max(last);
                            }
                            // A gap: the store has what the feed skipped.
                            *must_read |= !complete;
                        }
                        // Dropped batches (lagged) or a writer gone: the store has them.
                        Err(_) => *must_read = true,
                    },
                },
                None => {
                    let _ = head.changed().await;
                }
            }
        };
        if tokio::time::timeout(poll, woken).await.is_err() {
            // Commits of other processes move no head here: the interval's read finds them.
            cursor.must_read = true;
        }
    }
}

impl<S> Cursor<S> {
    /// The events of a page read after `position` up to the first hole in the positions, for
    /// a read of every tenant (see the module docs); all of them once the hole has been waited
    /// for [`HOLE_PATIENCE`].
    fn without_holes(&mut self, mut page: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
        if self.scope != Scope::All {
            return page;
        }
        let mut expected = self.position.0 + 1;
        let contiguous = page
            .iter()
            .take_while(|e| {
                let next = e.global_position.0 == expected;
                expected += 1;
                next
            })
            .count();
        if contiguous > 0 {
            self.hole_since = None;
            page.truncate(contiguous);
            return page;
        }
        let since = *self.hole_since.get_or_insert_with(|| {
            tracing::warn!(
                after = %self.position,
                next = %page[0].global_position,
                "a hole in the log's positions (an uncommitted write); waiting for it to fill"
            );
            std::time::Instant::now()
        });
        if since.elapsed() < HOLE_PATIENCE {
            return Vec::new();
        }
        tracing::error!(
            after = %self.position,
            next = %page[0].global_position,
            "a hole in the log's positions did not fill in {HOLE_PATIENCE:?}; passing it"
        );
        super::metrics::hole_passed();
        self.hole_since = None;
        page
    }

    /// Takes what the feed holds after the last event yielded, as long as it follows without a
    /// gap. Answers whether it buffered anything.
    fn take_from_feed(&mut self) -> bool {
        let Some(feed) = &mut self.feed else {
            return false;
        };
        let mut end = self.position;
        // Until the feed is empty, or ran ahead of this subscription (the store has it all).
        while let Ok(batch) = feed.try_recv() {
            let (taken, complete) = absorb(&mut self.buffer, end, &batch);
            if let Some(last) = taken {
                end = last;
            }
            if !complete {
                // A gap: the store has what the feed skipped.
                self.must_read = true;
                break;
            }
        }
        if end > self.position {
            self.seen = self.seen.max(end);
            if end >= *self.head.borrow() {
                // This process's commits up to the head are taken: the head's move is seen.
                self.head.borrow_and_update();
            }
        }
        end > self.position
    }
}

/// Buffers the events of a fed batch that follow `after` without a gap. Answers the position of
/// the last one buffered, and whether the batch had no gap after `after`.
fn absorb(
    buffer: &mut VecDeque<RecordedEvent>,
    after: GlobalPosition,
    batch: &[RecordedEvent],
) -> (Option<GlobalPosition>, bool) {
    let mut end = buffer
        .back()
        .map_or(after, |e| e.global_position)
        .max(after);
    let mut taken = None;
    for event in batch {
        if event.global_position <= end {
            continue;
        }
        if event.global_position.0 != end.0 + 1 {
            return (taken, false);
        }
        buffer.push_back(event.clone());
        end = event.global_position;
        taken = Some(end);
    }
    (taken, true)
}
