//! The run API: starting runs, finding a run's current segment, its state and events,
//! signals, cancellation (of its child runs too) and waiting for its end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_events::{RecordedEvent, Scope, StreamVersion, TenantId};
use uuid::Uuid;

use super::child::child_id;
use super::{Engine, StartOptions, metadata, rejected};
use crate::error::{Error, Result};
use crate::metrics::METRICS;
use crate::run::{self, Command, RunKey, RunState, RunStatus};
use crate::spec::{self, WorkflowSpec};

impl Engine {
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
    pub(super) async fn key(&self, tenant: TenantId, run_id: Uuid) -> Result<RunKey> {
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
}
