//! Child runs: a `subworkflow` step starts (or, after a crash, finds) its child run under an id
//! derived from the step, with bounded nesting; the child's end is delivered to its parent.

use std::sync::Arc;

use serde_json::{Value, json};
use switchyard_events::{Event, StepCompleted, StepFailed, TenantId};
use uuid::Uuid;

use super::{Engine, MAX_NESTING, StartOptions, failure};
use crate::error::Error;
use crate::run::{self, RunState, RunStatus};

impl Engine {
    /// Delivers a child run's end to its parent's step (the parent ignores a second delivery).
    pub(super) async fn notify_parent(self: &Arc<Self>, tenant: TenantId, state: &RunState) {
        if let Some((parent, step)) = &state.parent {
            let event = match state.status {
                RunStatus::Completed => Event::StepCompleted(StepCompleted {
                    step: step.clone(),
                    output: json!({"run_id": state.run_id, "output": state.output}).to_string(),
                    decided: false,
                    inference_id: None,
                    cost_micros: state.cost_micros,
                    at_ms: self.now(),
                }),
                _ => Event::StepFailed(StepFailed {
                    step: step.clone(),
                    attempt: self
                        .state(tenant, *parent)
                        .await
                        .ok()
                        .and_then(|s| s.steps.get(step).map(|s| s.attempt))
                        .unwrap_or(1),
                    error: format!(
                        "child run {} {}: {}",
                        state.run_id,
                        state.status.as_str(),
                        state.error.clone().unwrap_or_default()
                    ),
                    retryable: false,
                    decided: false,
                    at_ms: self.now(),
                }),
            };
            self.deliver(tenant, *parent, event).await;
        }
    }

    /// Starts (or finds) the child run of a `subworkflow` step; its end delivers the result.
    pub(super) async fn child(
        self: &Arc<Self>,
        tenant: TenantId,
        run_id: Uuid,
        key: &str,
        step: &run::Step,
        replay_of: Option<Uuid>,
    ) {
        let child = child_id(run_id, key, step.attempt);
        let fail = |message: String, retryable: bool| {
            failure(key, step.attempt, message, retryable, self.now())
        };
        match self.state(tenant, child).await {
            // Recovery: the child exists. It reports its end itself; if it ended before the
            // parent heard of it, report now.
            Ok(state) if state.status.is_final() => {
                self.notify_parent(tenant, &state).await;
                return;
            }
            Ok(_) => {
                self.kick(tenant, child);
                return;
            }
            Err(Error::NotFound(_)) => {}
            Err(error) => {
                let event = fail(format!("cannot look the child run up: {error}"), true);
                self.deliver(tenant, run_id, event).await;
                return;
            }
        }
        // Nesting is bounded: a workflow that calls itself cannot fan out without end.
        let mut depth = 1;
        let mut ancestor = self.state(tenant, run_id).await.ok().and_then(|s| s.parent);
        while let Some((parent, _)) = ancestor {
            depth += 1;
            if depth > MAX_NESTING {
                let event = fail(
                    format!("subworkflows nested deeper than {MAX_NESTING} levels"),
                    false,
                );
                self.deliver(tenant, run_id, event).await;
                return;
            }
            ancestor = self.state(tenant, parent).await.ok().and_then(|s| s.parent);
        }
        let name = step
            .request
            .get("workflow")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = step
            .request
            .get("version")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok());
        let input = step.request.get("input").cloned().unwrap_or(Value::Null);
        let options = StartOptions {
            version,
            run_id: Some(child),
            parent: Some((run_id, key.to_owned())),
            // A re-execution's child re-executes the recorded child (its tools answered from it).
            replay_of: replay_of.map(|original| child_id(original, key, step.attempt)),
            ..StartOptions::default()
        };
        if let Err(error) = self.start(tenant, name, input, options).await {
            // No such workflow, or an input it refuses, will not change; anything else may.
            let retryable = !matches!(
                error,
                Error::NotFound(_) | Error::Schema { .. } | Error::Spec(_)
            );
            let event = fail(format!("cannot start `{name}`: {error}"), retryable);
            self.deliver(tenant, run_id, event).await;
        }
    }
}

/// The run id of a child run: derived from the parent's run, step and attempt, so a step
/// carried out again after a crash finds the child it already started.
pub fn child_id(run_id: Uuid, step: &str, attempt: u32) -> Uuid {
    derived_id(b"", run_id, step, attempt)
}

/// The id of a step attempt's model call (see [`super::StepCall::inference_id`]).
pub fn inference_id(run_id: Uuid, step: &str, attempt: u32) -> Uuid {
    derived_id(b"inference:", run_id, step, attempt)
}

/// A stable id from a run, a step and an attempt (`domain` keeps kinds of ids apart).
fn derived_id(domain: &[u8], run_id: Uuid, step: &str, attempt: u32) -> Uuid {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain);
    hasher.update(run_id.as_bytes());
    hasher.update(step.as_bytes());
    hasher.update(&attempt.to_le_bytes());
    let hash = hasher.finalize();
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}
