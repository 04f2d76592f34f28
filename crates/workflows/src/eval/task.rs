//! Task sets: JSONL files of golden tasks.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::scorer::Scorer;
use super::text::truncate;
use crate::{Error, Result};

/// The longest line a task set may have (1 MiB).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The most tasks a task set may have.
pub const MAX_TASKS: usize = 100_000;

/// The largest task set (64 MiB).
pub const MAX_TOTAL_BYTES: usize = 64 << 20;

/// The longest task id, in bytes.
const MAX_ID_BYTES: usize = 256;

/// One golden task: an input for the subject, what to expect and how to score it.
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    /// Unique in its task set; `line-<n>` when the line gives none.
    pub id: String,
    /// What the subject is given (any JSON).
    pub input: Value,
    /// What the scorer compares with, when it compares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
    /// How the output is scored.
    pub scorer: Scorer,
    /// Free labels, e.g. to slice a report.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Task {
    /// A task built by hand, checked as a task set line would be: a valid id, the scorer's
    /// parameters, and an `expected` that suits the scorer. Failures are [`Error::Eval`].
    pub fn new(
        id: impl Into<String>,
        input: Value,
        expected: Option<Value>,
        scorer: Scorer,
    ) -> Result<Self> {
        let id = id.into();
        check_id(&id).map_err(|e| Error::Eval(format!("task `{id}`: {e}")))?;
        scorer
            .check(expected.as_ref())
            .map_err(|e| Error::Eval(format!("task `{id}`: {e}")))?;
        Ok(Task {
            id,
            input,
            expected,
            scorer,
            tags: Vec::new(),
        })
    }

    /// The task with these tags.
    #[must_use]
    pub fn with_tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }
}

/// A parsed task set: the tasks in file order, with lookup by id.
#[derive(Debug, Clone, Default)]
pub struct TaskSet {
    tasks: Vec<Task>,
    by_id: HashMap<String, usize>,
}

impl TaskSet {
    /// Parses a JSONL task set (see [`parse_task_set`]).
    pub fn parse(text: &str) -> Result<Self> {
        if let Some(line) = over_total(text.as_bytes()) {
            return Err(too_big(line));
        }
        let mut set = TaskSet::default();
        // The line of each task, to name the first of two with the same id.
        let mut lines: Vec<usize> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            if raw.len() > MAX_LINE_BYTES {
                return Err(Error::TaskSet {
                    line,
                    message: format!(
                        "the line is {} bytes, over the {MAX_LINE_BYTES}-byte (1 MiB) limit",
                        raw.len()
                    ),
                });
            }
            let raw = if index == 0 {
                raw.trim_start_matches('\u{feff}')
            } else {
                raw
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if set.tasks.len() == MAX_TASKS {
                return Err(Error::TaskSet {
                    line,
                    message: format!("more than {MAX_TASKS} tasks"),
                });
            }
            let task = parse_line(trimmed, line)?;
            if let Some(&first) = set.by_id.get(&task.id) {
                return Err(Error::TaskSet {
                    line,
                    message: format!(
                        "duplicate id `{}` (first on line {})",
                        task.id, lines[first]
                    ),
                });
            }
            lines.push(line);
            set.by_id.insert(task.id.clone(), set.tasks.len());
            set.tasks.push(task);
        }
        Ok(set)
    }

    /// Reads and parses a JSONL task set file (see [`load_task_set`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        // One byte more than the limit tells "at the limit" from "over it".
        file.take(MAX_TOTAL_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if let Some(line) = over_total(&bytes) {
            return Err(too_big(line));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            Error::TaskSet {
                line: line_of(valid),
                message: "the line is not valid UTF-8".to_owned(),
            }
        })?;
        Self::parse(&text)
    }

    /// The tasks, in file order.
    #[must_use]
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// The task with this id.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&Task> {
        self.by_id.get(id).map(|&i| &self.tasks[i])
    }

    /// How many tasks there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The tasks, in file order.
    #[must_use]
    pub fn into_tasks(self) -> Vec<Task> {
        self.tasks
    }
}

impl<'a> IntoIterator for &'a TaskSet {
    type Item = &'a Task;
    type IntoIter = std::slice::Iter<'a, Task>;

