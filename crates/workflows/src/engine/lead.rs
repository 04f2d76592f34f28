//! The engine lease: of all the nodes on one log, the one that holds the lease `workflow-engine`
//! carries out the runs' steps and timers; the others only record what requests ask (starts,
//! signals, cancellations) and the decisions that follow, which the holder sees in the log and
//! carries out. When the holder dies its lease is released (PostgreSQL drops its advisory lock
//! with its connection; SQLite's file lock goes with the process), a standby takes it within
//! one poll, recovers every run that had not ended and carries out again each step that had
//! started and not completed, under the same idempotency key and inference id, so each step's
//! effect counts once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use switchyard_events::{GlobalPosition, Scope};
use tokio::task::JoinHandle;

use super::Engine;
use crate::metrics::METRICS;
use crate::run;

/// The name of the lease the executing node holds.
pub const ENGINE_LEASE: &str = "workflow-engine";

/// How the engine competes for its lease.
#[derive(Debug, Clone)]
pub struct LeadOptions {
    /// How often a standby tries to take the lease, and the holder checks it still has it.
    pub poll: Duration,
}

impl Default for LeadOptions {
    fn default() -> Self {
        LeadOptions {
            poll: Duration::from_millis(500),
        }
    }
}

impl Engine {
    /// Records what requests ask and never carries out steps (a node run with no workflow
    /// engine: another node's engine carries them out).
    pub fn stand_by(&self) {
        self.executing.store(false, Ordering::Release);
        METRICS.leader.set(0);
    }

    /// Carries out runs only while this node holds the engine lease: stands by until it takes
    /// it, then recovers the open runs and follows the log for runs that other nodes start,
    /// signal or cancel; gives up executing when the lease is lost. Runs until aborted.
    pub fn lead(self: &Arc<Self>, options: LeadOptions) -> JoinHandle<()> {
        self.executing.store(false, Ordering::Release);
        METRICS.leader.set(0);
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                match engine.store.try_lease(ENGINE_LEASE).await {
                    Ok(Some(mut lease)) => {
                        tracing::info!("this node took the workflow engine lease");
                        engine.executing.store(true, Ordering::Release);
                        METRICS.leader.set(1);
                        let follower = engine.clone().take_over();
                        while lease.alive().await {
                            tokio::time::sleep(options.poll).await;
                        }
                        follower.abort();
                        engine.executing.store(false, Ordering::Release);
                        METRICS.leader.set(0);
                        tracing::warn!("the workflow engine lease was lost; standing by");
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%error, "cannot try the workflow engine lease");
                    }
                }
                tokio::time::sleep(options.poll).await;
            }
        })
    }

    /// Recovers the open runs, then follows the log: a run started, signalled, cancelled or
    /// rolled over on another node is advanced here, which carries out its steps.
    fn take_over(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let after = match self.recover_to().await {
                Ok((_, after)) => after,
                Err(error) => {
                    tracing::error!(%error, "cannot recover the workflow runs");
                    GlobalPosition::START
                }
            };
            let mut events = self.store.subscribe_all(Scope::All, after);
            while let Some(event) = events.next().await {
                let recorded = match event {
                    Ok(recorded) => recorded,
                    Err(error) => {
                        tracing::error!(%error, "the workflow engine stopped following the log");
                        return;
                    }
                };
                if recorded.stream_id.category() != run::CATEGORY {
                    continue;
                }
                if !matches!(
                    recorded.event_type.as_str(),
                    "RunStarted" | "SegmentStarted" | "SignalReceived" | "RunCancelRequested"
                ) {
                    continue;
                }
                if let Some(run_id) = super::recovery::run_of(&recorded) {
                    self.kick(recorded.tenant_id, run_id);
                }
            }
        })
    }
}
