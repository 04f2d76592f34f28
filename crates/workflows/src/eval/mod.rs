//! Evals: golden task sets, scorers, eval runs, reports and comparisons.
//!
//! A task set is a JSONL file of [`Task`]s, each with an input, an optional expected answer and a
//! [`Scorer`] ([`parse_task_set`], [`load_task_set`]). [`run_eval`] runs every task against a
//! [`Subject`] (a workflow, a model, a replayed episode) with bounded concurrency and a progress
//! bar, scores each output ([`score_output`]) and gathers a [`Report`]; [`compare`] sets two
//! reports side by side and names the regressions.
//!
//! ```text
//! {"id": "add", "input": "What is 2 + 3?", "expected": 5, "scorer": {"type": "numeric", "tolerance": 0}}
//! {"id": "json", "input": "Answer as JSON", "scorer": {"type": "json_schema", "schema": {"type": "object"}}}
//! ```
//!
//! The LLM judge goes through the gateway, behind the [`Judge`] trait; [`judge_prompt`] and
//! [`parse_judge_reply`] are the two halves of its conversation, so an implementation only sends
//! the prompt and parses the reply.

mod compare;
mod judge;
mod report;
mod run;
mod score;
mod scorer;
mod task;
mod text;

pub use compare::{AggregateDelta, Comparison, CostDelta, Delta, Status, TaskDelta, compare};
pub use judge::{DEFAULT_RUBRIC, Judge, Verdict, judge_prompt, parse_judge_reply};
pub use report::{Aggregate, Report, TaskResult};
pub use run::{Outcome, RunOptions, Subject, run_eval};
pub use score::{Score, score_output};
pub use scorer::{Pattern, REGEX_SIZE_LIMIT, Schema, Scorer};
pub use task::{
    MAX_LINE_BYTES, MAX_TASKS, MAX_TOTAL_BYTES, Task, TaskSet, load_task_set, parse_task_set,
};
