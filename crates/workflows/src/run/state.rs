//! A run's state and how each event changes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_events::Event;
use uuid::Uuid;

use crate::spec::{END, NodeKind, WorkflowSpec};

/// Where a run is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Nothing recorded yet.
    #[default]
    New,
    Running,
    Completed,
    Failed,
    Cancelled,
    /// This segment is full; the run goes on in the next one.
    Continued,
}

impl RunStatus {
    /// The name shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::New => "new",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Continued => "continued",
        }
    }

    /// Whether the run has ended for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// One step: a node's execution, a map item, a timer or a compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub node: String,
    pub attempt: u32,
    pub status: StepStatus,
    /// The rendered call (for call steps).
    pub request: Value,
    /// When the step last changed.
    pub at_ms: u64,
    /// The attempt must not be carried out before this time (retry backoff).
    pub not_before_ms: u64,
    /// The last failure's message.
    pub error: String,
}

/// Where a step is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum StepStatus {
    /// Started; its result has not arrived.
    Running,
    Completed {
        output: Value,
    },
    Failed {
        retryable: bool,
    },
    /// A timer is set.
    Timer {
        fire_at_ms: u64,
    },
    /// The timer fired.
    Fired,
}

/// Why a run is winding down.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cause {
    Cancelled(String),
    Failed { error: String, step: String },
}

/// The fold of a run's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub status: RunStatus,
    pub run_id: Uuid,
    pub segment: u32,
    pub workflow: String,
    pub version: u32,
    pub spec: Option<Arc<WorkflowSpec>>,
    pub input: Value,
    pub overrides: Value,
    pub seed: u64,
    pub parent: Option<(Uuid, String)>,
    pub replay_of: Option<Uuid>,
    pub started_ms: u64,
    /// The node being carried out; `None` once the last one completed.
    pub cursor: Option<String>,
    pub steps: BTreeMap<String, Step>,
    /// Outputs of completed nodes, by node id.
    pub outputs: BTreeMap<String, Value>,
    pub last_output: Option<Value>,
    /// Nodes in the order they completed (compensations run in reverse).
    pub completed: Vec<String>,
    /// Compensations that completed, in order.
    pub compensations: Vec<String>,
    /// Signals received and not yet consumed by a wait, in order of arrival.
    pub signals: Vec<(String, Value)>,
    pub cancel: Option<String>,
    /// Step attempts started in the whole run.
    pub attempts: u32,
    /// Events in the current segment.
    pub segment_events: u32,
    pub cost_micros: u64,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub ended_ms: Option<u64>,
    /// The engine version that decides this run (`RunStarted.engine`; a state carried by a
    /// segment from before engines were recorded is version 1).
    #[serde(default = "engine_one")]
    pub engine: u32,
}

fn engine_one() -> u32 {
    1
}

/// The step key of item `index` of map node `node`.
pub(crate) fn item_key(node: &str, index: usize) -> String {
    format!("{node}[{index}]")
}

/// The step key of node `node`'s compensation.
pub fn compensation_key(node: &str) -> String {
    format!("{node}~compensate")
}

