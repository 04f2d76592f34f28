//! The workflow-run actor: a run's state is the fold of its events, and what it does next is a
//! pure function of that state ([`decide`]).
//!
//! Determinism: nothing here reads a clock, a random source or the network. Time enters as the
//! `now` of an [`Command::Advance`] (stamped on the events it decides) and through
//! `TimerFired`; I/O results enter as `StepCompleted`/`StepFailed` events. Replaying the events
//! through [`decide`] therefore reproduces every decision (see [`crate::replay`]).
//!
//! Events come in two sorts. *External* ones carry something from outside: `RunStarted`, a
//! step's result, `TimerFired`, `SignalReceived`, `RunCancelRequested`, `SegmentStarted`.
//! *Decided* ones are what `Advance` produces from the state: steps started, timers set,
//! branches taken, map and wait completions, compensations, the run's end. `Advance` runs to a
//! fixpoint: after its events are applied, advancing again decides nothing.

mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::{Value, json};
use switchyard_actors::Actor;
use switchyard_events::{
    Event, RunCancelRequested, RunCancelled, RunCompleted, RunContinued, RunFailed, RunStarted,
    SignalReceived, StepCompleted, StepFailed, StepStarted, TenantId, TimerFired, TimerStarted,
};
use time::OffsetDateTime;
use uuid::Uuid;

pub use state::{RunState, RunStatus, Step, StepStatus, compensation_key, is_external};

use crate::spec::{Call, NodeKind, WorkflowSpec};
use crate::template;

/// The stream category of runs: `workflow_run-<run id>`, later segments `…-<run id>.<n>`.
pub const CATEGORY: &str = "workflow_run";
/// Items of one map at most.
pub const MAX_MAP_ITEMS: usize = 10_000;
/// The largest rendered request a step may record (an event holds at most 1 MiB).
pub const MAX_REQUEST_BYTES: usize = 512 * 1024;
/// The largest list of outputs a map may record as its own output.
pub const MAX_MAP_OUTPUT_BYTES: usize = 768 * 1024;

/// One segment of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunKey {
    pub tenant: TenantId,
    pub run: Uuid,
    pub segment: u32,
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segment == 0 {
            write!(f, "{}", self.run)
        } else {
            write!(f, "{}.{}", self.run, self.segment)
        }
    }
}

impl RunKey {
    /// The stream of this segment.
    pub fn stream(&self) -> switchyard_events::StreamId {
        // A UUID and a number always make a valid stream id.
        switchyard_events::StreamId::of(CATEGORY, self).unwrap_or_else(|_| unreachable_stream(self))
    }
}

#[allow(
    clippy::panic,
    reason = "a UUID and a number always form a valid stream id"
)]
fn unreachable_stream(key: &RunKey) -> switchyard_events::StreamId {
    panic!("invalid run stream for {key}")
}

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub enum Command {
    /// Start the run (only on an empty stream).
    Start(Box<RunStarted>),
    /// Carry over the state of the previous segment (only on an empty stream).
    Resume { state: Box<RunState>, at_ms: u64 },
    /// Decide everything that follows from the state now.
    Advance { now_ms: u64 },
    /// A step's result arrived (`StepCompleted` with `decided: false`, or `StepFailed`).
    Result(Box<Event>),
    /// A timer fired.
    Fire { step: String, at_ms: u64 },
    /// A signal arrived.
    Signal {
        name: String,
        payload: Value,
        at_ms: u64,
    },
    /// Stop: compensate, then end cancelled.
    Cancel { reason: String, at_ms: u64 },
}

/// Why a command does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the run already exists")]
    AlreadyStarted,
    #[error("no such run")]
    NotStarted,
    #[error("the run has ended ({0})")]
    Ended(&'static str),
    #[error("{0}")]
    Invalid(String),
}

/// The run actor.
#[derive(Debug, Clone, Copy)]
pub struct WorkflowRun;

impl Actor for WorkflowRun {
    const KIND: &'static str = CATEGORY;
    const SNAPSHOT_VERSION: u16 = 1;
    type Id = RunKey;
    type State = RunState;
    type Command = Command;
    type Rejection = Rejection;

    fn tenant(id: &RunKey) -> TenantId {
        id.tenant
    }

    fn decide(
        state: &RunState,
        command: Command,
        _now: OffsetDateTime,
    ) -> Result<Vec<Event>, Rejection> {
        decide(state, command)
    }

    fn apply(state: &mut RunState, event: &Event) {
        state.apply(event);
    }
}

