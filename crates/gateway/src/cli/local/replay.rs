//! `switchyard replay`: a recorded run replayed exactly, or re-executed with overrides.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use switchyard_events::{Event, Scope, TenantId};
use switchyard_workflows::StartOptions;
use switchyard_workflows::replay::{parse_episode, replay_exact};
use switchyard_workflows::run::{self, RunKey, RunState, RunStatus};
use uuid::Uuid;

use super::{Local, print_json, read};

/// `switchyard replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A run id in the log, or an episode file (JSON lines, as `GET /v1/runs/{id}/events?format=jsonl`).
    pub target: String,
    /// Re-execute with this model for every `llm` node (tool calls are answered from the
    /// recording).
    #[arg(long)]
    pub model: Option<String>,
    /// Re-execute with this model for one node: `node=model` (repeatable).
    #[arg(long = "node-model")]
    pub node_models: Vec<String>,
    /// Re-execute with another prompt template for one node: `node=template` (repeatable).
    #[arg(long = "prompt")]
    pub prompts: Vec<String>,
    /// Re-execute with another routing policy (a TOML file as the config's `[router] policy`,
    /// e.g. `kind = "linucb"` and `alpha = 0.5`); `llm` nodes then route with `model: auto`
    /// unless `--model` says otherwise.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ReplayArgs {
    fn overrides(&self) -> anyhow::Result<Option<Value>> {
        let pairs =
            |list: &[String], what: &str| -> anyhow::Result<serde_json::Map<String, Value>> {
                list.iter()
                    .map(|p| {
                        p.split_once('=')
                            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                            .with_context(|| format!("--{what} takes node=value"))
                    })
                    .collect()
            };
        let models = pairs(&self.node_models, "node-model")?;
        let prompts = pairs(&self.prompts, "prompt")?;
        if self.model.is_none() && models.is_empty() && prompts.is_empty() && self.policy.is_none()
        {
            return Ok(None);
        }
        let mut overrides = serde_json::Map::new();
        if let Some(path) = &self.policy {
            let policy: switchyard_actors::router::policy::Policy = toml::from_str(&read(path)?)
                .with_context(|| format!("{} is not a routing policy", path.display()))?;
            overrides.insert("policy".into(), serde_json::to_value(policy)?);
            overrides.insert("model".into(), Value::String("auto".into()));
        }
        if let Some(model) = &self.model {
            overrides.insert("model".into(), Value::String(model.clone()));
        }
        if !models.is_empty() {
            overrides.insert("models".into(), Value::Object(models));
        }
        if !prompts.is_empty() {
            overrides.insert("prompts".into(), Value::Object(prompts));
        }
        Ok(Some(Value::Object(overrides)))
    }
}

/// The recorded events of a run, every segment (any tenant: this reads the database as its
/// operator).
pub async fn recorded_run(local: &Local, run_id: Uuid) -> anyhow::Result<(TenantId, Vec<Event>)> {
    let first = RunKey {
        tenant: TenantId::SYSTEM,
        run: run_id,
        segment: 0,
    };
    let tenant = local
        .store
        .stream_metadata(Scope::All, &first.stream())
        .await?
        .with_context(|| format!("no run {run_id} in the log"))?
        .tenant_id;
    let events = local
        .engine
        .events(tenant, run_id)
        .await?
        .iter()
        .map(Event::from_recorded)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((tenant, events))
}

/// Replays exactly (a determinism check), or re-executes with overrides. Answers whether it
/// succeeded (no divergence; the re-execution completed).
pub async fn replay(
    args: ReplayArgs,
    open: impl AsyncFnOnce() -> anyhow::Result<Local>,
) -> anyhow::Result<bool> {
    let overrides = args.overrides()?;
    let path = Path::new(&args.target);
    if path.exists() {
        let text = read(path)?;
        if super::dataset::is_dataset(&text) {
            let policy = match &args.policy {
                Some(file) => Some(
                    toml::from_str(&read(file)?)
                        .with_context(|| format!("{} is not a routing policy", file.display()))?,
                ),
                None => None,
            };
            let local = open().await?;
            let (report, answered) =
                super::dataset::replay(&local, &text, args.model.as_deref(), policy).await?;
            print_json(&report)?;
            return Ok(answered);
        }
    }
    if overrides.is_none() && path.exists() {
        let events = parse_episode(&read(path)?)?;
        return report_exact(&replay_exact(&events), args.json);
    }
    let run_id = Uuid::parse_str(&args.target)
        .with_context(|| format!("{} is neither an episode file nor a run id", args.target))?;
    let local = open().await?;
    let (tenant, events) = recorded_run(&local, run_id).await?;
    let Some(overrides) = overrides else {
        return report_exact(&replay_exact(&events), args.json);
    };
    let original = run::fold(
        events
            .iter()
            .take_while(|e| !matches!(e, Event::SegmentStarted(_))),
    );
    let Some(spec) = original.spec.clone() else {
        bail!("run {run_id} has no readable spec");
    };
    let new_run = local
        .engine
        .start_spec(
            tenant,
            spec,
            original.version,
            original.input.clone(),
            StartOptions {
                replay_of: Some(run_id),
                overrides,
                ..StartOptions::default()
            },
        )
        .await?;
    let state = local
        .engine
        .wait(tenant, new_run, Duration::from_secs(86_400))
        .await?;
    let before = local.engine.state(tenant, run_id).await?;
    let report = json!({
        "original": {"run_id": run_id, "status": before.status.as_str(), "output": before.output,
            "cost_micros": before.cost_micros, "duration_ms": duration(&before)},
        "replay": {"run_id": new_run, "status": state.status.as_str(), "output": state.output,
            "cost_micros": state.cost_micros, "duration_ms": duration(&state), "error": state.error},
        "same_output": before.output == state.output,
    });
    print_json(&report)?;
    Ok(state.status == RunStatus::Completed)
}

fn duration(state: &RunState) -> Option<u64> {
    state
        .ended_ms
        .map(|end| end.saturating_sub(state.started_ms))
}

fn report_exact(
    report: &switchyard_workflows::replay::ReplayReport,
    json: bool,
) -> anyhow::Result<bool> {
    if json {
        print_json(&serde_json::to_value(report)?)?;
    } else {
        let verdict = match &report.divergence {
            None => {
                "deterministic: every recorded decision was decided again identically".to_owned()
            }
            Some(d) => format!(
                "DIVERGED at event {}: {}\n  recorded: {}\n  decided:  {}",
                d.at,
                d.message,
                serde_json::to_string(&d.recorded)?,
                serde_json::to_string(&d.decided)?
            ),
        };
        print_json(&json!({
            "run_id": report.run_id,
            "workflow": report.workflow,
            "events": report.events,
            "decisions_checked": report.decisions,
            "status": report.status.as_str(),
            "output": report.output,
        }))?;
        eprintln!("{verdict}");
    }
    Ok(report.divergence.is_none())
}
