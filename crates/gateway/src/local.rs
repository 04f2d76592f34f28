//! `switchyard run`, `replay` and `eval`: workflows in-process, on the configured store, for a
//! tenant named `local` (created on first use). Model calls take the same path as the server's
//! (routing, limits, budget, billing, events), and every run is recorded in the log like a run
//! started over HTTP, so it can be inspected and replayed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use switchyard_actors::tenant::TenantCommand;
use switchyard_events::{Event, EventStore, Metadata, Scope, StreamId, TenantId};
use switchyard_workflows::replay::{parse_episode, replay_exact};
use switchyard_workflows::run::{self, RunKey, RunState, RunStatus};
use switchyard_workflows::spec::{LoadOptions, WorkflowSpec};
use switchyard_workflows::{Engine, StartOptions, eval};
use uuid::Uuid;

use crate::keys::TenantEntry;
use crate::workflows::StepExecutor;

/// The tenant of in-process runs.
pub const LOCAL_TENANT: &str = "local";

/// The in-process platform: the stack, the engine, the local tenant.
pub struct Local {
    pub store: Arc<dyn EventStore>,
    pub engine: Arc<Engine>,
    pub tenant: TenantId,
    pub admin: actix_web::web::Data<crate::admin::Admin>,
    pub gateway: actix_web::web::Data<crate::inference::Gateway>,
}

impl Local {
    /// Builds the engine over a stack (without resuming other runs: that is the server's job).
    pub async fn open(stack: crate::Stack) -> anyhow::Result<Local> {
        let crate::Stack {
            store,
            admin,
            gateway,
        } = stack;
        let tenant = match admin
            .directory
            .page(None, usize::MAX)
            .into_iter()
            .find(|t| t.name == LOCAL_TENANT)
        {
            Some(entry) => entry.id,
            None => {
                let tenant = TenantId::new();
                let applied = admin
                    .tenants
                    .send(
                        &tenant,
                        TenantCommand::Create {
                            name: LOCAL_TENANT.into(),
                            plan: "free".into(),
                        },
                        Metadata::default(),
                    )
                    .await
                    .context("cannot create the local tenant")?;
                admin.directory.insert(TenantEntry {
                    id: tenant,
                    name: applied.state.name.clone(),
                    plan: applied.state.plan,
                    created_at: time::OffsetDateTime::now_utc(),
                });
                tenant
            }
        };
        let executor = Arc::new(StepExecutor::new(admin.clone(), gateway.clone())?);
        let engine = Engine::new(store.clone(), executor);
        Ok(Local {
            store,
            engine,
            tenant,
            admin,
            gateway,
        })
    }

