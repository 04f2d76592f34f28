//! The advance: rounds of decisions until none is left, and the decisions that end a run
//! (its outputs, a failure, or the saga of compensations after a failure or a cancel).

use serde_json::{Value, json};
use switchyard_events::{Event, RunCancelled, RunCompleted, RunContinued, RunFailed};

use super::state;
use super::steps::{call_step, decided, decided_failure, map_step, wait_step};
use super::{RunState, RunStatus, StepStatus, compensation_key};
use crate::spec::{NodeKind, WorkflowSpec};
use crate::template;

/// Rounds of decisions in one advance at most (a guard; a spec's graph is acyclic and finite).
const MAX_ROUNDS: usize = 100_000;

/// Everything that follows from the state: rounds of decisions until none is left.
pub fn advance(state: &RunState, now_ms: u64) -> Vec<Event> {
    // The rounds of the engine version that recorded the run (`super::ENGINE` documents when a
    // version is added); a version this build does not know decides nothing here.
    let round: fn(&RunState, u64) -> Vec<Event> = match state.engine {
        1 => round,
        _ => return Vec::new(),
    };
    let mut working = state.clone();
    let mut decided = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let round = round(&working, now_ms);
        if round.is_empty() {
            break;
        }
        for event in &round {
            working.apply(event);
        }
        decided.extend(round);
        if working.status != RunStatus::Running {
            break;
        }
    }
    decided
}

/// One round of decisions.
fn round(state: &RunState, now: u64) -> Vec<Event> {
    let Some(spec) = state.spec.clone() else {
        return Vec::new();
    };
    if state.status != RunStatus::Running {
        return Vec::new();
    }
    if state.segment_events >= spec.limits.segment_events && !state.steps.is_empty() {
        return vec![Event::RunContinued(RunContinued {
            segment: state.segment + 1,
            at_ms: now,
        })];
    }
    if let Some(cause) = state.failing() {
        return compensate(state, &spec, cause, now);
    }
    let Some(cursor) = state.cursor.clone() else {
        return vec![finish(state, &spec, now)];
    };
    let Some(node) = spec.node(&cursor) else {
        return vec![fail_run(
            state,
            format!("no node `{cursor}`"),
            Some(cursor),
            now,
        )];
    };
    let ctx = state.context(None);
    match node.kind {
        NodeKind::Llm | NodeKind::Tool | NodeKind::Subworkflow | NodeKind::Retrieve => {
            call_step(state, &spec, &cursor, &cursor, &node.as_call(), &ctx, now)
                .into_iter()
                .collect()
        }
        NodeKind::Branch => {
            for case in &node.cases {
                match template::holds(&case.when, &ctx) {
                    Ok(true) => return vec![decided(&cursor, json!({"goto": case.goto}), now)],
                    Ok(false) => {}
                    Err(e) => {
                        return vec![decided_failure(
                            &cursor,
                            format!("condition `{}`: {e}", case.when),
                            now,
                        )];
                    }
                }
            }
            let fallback = node
                .default
                .clone()
                .or_else(|| spec.successor(&cursor).map(str::to_owned))
                .unwrap_or_else(|| crate::spec::END.to_owned());
            vec![decided(&cursor, json!({"goto": fallback}), now)]
        }
        NodeKind::Map => map_step(state, &spec, node, &ctx, now),
        NodeKind::Wait | NodeKind::HumanInput => wait_step(state, node, now),
    }
}

/// The run's end: its outputs rendered and type-checked.
fn finish(state: &RunState, spec: &WorkflowSpec, now: u64) -> Event {
    let ctx = state.context(None);
    let output = if spec.outputs.is_empty() {
        state.last_output.clone().unwrap_or(Value::Null)
    } else {
        let mut out = serde_json::Map::new();
        for (name, field) in &spec.outputs {
            match template::eval(&field.value, &ctx) {
                Ok(value) if field.kind.admits(&value) => {
                    out.insert(name.clone(), value);
                }
                Ok(value) => {
                    return fail_run(
                        state,
                        format!(
                            "output `{name}` is not of type {}: {value}",
                            format!("{:?}", field.kind).to_lowercase()
                        ),
                        None,
                        now,
                    );
                }
                Err(e) => {
                    return fail_run(state, format!("output `{name}`: {e}"), None, now);
                }
            }
        }
        Value::Object(out)
    };
    Event::RunCompleted(RunCompleted {
        output: output.to_string(),
        at_ms: now,
    })
}

fn fail_run(state: &RunState, error: String, step: Option<String>, now: u64) -> Event {
    Event::RunFailed(RunFailed {
        error,
        step,
        compensated: state.compensated(),
        at_ms: now,
    })
}

/// Saga: once nothing is in flight, run the compensations of completed nodes in reverse order of
/// completion, one at a time; then end failed (or cancelled).
fn compensate(state: &RunState, spec: &WorkflowSpec, cause: state::Cause, now: u64) -> Vec<Event> {
    if state.in_flight_work() {
        return Vec::new();
    }
    for node_id in state.completed.iter().rev() {
        let Some(node) = spec.node(node_id) else {
            continue;
        };
        let Some(call) = &node.compensate else {
            continue;
        };
        let key = compensation_key(node_id);
        let retry = call.retry.unwrap_or(spec.defaults.retry);
        if let Some(step) = state.steps.get(&key) {
            match &step.status {
                StepStatus::Running => return Vec::new(),
                StepStatus::Failed { retryable: true } if step.attempt < retry.max_attempts => {}
                _ => continue,
            }
        }
        let ctx = state.context(Some(node_id));
        return call_step(state, spec, &key, node_id, call, &ctx, now)
            .into_iter()
            .collect();
    }
    match cause {
        state::Cause::Cancelled(reason) => vec![Event::RunCancelled(RunCancelled {
            reason,
            compensated: state.compensated(),
            at_ms: now,
        })],
        state::Cause::Failed { error, step } => {
            vec![fail_run(state, error, Some(step), now)]
        }
    }
}
