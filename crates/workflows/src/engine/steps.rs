//! Carrying out one step attempt: `llm` and `tool` calls through the `Executor` with their
//! timeout, a re-execution's tool calls from the recorded run, and `subworkflow` as a child run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_events::{Event, StepCompleted, TenantId};
use uuid::Uuid;

use super::{Engine, MAX_OUTPUT_BYTES, StepCall, StepError, StepOutput, failure, inference_id};
use crate::metrics::METRICS;
use crate::run;

impl Engine {
    /// Carries out one step attempt; answers its result event (none for a child run, whose end
    /// delivers it).
    pub(super) async fn carry_out(
        self: &Arc<Self>,
        tenant: TenantId,
        run_id: Uuid,
        key: &str,
        step: &run::Step,
        replay_of: Option<Uuid>,
    ) -> Option<Event> {
        let wait = step.not_before_ms.saturating_sub(self.now());
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            // A run cancelled during the backoff does not make the call.
            if let Ok(state) = self.state(tenant, run_id).await
                && state.cancel.is_some()
                && !key.ends_with("~compensate")
            {
                return Some(failure(
                    key,
                    step.attempt,
                    "not carried out: the run was cancelled".into(),
                    false,
                    self.now(),
                ));
            }
        }
        let kind = step
            .request
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("");
        let started = Instant::now();
        let result = match kind {
            "subworkflow" => {
                self.child(tenant, run_id, key, step, replay_of).await;
                return None;
            }
            // A replay answers tools and searches from the recording: the world (a tool's
            // server, the tenant's documents) may have changed since.
            "tool" | "retrieve" if replay_of.is_some() => {
                self.recorded(tenant, replay_of, key).await
            }
            "llm" | "tool" | "retrieve" => {
                let tool = match kind {
                    "tool" => {
                        let name = step
                            .request
                            .get("tool")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        match self.catalog(tenant).await.map(|c| c.tool(name)) {
                            Ok(Some(tool)) => Some(tool),
                            Ok(None) => {
                                return Some(failure(
                                    key,
                                    step.attempt,
                                    format!("no tool `{name}` is registered"),
                                    false,
                                    self.now(),
                                ));
                            }
                            // The registry could not be read now (overloaded, the log down):
                            // another attempt may succeed.
                            Err(error) => {
                                return Some(failure(
                                    key,
                                    step.attempt,
                                    format!("cannot read the tool registry: {error}"),
                                    true,
                                    self.now(),
                                ));
                            }
                        }
                    }
                    _ => None,
                };
                let timeout = Duration::from_millis(
                    step.request
                        .get("timeout_ms")
                        .and_then(Value::as_u64)
                        .or(tool.as_ref().map(|t| t.timeout_ms))
                        .unwrap_or(60_000),
                );
                let call = StepCall {
                    tenant,
                    run_id,
                    step: key.to_owned(),
                    attempt: step.attempt,
                    idempotency_key: format!("{run_id}/{key}/{}", step.attempt),
                    inference_id: inference_id(run_id, key, step.attempt),
                    request: step.request.clone(),
                    tool,
                    timeout,
                };
                match tokio::time::timeout(timeout, self.executor.call(&call)).await {
                    Ok(result) => result,
                    Err(_) => Err(StepError {
                        message: format!("timed out after {} ms", timeout.as_millis()),
                        retryable: true,
                    }),
                }
            }
            other => Err(StepError {
                message: format!("unknown call kind `{other}`"),
                retryable: false,
            }),
        };
        let outcome = if result.is_ok() {
            "completed"
        } else {
            "failed"
        };
        METRICS.steps.with_label_values(&[kind, outcome]).inc();
        METRICS
            .step_seconds
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        // An output too large to record is a failure of the step, not of the log.
        let result = result.and_then(|output| {
            let size = output.output.to_string().len();
            if size > MAX_OUTPUT_BYTES {
                Err(StepError {
                    message: format!(
                        "the output is {size} bytes; a step may record at most {MAX_OUTPUT_BYTES}"
                    ),
                    retryable: false,
                })
            } else {
                Ok(output)
            }
        });
        Some(match result {
            Ok(output) => Event::StepCompleted(StepCompleted {
                step: key.to_owned(),
                output: output.output.to_string(),
                decided: false,
                inference_id: output.inference_id,
                cost_micros: output.cost_micros,
                at_ms: self.now(),
            }),
            Err(error) => failure(
                key,
                step.attempt,
                error.message,
                error.retryable,
                self.now(),
            ),
        })
    }

    /// A re-execution's tool call, answered from the recorded run.
    async fn recorded(
        &self,
        tenant: TenantId,
        replay_of: Option<Uuid>,
        key: &str,
    ) -> std::result::Result<StepOutput, StepError> {
        let original = replay_of.ok_or_else(|| StepError {
            message: "not a re-execution".into(),
            retryable: false,
        })?;
        let events = self.events(tenant, original).await.map_err(|e| StepError {
            message: format!("cannot read the recorded run {original}: {e}"),
            retryable: true,
        })?;
        events
            .iter()
            .filter_map(|r| Event::from_recorded(r).ok())
            .find_map(|event| match event {
                Event::StepCompleted(e) if e.step == key && !e.decided => Some(StepOutput {
                    output: serde_json::from_str(&e.output).unwrap_or(Value::Null),
                    inference_id: None,
                    cost_micros: 0,
                }),
                _ => None,
            })
            .ok_or_else(|| StepError {
                message: format!("the recorded run {original} has no result for tool step `{key}`"),
                retryable: false,
            })
    }
}
