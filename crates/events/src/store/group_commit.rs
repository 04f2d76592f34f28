//! Group commit: concurrent appenders hand their requests to one writer (a task on the runtime, or
//! a thread of its own for a backend whose writes block), which writes every request waiting at
//! that moment in one transaction (one lock, one fsync) and answers each.
//!
//! The writer never waits to fill a batch: it takes what is queued and goes, so a lone appender
//! pays no extra latency and a crowd shares the commit.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::metrics::{self, StoreMetrics};
use crate::envelope::{RecordedEvent, now_micros, timestamp_from_micros};
use crate::error::{Error, Result};
use crate::ids::{GlobalPosition, StreamVersion};
use crate::store::AppendResult;
use crate::store::plan::Pending;

/// Most requests one transaction takes.
const MAX_BATCH_REQUESTS: usize = 1024;
/// Most events one transaction takes (a single larger append still goes through alone).
const MAX_BATCH_EVENTS: usize = 20_000;
/// Most payload bytes one transaction takes (a single larger append still goes through alone).
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Requests that may wait for the writer before appenders are slowed down (backpressure).
const QUEUE_DEPTH: usize = 4096;

/// A backend's way of writing one batch in one transaction.
#[async_trait]
pub(crate) trait BatchWriter: Send + 'static {
    /// Writes the batch atomically. `Ok` carries one outcome per request (a lost race is an
    /// outcome, not a failure) and the new head position if anything was written. `Err` means
    /// the transaction failed as a whole and nothing of it is visible (or, if the commit's
    /// answer was lost, it may be: appends are idempotent, so a retry tells).
    /// `recorded_at` (unix microseconds) is stored on every event of the batch.
    async fn write(
        &mut self,
        batch: Vec<Arc<Pending>>,
        recorded_at: i64,
    ) -> Result<(Vec<Result<AppendResult>>, Option<GlobalPosition>)>;
}

/// Committed batches, as the events a read would return, for this process's subscriptions: they
/// take them from here instead of reading the log back after every commit (a subscription that
/// falls behind, or sees a gap, reads the store as before).
pub(crate) type Feed = tokio::sync::broadcast::Sender<Arc<[RecordedEvent]>>;

/// Batches the feed holds for a subscription that has not taken them yet.
const FEED_BATCHES: usize = 64;
/// Batches with more payload than this are not fed (their subscribers read them).
const FEED_MAX_BYTES: usize = 1 << 20;

/// A new, empty feed.
pub(crate) fn feed() -> Feed {
    tokio::sync::broadcast::channel(FEED_BATCHES).0
}

struct Request {
    pending: Arc<Pending>,
    reply: oneshot::Sender<Result<AppendResult>>,
    span: tracing::Span,
    queued: Instant,
}

/// The appenders' side of the writer task.
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Request>,
    /// The caller's whole wait, observed here (the writer observes its parts).
    append_seconds: prometheus::Histogram,
}

impl GroupCommit {
    /// Starts the writer task on the current tokio runtime. It stops when the last handle is
    /// dropped.
    pub fn spawn<W: BatchWriter>(
        writer: W,
        head: Arc<watch::Sender<GlobalPosition>>,
        feed: Feed,
        backend: &'static str,
    ) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE_DEPTH);
        let metrics = metrics::store(backend);
        let append_seconds = metrics.append_seconds.clone();
        tokio::spawn(run(writer, requests, head, feed, metrics, backend));
        GroupCommit {
            queue,
            append_seconds,
        }
    }

    /// Starts the writer on a thread of its own, for a backend whose writes block (SQLite):
    /// the thread waits for appenders, writes each batch in place and answers them, so a commit
    /// wakes one thread instead of a runtime worker and then a blocking-pool thread and the
    /// worker again. It stops when the last handle is dropped.
    pub fn spawn_dedicated<W: BatchWriter>(
        writer: W,
        head: Arc<watch::Sender<GlobalPosition>>,
        feed: Feed,
        backend: &'static str,
    ) -> Result<Self> {
        let (queue, requests) = mpsc::channel(QUEUE_DEPTH);
        let metrics = metrics::store(backend);
        let append_seconds = metrics.append_seconds.clone();
        std::thread::Builder::new()
            .name(format!("{backend}-writer"))
            .spawn(move || {
                // Built here, not by the caller: a runtime may not be dropped inside another's
                // async context. No I/O or timer driver: the thread parks on a condition
                // variable between batches.
                match tokio::runtime::Builder::new_current_thread().build() {
                    Ok(runtime) => {
                        runtime.block_on(run(writer, requests, head, feed, metrics, backend));
                    }
                    // The receiver drops with this thread: appends answer `Closed`.
                    Err(error) => tracing::error!(%error, backend, "cannot start the log writer"),
                }
            })
            .map_err(|e| Error::Unavailable(format!("cannot start the log writer: {e}")))?;
        Ok(GroupCommit {
            queue,
            append_seconds,
        })
    }

    /// Queues an append and waits for the transaction that carries it.
    pub async fn append(&self, pending: Pending) -> Result<AppendResult> {
        let (reply, answer) = oneshot::channel();
        let queued = Instant::now();
        let request = Request {
            pending: Arc::new(pending),
            reply,
            span: tracing::Span::current(),
            queued,
        };
        self.queue.send(request).await.map_err(|_| Error::Closed)?;
        let outcome = answer.await.map_err(|_| Error::Closed)?;
        self.append_seconds.observe(queued.elapsed().as_secs_f64());
        outcome
    }

    /// Whether the writer has stopped (it never stops while a handle exists, unless it
    /// panicked, its runtime shut down or its thread could not start one).
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

