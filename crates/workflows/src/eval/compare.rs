//! Comparing two reports task by task.

use std::collections::HashMap;
use std::fmt::Write as _;

use comfy_table::{CellAlignment, Table, presets};
use serde::{Deserialize, Serialize};

use super::report::{Report, TaskResult};
use super::text::{fixed3, md_cell, percent, signed3, term_cell, usd, usd_signed};
use crate::{Error, Result};

/// Score changes smaller than this are noise.
const EPSILON: f64 = 1e-9;

/// How a task fared from the base report to the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It passed and now fails, or its score dropped.
    Regressed,
    /// It failed and now passes, or its score rose (and it did not regress).
    Improved,
    /// Same pass/fail and score.
    Unchanged,
    /// Only the base report has it.
    OnlyInBase,
    /// Only the candidate report has it.
    OnlyInCandidate,
}

impl Status {
    /// The status as written in reports, e.g. `only_in_base`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Regressed => "regressed",
            Status::Improved => "improved",
            Status::Unchanged => "unchanged",
            Status::OnlyInBase => "only_in_base",
            Status::OnlyInCandidate => "only_in_candidate",
        }
    }
}

/// One task in both reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDelta {
    /// The task's id.
    pub id: String,
    /// How it fared.
    pub status: Status,
    /// Its score in the base report.
    pub base_score: Option<f64>,
    /// Its score in the candidate report.
    pub candidate_score: Option<f64>,
    /// `candidate_score - base_score`, when it is in both.
    pub delta: Option<f64>,
    /// Whether it passed in the base report.
    pub base_passed: Option<bool>,
    /// Whether it passed in the candidate report.
    pub candidate_passed: Option<bool>,
}

/// A metric in both reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The base report's value.
    pub base: f64,
    /// The candidate report's value.
    pub candidate: f64,
    /// `candidate - base`.
    pub delta: f64,
}

impl Delta {
    fn new(base: f64, candidate: f64) -> Self {
        Delta {
            base,
            candidate,
            delta: candidate - base,
        }
    }
}

/// The total cost in both reports, in micro-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostDelta {
    /// The base report's total.
    pub base_micros: u64,
    /// The candidate report's total.
    pub candidate_micros: u64,
    /// `candidate - base`.
    pub delta_micros: i64,
}

/// The aggregate side by side, and how many tasks have each status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateDelta {
    /// The pass rate.
    pub pass_rate: Delta,
    /// The mean score.
    pub mean_score: Delta,
    /// The subject's total cost.
    pub cost: CostDelta,
    /// The median latency, in milliseconds.
    pub latency_p50_ms: Delta,
    /// How many tasks regressed.
    pub regressed: usize,
    /// How many improved.
    pub improved: usize,
    /// How many did not change.
    pub unchanged: usize,
    /// How many only the base report has.
    pub only_in_base: usize,
    /// How many only the candidate report has.
    pub only_in_candidate: usize,
}

/// Two reports compared task by task (see [`compare`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The base report's name.
    pub base_name: String,
    /// The base report's subject.
    pub base_subject: String,
    /// The candidate report's name.
    pub candidate_name: String,
    /// The candidate report's subject.
    pub candidate_subject: String,
    /// The aggregate deltas.
    pub aggregate: AggregateDelta,
    /// Every task: the base report's in its order, then those only the candidate has.
    pub tasks: Vec<TaskDelta>,
}

