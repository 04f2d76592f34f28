//! The projectors of a process as one worker: one log subscription for all of them, and each
//! batch written for all of them in one transaction (each projector's rows with its own
//! checkpoint's compare-and-set), instead of a subscription and a commit per projector.
//!
//! Each projector keeps its own lease and checkpoint. The group takes the leases in name order
//! and leads once it holds them all (a node that holds none waits as a standby; the order makes
//! the first lease the group's mutex, so two nodes cannot each hold a part). Projectors whose
//! checkpoints differ (a rebuild swapped one in) are fed from the lowest one, each taking only
//! the events after its own checkpoint. A batch the database refuses is applied projector by
//! projector, then event by event ([`super::project`]), so one poison event still stops nobody.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use switchyard_events::{EventStore, GlobalPosition, RecordedEvent, Scope};
use tokio::sync::watch;

use super::{RunnerConfig, observe, ops_of, project};
use crate::db::{Lease, Part, ReadDb};
use crate::error::{Error, Result};
use crate::metrics::METRICS;
use crate::model::merge;
use crate::projectors::Projector;

pub(super) struct Group {
    pub store: Arc<dyn EventStore>,
    pub db: ReadDb,
    pub projectors: Vec<&'static Projector>,
    pub config: RunnerConfig,
    pub positions: HashMap<&'static str, watch::Sender<u64>>,
    pub demand: watch::Receiver<u64>,
}

impl Group {
    pub async fn run(self) {
        let mut delay = self.config.backoff.0;
        loop {
            match self.lead().await {
                Ok(()) => delay = self.config.backoff.0,
                Err(Error::Fenced(name)) => {
                    tracing::warn!(
                        projector = %name,
                        "checkpoint moved under this worker; reloading"
                    );
                    delay = self.config.backoff.0;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "projectors failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.config.backoff.1);
                }
            }
        }
    }

    /// Every lease, in name order, or none (released) when another worker holds one.
    async fn leases(&self) -> Result<Option<Vec<Lease>>> {
        let mut names: Vec<_> = self.projectors.iter().map(|p| p.name).collect();
        names.sort_unstable();
        let mut held = Vec::with_capacity(names.len());
        for name in names {
            match self.db.try_lease(name).await? {
                Some(lease) => held.push(lease),
                None => return Ok(None),
            }
        }
        Ok(Some(held))
    }

    /// Takes the leases (waiting as a standby while another worker holds them), then projects
    /// until an error.
    async fn lead(&self) -> Result<()> {
        let mut leases = loop {
            if let Some(leases) = self.leases().await? {
                break leases;
            }
            tracing::debug!("standby: another worker holds the projectors' leases");
            tokio::time::sleep(self.config.standby_poll).await;
        };
        let mut at = HashMap::with_capacity(self.projectors.len());
        for projector in &self.projectors {
            let position = self.db.checkpoint(projector.name).await?;
            self.committed(projector, position);
            at.insert(projector.name, position);
        }
        let from = at.values().copied().min().unwrap_or(0);
        tracing::info!(
            projectors = self.projectors.len(),
            position = from,
            "projectors lead"
        );
        let mut events = self
            .store
            .subscribe_all(Scope::All, GlobalPosition(from))
            .ready_chunks(self.config.batch);
        let mut checked = Instant::now();
        while let Some(chunk) = events.next().await {
            let mut batch = chunk
                .into_iter()
                .collect::<std::result::Result<Vec<_>, _>>()?;
            // Linger for more while the batch is small (bounded by `linger` from its first),
            // unless a reader waits for a position not committed yet.
            let until = Instant::now() + self.config.linger;
            let mut demand = self.demand.clone();
            let lowest = at.values().copied().min().unwrap_or(0);
            while batch.len() < self.config.batch && *demand.borrow_and_update() <= lowest {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                tokio::select! {
                    more = tokio::time::timeout(left, events.next()) => match more {
                        Ok(Some(more)) => {
                            for event in more {
                                batch.push(event?);
                            }
                        }
                        Ok(None) | Err(_) => break,
                    },
                    _ = demand.changed() => {}
                }
            }
            // The batch continues the trace of its first traced event (the request that wrote
            // it), so a trace runs from the HTTP request to the read-model rows.
            let spans = switchyard_events::trace::batch_spans(
                || {
                    tracing::debug_span!(
                        "projector batch",
                        switchyard.events = batch.len(),
                        switchyard.from = batch.first().map_or(0, |e| e.global_position.0),
                        switchyard.to = batch.last().map_or(0, |e| e.global_position.0),
                    )
                },
                batch.iter().map(|e| e.metadata.traceparent.as_deref()),
            );
            let work = self.apply(&mut at, &batch);
            tracing::Instrument::instrument(work, spans[0].clone()).await?;
            drop(spans);
            if checked.elapsed() > Duration::from_secs(5) {
                for lease in &mut leases {
                    if !lease.alive().await {
                        return Err(Error::Invalid(
                            "a projector's lease connection was lost".into(),
                        ));
                    }
                }
                checked = Instant::now();
            }
        }
        Err(Error::Invalid(
            "the projectors' log subscription ended".into(),
        ))
    }

    /// Writes `batch` for every projector not already past it, in one transaction; a refused
    /// one falls back to each projector on its own.
    async fn apply(
        &self,
        at: &mut HashMap<&'static str, u64>,
        batch: &[RecordedEvent],
    ) -> Result<()> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let to = last.global_position.0;
        let started = Instant::now();
        let mut shares = Vec::with_capacity(self.projectors.len());
        for projector in &self.projectors {
            let from = at.get(projector.name).copied().unwrap_or(0);
            if from >= to {
                continue;
            }
            let start = batch.partition_point(|e| e.global_position.0 <= from);
            let events = &batch[start..];
            let (ops, dead) = ops_of(projector, events);
            shares.push((*projector, from, events, merge(ops), dead));
        }
        let parts: Vec<_> = shares
            .iter()
            .map(|(projector, from, _, ops, dead)| Part {
                projector,
                checkpoint: Some((*from, to)),
                suffix: "",
                ops,
                dead,
            })
            .collect();
        match self.db.apply_parts(&parts).await {
            Ok(()) => {
                for (projector, _, events, _, dead) in &shares {
                    observe(projector, events, to, dead.len(), started);
                }
            }
            Err(error) if error.is_data_error() => {
                tracing::warn!(%error, "a batch refused; applying it projector by projector");
                self.db.forget_partitions();
                for (projector, from, events, _, _) in &shares {
                    project(&self.db, projector, *from, events).await?;
                }
            }
            Err(error) => return Err(error),
        }
        for (projector, _, _, _, _) in &shares {
            at.insert(projector.name, to);
            self.committed(projector, to);
        }
        Ok(())
    }

    fn committed(&self, projector: &Projector, position: u64) {
        if let Some(tx) = self.positions.get(projector.name) {
            tx.send_replace(position);
        }
        METRICS
            .position
            .with_label_values(&[projector.name])
            .set(i64::try_from(position).unwrap_or(i64::MAX));
    }
}
