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

/// What each command decides: [`decide`], and whether the run is live.
mod commands;
/// The advance: rounds of decisions until none is left, the run's end and its compensations.
mod rounds;
/// A run's state and how each event changes it.
mod state;
/// The decisions of one node: call steps and their requests, maps and waits.
mod steps;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use switchyard_actors::Actor;
use switchyard_events::{Event, RunStarted, TenantId};
use time::OffsetDateTime;
use uuid::Uuid;

pub use commands::decide;
pub use rounds::advance;
pub use state::{RunState, RunStatus, Step, StepStatus, compensation_key, is_external};

use crate::spec::WorkflowSpec;

/// The version of the decision logic ([`advance`]) that new runs record in `RunStarted` and are
/// driven and replayed with for their whole life.
///
/// Bump it with any change that decides differently from the same events (a new default, an
/// ordering, a rule), and keep the old logic behind `state.engine`: a recorded run is replayed
/// and continued under the version that recorded it, never under newer logic. The golden
/// episodes under `tests/episodes/engine-<N>/` are recorded once per version and never again.
pub const ENGINE: u32 = 1;

/// The engine versions this build can drive and replay.
pub const ENGINES: std::ops::RangeInclusive<u32> = 1..=ENGINE;

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
    /// The run was recorded by a newer engine than this build's: a node that knows it drives
    /// it (during a rolling upgrade, an older node leaves it alone).
    #[error("the run is decided by workflow engine version {0}; this build knows 1 to {ENGINE}")]
    Engine(u32),
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
        engine: ENGINE,
    }
}

/// The outputs of completed steps by node id (for tests and reports).
pub fn outputs(state: &RunState) -> BTreeMap<String, Value> {
    state.outputs.clone()
}
