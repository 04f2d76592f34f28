//! The one error type of the workflows crate.

use crate::spec::SpecError;

/// Why a workflow, a run, a replay or an eval could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The WorkflowSpec is invalid: every problem found, each with its line and field.
    #[error("invalid workflow spec: {}", crate::spec::describe(.0))]
    Spec(Vec<SpecError>),

    /// A template or condition could not be rendered from the run's state.
    #[error("template `{field}`: {message}")]
    Template { field: String, message: String },

    /// A run's input or output does not match the workflow's declared types.
    #[error("{what} does not match the declared schema: {message}")]
    Schema { what: String, message: String },

    /// No such workflow, run or fragment (for this tenant).
    #[error("{0}")]
    NotFound(String),

    /// The command does not apply to the run in its current state.
    #[error("{0}")]
    Conflict(String),

    /// Replay found the recorded episode and the current code disagree.
    #[error("replay diverged at event {at}: {message}")]
    Divergence { at: u64, message: String },

    /// A JSONL task set line could not be read (1-based line number).
    #[error("task set line {line}: {message}")]
    TaskSet { line: usize, message: String },

    /// An eval could not be scored or reported.
    #[error("eval: {0}")]
    Eval(String),

    /// Reading or writing a file (task sets, reports, episodes).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The event log failed.
    #[error(transparent)]
    Store(#[from] switchyard_events::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