/// The events a command produces on a state.
pub fn decide(state: &RunState, command: Command) -> Result<Vec<Event>, Rejection> {
    match command {
        Command::Start(started) => {
            if state.status != RunStatus::New {
                return Err(Rejection::AlreadyStarted);
            }
            Ok(vec![Event::RunStarted(*started)])
        }
        Command::Resume {
            state: carried,
            at_ms,
        } => {
            if state.status != RunStatus::New {
                return Err(Rejection::AlreadyStarted);
            }
            let text = serde_json::to_string(&*carried)
                .map_err(|e| Rejection::Invalid(format!("cannot carry the state over: {e}")))?;
            Ok(vec![Event::SegmentStarted(
                switchyard_events::SegmentStarted {
                    run_id: carried.run_id,
                    segment: carried.segment,
                    state: text,
                    at_ms,
                },
            )])
        }
        Command::Advance { now_ms } => {
            live(state)?;
            Ok(advance(state, now_ms))
        }
        Command::Result(event) => {
            live(state)?;
            let step = match &*event {
                Event::StepCompleted(e) if !e.decided => &e.step,
                Event::StepFailed(e) if !e.decided => &e.step,
                _ => return Err(Rejection::Invalid("not a step result".into())),
            };
            // A result for a step that is not running (a duplicate delivery) changes nothing.
            match state.steps.get(step) {
                Some(s) if s.status == StepStatus::Running => Ok(vec![*event]),
                _ => Ok(Vec::new()),
            }
        }
        Command::Fire { step, at_ms } => {
            live(state)?;
            match state.steps.get(&step) {
                Some(s) if matches!(s.status, StepStatus::Timer { .. }) => {
                    Ok(vec![Event::TimerFired(TimerFired { step, at_ms })])
                }
                _ => Ok(Vec::new()),
            }
        }
        Command::Signal {
            name,
            payload,
            at_ms,
        } => {
            live(state)?;
            Ok(vec![Event::SignalReceived(SignalReceived {
                name,
                payload: payload.to_string(),
                at_ms,
            })])
        }
        Command::Cancel { reason, at_ms } => {
            live(state)?;
            if state.cancel.is_some() {
                return Ok(Vec::new());
            }
            Ok(vec![Event::RunCancelRequested(RunCancelRequested {
                reason,
                at_ms,
            })])
        }
    }
}

fn live(state: &RunState) -> Result<(), Rejection> {
    match state.status {
        RunStatus::New => Err(Rejection::NotStarted),
        RunStatus::Running => Ok(()),
        RunStatus::Completed => Err(Rejection::Ended("completed")),
        RunStatus::Failed => Err(Rejection::Ended("failed")),
        RunStatus::Cancelled => Err(Rejection::Ended("cancelled")),
        RunStatus::Continued => Err(Rejection::Ended("continued in a later segment")),
    }
}

/// Rounds of decisions in one advance at most (a guard; a spec's graph is acyclic and finite).
const MAX_ROUNDS: usize = 100_000;

/// Everything that follows from the state: rounds of decisions until none is left.
pub fn advance(state: &RunState, now_ms: u64) -> Vec<Event> {
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
        NodeKind::Llm | NodeKind::Tool | NodeKind::Subworkflow => {
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

/// A `StepCompleted` the run decided.
fn decided(step: &str, output: Value, now: u64) -> Event {
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
fn decided_failure(step: &str, error: String, now: u64) -> Event {
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
fn call_step(
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

fn map_step(
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

fn wait_step(state: &RunState, node: &crate::spec::Node, now: u64) -> Vec<Event> {
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

/// The state after folding `events` (from an empty state).
pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> RunState {
    let mut state = RunState::default();
    for event in events {
        state.apply(event);
    }
    state
}

/// A `RunStarted` for a new run of `spec`.
#[allow(clippy::too_many_arguments, reason = "the fields of the event")]
pub fn started(
    run_id: Uuid,
    spec: &Arc<WorkflowSpec>,
    version: u32,
    input: &Value,
    parent: Option<(Uuid, String)>,
    replay_of: Option<Uuid>,
    overrides: &Value,
    seed: u64,
    at_ms: u64,
) -> RunStarted {
    let (parent_run, parent_step) = parent.map_or((None, None), |(r, s)| (Some(r), Some(s)));
    RunStarted {
        run_id,
        workflow: spec.name.clone(),
        version,
        spec: serde_json::to_string(&**spec).unwrap_or_default(),
        input: input.to_string(),
        parent_run,
        parent_step,
        replay_of,
        overrides: overrides.to_string(),
        seed,
        at_ms,
    }
}

/// The outputs of completed steps by node id (for tests and reports).
pub fn outputs(state: &RunState) -> BTreeMap<String, Value> {
    state.outputs.clone()
}
