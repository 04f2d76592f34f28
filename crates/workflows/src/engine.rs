//! The engine: drives runs. After every event it asks the run actor what follows
//! ([`Command::Advance`]), and carries out what was decided: calls (through an [`Executor`]),
//! child runs, timers. It keeps no state of its own that the log does not hold: after a crash,
//! [`Engine::recover`] finds the runs that had not ended and carries out again every step that
//! had started and not completed, under the same idempotency key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use serde_json::{Value, json};
use switchyard_actors::{Runtime, RuntimeConfig};
use switchyard_events::{
    Event, EventStore, GlobalPosition, Metadata, RecordedEvent, Scope, StepCompleted, StepFailed,
    StreamVersion, TenantId,
};
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::metrics::METRICS;
use crate::registry::{Catalog, Register, Registry, ToolDef};
use crate::run::{self, Command, Rejection, RunKey, RunState, RunStatus, WorkflowRun};
use crate::spec::{self, LoadOptions, WorkflowSpec};

/// One call a step makes, as the executor sees it.
#[derive(Debug, Clone)]
pub struct StepCall {
    pub tenant: TenantId,
    pub run_id: Uuid,
    pub step: String,
    pub attempt: u32,
    /// Stable across attempts carried out again after a crash: `<run>/<step>/<attempt>`.
    pub idempotency_key: String,
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
        })
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    // ---- the registry ----

    /// The tenant's registry.
    pub async fn catalog(&self, tenant: TenantId) -> Result<Catalog> {
        self.registry
            .read(&tenant)
            .await
            .map(|(catalog, _)| catalog)
            .map_err(|e| Error::Conflict(e.to_string()))
    }

    /// Loads (fragments and overlays applied), validates and registers a spec; answers its
    /// name and version.
    pub async fn register_workflow(
        &self,
        tenant: TenantId,
        source: &str,
        options: LoadOptions<'_>,
    ) -> Result<(String, u32, WorkflowSpec)> {
        let catalog = self.catalog(tenant).await?;
        let spec = spec::load(source, options, &catalog.fragment_values())?;
        let text = serde_json::to_string(&spec).map_err(|e| Error::Conflict(e.to_string()))?;
        let name = spec.name.clone();
        let applied = self
            .registry
            .send(
                &tenant,
                Register::Workflow {
                    name: name.clone(),
                    spec: text.clone(),
                    source: source.to_owned(),
                },
                Metadata::default(),
            )
            .await
            .map_err(|e| Error::Conflict(e.to_string()))?;
        let version = version_of(applied.state.workflows.get(&name), &text);
        tracing::info!(%tenant, workflow = %name, version, "workflow registered");
        Ok((name, version, spec))
    }

    /// Registers a fragment document; answers its name and version.
    pub async fn register_fragment(&self, tenant: TenantId, source: &str) -> Result<(String, u32)> {
        let (name, node) = spec::load_fragment(source)?;
        let text = node.to_string();
        let applied = self
            .registry
            .send(
                &tenant,
                Register::Fragment {
                    name: name.clone(),
                    node: text.clone(),
                },
                Metadata::default(),
            )
            .await
            .map_err(|e| Error::Conflict(e.to_string()))?;
        let version = version_of(applied.state.fragments.get(&name), &text);
        Ok((name, version))
    }

    /// Registers a tool definition; answers its name and version.
    pub async fn register_tool(&self, tenant: TenantId, source: &str) -> Result<(String, u32)> {
        let tool = ToolDef::load(source)?;
        let text = serde_json::to_string(&tool).map_err(|e| Error::Conflict(e.to_string()))?;
        let applied = self
            .registry
            .send(
                &tenant,
                Register::Tool {
                    name: tool.name.clone(),
                    definition: text.clone(),
                },
                Metadata::default(),
            )
            .await
            .map_err(|e| Error::Conflict(e.to_string()))?;
        Ok((
            tool.name.clone(),
            version_of(applied.state.tools.get(&tool.name), &text),
        ))
    }

    // ---- runs ----

    /// Starts a run of registered workflow `name`; answers the run id once `RunStarted` is
    /// durable. The run goes on in the background.
    pub async fn start(
        self: &Arc<Self>,
        tenant: TenantId,
        name: &str,
        input: Value,
        options: StartOptions,
    ) -> Result<Uuid> {
        let catalog = self.catalog(tenant).await?;
        let (version, spec) = catalog
            .workflow(name, options.version)
            .ok_or_else(|| Error::NotFound(format!("no workflow `{name}`")))?;
        self.start_spec(tenant, Arc::new(spec), version, input, options)
            .await
    }

    /// Starts a run of a loaded spec (registered as `version`).
    pub async fn start_spec(
        self: &Arc<Self>,
        tenant: TenantId,
        spec: Arc<WorkflowSpec>,
        version: u32,
        input: Value,
        options: StartOptions,
    ) -> Result<Uuid> {
        let input = spec::validate_input(&spec, &input)?;
        let run_id = options.run_id.unwrap_or_else(Uuid::now_v7);
        let now = self.now();
        let seed = u64::from_le_bytes(
            blake3::hash(run_id.as_bytes()).as_bytes()[..8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        let started = run::started(
            run_id,
            &spec,
            version,
            &input,
            options.parent,
            options.replay_of,
            &options.overrides,
            seed,
            now,
        );
        let key = RunKey {
            tenant,
            run: run_id,
            segment: 0,
        };
        self.runs
            .send(&key, Command::Start(Box::new(started)), metadata(run_id))
            .await
            .map_err(rejected)?;
        self.segments.insert(run_id, (tenant, 0));
        METRICS.started.with_label_values(&[&spec.name]).inc();
        METRICS.active.inc();
        tracing::info!(%tenant, %run_id, workflow = %spec.name, version, "run started");
        self.kick(tenant, run_id);
        Ok(run_id)
    }

    /// The run's current segment key (looked up in the log when this node has not seen it).
    async fn key(&self, tenant: TenantId, run_id: Uuid) -> Result<RunKey> {
        let missing = || Error::NotFound(format!("no run {run_id}"));
        if let Some(entry) = self.segments.get(&run_id) {
            let (owner, segment) = *entry;
            // Another tenant's run is not found, as if it did not exist.
            return (owner == tenant)
                .then_some(RunKey {
                    tenant,
                    run: run_id,
                    segment,
                })
                .ok_or_else(missing);
        }
        let mut key = RunKey {
            tenant,
            run: run_id,
            segment: 0,
        };
        // The actor runtime reads streams whole; the ownership check is here.
        if self
            .store
            .stream_metadata(Scope::Tenant(tenant), &key.stream())
            .await?
            .is_none()
        {
            return Err(missing());
        }
        loop {
            let (state, _) = self.runs.read(&key).await.map_err(rejected)?;
            if state.status != RunStatus::Continued {
                break;
            }
            let next = RunKey {
                segment: key.segment + 1,
                ..key
            };
            // A closed segment whose successor was never started stays the current one: the
            // next advance starts its successor (see `drive`).
            if self.runs.read(&next).await.map_err(rejected)?.0.status == RunStatus::New {
                break;
            }
            key = next;
        }
        self.segments.insert(run_id, (tenant, key.segment));
        Ok(key)
    }

    /// The run's state (its current segment's).
    pub async fn state(&self, tenant: TenantId, run_id: Uuid) -> Result<RunState> {
        let key = self.key(tenant, run_id).await?;
        let (state, _) = self.runs.read(&key).await.map_err(rejected)?;
        if state.status == RunStatus::New {
            return Err(Error::NotFound(format!("no run {run_id}")));
        }
        Ok(state)
    }

    /// Every event of the run, all segments, in order.
    pub async fn events(&self, tenant: TenantId, run_id: Uuid) -> Result<Vec<RecordedEvent>> {
        let last = self.key(tenant, run_id).await?.segment;
        let mut all = Vec::new();
        for segment in 0..=last {
            let key = RunKey {
                tenant,
                run: run_id,
                segment,
            };
            let mut after = StreamVersion::NONE;
            loop {
                let page = self
                    .store
                    .read_stream(Scope::Tenant(tenant), &key.stream(), after, 1_000)
                    .await?;
                let Some(last) = page.last() else { break };
                after = last.stream_version;
                let full = page.len() < 1_000;
                all.extend(page);
                if full {
                    break;
                }
            }
        }
        Ok(all)
    }

    /// Delivers a signal (a `human_input` node's payload is checked against its schema).
    pub async fn signal(
        self: &Arc<Self>,
        tenant: TenantId,
        run_id: Uuid,
        name: &str,
        payload: Value,
    ) -> Result<()> {
        if !spec::valid_name(name) {
            return Err(Error::Schema {
                what: "the signal".into(),
                message: "names are lower-case letters, digits, `-` and `_`".into(),
            });
        }
        let key = self.key(tenant, run_id).await?;
        let (state, _) = self.runs.read(&key).await.map_err(rejected)?;
        if let Some(schema) = state
            .spec
            .as_ref()
            .and_then(|s| s.node(name))
            .filter(|n| n.kind == spec::NodeKind::HumanInput)
            .and_then(|n| n.schema.as_ref())
        {
            let validator = jsonschema::validator_for(schema).map_err(|e| Error::Schema {
                what: "the node's schema".into(),
                message: e.to_string(),
            })?;
            if let Some(problem) = validator.iter_errors(&payload).next() {
                return Err(Error::Schema {
                    what: format!("the payload of `{name}`"),
                    message: format!("{problem} at `{}`", problem.instance_path()),
                });
            }
        }
        let at_ms = self.now();
        self.runs
            .send(
                &key,
                Command::Signal {
                    name: name.to_owned(),
                    payload,
                    at_ms,
                },
                metadata(run_id),
            )
            .await
            .map_err(rejected)?;
        self.kick(tenant, run_id);
        Ok(())
    }

    /// Asks the run to stop: it compensates what it completed, then ends cancelled.
    pub async fn cancel(
        self: &Arc<Self>,
        tenant: TenantId,
        run_id: Uuid,
        reason: &str,
    ) -> Result<()> {
        let key = self.key(tenant, run_id).await?;
        let at_ms = self.now();
        let applied = self
            .runs
            .send(
                &key,
                Command::Cancel {
                    reason: reason.to_owned(),
                    at_ms,
                },
                metadata(run_id),
            )
            .await
            .map_err(rejected)?;
        // Child runs in flight are cancelled too: the parent's compensation waits for them.
        for (step_key, step) in applied.state.running() {
            if step.request.get("kind").and_then(Value::as_str) == Some("subworkflow") {
                let child = child_id(run_id, step_key, step.attempt);
                if let Err(error) = Box::pin(self.cancel(tenant, child, reason)).await {
                    tracing::debug!(%child, %error, "child run not cancelled");
                }
            }
        }
        self.kick(tenant, run_id);
        Ok(())
    }

    /// Waits until the run has ended (or `timeout` passed); answers its state.
    pub async fn wait(
        &self,
        tenant: TenantId,
        run_id: Uuid,
        timeout: Duration,
    ) -> Result<RunState> {
        let deadline = Instant::now() + timeout;
        let mut ended = self.ended.subscribe();
        loop {
            let state = self.state(tenant, run_id).await?;
            if state.status.is_final() {
                return Ok(state);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(state);
            }
            // Woken by any run's end (or a lagged channel), or re-checked every 250 ms.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), ended.recv()).await;
        }
    }

    /// Finds every run that had not ended (a full read of the log) and carries it on. Answers
    /// how many.
    pub async fn recover(self: &Arc<Self>) -> Result<usize> {
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
        Ok(count)
    }

    /// Advances the run in the background.
    fn kick(self: &Arc<Self>, tenant: TenantId, run_id: Uuid) {
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(error) = engine.drive(tenant, run_id).await {
                tracing::warn!(%run_id, %error, "cannot advance a run");
            }
        });
    }

    /// Advance, then carry out whatever is due.
    async fn drive(self: &Arc<Self>, tenant: TenantId, run_id: Uuid) -> Result<()> {
        let mut key = self.key(tenant, run_id).await?;
        loop {
            let now = self.now();
            let applied = match self
                .runs
                .send(&key, Command::Advance { now_ms: now }, metadata(run_id))
                .await
            {
                Ok(applied) => applied,
                // A segment that was closed but whose successor was never started (a crash or
                // an error between the two appends): start it now and go on there.
                Err(switchyard_actors::Error::Rejected(Rejection::Ended("continued"))) => {
                    key = self.roll_forward(key).await?;
                    continue;
                }
                Err(switchyard_actors::Error::Rejected(Rejection::Ended(_))) => return Ok(()),
                Err(e) => return Err(rejected(e)),
            };
            let state = applied.state;
            match state.status {
                RunStatus::Continued => key = self.roll_forward(key).await?,
                status if status.is_final() => {
                    if !applied.events.is_empty() {
                        self.ended(tenant, &state).await;
                    }
                    return Ok(());
                }
                _ => {
                    self.schedule(tenant, &state);
                    return Ok(());
                }
            }
        }
    }

    /// Starts the segment after `key` (a closed one) from its state, if not started yet;
    /// answers the new segment's key.
    async fn roll_forward(&self, key: RunKey) -> Result<RunKey> {
        let (state, _) = self.runs.read(&key).await.map_err(rejected)?;
        let next = RunKey {
            segment: key.segment + 1,
            ..key
        };
        let carried = state.carried(next.segment);
        match self
            .runs
            .send(
                &next,
                Command::Resume {
                    state: Box::new(carried),
                    at_ms: self.now(),
                },
                metadata(key.run),
            )
            .await
        {
            Ok(_) => METRICS.segments.inc(),
            Err(switchyard_actors::Error::Rejected(Rejection::AlreadyStarted)) => {}
            Err(e) => return Err(rejected(e)),
        }
        self.segments.insert(key.run, (key.tenant, next.segment));
        Ok(next)
    }

    /// A run ended: metrics, waiters, and the parent of a child run.
    async fn ended(self: &Arc<Self>, tenant: TenantId, state: &RunState) {
        METRICS.active.dec();
        METRICS
            .ended
            .with_label_values(&[state.status.as_str()])
            .inc();
        tracing::info!(run_id = %state.run_id, status = state.status.as_str(), "run ended");
        // An ended run no longer moves: its segment is looked up again if it is read.
        self.segments.remove(&state.run_id);
        let _ = self.ended.send(state.run_id);
        self.notify_parent(tenant, state).await;
    }

    /// Delivers a child run's end to its parent's step (the parent ignores a second delivery).
    async fn notify_parent(self: &Arc<Self>, tenant: TenantId, state: &RunState) {
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

    /// Delivers a step result to a run and advances it. A result that reaches a segment just
    /// closed by a continue-as-new goes to the next segment.
    async fn deliver(self: &Arc<Self>, tenant: TenantId, run_id: Uuid, event: Event) {
        for _ in 0..3 {
            let key = match self.key(tenant, run_id).await {
                Ok(key) => key,
                Err(error) => {
                    tracing::warn!(%run_id, %error, "cannot deliver a step result");
                    return;
                }
            };
            match self
                .runs
                .send(
                    &key,
                    Command::Result(Box::new(event.clone())),
                    metadata(run_id),
                )
                .await
            {
                Err(switchyard_actors::Error::Rejected(Rejection::Ended("continued"))) => {
                    if let Err(error) = self.roll_forward(key).await {
                        tracing::warn!(%run_id, %error, "cannot continue a run in its next segment");
                        return;
                    }
                    continue;
                }
                Ok(_) | Err(switchyard_actors::Error::Rejected(Rejection::Ended(_))) => {}
                Err(error) => tracing::warn!(%run_id, %error, "cannot record a step result"),
            }
            break;
        }
        self.kick(tenant, run_id);
    }

    /// Starts a task for each running step and each timer this node is not already handling.
    fn schedule(self: &Arc<Self>, tenant: TenantId, state: &RunState) {
        let run_id = state.run_id;
        for (key, step) in state.running() {
            let task = (run_id, key.clone(), step.attempt);
            if self.tasks.insert(task.clone(), ()).is_some() {
                continue;
            }
            let engine = self.clone();
            let key = key.clone();
            let step = step.clone();
            let state_replay_of = state.replay_of;
            let span = tracing::info_span!(
                "workflow.step",
                %run_id,
                step = %key,
                attempt = step.attempt,
                kind = step.request.get("kind").and_then(serde_json::Value::as_str).unwrap_or(""),
            );
            tokio::spawn(
                async move {
                    let event = engine
                        .carry_out(tenant, run_id, &key, &step, state_replay_of)
                        .await;
                    // Only once the result is recorded may a later schedule see the step as
                    // not being carried out (else it would carry it out a second time).
                    if let Some(event) = event {
                        engine.deliver(tenant, run_id, event).await;
                    }
                    engine.tasks.remove(&task);
                }
                .instrument(span),
            );
        }
        for (key, fire_at) in state.timers() {
            let timer = (run_id, key.clone());
            if self.timers.insert(timer.clone(), ()).is_some() {
                continue;
            }
            let engine = self.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let wait = fire_at.saturating_sub(engine.now());
                tokio::time::sleep(Duration::from_millis(wait)).await;
                engine.timers.remove(&timer);
                let at_ms = engine.now();
                if let Ok(run_key) = engine.key(tenant, run_id).await {
                    let _ = engine
                        .runs
                        .send(
                            &run_key,
                            Command::Fire { step: key, at_ms },
                            metadata(run_id),
                        )
                        .await;
                }
                engine.kick(tenant, run_id);
            });
        }
    }

    /// Carries out one step attempt; answers its result event (none for a child run, whose end
    /// delivers it).
    async fn carry_out(
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
            "tool" if replay_of.is_some() => self.recorded(tenant, replay_of, key).await,
            "llm" | "tool" => {
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

    /// Starts (or finds) the child run of a `subworkflow` step; its end delivers the result.
    async fn child(
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

/// The run id of a child run: derived from the parent's run, step and attempt, so a step
/// carried out again after a crash finds the child it already started.
pub fn child_id(run_id: Uuid, step: &str, attempt: u32) -> Uuid {
    let mut hasher = blake3::Hasher::new();
    hasher.update(run_id.as_bytes());
    hasher.update(step.as_bytes());
    hasher.update(&attempt.to_le_bytes());
    let hash = hasher.finalize();
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn run_of(recorded: &RecordedEvent) -> Option<Uuid> {
    let id = recorded.stream_id.as_str().split_once('-')?.1;
    let id = id.split('.').next()?;
    Uuid::parse_str(id).ok()
}

fn version_of(versions: Option<&Vec<String>>, text: &str) -> u32 {
    versions
        .and_then(|v| v.iter().rposition(|s| s == text))
        .map_or(0, |i| u32::try_from(i + 1).unwrap_or(u32::MAX))
}