    fn into_iter(self) -> Self::IntoIter {
        self.tasks.iter()
    }
}

/// Parses a JSONL task set: one JSON object per line, blank lines and `#` comments skipped.
///
/// Fields: `id` (a string, unique; `line-<n>` by default), `input` (any JSON, required),
/// `expected` (any JSON; what the scorer needs), `scorer` (an object with a `type`, or a name;
/// `exact` by default) and `tags` (strings). Anything else, and every malformed line, is an
/// [`Error::TaskSet`] naming the line (1-based). Limits: [`MAX_LINE_BYTES`] per line,
/// [`MAX_TASKS`] tasks, [`MAX_TOTAL_BYTES`] in all.
pub fn parse_task_set(text: &str) -> Result<Vec<Task>> {
    TaskSet::parse(text).map(TaskSet::into_tasks)
}

/// Reads and parses a JSONL task set file (see [`parse_task_set`]); it is not read past
/// [`MAX_TOTAL_BYTES`]. An unreadable file is an [`Error::Io`].
pub fn load_task_set(path: impl AsRef<Path>) -> Result<Vec<Task>> {
    TaskSet::load(path).map(TaskSet::into_tasks)
}

/// A task set line as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: Option<String>,
    input: Value,
    #[serde(default, deserialize_with = "present")]
    expected: Option<Value>,
    scorer: Option<Value>,
    #[serde(default)]
    tags: Vec<String>,
}

/// `expected: null` is an expected `null`, not an absent `expected`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn parse_line(text: &str, line: usize) -> Result<Task> {
    let error = |message: String| Error::TaskSet { line, message };
    if !text.starts_with('{') {
        return Err(error(format!(
            "expected a JSON object, found `{}`",
            truncate(text, 40)
        )));
    }
    let raw: Line = serde_json::from_str(text).map_err(|e| error(json_error(&e)))?;
    let id = raw.id.unwrap_or_else(|| format!("line-{line}"));
    check_id(&id).map_err(|e| error(format!("`id`: {e}")))?;
    let scorer = match raw.scorer {
        None => Scorer::default(),
        Some(value) => Scorer::from_json(value).map_err(&error)?,
    };
    scorer.check(raw.expected.as_ref()).map_err(&error)?;
    if let Some(tag) = raw
        .tags
        .iter()
        .find(|t| t.is_empty() || t.chars().any(char::is_control))
    {
        return Err(error(format!(
            "`tags`: {tag:?} is empty or has control characters"
        )));
    }
    Ok(Task {
        id,
        input: raw.input,
        expected: raw.expected,
        scorer,
        tags: raw.tags,
    })
}

/// A serde_json error without its "at line 1 column n" (the line is ours), with the column.
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let message = text
        .rfind(" at line ")
        .map_or(text.as_str(), |at| &text[..at]);
    let kind = match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "invalid JSON: ",
        _ => "",
    };
    if e.column() > 0 {
        format!("{kind}{message} (column {})", e.column())
    } else {
        format!("{kind}{message}")
    }
}

fn check_id(id: &str) -> std::result::Result<(), String> {
    if id.trim().is_empty() {
        Err("the id is empty".to_owned())
    } else if id.len() > MAX_ID_BYTES {
        Err(format!("the id is over {MAX_ID_BYTES} bytes"))
    } else if id.chars().any(char::is_control) {
        Err(format!("the id {id:?} has control characters"))
    } else {
        Ok(())
    }
}

/// The line on which `text` passes [`MAX_TOTAL_BYTES`], if it does.
fn over_total(text: &[u8]) -> Option<usize> {
    text.get(..MAX_TOTAL_BYTES)
        .filter(|_| text.len() > MAX_TOTAL_BYTES)
        .map(line_of)
}

fn too_big(line: usize) -> Error {
    Error::TaskSet {
        line,
        message: format!(
            "the task set passes the {MAX_TOTAL_BYTES}-byte (64 MiB) limit on this line"
        ),
    }
}

/// The 1-based line that the byte after `before` is on.
fn line_of(before: &[u8]) -> usize {
    before.iter().filter(|&&b| b == b'\n').count() + 1
}
