//! Recovery after a crash: a full read of the log finds every run that had not ended, and
//! each is carried on from its current segment.

use std::sync::Arc;
use std::time::Instant;

use switchyard_events::{Event, GlobalPosition, RecordedEvent, Scope, TenantId};
use uuid::Uuid;

use super::Engine;
use crate::error::Result;
use crate::metrics::METRICS;
use crate::run;

impl Engine {
    /// Finds every run that had not ended (a full read of the log) and carries it on. Answers
    /// how many.
    pub async fn recover(self: &Arc<Self>) -> Result<usize> {
        self.recover_to().await.map(|(count, _)| count)
    }

    /// [`Engine::recover`], answering also the log position it read to.
    pub(super) async fn recover_to(self: &Arc<Self>) -> Result<(usize, GlobalPosition)> {
        let started = Instant::now();
        let mut open: std::collections::HashMap<Uuid, (TenantId, u32)> =
            std::collections::HashMap::new();
        let mut after = GlobalPosition::START;
        loop {
            let page = self.store.read_all(Scope::All, after, 5_000).await?;
            let Some(last) = page.last() else { break };
            after = last.global_position;
            for recorded in &page {
                if recorded.stream_id.category() != run::CATEGORY {
                    continue;
                }
                let Ok(event) = Event::from_recorded(recorded) else {
                    continue;
                };
                match &event {
                    Event::RunStarted(e) => {
                        open.insert(e.run_id, (recorded.tenant_id, 0));
                    }
                    Event::SegmentStarted(e) => {
                        open.insert(e.run_id, (recorded.tenant_id, e.segment));
                    }
                    Event::RunCompleted(_) | Event::RunFailed(_) | Event::RunCancelled(_) => {
                        if let Some(run) = run_of(recorded) {
                            open.remove(&run);
                        }
                    }
                    _ => {}
                }
            }
        }
        let count = open.len();
        for (run_id, (tenant, segment)) in open {
            METRICS.active.inc();
            self.segments.insert(run_id, (tenant, segment));
            self.kick(tenant, run_id);
        }
        tracing::info!(
            runs = count,
            seconds = started.elapsed().as_secs_f64(),
            "workflow runs recovered"
        );
        Ok((count, after))
    }
}

pub(super) fn run_of(recorded: &RecordedEvent) -> Option<Uuid> {
    let id = recorded.stream_id.as_str().split_once('-')?.1;
    let id = id.split('.').next()?;
    Uuid::parse_str(id).ok()
}