/// Compares `candidate` with `base`, matching tasks by id.
///
/// A task regressed when it passed and now fails or its score dropped (by more than 1e-9);
/// it improved when, not having regressed, it failed and now passes or its score rose.
#[must_use]
pub fn compare(base: &Report, candidate: &Report) -> Comparison {
    let in_candidate: HashMap<&str, &TaskResult> = candidate
        .results
        .iter()
        .rev()
        .map(|r| (r.id.as_str(), r))
        .collect();
    let in_base: HashMap<&str, &TaskResult> = base
        .results
        .iter()
        .rev()
        .map(|r| (r.id.as_str(), r))
        .collect();

    let mut tasks = Vec::with_capacity(base.results.len().max(candidate.results.len()));
    let mut seen = std::collections::HashSet::new();
    for b in &base.results {
        if !seen.insert(b.id.as_str()) {
            continue;
        }
        tasks.push(match in_candidate.get(b.id.as_str()) {
            Some(c) => both(b, c),
            None => TaskDelta {
                id: b.id.clone(),
                status: Status::OnlyInBase,
                base_score: Some(b.score),
                candidate_score: None,
                delta: None,
                base_passed: Some(b.passed),
                candidate_passed: None,
            },
        });
    }
    for c in &candidate.results {
        if in_base.contains_key(c.id.as_str()) || !seen.insert(c.id.as_str()) {
            continue;
        }
        tasks.push(TaskDelta {
            id: c.id.clone(),
            status: Status::OnlyInCandidate,
            base_score: None,
            candidate_score: Some(c.score),
            delta: None,
            base_passed: None,
            candidate_passed: Some(c.passed),
        });
    }

    let count = |status| tasks.iter().filter(|t| t.status == status).count();
    let (b, c) = (&base.aggregate, &candidate.aggregate);
    let aggregate = AggregateDelta {
        pass_rate: Delta::new(b.pass_rate, c.pass_rate),
        mean_score: Delta::new(b.mean_score, c.mean_score),
        cost: CostDelta {
            base_micros: b.cost_micros,
            candidate_micros: c.cost_micros,
            delta_micros: signed_difference(c.cost_micros, b.cost_micros),
        },
        latency_p50_ms: Delta::new(b.latency_p50_ms, c.latency_p50_ms),
        regressed: count(Status::Regressed),
        improved: count(Status::Improved),
        unchanged: count(Status::Unchanged),
        only_in_base: count(Status::OnlyInBase),
        only_in_candidate: count(Status::OnlyInCandidate),
    };
    Comparison {
        base_name: base.name.clone(),
        base_subject: base.subject.clone(),
        candidate_name: candidate.name.clone(),
        candidate_subject: candidate.subject.clone(),
        aggregate,
        tasks,
    }
}

fn both(b: &TaskResult, c: &TaskResult) -> TaskDelta {
    let delta = c.score - b.score;
    let status = if (b.passed && !c.passed) || delta < -EPSILON {
        Status::Regressed
    } else if (!b.passed && c.passed) || delta > EPSILON {
        Status::Improved
    } else {
        Status::Unchanged
    };
    TaskDelta {
        id: b.id.clone(),
        status,
        base_score: Some(b.score),
        candidate_score: Some(c.score),
        delta: Some(delta),
        base_passed: Some(b.passed),
        candidate_passed: Some(c.passed),
    }
}

