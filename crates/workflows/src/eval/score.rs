//! Scoring one output: [`score_output`] applies a task's [`Scorer`] (or asks the judge) and
//! says why it passed or failed.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::judge::{DEFAULT_RUBRIC, Judge};
use super::scorer::{Schema, Scorer, needles};
use super::task::Task;
use super::text::{excerpt, truncate, value_text};
use crate::{Error, Result};

/// How many characters of an output or expectation a score's detail quotes.
const EXCERPT_CHARS: usize = 80;

/// How many characters of a judge's reason a score keeps.
const REASON_CHARS: usize = 500;

static NULL: Value = Value::Null;

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
            Ok(Score::binary(pattern.regex().is_match(&text), || {
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
    match schema.validator().validate(instance) {
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
