//! The decisions of one node: a call step started or retried with its rendered request, a
//! map's items, a wait's timer or signal, and the step results the run decides itself.

use serde_json::{Value, json};
use switchyard_events::{Event, StepCompleted, StepFailed, StepStarted, TimerStarted};

use super::state;
use super::{MAX_MAP_ITEMS, MAX_MAP_OUTPUT_BYTES, MAX_REQUEST_BYTES, RunState, StepStatus};
use crate::spec::{Call, NodeKind, WorkflowSpec};
use crate::template;

/// A `StepCompleted` the run decided.
pub(super) fn decided(step: &str, output: Value, now: u64) -> Event {
    Event::StepCompleted(StepCompleted {
        step: step.to_owned(),
        output: output.to_string(),
        decided: true,
        inference_id: None,
        cost_micros: 0,
        at_ms: now,
    })
}

/// A `StepFailed` the run decided (never retried).
pub(super) fn decided_failure(step: &str, error: String, now: u64) -> Event {
    Event::StepFailed(StepFailed {
        step: step.to_owned(),
        attempt: 1,
        error,
        retryable: false,
        decided: true,
        at_ms: now,
    })
}

/// Starts (or retries) a call step `key` of node `node`, if it needs starting.
pub(super) fn call_step(
    state: &RunState,
    spec: &WorkflowSpec,
    key: &str,
    node: &str,
    call: &Call,
    ctx: &Value,
    now: u64,
) -> Option<Event> {
    let retry = call.retry.unwrap_or(spec.defaults.retry);
    let (attempt, not_before) = match state.steps.get(key) {
        None => (1, now),
        Some(step) => match &step.status {
            StepStatus::Failed { retryable: true } if step.attempt < retry.max_attempts => (
                step.attempt + 1,
                step.at_ms.saturating_add(retry.delay_ms(step.attempt)),
            ),
            _ => return None,
        },
    };
    // The budget bounds the work, not the clean-up: compensations always run.
    if state.attempts >= spec.limits.max_steps && !key.ends_with("~compensate") {
        return Some(decided_failure(
            key,
            format!(
                "the run used its {} steps (limits.max_steps)",
                spec.limits.max_steps
            ),
            now,
        ));
    }
    // Overrides re-execute a node's call; its compensation stays as recorded.
    let overrides = if key.ends_with("~compensate") {
        &Value::Null
    } else {
        &state.overrides
    };
    match request(spec, call, ctx, overrides, node) {
        Ok(request) if request.to_string().len() > MAX_REQUEST_BYTES => Some(decided_failure(
            key,
            format!(
                "the rendered request is {} bytes; at most {MAX_REQUEST_BYTES}",
                request.to_string().len()
            ),
            now,
        )),
        Ok(request) => Some(Event::StepStarted(StepStarted {
            step: key.to_owned(),
            node: node.to_owned(),
            attempt,
            request: request.to_string(),
            not_before_ms: not_before.max(now),
            at_ms: now,
        })),
        Err(e) => Some(decided_failure(key, e, now)),
    }
}

/// The rendered call: what the executor sends.
fn request(
    spec: &WorkflowSpec,
    call: &Call,
    ctx: &Value,
    overrides: &Value,
    node: &str,
) -> Result<Value, String> {
    let render = |field: &str, source: &Option<String>| -> Result<Option<String>, String> {
        source
            .as_deref()
            .map(|s| template::render(s, ctx).map_err(|e| format!("`{field}`: {e}")))
            .transpose()
    };
    let timeout_ms = call.timeout_ms.unwrap_or(spec.defaults.timeout_ms);
    Ok(match call.kind {
        NodeKind::Llm => {
            let prompt_source = overrides
                .get("prompts")
                .and_then(|p| p.get(node))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| call.prompt.clone());
            let mut messages = Vec::new();
            if let Some(system) = render("system", &call.system)? {
                messages.push(json!({"role": "system", "content": system}));
            }
            let prompt = render("prompt", &prompt_source)?.unwrap_or_default();
            messages.push(json!({"role": "user", "content": prompt}));
            let model = overrides
                .get("models")
                .and_then(|m| m.get(node))
                .or_else(|| overrides.get("model"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| call.model.clone())
                .unwrap_or_else(|| spec.defaults.model.clone());
            let mut request = json!({
                "kind": "llm",
                "model": model,
                "messages": messages,
                "max_tokens": call.max_tokens,
                "temperature": call.temperature,
                "output": call.output.unwrap_or_default(),
                "timeout_ms": timeout_ms,
            });
            // A re-execution under another routing policy (used when the model is `auto`).
            if let (Some(policy), Some(map)) = (overrides.get("policy"), request.as_object_mut()) {
                map.insert("policy".into(), policy.clone());
            }
            request
        }
        NodeKind::Tool => json!({
            "kind": "tool",
            "tool": call.tool,
            "args": call.args.as_ref().map(|a| template::render_value(a, ctx)).transpose()
                .map_err(|e| format!("`args`: {e}"))?,
            "timeout_ms": timeout_ms,
        }),
        NodeKind::Retrieve => json!({
            "kind": "retrieve",
            "query": render("query", &call.query)?.unwrap_or_default(),
            "k": call.k.unwrap_or(5),
            "mode": call.mode.map(|m| m.as_str()),
            "documents": call.documents.as_ref().map(|d| template::render_value(d, ctx)).transpose()
                .map_err(|e| format!("`documents`: {e}"))?,
            "timeout_ms": timeout_ms,
        }),
        _ => json!({
            "kind": "subworkflow",
            "workflow": call.workflow,
            "version": call.version,
            "input": call.input.as_ref().map(|a| template::render_value(a, ctx)).transpose()
                .map_err(|e| format!("`input`: {e}"))?,
            "timeout_ms": timeout_ms,
        }),
    })
}

