//! Group commit: concurrent appenders hand their requests to one writer task, which writes every
//! request waiting at that moment in one transaction (one lock, one fsync) and answers each.
//!
//! The writer never waits to fill a batch: it takes what is queued and goes, so a lone appender
//! pays no extra latency and a crowd shares the commit.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::ids::GlobalPosition;
use crate::metrics;
use crate::store::AppendResult;
use crate::store::plan::Pending;

/// Most requests one transaction takes.
const MAX_BATCH_REQUESTS: usize = 1024;
/// Most events one transaction takes (a single larger append still goes through alone).
const MAX_BATCH_EVENTS: usize = 20_000;
/// Requests that may wait for the writer before appenders are slowed down (backpressure).
const QUEUE_DEPTH: usize = 4096;

/// A backend's way of writing one batch in one transaction.
#[async_trait]
pub(crate) trait BatchWriter: Send + 'static {
    /// Writes the batch atomically. `Ok` carries one outcome per request (a lost race is an
    /// outcome, not a failure) and the new head position if anything was written. `Err` means
    /// the transaction failed as a whole and nothing of it is visible.
    async fn write(
        &mut self,
        batch: &[&Pending],
    ) -> Result<(Vec<Result<AppendResult>>, Option<GlobalPosition>)>;
}

struct Request {
    pending: Pending,
    reply: oneshot::Sender<Result<AppendResult>>,
    span: tracing::Span,
}

/// The appenders' side of the writer task.
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Request>,
}

impl GroupCommit {
    /// Starts the writer task on the current tokio runtime. It stops when the last handle is
    /// dropped.
    pub fn spawn<W: BatchWriter>(
        writer: W,
        head: Arc<watch::Sender<GlobalPosition>>,
        backend: &'static str,
    ) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(writer, requests, head, backend));
        GroupCommit { queue }
    }

    /// Queues an append and waits for the transaction that carries it.
    pub async fn append(&self, pending: Pending) -> Result<AppendResult> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            pending,
            reply,
            span: tracing::Span::current(),
        };
        self.queue.send(request).await.map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

async fn run<W: BatchWriter>(
    mut writer: W,
    mut requests: mpsc::Receiver<Request>,
    head: Arc<watch::Sender<GlobalPosition>>,
    backend: &'static str,
) {
    let metrics = metrics::store(backend);
    while let Some(first) = requests.recv().await {
        let mut events = first.pending.events.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_REQUESTS && events < MAX_BATCH_EVENTS {
            match requests.try_recv() {
                Ok(request) => {
                    events += request.pending.events.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let span = tracing::debug_span!("group_commit", backend, requests = batch.len(), events);
        for request in &batch {
            span.follows_from(&request.span);
        }
        async {
            let started = Instant::now();
            let refs: Vec<&Pending> = batch.iter().map(|r| &r.pending).collect();
            match writer.write(&refs).await {
                Ok((outcomes, new_head)) => {
                    metrics.observe_batch(batch.len(), started.elapsed());
                    publish(&head, new_head);
                    for (request, outcome) in batch.into_iter().zip(outcomes) {
                        metrics.observe_outcome(&outcome);
                        let _ = request.reply.send(outcome);
                    }
                }
                Err(error) if batch.len() == 1 => {
                    tracing::warn!(%error, "append transaction failed");
                    metrics.failed_batches.inc();
                    if let Some(request) = batch.pop() {
                        let _ = request.reply.send(Err(error));
                    }
                }
                Err(error) => {
                    // Isolate the failure: each request alone. Safe even if the failed commit did
                    // in fact land, because appends are idempotent by event id.
                    tracing::warn!(%error, "batched append failed; retrying its requests one by one");
                    metrics.failed_batches.inc();
                    for request in batch {
                        let outcome = match writer.write(&[&request.pending]).await {
                            Ok((mut outcomes, new_head)) => {
                                publish(&head, new_head);
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
        .instrument(span)
        .await;
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
