//! The engine: drives runs. After every event it asks the run actor what follows
//! ([`Command::Advance`]), and carries out what was decided: calls (through an [`Executor`]),
//! child runs, timers. It keeps no state of its own that the log does not hold: after a crash,
//! [`Engine::recover`] finds the runs that had not ended and carries out again every step that
//! had started and not completed, under the same idempotency key.
//!
//! [`Command::Advance`]: crate::run::Command::Advance

/// The tenant's registry: workflows, fragments and tools registered through the engine.
mod catalog;
/// Child runs of `subworkflow` steps, and a child's end delivered to its parent.
mod child;
/// Advancing runs: segments rolled forward, results delivered, steps and timers scheduled.
mod drive;
/// The engine lease: one node carries out the steps of a log's runs, another takes over.
mod lead;
mod prompts; // `prompt_ref`: registered prompts resolved into llm nodes at registration
/// Recovery after a crash: every run that had not ended is carried on.
mod recovery;
/// The run API: start, look up, read, signal, cancel and wait for runs.
mod runs;
/// Carrying out one step attempt through the `Executor`, or from a recorded run.
mod steps;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use serde_json::Value;
use switchyard_actors::{Runtime, RuntimeConfig};
use switchyard_events::{Event, EventStore, Metadata, StepFailed, TenantId};
use uuid::Uuid;

use crate::error::Error;
use crate::registry::{Registry, ToolDef};
use crate::run::{Rejection, WorkflowRun};

pub use child::{child_id, inference_id};
pub use lead::{ENGINE_LEASE, LeadOptions};

/// One call a step makes, as the executor sees it.
#[derive(Debug, Clone)]
pub struct StepCall {
    pub tenant: TenantId,
    pub run_id: Uuid,
    pub step: String,
    pub attempt: u32,
    /// Stable across attempts carried out again after a crash: `<run>/<step>/<attempt>`.
    pub idempotency_key: String,
    /// The id of a model call's inference, derived from (run, step, attempt) like the key: an
    /// attempt carried out again (after a crash, or by the node that took over) finds its
    /// inference recorded and is not billed twice.
    pub inference_id: Uuid,
    /// The rendered call (`kind` is `llm` or `tool`).
    pub request: Value,
    /// The registered tool, for a `tool` call.
    pub tool: Option<ToolDef>,
    pub timeout: Duration,
}

/// What a call produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    pub output: Value,
    pub inference_id: Option<Uuid>,
    pub cost_micros: u64,
}

/// Why a call failed, and whether another attempt may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub message: String,
    pub retryable: bool,
}

/// Carries out `llm` and `tool` calls (the gateway's inference path and HTTP client in the
/// server; fakes in tests).
#[async_trait]
pub trait Executor: Send + Sync {
    async fn call(&self, call: &StepCall) -> std::result::Result<StepOutput, StepError>;
}

/// How a run is started.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The registered version (the newest when `None`).
    pub version: Option<u32>,
    /// A chosen run id (a fresh UUIDv7 when `None`); starting an existing id is a conflict.
    pub run_id: Option<Uuid>,
    pub parent: Option<(Uuid, String)>,
    /// A re-execution of this recorded run: tool calls are answered from its results.
    pub replay_of: Option<Uuid>,
    /// `{"model": …}`, `{"models": {node: …}}`, `{"prompts": {node: …}}`.
    pub overrides: Value,
}

/// Subworkflows nested this deep at most.
pub const MAX_NESTING: u32 = 8;
/// The largest output a step may record (an event holds at most 1 MiB).
pub const MAX_OUTPUT_BYTES: usize = 512 * 1024;

/// The engine's clock: unix milliseconds.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Drives the workflow runs of every tenant on one node.
pub struct Engine {
    store: Arc<dyn EventStore>,
    runs: Runtime<WorkflowRun>,
    registry: Runtime<Registry>,
    executor: Arc<dyn Executor>,
    /// Tenant and current segment of each run this node has seen.
    segments: DashMap<Uuid, (TenantId, u32)>,
    /// Steps being carried out by this node: (run, step key, attempt).
    tasks: DashMap<(Uuid, String, u32), ()>,
    timers: DashMap<(Uuid, String), ()>,
    /// Wakes waiters of a run when it ends.
    ended: tokio::sync::broadcast::Sender<Uuid>,
    clock: Clock,
    /// Whether this node carries out steps and timers: always for an engine of its own (tests,
    /// the CLI); in a server, only while it holds the engine lease ([`Engine::lead`]).
    executing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("runs", &self.runs)
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

fn system_clock() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn metadata(run: Uuid) -> Metadata {
    Metadata {
        correlation_id: Some(run.to_string()),
        traceparent: switchyard_events::trace::current(),
        ..Metadata::default()
    }
}

fn rejected(error: switchyard_actors::Error<Rejection>) -> Error {
    match error {
        switchyard_actors::Error::Rejected(Rejection::NotStarted) => {
            Error::NotFound("no such run".into())
        }
        switchyard_actors::Error::Rejected(r) => Error::Conflict(r.to_string()),
        switchyard_actors::Error::Store(e) => Error::Store(e),
        other => Error::Conflict(other.to_string()),
    }
}

impl Engine {
    /// An engine over `store`, carrying out calls with `executor`.
    pub fn new(store: Arc<dyn EventStore>, executor: Arc<dyn Executor>) -> Arc<Self> {
        Self::with_clock(store, executor, Arc::new(system_clock))
    }

    /// The same, with a given clock (tests).
    pub fn with_clock(
        store: Arc<dyn EventStore>,
        executor: Arc<dyn Executor>,
        clock: Clock,
    ) -> Arc<Self> {
        let config = RuntimeConfig {
            // A run's stream is bounded by its segments; its state holds JSON, which the binary
            // snapshot form cannot carry. Rebuilding a segment from its events is the path.
            snapshot_every: u64::MAX,
            mailbox: 256,
            ..RuntimeConfig::default()
        };
        let (ended, _) = tokio::sync::broadcast::channel(1024);
        Arc::new(Engine {
            runs: Runtime::new(store.clone(), config),
            // Every tool step reads its tenant's registry: a deep mailbox, so that thousands of
            // runs recovered at once queue for it instead of being refused.
            registry: Runtime::new(
                store.clone(),
                RuntimeConfig {
                    mailbox: 16_384,
                    send_timeout: Duration::from_secs(30),
                    ..RuntimeConfig::default()
                },
            ),
            store,
            executor,
            segments: DashMap::new(),
            tasks: DashMap::new(),
            timers: DashMap::new(),
            ended,
            clock,
            executing: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Whether this node carries out steps now.
    pub fn executing(&self) -> bool {
        self.executing.load(std::sync::atomic::Ordering::Acquire)
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }
}

fn failure(step: &str, attempt: u32, error: String, retryable: bool, at_ms: u64) -> Event {
    Event::StepFailed(StepFailed {
        step: step.to_owned(),
        attempt,
        error,
        retryable,
        decided: false,
        at_ms,
    })
}
