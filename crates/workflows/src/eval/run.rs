//! Running a task set against a subject.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::judge::Judge;
use super::report::{Report, TaskResult};
use super::score::score_output;
use super::task::Task;
use crate::Result;

/// What an eval evaluates: a workflow, a model, a replayed episode.
#[async_trait::async_trait]
pub trait Subject: Send + Sync {
    /// A short label for reports, e.g. "workflow qa@3" or "model sim-large".
    fn label(&self) -> String;

    /// Runs one task and returns what came out.
    async fn run(&self, task: &Task) -> Result<Outcome>;
}

/// What a subject's run of one task gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The answer that is scored.
    pub output: Value,
    /// What the run cost, in micro-dollars.
    pub cost_micros: u64,
    /// How long the run took.
    pub latency: Duration,
    /// The run id or inference id that recorded it.
    pub episode: Option<String>,
}

/// How to run an eval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// How many tasks run at once (0 is taken as 1).
    pub concurrency: usize,
    /// Whether to draw a progress bar on stderr (it stays hidden when stderr is not a terminal).
    pub progress: bool,
    /// The report's name; `eval` when absent.
    pub name: Option<String>,
}

impl Default for RunOptions {
    /// Four at a time, no progress bar, named `eval`.
    fn default() -> Self {
        RunOptions {
            concurrency: 4,
            progress: false,
            name: None,
        }
    }
}

/// Runs every task against `subject`, at most `options.concurrency` at once, scores the
/// outputs (judge tasks with `judge`) and reports the results in task-set order.
///
/// A task whose run or scoring fails (an error, or a panic in the subject) is recorded as a
/// failure with score 0 and the error text; it never stops the eval.
pub async fn run_eval(
    tasks: &[Task],
    subject: &dyn Subject,
    judge: Option<&dyn Judge>,
    options: &RunOptions,
) -> Report {
    let name = options.name.clone().unwrap_or_else(|| "eval".to_owned());
    let now = OffsetDateTime::now_utc();
    let started_at = now
        .replace_millisecond(now.millisecond())
        .unwrap_or(now)
        .format(&Rfc3339)
        .unwrap_or_default();
    let clock = Instant::now();
    let progress = progress_bar(tasks.len(), options.progress, &name);

    let limit = options.concurrency.max(1);
    let mut waiting = tasks.iter().enumerate();
    let mut running = FuturesUnordered::new();
    let mut done: Vec<(usize, TaskResult)> = Vec::with_capacity(tasks.len());
    let mut passed = 0_usize;
    loop {
        while running.len() < limit {
            let Some((index, task)) = waiting.next() else {
                break;
            };
            running.push(run_indexed(index, task, subject, judge));
        }
        let Some((index, result)) = running.next().await else {
            break;
        };
        if result.passed {
            passed += 1;
        }
        progress.inc(1);
        progress.set_message(format!("{passed} passed"));
        done.push((index, result));
    }
    progress.finish_and_clear();
    done.sort_unstable_by_key(|&(index, _)| index);

    let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    let results = done.into_iter().map(|(_, result)| result).collect();
    Report::new(name, subject.label(), started_at, duration_ms, results)
}

/// [`run_task`] with the task's position (a named function: a closure here would make the
/// eval's future not `Send` for lack of higher-ranked lifetimes).
async fn run_indexed(
    index: usize,
    task: &Task,
    subject: &dyn Subject,
    judge: Option<&dyn Judge>,
) -> (usize, TaskResult) {
    (index, run_task(task, subject, judge).await)
}

async fn run_task(task: &Task, subject: &dyn Subject, judge: Option<&dyn Judge>) -> TaskResult {
    let clock = Instant::now();
    let mut result = TaskResult {
        id: task.id.clone(),
        score: 0.0,
        passed: false,
        output: Value::Null,
        expected: task.expected.clone(),
        detail: String::new(),
        error: None,
        cost_micros: 0,
        judge_cost_micros: 0,
        latency_ms: 0.0,
        episode: None,
        tags: task.tags.clone(),
    };
    let outcome = match AssertUnwindSafe(subject.run(task)).catch_unwind().await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            tracing::debug!(task = %task.id, error = %e, "eval task failed");
            result.error = Some(e.to_string());
            result.latency_ms = millis(clock.elapsed());
            return result;
        }
        Err(panic) => {
            let message = format!("the subject panicked: {}", panic_message(panic.as_ref()));
            tracing::warn!(task = %task.id, "{message}");
            result.error = Some(message);
            result.latency_ms = millis(clock.elapsed());
            return result;
        }
    };
    result.cost_micros = outcome.cost_micros;
    result.latency_ms = millis(outcome.latency);
    result.episode = outcome.episode;
    match score_output(task, &outcome.output, judge).await {
        Ok(score) => {
            result.score = score.value;
            result.passed = score.passed;
            result.detail = score.detail;
            result.judge_cost_micros = score.cost_micros;
        }
        Err(e) => {
            tracing::debug!(task = %task.id, error = %e, "eval task could not be scored");
            result.error = Some(e.to_string());
        }
    }
    result.output = outcome.output;
    result
}

/// Milliseconds with microsecond precision (a whole number of milliseconds stays whole).
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn progress_bar(len: usize, visible: bool, name: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} · eta {eta} · {msg}",
    )
    .map_or_else(
        |_| ProgressStyle::default_bar(),
        |s| s.progress_chars("=> "),
    );
    let bar = ProgressBar::new(len as u64).with_style(style);
    bar.set_prefix(name.to_owned());
    bar.set_message("0 passed");
    bar
}
