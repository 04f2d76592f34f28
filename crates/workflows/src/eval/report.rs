//! The report of one eval run: per-task results, an aggregate, and its renderings.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use comfy_table::{CellAlignment, Table, presets};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::text::{fixed3, md_cell, percent, term_cell, usd, value_text};
use crate::{Error, Result};

/// How many characters of an output or expectation a Markdown cell shows.
const MD_CELL_CHARS: usize = 80;

/// How many characters of an output or expectation a terminal cell shows.
const TERM_CELL_CHARS: usize = 40;

/// The result of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The task's id.
    pub id: String,
    /// The score, in 0..=1 (0 for an error).
    pub score: f64,
    /// Whether the task passed.
    pub passed: bool,
    /// What the subject answered (`null` when it failed).
    pub output: Value,
    /// What the task expected, if anything.
    pub expected: Option<Value>,
    /// Why the score is what it is (empty for a plain pass).
    #[serde(default)]
    pub detail: String,
    /// The subject's or the scorer's error, when the task could not be run or scored.
    #[serde(default)]
    pub error: Option<String>,
    /// What the subject's run cost, in micro-dollars.
    #[serde(default)]
    pub cost_micros: u64,
    /// What judging cost, in micro-dollars.
    #[serde(default)]
    pub judge_cost_micros: u64,
    /// How long the subject took, in milliseconds.
    #[serde(default)]
    pub latency_ms: f64,
    /// The run id or inference id that recorded the subject's run, if any.
    #[serde(default)]
    pub episode: Option<String>,
    /// The task's tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The aggregate of a report's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// How many tasks ran.
    pub tasks: usize,
    /// How many passed.
    pub passed: usize,
    /// How many did not (errors included).
    pub failed: usize,
    /// How many could not be run or scored.
    pub errors: usize,
    /// `passed / tasks` (0 for no tasks).
    pub pass_rate: f64,
    /// The mean score (0 for no tasks).
    pub mean_score: f64,
    /// What the subject's runs cost in all, in micro-dollars.
    pub cost_micros: u64,
    /// The same in dollars, e.g. `"0.001234"`.
    pub cost_usd: String,
    /// What judging cost in all, in micro-dollars.
    pub judge_cost_micros: u64,
    /// The same in dollars.
    pub judge_cost_usd: String,
    /// The median subject latency (nearest rank), in milliseconds.
    pub latency_p50_ms: f64,
    /// The 95th-percentile subject latency (nearest rank), in milliseconds.
    pub latency_p95_ms: f64,
    /// The slowest subject latency, in milliseconds.
    pub latency_max_ms: f64,
}

impl Aggregate {
    /// The aggregate of `results`.
    #[must_use]
    pub fn of(results: &[TaskResult]) -> Self {
        let tasks = results.len();
        let passed = results.iter().filter(|r| r.passed).count();
        let errors = results.iter().filter(|r| r.error.is_some()).count();
        let ratio = |x: f64| if tasks == 0 { 0.0 } else { x / tasks as f64 };
        let cost_micros = results
            .iter()
            .fold(0_u64, |sum, r| sum.saturating_add(r.cost_micros));
        let judge_cost_micros = results
            .iter()
            .fold(0_u64, |sum, r| sum.saturating_add(r.judge_cost_micros));
        let mut latencies: Vec<f64> = results.iter().map(|r| r.latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        Aggregate {
            tasks,
            passed,
            failed: tasks - passed,
            errors,
            pass_rate: ratio(passed as f64),
            mean_score: ratio(results.iter().map(|r| r.score).sum()),
            cost_micros,
            cost_usd: usd(cost_micros),
            judge_cost_micros,
            judge_cost_usd: usd(judge_cost_micros),
            latency_p50_ms: nearest_rank(&latencies, 0.50),
            latency_p95_ms: nearest_rank(&latencies, 0.95),
            latency_max_ms: latencies.last().copied().unwrap_or(0.0),
        }
    }
}

/// The `p` quantile of sorted `values` by the nearest-rank method (0 for none).
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The report of one eval run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The eval's name.
    pub name: String,
    /// What was evaluated (the subject's label).
    pub subject: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// How long the run took, in milliseconds.
    pub duration_ms: u64,
    /// The aggregate of `results`.
    pub aggregate: Aggregate,
    /// One result per task, in task-set order.
    pub results: Vec<TaskResult>,
}