/// Whether an event carries something from outside the run (as opposed to a decision).
pub fn is_external(event: &Event) -> bool {
    match event {
        Event::RunStarted(_)
        | Event::SegmentStarted(_)
        | Event::TimerFired(_)
        | Event::SignalReceived(_)
        | Event::RunCancelRequested(_) => true,
        Event::StepCompleted(e) => !e.decided,
        Event::StepFailed(e) => !e.decided,
        _ => false,
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

impl RunState {
    /// Folds one event. Events of other kinds are ignored.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::RunStarted(e) => {
                self.status = RunStatus::Running;
                self.run_id = e.run_id;
                self.workflow.clone_from(&e.workflow);
                self.version = e.version;
                self.input = parse(&e.input);
                self.overrides = parse(&e.overrides);
                self.seed = e.seed;
                self.parent = e.parent_run.zip(e.parent_step.clone());
                self.replay_of = e.replay_of;
                self.started_ms = e.at_ms;
                self.engine = e.engine;
                match serde_json::from_str::<WorkflowSpec>(&e.spec) {
                    Ok(spec) => {
                        self.cursor = spec.nodes.first().map(|n| n.id.clone());
                        self.spec = Some(Arc::new(spec));
                    }
                    Err(error) => {
                        self.status = RunStatus::Failed;
                        self.error = Some(format!("the recorded spec cannot be read: {error}"));
                    }
                }
            }
            Event::SegmentStarted(e) => {
                match serde_json::from_str::<RunState>(&e.state) {
                    Ok(state) => *self = state,
                    Err(error) => {
                        self.status = RunStatus::Failed;
                        self.error = Some(format!("the carried state cannot be read: {error}"));
                    }
                }
                self.segment = e.segment;
                self.segment_events = 0;
                if self.status == RunStatus::Continued {
                    self.status = RunStatus::Running;
                }
            }
            Event::StepStarted(e) => {
                self.attempts = self.attempts.saturating_add(1);
                self.steps.insert(
                    e.step.clone(),
                    Step {
                        node: e.node.clone(),
                        attempt: e.attempt,
                        status: StepStatus::Running,
                        request: parse(&e.request),
                        at_ms: e.at_ms,
                        not_before_ms: e.not_before_ms,
                        error: String::new(),
                    },
                );
            }
            Event::StepCompleted(e) => self.completed_step(&e.step, parse(&e.output), e),
            Event::StepFailed(e) => {
                let step = self.step_mut(&e.step);
                step.attempt = step.attempt.max(e.attempt);
                step.status = StepStatus::Failed {
                    retryable: e.retryable && !e.decided,
                };
                step.error.clone_from(&e.error);
                step.at_ms = e.at_ms;
            }
            Event::TimerStarted(e) => {
                let step = self.step_mut(&e.step);
                step.status = StepStatus::Timer {
                    fire_at_ms: e.fire_at_ms,
                };
                step.at_ms = e.at_ms;
            }
            Event::TimerFired(e) => {
                let step = self.step_mut(&e.step);
                step.status = StepStatus::Fired;
                step.at_ms = e.at_ms;
            }
            Event::SignalReceived(e) => {
                self.signals.push((e.name.clone(), parse(&e.payload)));
            }
            Event::RunCancelRequested(e) => self.cancel = Some(e.reason.clone()),
            Event::RunCompleted(e) => {
                self.status = RunStatus::Completed;
                self.output = Some(parse(&e.output));
                self.ended_ms = Some(e.at_ms);
            }
            Event::RunFailed(e) => {
                self.status = RunStatus::Failed;
                self.error = Some(e.error.clone());
                self.ended_ms = Some(e.at_ms);
            }
            Event::RunCancelled(e) => {
                self.status = RunStatus::Cancelled;
                self.error = Some(format!("cancelled: {}", e.reason));
                self.ended_ms = Some(e.at_ms);
            }
            Event::RunContinued(_) => self.status = RunStatus::Continued,
            _ => return,
        }
        self.segment_events = self.segment_events.saturating_add(1);
    }

    fn step_mut(&mut self, key: &str) -> &mut Step {
        self.steps.entry(key.to_owned()).or_insert_with(|| Step {
            node: key.split(['[', '~']).next().unwrap_or(key).to_owned(),
            attempt: 1,
            status: StepStatus::Running,
            request: Value::Null,
            at_ms: 0,
            not_before_ms: 0,
            error: String::new(),
        })
    }

    fn completed_step(&mut self, key: &str, output: Value, e: &switchyard_events::StepCompleted) {
        self.cost_micros = self.cost_micros.saturating_add(e.cost_micros);
        let step = self.step_mut(key);
        step.status = StepStatus::Completed {
            output: output.clone(),
        };
        step.at_ms = e.at_ms;
        if key.ends_with("~compensate") {
            self.compensations.push(key.to_owned());
            return;
        }
        if key.contains('[') {
            return;
        }
        let Some(spec) = self.spec.clone() else {
            return;
        };
        let Some(node) = spec.node(key) else {
            return;
        };
        if matches!(node.kind, NodeKind::Wait | NodeKind::HumanInput) {
            let name = match node.kind {
                NodeKind::HumanInput => Some(key),
                _ => node.signal.as_deref(),
            };
            if let Some(name) = name
                && let Some(i) = self.signals.iter().position(|(n, _)| n == name)
            {
                self.signals.remove(i);
            }
        }
        self.cursor = match node.kind {
            NodeKind::Branch => output
                .get("goto")
                .and_then(Value::as_str)
                .filter(|target| *target != END)
                .map(str::to_owned),
            _ => spec.successor(key).map(str::to_owned),
        };
        if node.kind != NodeKind::Branch {
            self.outputs.insert(key.to_owned(), output.clone());
            self.last_output = Some(output);
            self.completed.push(key.to_owned());
        }
    }

    /// Why the run is winding down: cancelled, or its current node failed for good.
    pub(crate) fn failing(&self) -> Option<Cause> {
        if let Some(reason) = &self.cancel {
            return Some(Cause::Cancelled(reason.clone()));
        }
        let cursor = self.cursor.as_deref()?;
        let step = self.steps.get(cursor)?;
        let StepStatus::Failed { retryable } = step.status else {
            return None;
        };
        let spec = self.spec.as_ref()?;
        let retry = spec
            .node(cursor)
            .and_then(|n| n.as_call().retry)
            .unwrap_or(spec.defaults.retry);
        let callable = spec.node(cursor).is_some_and(|n| n.kind.is_call());
        if retryable && callable && step.attempt < retry.max_attempts {
            return None;
        }
        let attempts = if callable {
            format!(" after {} attempt(s)", step.attempt)
        } else {
            String::new()
        };
        Some(Cause::Failed {
            error: format!("step `{cursor}` failed{attempts}: {}", step.error),
            step: cursor.to_owned(),
        })
    }

    /// Whether a step (not a compensation) is running.
    pub(crate) fn in_flight_work(&self) -> bool {
        self.steps
            .iter()
            .any(|(key, s)| s.status == StepStatus::Running && !key.ends_with("~compensate"))
    }

    /// Compensations that completed, in order.
    pub(crate) fn compensated(&self) -> Vec<String> {
        self.compensations.clone()
    }

    /// The template context: `input`, `steps.<id>.output`, `run`, and for a compensation the
    /// compensated node's `output`.
    pub fn context(&self, compensating: Option<&str>) -> Value {
        let steps: serde_json::Map<String, Value> = self
            .outputs
            .iter()
            .map(|(id, output)| (id.clone(), json!({"output": output})))
            .collect();
        let mut ctx = json!({
            "input": self.input,
            "steps": steps,
            "run": {"id": self.run_id.to_string(), "workflow": self.workflow, "version": self.version},
        });
        if let Some(node) = compensating
            && let Some(map) = ctx.as_object_mut()
        {
            map.insert(
                "output".into(),
                self.outputs.get(node).cloned().unwrap_or(Value::Null),
            );
        }
        ctx
    }

    /// The state a new segment starts from (continue-as-new): this state, in `segment`, without
    /// what no later decision reads: the rendered requests of finished steps, and the outputs
    /// of finished node steps (kept in `outputs`). A map item's output stays until its map
    /// completes; after that, the map's output holds them.
    pub fn carried(&self, segment: u32) -> RunState {
        let mut carried = self.clone();
        carried.segment = segment;
        for (key, step) in &mut carried.steps {
            let finished = matches!(
                step.status,
                StepStatus::Completed { .. } | StepStatus::Failed { .. } | StepStatus::Fired
            );
            if finished {
                step.request = Value::Null;
            }
            let item_of_open_map = key
                .split_once('[')
                .is_some_and(|(node, _)| !self.outputs.contains_key(node));
            if let StepStatus::Completed { output } = &mut step.status
                && !item_of_open_map
            {
                *output = Value::Null;
            }
        }
        carried
    }

    /// Steps started whose results have not arrived, with their keys.
    pub fn running(&self) -> impl Iterator<Item = (&String, &Step)> {
        self.steps
            .iter()
            .filter(|(_, s)| s.status == StepStatus::Running)
    }

    /// Timers set and not fired, with their keys.
    pub fn timers(&self) -> impl Iterator<Item = (&String, u64)> {
        self.steps.iter().filter_map(|(k, s)| match s.status {
            StepStatus::Timer { fire_at_ms } => Some((k, fire_at_ms)),
            _ => None,
        })
    }
}