pub(super) fn map_step(
    state: &RunState,
    spec: &WorkflowSpec,
    node: &crate::spec::Node,
    ctx: &Value,
    now: u64,
) -> Vec<Event> {
    let id = node.id.as_str();
    let (Some(over), Some(call)) = (&node.over, &node.node) else {
        return vec![decided_failure(
            id,
            "a map needs `over` and `node`".into(),
            now,
        )];
    };
    let items = match template::eval(over, ctx) {
        Ok(Value::Array(items)) if items.len() <= MAX_MAP_ITEMS => items,
        Ok(Value::Array(items)) => {
            return vec![decided_failure(
                id,
                format!("`over` gave {} items; at most {MAX_MAP_ITEMS}", items.len()),
                now,
            )];
        }
        Ok(other) => {
            return vec![decided_failure(
                id,
                format!("`over` must give a list, not {other}"),
                now,
            )];
        }
        Err(e) => return vec![decided_failure(id, format!("`over`: {e}"), now)],
    };
    let retry = call.retry.unwrap_or(spec.defaults.retry);
    let limit = node.concurrency.unwrap_or(4) as usize;
    let mut in_flight = 0;
    let mut outputs = Vec::with_capacity(items.len());
    let mut events = Vec::new();
    let mut waiting = false;
    for (index, item) in items.iter().enumerate() {
        let key = state::item_key(id, index);
        match state.steps.get(&key).map(|s| (&s.status, s.attempt)) {
            Some((StepStatus::Completed { output }, _)) => outputs.push(output.clone()),
            Some((StepStatus::Running, _)) => {
                in_flight += 1;
                waiting = true;
            }
            Some((StepStatus::Failed { retryable }, attempt))
                if !(*retryable && attempt < retry.max_attempts) =>
            {
                let error = state.steps.get(&key).map_or("", |s| s.error.as_str());
                return vec![decided_failure(
                    id,
                    format!("item {index} failed: {error}"),
                    now,
                )];
            }
            _ => {
                waiting = true;
                if in_flight < limit {
                    let mut item_ctx = ctx.clone();
                    if let Some(map) = item_ctx.as_object_mut() {
                        map.insert("item".into(), item.clone());
                        map.insert("index".into(), json!(index));
                    }
                    if let Some(event) = call_step(state, spec, &key, id, call, &item_ctx, now) {
                        if matches!(event, Event::StepFailed(_)) {
                            return vec![event];
                        }
                        events.push(event);
                        in_flight += 1;
                    }
                }
            }
        }
    }
    if !waiting {
        let output = Value::Array(outputs);
        let size = output.to_string().len();
        if size > MAX_MAP_OUTPUT_BYTES {
            return vec![decided_failure(
                id,
                format!(
                    "the items' outputs are {size} bytes together; a map may record at most {MAX_MAP_OUTPUT_BYTES}"
                ),
                now,
            )];
        }
        return vec![decided(id, output, now)];
    }
    events
}

pub(super) fn wait_step(state: &RunState, node: &crate::spec::Node, now: u64) -> Vec<Event> {
    let id = node.id.as_str();
    let signal = match node.kind {
        NodeKind::HumanInput => Some(id),
        _ => node.signal.as_deref(),
    };
    if let Some(name) = signal
        && let Some((_, payload)) = state.signals.iter().find(|(n, _)| n == name)
    {
        return vec![decided(id, payload.clone(), now)];
    }
    match state.steps.get(id).map(|s| &s.status) {
        None => match node.duration_ms {
            Some(duration) => vec![Event::TimerStarted(TimerStarted {
                step: id.to_owned(),
                fire_at_ms: now.saturating_add(duration),
                at_ms: now,
            })],
            None => Vec::new(),
        },
        Some(StepStatus::Fired) => match (node.kind, signal) {
            (NodeKind::HumanInput, _) => vec![decided_failure(
                id,
                format!("no input within {} ms", node.duration_ms.unwrap_or(0)),
                now,
            )],
            (_, Some(_)) => vec![decided(id, json!({"timed_out": true}), now)],
            (_, None) => vec![decided(id, json!({"waited_ms": node.duration_ms}), now)],
        },
        Some(_) => Vec::new(),
    }
}
