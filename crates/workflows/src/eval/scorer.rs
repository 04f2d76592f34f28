//! Scorers: how one output is held against a task's expectation.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::judge::{DEFAULT_RUBRIC, Judge};
use super::task::Task;
use super::text::{excerpt, truncate, value_text};
use crate::{Error, Result};

/// The most memory a `regex` scorer's compiled pattern may take (1 MiB).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How many characters of an output or expectation a score's detail quotes.
const EXCERPT_CHARS: usize = 80;

/// How many characters of a judge's reason a score keeps.
const REASON_CHARS: usize = 500;

static NULL: Value = Value::Null;

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

/// The score of one output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// How good the output is, in 0..=1.
    pub value: f64,
    /// Whether the output passes.
    pub passed: bool,
    /// Why it failed (empty when it passed; the judge's reason for a judged task).
    pub detail: String,
    /// What scoring cost, in micro-dollars (the judge's inference; 0 for the others).
    pub cost_micros: u64,
}

impl Score {
    fn pass() -> Self {
        Score {
            value: 1.0,
            passed: true,
            detail: String::new(),
            cost_micros: 0,
        }
    }

    fn fail(detail: String) -> Self {
        Score {
            value: 0.0,
            passed: false,
            detail,
            cost_micros: 0,
        }
    }

    fn binary(passed: bool, detail: impl FnOnce() -> String) -> Self {
        if passed {
            Score::pass()
        } else {
            Score::fail(detail())
        }
    }
}

/// Scores `output` for `task` with the task's scorer.
///
/// Every scorer but `judge` is pure and cheap (patterns and schemas were compiled when the task
/// set was read), so offline re-scoring of recorded episodes can call this in a loop. A `judge`
/// task asks `judge`; without one it is an [`Error::Eval`], as is a task whose `expected` does
/// not suit its scorer (possible only for tasks built by hand) or a judge's out-of-range score.
pub async fn score_output(task: &Task, output: &Value, judge: Option<&dyn Judge>) -> Result<Score> {
    let expected = task.expected.as_ref();
    match &task.scorer {
        Scorer::Exact {
            trim,
            case_sensitive,
        } => {
            let expected = expected.ok_or_else(|| misfit(task))?;
            Ok(exact(expected, output, *trim, *case_sensitive))
        }
        Scorer::Contains { case_sensitive } => {
            let needles = needles(expected).map_err(|_| misfit(task))?;
            Ok(contains(&needles, output, *case_sensitive))
        }
        Scorer::Regex { pattern } => {
            let text = value_text(output);
            Ok(Score::binary(pattern.0.is_match(&text), || {
                format!(
                    "`{}` does not match /{}/",
                    excerpt(output, EXCERPT_CHARS),
                    truncate(pattern.as_str(), EXCERPT_CHARS)
                )
            }))
        }
        Scorer::JsonSchema { schema } => Ok(json_schema(schema, output)),
        Scorer::Numeric {
            tolerance,
            relative,
        } => {
            let expected = expected
                .and_then(Value::as_f64)
                .ok_or_else(|| misfit(task))?;
            Ok(numeric(expected, output, *tolerance, *relative))
        }
        Scorer::Judge {
            model,
            rubric,
            threshold,
        } => {
            let judge = judge.ok_or_else(|| {
                Error::Eval(format!(
                    "task `{}` has a judge scorer but the eval has no judge",
                    task.id
                ))
            })?;
            let rubric = rubric.as_deref().unwrap_or(DEFAULT_RUBRIC);
            let verdict = judge
                .judge(
                    model,
                    rubric,
                    &task.input,
                    expected.unwrap_or(&NULL),
                    output,
                )
                .await?;
            if !(0.0..=1.0).contains(&verdict.score) {
                return Err(Error::Eval(format!(
                    "task `{}`: judge `{model}` gave the score {}, outside 0..=1",
                    task.id, verdict.score
                )));
            }
            Ok(Score {
                value: verdict.score,
                passed: verdict.score >= *threshold,
                detail: truncate(verdict.reason.trim(), REASON_CHARS).into_owned(),
                cost_micros: verdict.cost_micros,
            })
        }
    }
}

/// The error for a hand-built task whose `expected` does not suit its scorer.
fn misfit(task: &Task) -> Error {
    let why = task
        .scorer
        .check(task.expected.as_ref())
        .err()
        .unwrap_or_else(|| "`expected` does not suit the scorer".to_owned());
    Error::Eval(format!("task `{}`: {why}", task.id))
}

fn exact(expected: &Value, output: &Value, trim: bool, case_sensitive: bool) -> Score {
    let passed = match (expected, output) {
        (Value::String(e), Value::String(o)) => text_eq(e, o, trim, case_sensitive),
        (Value::String(e), o) => text_eq(e, &o.to_string(), trim, case_sensitive),
        (e, Value::String(o)) => {
            let o = if trim { o.trim() } else { o };
            serde_json::from_str::<Value>(o).is_ok_and(|o| json_eq(e, &o))
        }
        (e, o) => json_eq(e, o),
    };
    Score::binary(passed, || {
        format!(
            "expected `{}`, got `{}`",
            excerpt(expected, EXCERPT_CHARS),
            excerpt(output, EXCERPT_CHARS)
        )
    })
}

fn text_eq(a: &str, b: &str, trim: bool, case_sensitive: bool) -> bool {
    let (a, b) = if trim { (a.trim(), b.trim()) } else { (a, b) };
    if case_sensitive {
        a == b
    } else {
        a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
    }
}

