//! JSON views shared by the API and the CLI.

use serde_json::{Value, json};

/// A run's state as the API shows it.
pub fn run(state: &switchyard_workflows::run::RunState) -> Value {
    use switchyard_workflows::run::StepStatus;
    let steps: Vec<Value> = state
        .steps
        .iter()
        .map(|(key, step)| {
            let (status, output) = match &step.status {
                StepStatus::Running => ("running", None),
                // A step finished before a continue-as-new keeps its output in `outputs` only.
                StepStatus::Completed { output } if output.is_null() => {
                    ("completed", state.outputs.get(key).cloned())
                }
                StepStatus::Completed { output } => ("completed", Some(output.clone())),
                StepStatus::Failed { .. } => ("failed", None),
                StepStatus::Timer { .. } => ("waiting", None),
                StepStatus::Fired => ("fired", None),
            };
            json!({
                "step": key,
                "node": step.node,
                "attempt": step.attempt,
                "status": status,
                "output": output,
                "error": (!step.error.is_empty()).then_some(&step.error),
            })
        })
        .collect();
    let waiting_for = state.cursor.as_ref().and_then(|cursor| {
        let node = state.spec.as_ref()?.node(cursor)?;
        (node.kind == switchyard_workflows::spec::NodeKind::HumanInput).then(|| {
            json!({
                "signal": node.id,
                "question": node.question.as_ref().map(|q| {
                    switchyard_workflows::template::render(q, &state.context(None)).unwrap_or_else(|_| q.clone())
                }),
                "schema": node.schema,
            })
        })
    });
    json!({
        "run_id": state.run_id,
        "workflow": state.workflow,
        "version": state.version,
        "status": state.status.as_str(),
        "current": state.cursor,
        "waiting_for": waiting_for,
        "steps": steps,
        "output": state.output,
        "error": state.error,
        "cost_micros": state.cost_micros,
        "started_at_ms": state.started_ms,
        "ended_at_ms": state.ended_ms,
        "segment": state.segment,
        "replay_of": state.replay_of,
        "parent": state.parent.as_ref().map(|(run, step)| json!({"run_id": run, "step": step})),
    })
}
