//! Scorers: how one output is held against a task's expectation.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::text::{excerpt, truncate};
use crate::{Error, Result};

/// The most memory a `regex` scorer's compiled pattern may take (1 MiB).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How many characters of an output or expectation a score's detail quotes.
const EXCERPT_CHARS: usize = 80;

/// How a task's output is scored.
///
/// In a task set it is an object with a `type` and that scorer's parameters, or just the name
/// (`"exact"`) to take the defaults. Scorers that compare with the task's `expected` value:
/// `exact` (any JSON), `contains` (a string or a list of strings), `numeric` (a number);
/// `judge` shows it to the judge when given.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scorer {
    /// The output equals `expected`. Strings are compared as text (trimmed unless `trim` is
    /// false, case-folded when `case_sensitive` is false); other values as JSON, with a string
    /// output parsed as JSON first and numbers compared by value (`4` equals `4.0`).
    Exact {
        /// Ignore leading and trailing whitespace (default true).
        #[serde(default = "yes")]
        trim: bool,
        /// Tell upper from lower case (default true).
        #[serde(default = "yes")]
        case_sensitive: bool,
    },
    /// Every expected string appears in the output (a non-string output as its JSON text).
    /// The score is the fraction found.
    Contains {
        /// Tell upper from lower case (default true).
        #[serde(default = "yes")]
        case_sensitive: bool,
    },
    /// The output (a non-string output as its JSON text) matches `pattern` somewhere; anchor it
    /// with `^…$` to match the whole.
    Regex {
        /// The pattern, compiled once when the task set is read.
        pattern: Pattern,
    },
    /// The output validates against `schema`; a string output is parsed as JSON first.
    JsonSchema {
        /// The JSON Schema, compiled once when the task set is read.
        schema: Schema,
    },
    /// The output is a number (or a string whose first number is taken) within `tolerance` of
    /// `expected`, or within `relative` × |expected| when `relative` is given.
    Numeric {
        /// The absolute tolerance (default 1e-9).
        #[serde(default = "default_tolerance")]
        tolerance: f64,
        /// A relative tolerance, e.g. 0.01 for 1 %, accepted as an alternative.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relative: Option<f64>,
    },
    /// An LLM grades the output; it passes when the judge's score is at least `threshold`.
    Judge {
        /// The model that judges, as the gateway names it.
        model: String,
        /// What the judge grades against; [`DEFAULT_RUBRIC`] when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rubric: Option<String>,
        /// The lowest passing score (default 0.5).
        #[serde(default = "default_threshold")]
        threshold: f64,
    },
}

fn yes() -> bool {
    true
}

fn default_tolerance() -> f64 {
    1e-9
}

fn default_threshold() -> f64 {
    0.5
}

impl Default for Scorer {
    /// `exact`, trimmed and case-sensitive.
    fn default() -> Self {
        Scorer::Exact {
            trim: true,
            case_sensitive: true,
        }
    }
}