impl Report {
    /// A report of `results`, with their aggregate.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        subject: impl Into<String>,
        started_at: impl Into<String>,
        duration_ms: u64,
        results: Vec<TaskResult>,
    ) -> Self {
        Report {
            name: name.into(),
            subject: subject.into(),
            started_at: started_at.into(),
            duration_ms,
            aggregate: Aggregate::of(&results),
            results,
        }
    }

    /// The result of the task with this id.
    #[must_use]
    pub fn result(&self, id: &str) -> Option<&TaskResult> {
        self.results.iter().find(|r| r.id == id)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Eval(format!("report JSON: {e}")))
    }

    /// The report as Markdown: a heading, the aggregate table and a table of the tasks.
    /// Cells are truncated and escaped, so no output can break the tables.
    #[must_use]
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(md, "# Eval report: {}\n", md_cell(&self.name, 200));
        let _ = writeln!(
            md,
            "Subject: {} · started {} · {} ms\n",
            md_cell(&self.subject, 200),
            md_cell(&self.started_at, 40),
            self.duration_ms
        );
        md.push_str("| metric | value |\n|---|---:|\n");
        for (metric, value) in self.summary() {
            let _ = writeln!(md, "| {metric} | {value} |");
        }
        md.push_str("\n## Tasks\n\n");
        md.push_str(
            "| # | id | result | score | output | expected | detail | cost ($) | latency (ms) |\n\
             |---:|---|---|---:|---|---|---|---:|---:|\n",
        );
        for (n, r) in self.results.iter().enumerate() {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
                n + 1,
                md_cell(&r.id, MD_CELL_CHARS),
                verdict(r),
                fixed3(r.score),
                md_cell(&output_text(r), MD_CELL_CHARS),
                r.expected
                    .as_ref()
                    .map(|e| md_cell(&value_text(e), MD_CELL_CHARS))
                    .unwrap_or_default(),
                md_cell(explanation(r), 2 * MD_CELL_CHARS),
                usd(r.cost_micros.saturating_add(r.judge_cost_micros)),
                r.latency_ms,
            );
        }
        md
    }

    /// The report as terminal tables: the tasks, then the aggregate.
    #[must_use]
    pub fn to_table(&self) -> String {
        let mut tasks = Table::new();
        tasks.load_style(presets::UTF8_FULL_CONDENSED).set_header([
            "id", "result", "score", "output", "expected", "detail", "cost ($)", "ms",
        ]);
        for r in &self.results {
            tasks.add_row([
                term_cell(&r.id, TERM_CELL_CHARS),
                verdict(r).to_owned(),
                fixed3(r.score),
                term_cell(&output_text(r), TERM_CELL_CHARS),
                r.expected
                    .as_ref()
                    .map(|e| term_cell(&value_text(e), TERM_CELL_CHARS))
                    .unwrap_or_default(),
                term_cell(explanation(r), 2 * TERM_CELL_CHARS),
                usd(r.cost_micros.saturating_add(r.judge_cost_micros)),
                format!("{:.1}", r.latency_ms),
            ]);
        }
        for column in [2, 6, 7] {
            if let Some(c) = tasks.column_mut(column) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        let mut summary = Table::new();
        summary
            .load_style(presets::UTF8_FULL_CONDENSED)
            .set_header([
                format!(
                    "{} · {}",
                    term_cell(&self.name, 60),
                    term_cell(&self.subject, 60)
                ),
                String::new(),
            ]);
        for (metric, value) in self.summary() {
            summary.add_row([metric.to_owned(), value]);
        }
        if let Some(c) = summary.column_mut(1) {
            c.set_cell_alignment(CellAlignment::Right);
        }
        format!("{tasks}\n{summary}")
    }

    /// The aggregate as (metric, value) rows, shared by the Markdown and the terminal tables.
    fn summary(&self) -> Vec<(&'static str, String)> {
        let a = &self.aggregate;
        vec![
            ("tasks", a.tasks.to_string()),
            ("passed", format!("{} ({})", a.passed, percent(a.pass_rate))),
            ("failed", a.failed.to_string()),
            ("errors", a.errors.to_string()),
            ("mean score", fixed3(a.mean_score)),
            ("cost ($)", a.cost_usd.clone()),
            ("judge cost ($)", a.judge_cost_usd.clone()),
            (
                "latency p50 / p95 / max (ms)",
                format!(
                    "{:.1} / {:.1} / {:.1}",
                    a.latency_p50_ms, a.latency_p95_ms, a.latency_max_ms
                ),
            ),
            ("duration (ms)", self.duration_ms.to_string()),
        ]
    }

    /// Writes `<prefix>.json` and `<prefix>.md` and returns their paths. When `prefix` is an
    /// existing directory, the files go in it, named after the report. Missing parent
    /// directories are created.
    pub fn write_files(&self, prefix: impl AsRef<Path>) -> Result<(PathBuf, PathBuf)> {
        let prefix = prefix.as_ref();
        let prefix = if prefix.is_dir() {
            prefix.join(file_stem(&self.name))
        } else {
            prefix.to_path_buf()
        };
        if let Some(parent) = prefix.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let json = with_suffix(&prefix, ".json");
        let md = with_suffix(&prefix, ".md");
        write(&json, self.to_json()?.as_bytes())?;
        write(&md, self.to_markdown().as_bytes())?;
        Ok((json, md))
    }

    /// Reads a report written by [`Report::write_files`] or [`Report::to_json`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Eval(format!("{}: not an eval report: {e}", path.display())))
    }
}

/// `pass`, `FAIL` or `ERROR`.
fn verdict(r: &TaskResult) -> &'static str {
    match (r.passed, r.error.is_some()) {
        (_, true) => "ERROR",
        (true, false) => "pass",
        (false, false) => "FAIL",
    }
}

/// The output as text; nothing for a task whose subject failed.
fn output_text(r: &TaskResult) -> std::borrow::Cow<'_, str> {
    if r.error.is_some() && r.output.is_null() {
        std::borrow::Cow::Borrowed("")
    } else {
        value_text(&r.output)
    }
}

/// The error, else the detail.
fn explanation(r: &TaskResult) -> &str {
    r.error.as_deref().unwrap_or(&r.detail)
}

/// A file name from a report name: letters, digits, `-`, `_` and `.` kept, the rest as `-`.
fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let stem = stem.trim_matches(|c| c == '.' || c == '-');
    if stem.is_empty() {
        "report".to_owned()
    } else {
        stem.to_owned()
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests: a panic is the failure report"
    )]

    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&ten, 0.5), 5.0);
        assert_eq!(nearest_rank(&ten, 0.95), 10.0);
        assert_eq!(nearest_rank(&[7.0], 0.5), 7.0);
        assert_eq!(nearest_rank(&[], 0.5), 0.0);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&hundred, 0.95), 95.0);
    }

    #[test]
    fn file_stems() {
        assert_eq!(file_stem("qa eval/v2"), "qa-eval-v2");
        assert_eq!(file_stem("../.."), "report");
        assert_eq!(file_stem(""), "report");
    }
}
