//! `switchyard eval`: a golden task set against a model or a workflow, with a report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use switchyard_events::TenantId;
use switchyard_workflows::run::RunStatus;
use switchyard_workflows::spec::{LoadOptions, WorkflowSpec};
use switchyard_workflows::{Engine, StartOptions, eval};
use uuid::Uuid;

use super::Local;

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

/// LLM-as-judge through the inference pipeline (billed to the local tenant).
struct GatewayJudge {
    pipeline: actix_web::web::Data<switchyard_inference::Pipeline>,
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
        let request: switchyard_inference::openai::ChatRequest = serde_json::from_value(json!({
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
        }))
        .map_err(|e| switchyard_workflows::Error::Eval(e.to_string()))?;
        let principal = switchyard_inference::Principal {
            tenant: self.tenant,
            key_id: Uuid::nil(),
            scopes: Vec::new(),
        };
        let done = self
            .pipeline
            .complete(None, &principal, &request, None, None)
            .await
            .map_err(|e| switchyard_workflows::Error::Eval(format!("judge {model}: {e}")))?;
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
        pipeline: local.pipeline.clone(),
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