async fn run<W: BatchWriter>(
    mut writer: W,
    mut requests: mpsc::Receiver<Request>,
    head: Arc<watch::Sender<GlobalPosition>>,
    feed: Feed,
    metrics: StoreMetrics,
    backend: &'static str,
) {
    let mut waiting: Option<Request> = None;
    while let Some(first) = match waiting.take() {
        Some(request) => Some(request),
        None => requests.recv().await,
    } {
        let (mut events, mut bytes) = (first.pending.events.len(), first.pending.bytes());
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_REQUESTS
            && events < MAX_BATCH_EVENTS
            && bytes < MAX_BATCH_BYTES
        {
            let Ok(request) = requests.try_recv() else {
                break;
            };
            let (more_events, more_bytes) = (request.pending.events.len(), request.pending.bytes());
            if events + more_events > MAX_BATCH_EVENTS || bytes + more_bytes > MAX_BATCH_BYTES {
                waiting = Some(request); // first of the next batch
                break;
            }
            events += more_events;
            bytes += more_bytes;
            batch.push(request);
        }
        let span = tracing::debug_span!(
            "group_commit",
            backend,
            requests = batch.len(),
            events,
            bytes
        );
        for request in &batch {
            span.follows_from(&request.span);
        }
        commit(&mut writer, batch, &head, &feed, &metrics)
            .instrument(span)
            .await;
    }
}

async fn commit<W: BatchWriter>(
    writer: &mut W,
    mut batch: Vec<Request>,
    head: &watch::Sender<GlobalPosition>,
    feed: &Feed,
    metrics: &StoreMetrics,
) {
    let started = Instant::now();
    for request in &batch {
        metrics.queue_seconds.observe(
            started
                .saturating_duration_since(request.queued)
                .as_secs_f64(),
        );
    }
    let pendings = batch.iter().map(|r| r.pending.clone()).collect();
    let recorded_at = now_micros();
    match writer.write(pendings, recorded_at).await {
        Ok((outcomes, new_head)) => {
            metrics.observe_batch(batch.len(), started.elapsed());
            // The feed first: a subscription the head wakes finds the batch there.
            announce(feed, &batch, &outcomes, recorded_at);
            publish(head, new_head);
            for (request, outcome) in batch.into_iter().zip(outcomes) {
                metrics.observe_outcome(&outcome);
                let _ = request.reply.send(outcome);
            }
        }
        Err(error) if batch.len() == 1 || error.is_transient() => {
            // One request, or the database is unreachable: retrying each alone would only make
            // every caller wait longer for the same answer.
            tracing::warn!(%error, requests = batch.len(), "append transaction failed");
            metrics.failed_batches.inc();
            let message = error.to_string();
            if let Some(last) = batch.pop() {
                let _ = last.reply.send(Err(error));
            }
            for request in batch {
                let _ = request.reply.send(Err(Error::Unavailable(message.clone())));
            }
        }
        Err(error) => {
            // Something in the batch made the database refuse it: isolate it by writing each
            // request alone. Safe even if the failed commit did land, because appends are
            // idempotent by event id.
            tracing::warn!(%error, "batched append failed; retrying its requests one by one");
            metrics.failed_batches.inc();
            for request in batch {
                let outcome = match writer
                    .write(vec![request.pending.clone()], now_micros())
                    .await
                {
                    Ok((mut outcomes, new_head)) => {
                        publish(head, new_head);
                        outcomes.pop().unwrap_or(Err(Error::Closed))
                    }
                    Err(error) => Err(error),
                };
                metrics.observe_outcome(&outcome);
                let _ = request.reply.send(outcome);
            }
        }
    }
}

/// Hands a committed batch's events to the feed, as a read would return them (a batch retried
/// request by request after a failure is not fed: its subscribers read it).
fn announce(feed: &Feed, batch: &[Request], outcomes: &[Result<AppendResult>], recorded_at: i64) {
    if feed.receiver_count() == 0
        || batch.iter().map(|r| r.pending.bytes()).sum::<usize>() > FEED_MAX_BYTES
    {
        return;
    }
    let Ok(recorded_at) = timestamp_from_micros(recorded_at) else {
        return;
    };
    let mut events = Vec::new();
    for (request, outcome) in batch.iter().zip(outcomes) {
        let Ok(result) = outcome else { continue };
        if result.deduplicated {
            continue;
        }
        let pending = &request.pending;
        let count = pending.events.len() as u64;
        for (i, (event, position)) in pending.events.iter().zip(&result.positions).enumerate() {
            events.push(RecordedEvent {
                event_id: event.event_id,
                tenant_id: pending.tenant,
                stream_id: pending.stream.clone(),
                stream_version: StreamVersion(result.stream_version.0 + 1 + i as u64 - count),
                global_position: *position,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                recorded_at,
                metadata: event.metadata.clone(),
                payload: event.payload.clone(),
            });
        }
    }
    events.sort_by_key(|e| e.global_position);
    if !events.is_empty() {
        let _ = feed.send(events.into());
    }
}