    /// Registers fragments and tools from files, then the spec; answers it loaded.
    pub async fn register(
        &self,
        spec: &Path,
        env: Option<&str>,
        fragments: &[PathBuf],
        tools: &[PathBuf],
    ) -> anyhow::Result<(u32, WorkflowSpec)> {
        for path in fragments {
            let (name, version) = self
                .engine
                .register_fragment(self.tenant, &read(path)?)
                .await
                .with_context(|| format!("fragment {}", path.display()))?;
            tracing::debug!(%name, version, "fragment registered");
        }
        for path in tools {
            self.engine
                .register_tool(self.tenant, &read(path)?)
                .await
                .with_context(|| format!("tool {}", path.display()))?;
        }
        let tenant = self.tenant.to_string();
        let keys = [tenant.as_str(), LOCAL_TENANT];
        let (_, version, spec) = self
            .engine
            .register_workflow(
                self.tenant,
                &read(spec)?,
                LoadOptions { env, tenant: &keys },
            )
            .await
            .with_context(|| format!("spec {}", spec.display()))?;
        Ok((version, spec))
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > 16 << 20 {
        bail!("{} is larger than 16 MiB", path.display());
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `--input`: JSON text, or `@file`.
fn input_value(input: Option<&str>) -> anyhow::Result<Value> {
    match input {
        None => Ok(json!({})),
        Some(text) => {
            let text = match text.strip_prefix('@') {
                Some(path) => read(Path::new(path))?,
                None => text.to_owned(),
            };
            serde_json::from_str(&text).context("--input is not JSON")
        }
    }
}

/// `switchyard run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The WorkflowSpec (YAML or JSON).
    pub spec: PathBuf,
    /// The run's input: JSON, or `@file.json`.
    #[arg(long)]
    pub input: Option<String>,
    /// The environment whose overlay applies.
    #[arg(long, env = "SWITCHYARD_ENV")]
    pub env: Option<String>,
    /// A fragment file to register first (repeatable).
    #[arg(long = "fragment")]
    pub fragments: Vec<PathBuf>,
    /// A tool definition file to register first (repeatable).
    #[arg(long = "tool")]
    pub tools: Vec<PathBuf>,
    /// A signal delivered at the start, `name=JSON` (repeatable): a `human_input` or signal
    /// `wait` consumes it when the run gets there.
    #[arg(long = "signal")]
    pub signals: Vec<String>,
    /// Print only the final state as JSON (no live steps).
    #[arg(long)]
    pub json: bool,
}

/// Runs a spec to its end, showing its steps as they happen. Exit status 1 when the run failed.
pub async fn run(local: &Local, args: RunArgs) -> anyhow::Result<bool> {
    let input = input_value(args.input.as_deref())?;
    let mut signals = Vec::new();
    for signal in &args.signals {
        let (name, payload) = signal.split_once('=').context("--signal takes name=JSON")?;
        let payload: Value = serde_json::from_str(payload)
            .with_context(|| format!("--signal {name}: the payload is not JSON"))?;
        signals.push((name.to_owned(), payload));
    }
    let (version, spec) = local
        .register(
            &args.spec,
            args.env.as_deref(),
            &args.fragments,
            &args.tools,
        )
        .await?;
    let head = local.store.head().await?;
    let run_id = local
        .engine
        .start_spec(
            local.tenant,
            Arc::new(spec),
            version,
            input,
            StartOptions::default(),
        )
        .await?;
    for (name, payload) in signals {
        local
            .engine
            .signal(local.tenant, run_id, &name, payload)
            .await?;
    }
    let state = if args.json {
        local
            .engine
            .wait(local.tenant, run_id, Duration::from_secs(86_400))
            .await?
    } else {
        follow(local, run_id, head).await?
    };
    print_json(&crate::workflows::view(&state))?;
    Ok(state.status == RunStatus::Completed)
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    #[expect(clippy::print_stdout, reason = "the command's output")]
    {
        println!("{}", serde_json::to_string_pretty(value)?);
    }
    Ok(())
}

/// Prints the run's steps as its events commit, until it ends.
async fn follow(
    local: &Local,
    run_id: Uuid,
    after: switchyard_events::GlobalPosition,
) -> anyhow::Result<RunState> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}")?);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("run {run_id}"));
    let prefix = StreamId::of(run::CATEGORY, run_id)?.as_str().to_owned();
    let mut events = local
        .store
        .subscribe_all(Scope::Tenant(local.tenant), after);
    let mut started: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(recorded) = events.next().await {
        let recorded = recorded?;
        if !recorded.stream_id.as_str().starts_with(&prefix) {
            continue;
        }
        let Ok(event) = Event::from_recorded(&recorded) else {
            continue;
        };
        let line = match &event {
            Event::RunStarted(e) => format!("▶ {} v{} started", e.workflow, e.version),
            Event::StepStarted(e) => {
                started.insert(e.step.clone(), e.at_ms);
                let request: Value = serde_json::from_str(&e.request).unwrap_or_default();
                let what = match request["kind"].as_str() {
                    Some("llm") => format!("llm {}", request["model"].as_str().unwrap_or("")),
                    Some("tool") => format!("tool {}", request["tool"].as_str().unwrap_or("")),
                    Some("subworkflow") => {
                        format!("workflow {}", request["workflow"].as_str().unwrap_or(""))
                    }
                    _ => String::new(),
                };
                bar.set_message(format!("{} ({what})", e.step));
                format!("→ {} ({what}) attempt {}", e.step, e.attempt)
            }
            Event::StepCompleted(e) => {
                let took = started
                    .get(&e.step)
                    .map(|t| format!(" in {} ms", e.at_ms.saturating_sub(*t)))
                    .unwrap_or_default();
                format!("✓ {}{took}: {}", e.step, excerpt(&e.output))
            }
            Event::StepFailed(e) => format!("✗ {} attempt {}: {}", e.step, e.attempt, e.error),
            Event::TimerStarted(e) => format!(
                "⏲ {} waits {} ms",
                e.step,
                e.fire_at_ms.saturating_sub(e.at_ms)
            ),
            Event::SignalReceived(e) => format!("✉ signal {}: {}", e.name, excerpt(&e.payload)),
            Event::RunContinued(e) => format!("↻ continued as new in segment {}", e.segment),
            Event::RunCompleted(e) => format!("■ completed: {}", excerpt(&e.output)),
            Event::RunFailed(e) => format!("■ failed: {}", e.error),
            Event::RunCancelled(e) => format!("■ cancelled: {}", e.reason),
            _ => continue,
        };
        if bar.is_hidden() {
            // Not a terminal: plain lines.
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
        if matches!(
            event,
            Event::RunCompleted(_) | Event::RunFailed(_) | Event::RunCancelled(_)
        ) {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(local.engine.state(local.tenant, run_id).await?)
}

fn excerpt(json: &str) -> String {
    let text: String = json.chars().take(160).collect();
    if text.len() < json.len() {
        format!("{text}…")
    } else {
        text
    }
}

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

/// `switchyard eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The golden task set: JSON lines of `{id, input, expected, scorer}`.
    pub tasks: PathBuf,
    /// Evaluate a model: each task's input is its prompt (a one-node workflow, `eval-model`).
    #[arg(long, conflicts_with_all = ["workflow", "spec"])]
    pub model: Option<String>,
    /// Evaluate a registered workflow of the local tenant; each task's input is a run's input.
    #[arg(long, conflicts_with = "spec")]
    pub workflow: Option<String>,
    /// Evaluate a spec file (registered first, with `--tool` and `--fragment` files).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    #[arg(long = "tool")]
    pub tools: Vec<PathBuf>,
    #[arg(long = "fragment")]
    pub fragments: Vec<PathBuf>,
    #[arg(long, env = "SWITCHYARD_ENV")]
    pub env: Option<String>,
    /// Tasks run at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Write the report to `<OUT>.json` and `<OUT>.md`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compare with an earlier report (its JSON file); exit status 1 when a task regressed.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// The report's name.
    #[arg(long)]
    pub name: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs of a workflow as an eval subject: every task is a recorded run (an episode).
struct WorkflowSubject {
    engine: Arc<Engine>,
    tenant: TenantId,
    spec: Arc<WorkflowSpec>,
    version: u32,
    label: String,
    /// The task's input is the `prompt` input (the model subject).
    prompt_input: bool,
}

#[async_trait::async_trait]
impl eval::Subject for WorkflowSubject {
    fn label(&self) -> String {
        self.label.clone()
    }

    async fn run(&self, task: &eval::Task) -> switchyard_workflows::Result<eval::Outcome> {
        let input = if self.prompt_input {
            match &task.input {
                Value::String(text) => json!({"prompt": text}),
                Value::Object(map) if map.get("prompt").is_some_and(Value::is_string) => {
                    task.input.clone()
                }
                other => json!({"prompt": other.to_string()}),
            }
        } else {
            task.input.clone()
        };
        let run = self
            .engine
            .start_spec(
                self.tenant,
                self.spec.clone(),
                self.version,
                input,
                StartOptions::default(),
            )
            .await?;
        let state = self
            .engine
            .wait(self.tenant, run, Duration::from_secs(600))
            .await?;
        if state.status != RunStatus::Completed {
            return Err(switchyard_workflows::Error::Eval(format!(
                "run {run} {}: {}",
                state.status.as_str(),
                state.error.unwrap_or_default()
            )));
        }
        Ok(eval::Outcome {
            output: state.output.unwrap_or(Value::Null),
            cost_micros: state.cost_micros,
            latency: Duration::from_millis(
                state
                    .ended_ms
                    .unwrap_or(state.started_ms)
                    .saturating_sub(state.started_ms),
            ),
            episode: Some(run.to_string()),
        })
    }
}

/// LLM-as-judge through the gateway's inference path (billed to the local tenant).
struct GatewayJudge {
    admin: actix_web::web::Data<crate::admin::Admin>,
    gateway: actix_web::web::Data<crate::inference::Gateway>,
    tenant: TenantId,
}

#[async_trait::async_trait]
impl eval::Judge for GatewayJudge {
    async fn judge(
        &self,
        model: &str,
        rubric: &str,
        input: &Value,
        expected: &Value,
        output: &Value,
    ) -> switchyard_workflows::Result<eval::Verdict> {
        let prompt = eval::judge_prompt(rubric, input, expected, output);
        let request: crate::openai::ChatRequest = serde_json::from_value(json!({
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
        }))
        .map_err(|e| switchyard_workflows::Error::Eval(e.to_string()))?;
        let principal = crate::keys::Principal {
            tenant: self.tenant,
            key_id: Uuid::nil(),
            scopes: Vec::new(),
        };
        let done = crate::inference::complete(
            None,
            &self.admin,
            &self.gateway,
            &principal,
            &request,
            None,
        )
        .await
        .map_err(|e| {
            switchyard_workflows::Error::Eval(format!("judge {model}: {}", e.message()))
        })?;
        let text = done.body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default();
        let mut verdict = eval::parse_judge_reply(text)?;
        verdict.cost_micros = done.cost_micros;
        Ok(verdict)
    }
}

/// The one-node workflow that puts a model under eval.
fn model_spec(model: &str) -> anyhow::Result<WorkflowSpec> {
    let spec = json!({
        "name": "eval-model",
        "description": "a model under eval: the task's input is the prompt",
        "inputs": {"prompt": {"type": "string"}},
        "nodes": [{"id": "answer", "kind": "llm", "model": model, "prompt": "{{ input.prompt }}"}],
    });
    Ok(switchyard_workflows::spec::load(
        &spec.to_string(),
        LoadOptions::default(),
        &BTreeMap::new(),
    )?)
}

/// Runs a task set against a model or a workflow; prints the report (and the comparison).
/// Answers whether no task regressed against `--compare`.
pub async fn eval(local: &Local, args: EvalArgs) -> anyhow::Result<bool> {
    let tasks = eval::load_task_set(&args.tasks)?;
    let (spec, version, label, prompt_input) = match (&args.model, &args.workflow, &args.spec) {
        (Some(model), _, _) => {
            let text = serde_json::to_string(&model_spec(model)?)?;
            let (_, version, spec) = local
                .engine
                .register_workflow(local.tenant, &text, LoadOptions::default())
                .await?;
            (spec, version, format!("model {model}"), true)
        }
        (None, Some(name), _) => {
            let catalog = local.engine.catalog(local.tenant).await?;
            let (version, spec) = catalog
                .workflow(name, None)
                .with_context(|| format!("no workflow `{name}` for the local tenant"))?;
            (spec, version, format!("workflow {name}@{version}"), false)
        }
        (None, None, Some(path)) => {
            let (version, spec) = local
                .register(path, args.env.as_deref(), &args.fragments, &args.tools)
                .await?;
            let label = format!("workflow {}@{version}", spec.name);
            (spec, version, label, false)
        }
        (None, None, None) => bail!("say what to evaluate: --model, --workflow or --spec"),
    };
    let subject = WorkflowSubject {
        engine: local.engine.clone(),
        tenant: local.tenant,
        spec: Arc::new(spec),
        version,
        label,
        prompt_input,
    };
    let judge = GatewayJudge {
        admin: local.admin.clone(),
        gateway: local.gateway.clone(),
        tenant: local.tenant,
    };
    let options = eval::RunOptions {
        concurrency: args.concurrency.max(1),
        progress: !args.quiet,
        name: args.name.clone(),
    };
    let report = eval::run_eval(&tasks, &subject, Some(&judge), &options).await;
    #[expect(clippy::print_stdout, reason = "the command's output")]
    {
        println!("{}", report.to_table());
    }
    if let Some(prefix) = &args.out {
        let (json_path, md_path) = report.write_files(prefix)?;
        eprintln!(
            "report written to {} and {}",
            json_path.display(),
            md_path.display()
        );
    }
    let Some(base) = &args.compare else {
        return Ok(true);
    };
    let base = eval::Report::load(base)?;
    let comparison = eval::compare(&base, &report);
    #[expect(clippy::print_stdout, reason = "the command's output")]
    {
        println!("{}", comparison.to_table());
    }
    if let Some(prefix) = &args.out {
        let path = PathBuf::from(format!("{}.compare.md", prefix.display()));
        std::fs::write(&path, comparison.to_markdown())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("comparison written to {}", path.display());
    }
    Ok(comparison.regressions().is_empty())
}
