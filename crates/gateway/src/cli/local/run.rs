//! `switchyard run`: a spec run to its end, its steps shown as they commit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use switchyard_events::{Event, Scope, StreamId};
use switchyard_workflows::StartOptions;
use switchyard_workflows::run::{self, RunState, RunStatus};
use uuid::Uuid;

use super::{Local, input_value, print_json};

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
    /// A document (text, Markdown, HTML or PDF) added to the local tenant's documents first,
    /// for the spec's `retrieve` nodes (repeatable; the same bytes again change nothing).
    #[arg(long = "document")]
    pub documents: Vec<PathBuf>,
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
    for path in &args.documents {
        let (id, created) = local.add_document(path).await?;
        tracing::info!(document = %id, created, path = %path.display(), "document added");
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
    print_json(&crate::views::run(&state))?;
    Ok(state.status == RunStatus::Completed)
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
                    Some("retrieve") => "retrieve".to_owned(),
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