fn publish(head: &watch::Sender<GlobalPosition>, new_head: Option<GlobalPosition>) {
    if let Some(new_head) = new_head {
        head.send_if_modified(|current| {
            let advanced = new_head > *current;
            if advanced {
                *current = new_head;
            }
            advanced
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::envelope::{Metadata, NewEvent};
    use crate::ids::{EventId, StreamId, StreamVersion, TenantId};
    use crate::store::ExpectedVersion;

    /// A writer that fails as told and records the batch sizes it saw.
    struct Scripted {
        failures: Vec<Error>,
        seen: Arc<Mutex<Vec<usize>>>,
        next: u64,
    }

    #[async_trait]
    impl BatchWriter for Scripted {
        async fn write(
            &mut self,
            batch: Vec<Arc<Pending>>,
            _recorded_at: i64,
        ) -> Result<(Vec<Result<AppendResult>>, Option<GlobalPosition>)> {
            self.seen.lock().unwrap().push(batch.len());
            if let Some(error) = self.failures.pop() {
                return Err(error);
            }
            let outcomes = batch
                .iter()
                .map(|p| {
                    let positions = p
                        .events
                        .iter()
                        .map(|_| {
                            self.next += 1;
                            GlobalPosition(self.next)
                        })
                        .collect();
                    Ok(AppendResult {
                        positions,
                        stream_version: StreamVersion(1),
                        deduplicated: false,
                    })
                })
                .collect();
            Ok((outcomes, Some(GlobalPosition(self.next))))
        }
    }

    fn pending() -> Pending {
        let event = NewEvent {
            event_id: EventId::new(),
            event_type: "T".into(),
            schema_version: 1,
            payload: Bytes::from_static(b"\x01"),
            metadata: Metadata::default(),
        };
        Pending::new(
            TenantId::new(),
            &StreamId::parse("s-1").unwrap(),
            ExpectedVersion::Any,
            vec![event],
        )
        .unwrap()
    }

    async fn run_batch(failures: Vec<Error>, n: usize) -> (Vec<Result<AppendResult>>, Vec<usize>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut writer = Scripted {
            failures,
            seen: seen.clone(),
            next: 0,
        };
        let head = watch::channel(GlobalPosition::START).0;
        let mut answers = Vec::new();
        let batch = (0..n)
            .map(|_| {
                let (reply, answer) = oneshot::channel();
                answers.push(answer);
                Request {
                    pending: Arc::new(pending()),
                    reply,
                    span: tracing::Span::none(),
                    queued: Instant::now(),
                }
            })
            .collect();
        commit(&mut writer, batch, &head, &feed(), &metrics::store("test")).await;
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.unwrap());
        }
        let seen = seen.lock().unwrap().clone();
        (outcomes, seen)
    }

    #[tokio::test]
    async fn a_refused_batch_is_retried_request_by_request() {
        let refused = Error::InvalidEvent("refused by the database".into());
        let (outcomes, seen) = run_batch(vec![refused], 3).await;
        assert_eq!(seen, vec![3, 1, 1, 1]);
        assert!(outcomes.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn an_unreachable_database_fails_the_batch_at_once() {
        let (outcomes, seen) = run_batch(vec![Error::Database(sqlx::Error::PoolTimedOut)], 3).await;
        assert_eq!(
            seen,
            vec![3],
            "no per-request retries against a database that is down"
        );
        assert!(
            outcomes
                .iter()
                .all(|o| o.as_ref().is_err_and(Error::is_transient))
        );
    }

    #[tokio::test]
    async fn an_append_observes_its_wait_and_its_whole_time() {
        let writer = Scripted {
            failures: Vec::new(),
            seen: Arc::default(),
            next: 0,
        };
        let head = Arc::new(watch::channel(GlobalPosition::START).0);
        let group = GroupCommit::spawn(writer, head, feed(), "test-phases");
        let phases = metrics::store("test-phases");
        let (queued, whole) = (
            phases.queue_seconds.get_sample_count(),
            phases.append_seconds.get_sample_count(),
        );
        for _ in 0..3 {
            group.append(pending()).await.unwrap();
        }
        assert_eq!(phases.queue_seconds.get_sample_count(), queued + 3);
        assert_eq!(phases.append_seconds.get_sample_count(), whole + 3);
        assert!(
            phases.append_seconds.get_sample_sum() >= phases.queue_seconds.get_sample_sum(),
            "the whole includes the wait"
        );
    }
}