impl Scorer {
    /// The scorer's `type` name as written in a task set.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Scorer::Exact { .. } => "exact",
            Scorer::Contains { .. } => "contains",
            Scorer::Regex { .. } => "regex",
            Scorer::JsonSchema { .. } => "json_schema",
            Scorer::Numeric { .. } => "numeric",
            Scorer::Judge { .. } => "judge",
        }
    }

    /// Reads a scorer as a task set writes it: a name (`"exact"`) or an object with a `type`.
    pub(crate) fn from_json(value: Value) -> std::result::Result<Self, String> {
        let value = match value {
            Value::String(name) => serde_json::json!({ "type": name }),
            object @ Value::Object(_) => object,
            other => {
                return Err(format!(
                    "`scorer` must be a name like \"exact\" or an object with a `type`, not {}",
                    excerpt(&other, EXCERPT_CHARS)
                ));
            }
        };
        serde_json::from_value(value).map_err(|e| format!("scorer: {e}"))
    }

    /// Checks the scorer's parameters and that `expected` is what it needs.
    pub(crate) fn check(&self, expected: Option<&Value>) -> std::result::Result<(), String> {
        match self {
            Scorer::Exact { .. } => {
                if expected.is_none() {
                    return Err("the exact scorer needs `expected`".to_owned());
                }
            }
            Scorer::Contains { .. } => {
                needles(expected).map_err(|e| format!("the contains scorer needs {e}"))?;
            }
            Scorer::Regex { .. } | Scorer::JsonSchema { .. } => {}
            Scorer::Numeric {
                tolerance,
                relative,
            } => {
                if !(tolerance.is_finite() && *tolerance >= 0.0) {
                    return Err(format!("numeric `tolerance` must be ≥ 0, not {tolerance}"));
                }
                if let Some(r) = relative.filter(|r| !(r.is_finite() && *r >= 0.0)) {
                    return Err(format!("numeric `relative` must be ≥ 0, not {r}"));
                }
                match expected {
                    Some(Value::Number(_)) => {}
                    Some(other) => {
                        return Err(format!(
                            "the numeric scorer needs a number as `expected`, not {}",
                            excerpt(other, EXCERPT_CHARS)
                        ));
                    }
                    None => return Err("the numeric scorer needs `expected`".to_owned()),
                }
            }
            Scorer::Judge {
                model, threshold, ..
            } => {
                if model.trim().is_empty() {
                    return Err("the judge scorer needs a `model`".to_owned());
                }
                if !(0.0..=1.0).contains(threshold) {
                    return Err(format!(
                        "judge `threshold` must be in 0..=1, not {threshold}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A regular expression compiled once, with [`REGEX_SIZE_LIMIT`]. Serialized as its source.
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    /// Compiles `pattern`; a syntax error or a pattern over the size limit is an
    /// [`Error::Eval`].
    pub fn new(pattern: &str) -> Result<Self> {
        Self::compile(pattern).map_err(Error::Eval)
    }

    fn compile(pattern: &str) -> std::result::Result<Self, String> {
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Pattern)
            .map_err(|e| {
                let why = match e {
                    regex::Error::CompiledTooBig(limit) => {
                        format!("the compiled pattern exceeds the {limit}-byte limit")
                    }
                    // A syntax error spans lines (the pattern, a caret, the error); keep the error.
                    other => {
                        let text = other.to_string();
                        text.lines()
                            .rev()
                            .find_map(|l| l.trim().strip_prefix("error:"))
                            .map_or_else(
                                || text.split_whitespace().collect::<Vec<_>>().join(" "),
                                |e| e.trim().to_owned(),
                            )
                    }
                };
                format!(
                    "invalid regex `{}`: {why}",
                    truncate(pattern, EXCERPT_CHARS)
                )
            })
    }

    /// The pattern's source.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The compiled expression.
    #[must_use]
    pub fn regex(&self) -> &regex::Regex {
        &self.0
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let source = Cow::<'de, str>::deserialize(deserializer)?;
        Self::compile(&source).map_err(serde::de::Error::custom)
    }
}

/// A JSON Schema compiled once. Serialized as the schema itself.
#[derive(Clone)]
pub struct Schema {
    source: Value,
    validator: Arc<jsonschema::Validator>,
}

impl Schema {
    /// Compiles `schema`; an invalid schema (or a `$ref` to a remote document) is an
    /// [`Error::Eval`].
    pub fn new(schema: Value) -> Result<Self> {
        Self::compile(schema).map_err(Error::Eval)
    }

    fn compile(source: Value) -> std::result::Result<Self, String> {
        let validator =
            jsonschema::validator_for(&source).map_err(|e| format!("invalid JSON Schema: {e}"))?;
        Ok(Schema {
            source,
            validator: Arc::new(validator),
        })
    }

    /// The schema as written.
    #[must_use]
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// The compiled validator.
    #[must_use]
    pub fn validator(&self) -> &jsonschema::Validator {
        &self.validator
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schema").field(&self.source).finish()
    }
}

impl Serialize for Schema {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.source.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Self::compile(Value::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// The strings a `contains` task expects: `expected` as one string or a non-empty list.
pub(super) fn needles(expected: Option<&Value>) -> std::result::Result<Vec<&str>, String> {
    const WANT: &str = "a string or a non-empty list of strings as `expected`";
    match expected {
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().ok_or_else(|| WANT.to_owned()))
            .collect(),
        _ => Err(WANT.to_owned()),
    }
}