/// `a - b` as an `i64`, saturating.
fn signed_difference(a: u64, b: u64) -> i64 {
    let d = i128::from(a) - i128::from(b);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

impl Comparison {
    /// The tasks that regressed, in order.
    #[must_use]
    pub fn regressions(&self) -> Vec<&TaskDelta> {
        self.tasks
            .iter()
            .filter(|t| t.status == Status::Regressed)
            .collect()
    }

    /// The comparison as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Eval(format!("comparison JSON: {e}")))
    }

    /// The comparison as Markdown: the aggregate side by side, the regressions, then every
    /// task that changed or is in only one report.
    #[must_use]
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            md,
            "# Eval comparison: {} vs {}\n",
            md_cell(&self.base_name, 100),
            md_cell(&self.candidate_name, 100)
        );
        let _ = writeln!(
            md,
            "Base: {} · candidate: {}\n",
            md_cell(&self.base_subject, 200),
            md_cell(&self.candidate_subject, 200)
        );
        md.push_str("| metric | base | candidate | delta |\n|---|---:|---:|---:|\n");
        for [metric, base, candidate, delta] in self.aggregate_rows() {
            let _ = writeln!(md, "| {metric} | {base} | {candidate} | {delta} |");
        }
        let _ = writeln!(md, "\n{}\n", self.counts());

        let regressions = self.regressions();
        if !regressions.is_empty() {
            md.push_str("## Regressions\n\n");
            md.push_str("| id | base | candidate | delta |\n|---|---:|---:|---:|\n");
            for t in regressions {
                let [base, candidate, delta] = score_cells(t);
                let _ = writeln!(
                    md,
                    "| {} | {base} | {candidate} | {delta} |",
                    md_cell(&t.id, 80)
                );
            }
            md.push('\n');
        }
        let changed: Vec<&TaskDelta> = self
            .tasks
            .iter()
            .filter(|t| t.status != Status::Unchanged)
            .collect();
        if !changed.is_empty() {
            md.push_str("## Changes\n\n");
            md.push_str("| id | status | base | candidate | delta |\n|---|---|---:|---:|---:|\n");
            for t in changed {
                let [base, candidate, delta] = score_cells(t);
                let _ = writeln!(
                    md,
                    "| {} | {} | {base} | {candidate} | {delta} |",
                    md_cell(&t.id, 80),
                    t.status.as_str()
                );
            }
        }
        md
    }

    /// The comparison as terminal tables: every task, then the aggregate.
    #[must_use]
    pub fn to_table(&self) -> String {
        let mut tasks = Table::new();
        tasks.load_style(presets::UTF8_FULL_CONDENSED).set_header([
            "id",
            "status",
            "base",
            "candidate",
            "delta",
        ]);
        for t in &self.tasks {
            let [base, candidate, delta] = score_cells(t);
            tasks.add_row([
                term_cell(&t.id, 40),
                t.status.as_str().to_owned(),
                base,
                candidate,
                delta,
            ]);
        }
        let mut summary = Table::new();
        summary
            .load_style(presets::UTF8_FULL_CONDENSED)
            .set_header([
                "metric".to_owned(),
                term_cell(&self.base_name, 30),
                term_cell(&self.candidate_name, 30),
                "delta".to_owned(),
            ]);
        for row in self.aggregate_rows() {
            summary.add_row(row);
        }
        for table in [&mut tasks, &mut summary] {
            for column in 2..=4 {
                if let Some(c) = table.column_mut(column) {
                    c.set_cell_alignment(CellAlignment::Right);
                }
            }
        }
        if let Some(c) = summary.column_mut(1) {
            c.set_cell_alignment(CellAlignment::Right);
        }
        format!("{tasks}\n{summary}\n{}", self.counts())
    }

    fn aggregate_rows(&self) -> [[String; 4]; 4] {
        let a = &self.aggregate;
        [
            [
                "pass rate".to_owned(),
                percent(a.pass_rate.base),
                percent(a.pass_rate.candidate),
                format!("{:+.1} pp", a.pass_rate.delta * 100.0),
            ],
            [
                "mean score".to_owned(),
                fixed3(a.mean_score.base),
                fixed3(a.mean_score.candidate),
                signed3(a.mean_score.delta),
            ],
            [
                "cost ($)".to_owned(),
                usd(a.cost.base_micros),
                usd(a.cost.candidate_micros),
                usd_signed(a.cost.delta_micros),
            ],
            [
                "latency p50 (ms)".to_owned(),
                format!("{:.1}", a.latency_p50_ms.base),
                format!("{:.1}", a.latency_p50_ms.candidate),
                format!("{:+.1}", a.latency_p50_ms.delta),
            ],
        ]
    }

    fn counts(&self) -> String {
        let a = &self.aggregate;
        format!(
            "{} regressed, {} improved, {} unchanged, {} only in base, {} only in candidate",
            a.regressed, a.improved, a.unchanged, a.only_in_base, a.only_in_candidate
        )
    }
}

/// The base, candidate and delta cells of a task: a score with ✓ or ✗, or `—`.
fn score_cells(t: &TaskDelta) -> [String; 3] {
    let side = |score: Option<f64>, passed: Option<bool>| match (score, passed) {
        (Some(s), Some(p)) => format!("{} {}", fixed3(s), if p { "✓" } else { "✗" }),
        _ => "—".to_owned(),
    };
    [
        side(t.base_score, t.base_passed),
        side(t.candidate_score, t.candidate_passed),
        t.delta.map_or_else(|| "—".to_owned(), signed3),
    ]
}
