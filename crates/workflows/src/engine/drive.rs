//! Advancing runs: after every event the run actor decides what follows; a closed segment
//! rolls forward, an ended run is reported, and running steps and timers are scheduled.

use std::sync::Arc;
use std::time::Duration;

use switchyard_events::{Event, Scope, StreamVersion, TenantId};
use tracing::Instrument;
use uuid::Uuid;

use super::{Engine, metadata, rejected};
use crate::error::Result;
use crate::metrics::METRICS;
use crate::run::{Command, Rejection, RunKey, RunState, RunStatus};

impl Engine {
    /// Advances the run in the background.
    pub(super) fn kick(self: &Arc<Self>, tenant: TenantId, run_id: Uuid) {
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(error) = engine.drive(tenant, run_id).await {
                tracing::warn!(%run_id, %error, "cannot advance a run");
            }
        });
    }

    /// Advance, then carry out whatever is due.
    async fn drive(self: &Arc<Self>, tenant: TenantId, run_id: Uuid) -> Result<()> {
        let mut key = self.key(tenant, run_id).await?;
        loop {
            let now = self.now();
            let applied = match self
                .runs
                .send(&key, Command::Advance { now_ms: now }, metadata(run_id))
                .await
            {
                Ok(applied) => applied,
                // A segment that was closed but whose successor was never started (a crash or
                // an error between the two appends): start it now and go on there.
                Err(switchyard_actors::Error::Rejected(Rejection::Ended("continued"))) => {
                    key = self.roll_forward(key).await?;
                    continue;
                }
                Err(switchyard_actors::Error::Rejected(Rejection::Ended(_))) => return Ok(()),
                Err(e) => return Err(rejected(e)),
            };
            let state = applied.state;
            match state.status {
                RunStatus::Continued => key = self.roll_forward(key).await?,
                status if status.is_final() => {
                    if !applied.events.is_empty() {
                        self.ended(tenant, &state).await;
                    }
                    return Ok(());
                }
                _ => {
                    self.schedule(tenant, &state);
                    return Ok(());
                }
            }
        }
    }

    /// Starts the segment after `key` (a closed one) from its state, if not started yet;
    /// answers the new segment's key.
    async fn roll_forward(&self, key: RunKey) -> Result<RunKey> {
        let (state, _) = self.runs.read(&key).await.map_err(rejected)?;
        let next = RunKey {
            segment: key.segment + 1,
            ..key
        };
        let carried = state.carried(next.segment);
        match self
            .runs
            .send(
                &next,
                Command::Resume {
                    state: Box::new(carried),
                    at_ms: self.now(),
                },
                metadata(key.run),
            )
            .await
        {
            Ok(_) => METRICS.segments.inc(),
            Err(switchyard_actors::Error::Rejected(Rejection::AlreadyStarted)) => {}
            Err(e) => return Err(rejected(e)),
        }
        self.segments.insert(key.run, (key.tenant, next.segment));
        Ok(next)
    }

    /// A run ended: metrics, waiters, and the parent of a child run.
    async fn ended(self: &Arc<Self>, tenant: TenantId, state: &RunState) {
        METRICS.active.dec();
        METRICS
            .ended
            .with_label_values(&[state.status.as_str()])
            .inc();
        tracing::info!(run_id = %state.run_id, status = state.status.as_str(), "run ended");
        // An ended run no longer moves: its segment is looked up again if it is read.
        self.segments.remove(&state.run_id);
        let _ = self.ended.send(state.run_id);
        self.notify_parent(tenant, state).await;
    }

    /// Delivers a step result to a run and advances it. A result that reaches a segment just
    /// closed by a continue-as-new goes to the next segment.
    pub(super) async fn deliver(self: &Arc<Self>, tenant: TenantId, run_id: Uuid, event: Event) {
        for _ in 0..3 {
            let key = match self.key(tenant, run_id).await {
                Ok(key) => key,
                Err(error) => {
                    tracing::warn!(%run_id, %error, "cannot deliver a step result");
                    return;
                }
            };
            match self
                .runs
                .send(
                    &key,
                    Command::Result(Box::new(event.clone())),
                    metadata(run_id),
                )
                .await
            {
                Err(switchyard_actors::Error::Rejected(Rejection::Ended("continued"))) => {
                    if let Err(error) = self.roll_forward(key).await {
                        tracing::warn!(%run_id, %error, "cannot continue a run in its next segment");
                        return;
                    }
                    continue;
                }
                Ok(_) | Err(switchyard_actors::Error::Rejected(Rejection::Ended(_))) => {}
                Err(error) => tracing::warn!(%run_id, %error, "cannot record a step result"),
            }
            break;
        }
        self.kick(tenant, run_id);
    }

    /// Starts a task for each running step and each timer this node is not already handling;
    /// nothing on a node that does not hold the engine lease (the holder sees the run's events
    /// and carries them out).
    fn schedule(self: &Arc<Self>, tenant: TenantId, state: &RunState) {
        if !self.executing() {
            return;
        }
        let run_id = state.run_id;
        for (key, step) in state.running() {
            let task = (run_id, key.clone(), step.attempt);
            if self.tasks.insert(task.clone(), ()).is_some() {
                continue;
            }
            let engine = self.clone();
            let key = key.clone();
            let step = step.clone();
            let state_replay_of = state.replay_of;
            let segment = state.segment;
            let span = tracing::info_span!(
                "workflow.step",
                %run_id,
                step = %key,
                attempt = step.attempt,
                kind = step.request.get("kind").and_then(serde_json::Value::as_str).unwrap_or(""),
            );
            tokio::spawn(async move {
                // When traces are exported, the step continues the trace of its segment's
                // first event (for the first segment, the request that started the run).
                if switchyard_events::trace::enabled() {
                    let stream = RunKey {
                        tenant,
                        run: run_id,
                        segment,
                    }
                    .stream();
                    if let Ok(first) = engine
                        .store
                        .read_stream(Scope::Tenant(tenant), &stream, StreamVersion(0), 1)
                        .await
                        && let Some(parent) = first
                            .first()
                            .and_then(|e| e.metadata.traceparent.as_deref())
                    {
                        switchyard_events::trace::continue_from(&span, parent);
                    }
                }
                async move {
                    let event = engine
                        .carry_out(tenant, run_id, &key, &step, state_replay_of)
                        .await;
                    // Only once the result is recorded may a later schedule see the step as
                    // not being carried out (else it would carry it out a second time).
                    if let Some(event) = event {
                        engine.deliver(tenant, run_id, event).await;
                    }
                    engine.tasks.remove(&task);
                }
                .instrument(span)
                .await;
            });
        }
        for (key, fire_at) in state.timers() {
            let timer = (run_id, key.clone());
            if self.timers.insert(timer.clone(), ()).is_some() {
                continue;
            }
            let engine = self.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let wait = fire_at.saturating_sub(engine.now());
                tokio::time::sleep(Duration::from_millis(wait)).await;
                engine.timers.remove(&timer);
                let at_ms = engine.now();
                if let Ok(run_key) = engine.key(tenant, run_id).await {
                    let _ = engine
                        .runs
                        .send(
                            &run_key,
                            Command::Fire { step: key, at_ms },
                            metadata(run_id),
                        )
                        .await;
                }
                engine.kick(tenant, run_id);
            });
        }
    }
}