/// JSON equality with numbers compared by value, so `4`, `4.0` and `4e0` are equal.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        (a, b) => a == b,
    }
}

/// The strings a `contains` task expects: `expected` as one string or a non-empty list.
fn needles(expected: Option<&Value>) -> std::result::Result<Vec<&str>, String> {
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

fn contains(needles: &[&str], output: &Value, case_sensitive: bool) -> Score {
    let text = value_text(output);
    let haystack = if case_sensitive {
        text
    } else {
        Cow::Owned(text.to_lowercase())
    };
    let missing: Vec<&str> = needles
        .iter()
        .copied()
        .filter(|needle| {
            if case_sensitive {
                !haystack.contains(needle)
            } else {
                !haystack.contains(&needle.to_lowercase())
            }
        })
        .collect();
    if missing.is_empty() {
        return Score::pass();
    }
    let found = needles.len() - missing.len();
    let listed: Vec<String> = missing
        .iter()
        .map(|m| format!("`{}`", truncate(m, EXCERPT_CHARS)))
        .collect();
    Score {
        value: found as f64 / needles.len() as f64,
        passed: false,
        detail: format!(
            "missing {} of {}: {}",
            missing.len(),
            needles.len(),
            listed.join(", ")
        ),
        cost_micros: 0,
    }
}

fn json_schema(schema: &Schema, output: &Value) -> Score {
    let parsed;
    let instance = match output {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(v) => {
                parsed = v;
                &parsed
            }
            Err(e) => return Score::fail(format!("the output is not JSON: {e}")),
        },
        other => other,
    };
    match schema.validator.validate(instance) {
        Ok(()) => Score::pass(),
        Err(e) => {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_owned() } else { at };
            Score::fail(format!(
                "schema violation at `{at}`: {}",
                truncate(&e.to_string(), 2 * EXCERPT_CHARS)
            ))
        }
    }
}

fn numeric(expected: f64, output: &Value, tolerance: f64, relative: Option<f64>) -> Score {
    let got = match output {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => first_number(s),
        _ => None,
    };
    let Some(got) = got else {
        return Score::fail(format!("no number in `{}`", excerpt(output, EXCERPT_CHARS)));
    };
    let diff = (got - expected).abs();
    let passed = diff <= tolerance || relative.is_some_and(|r| diff <= r * expected.abs());
    Score::binary(passed, || {
        let allowed = match relative {
            Some(r) => format!("± {tolerance} or ± {}%", r * 100.0),
            None => format!("± {tolerance}"),
        };
        format!("expected {expected} {allowed}, got {got}")
    })
}

/// The first number in `s`: an optional sign, digits (with `,` thousands separators), an
/// optional fraction and exponent, e.g. `"the answer is -1,234.5."` → -1234.5.
pub(crate) fn first_number(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let mut i = 0;
    while i < b.len() {
        let starts = digit(i) || (b[i] == b'.' && digit(i + 1));
        if !starts {
            i += 1;
            continue;
        }
        let negative = i > 0 && b[i - 1] == b'-';
        let mut text = String::new();
        if negative {
            text.push('-');
        }
        let mut j = i;
        while j < b.len() {
            if digit(j) {
                text.push(char::from(b[j]));
                j += 1;
            } else if b[j] == b',' && j > i && (1..=3).all(|k| digit(j + k)) && !digit(j + 4) {
                // A thousands separator: exactly three digits follow.
                j += 1;
            } else {
                break;
            }
        }
        if b.get(j) == Some(&b'.') && digit(j + 1) {
            text.push('.');
            j += 1;
            while digit(j) {
                text.push(char::from(b[j]));
                j += 1;
            }
        }
        if matches!(b.get(j), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(b.get(j + 1), Some(b'+' | b'-')));
            if digit(j + 1 + sign) {
                text.push('e');
                if sign == 1 {
                    text.push(char::from(b[j + 1]));
                }
                j += 1 + sign;
                while digit(j) {
                    text.push(char::from(b[j]));
                    j += 1;
                }
            }
        }
        return text.parse::<f64>().ok().filter(|x| x.is_finite());
    }
    None
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
    fn first_numbers() {
        assert_eq!(first_number("42"), Some(42.0));
        assert_eq!(first_number("The answer is -1,234.5."), Some(-1234.5));
        assert_eq!(first_number("x=.5"), Some(0.5));
        assert_eq!(first_number("1e3 apples"), Some(1000.0));
        assert_eq!(first_number("3 apples, 4 pears"), Some(3.0));
        assert_eq!(first_number("1,23"), Some(1.0));
        assert_eq!(first_number("version 2.0e"), Some(2.0));
        assert_eq!(first_number("none"), None);
        assert_eq!(first_number("-"), None);
        assert_eq!(first_number("1e999"), None);
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_eq(
            &serde_json::json!([4, {"a": 1}]),
            &serde_json::json!([4.0, {"a": 1e0}])
        ));
        assert!(!json_eq(
            &serde_json::json!({"a": 1}),
            &serde_json::json!({"a": 1, "b": 2})
        ));
        assert!(!json_eq(
            &serde_json::json!(-1),
            &serde_json::json!(u64::MAX)
        ));
    }

    #[test]
    fn case_folding_is_unicode_aware() {
        assert!(text_eq("ÉCOLE", "école", true, false));
        assert!(!text_eq("ÉCOLE", "école", true, true));
        assert!(!text_eq(" a", "a", false, true));
    }
}
