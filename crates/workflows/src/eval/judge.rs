//! LLM-as-judge: the port the gateway implements, the prompt it sends and the reply parser.

use serde_json::Value;

use super::text::truncate;
use crate::{Error, Result};

/// The rubric of a judge scorer that gives none.
pub const DEFAULT_RUBRIC: &str = "The output is a correct, complete and relevant answer to the \
input. When a reference answer is given, the output agrees with it in substance; wording and \
formatting may differ.";

/// How many characters of a judge's reason are kept.
const REASON_CHARS: usize = 500;

/// An LLM that grades outputs (implemented by the gateway, which routes, meters and records the
/// judge's inference like any other).
#[async_trait::async_trait]
pub trait Judge: Send + Sync {
    /// Asks `model` to grade `output` against `expected` under `rubric`; returns a score in
    /// 0..=1 and why.
    ///
    /// `expected` is `null` when the task has none. [`judge_prompt`] builds the prompt and
    /// [`parse_judge_reply`] reads the reply.
    async fn judge(
        &self,
        model: &str,
        rubric: &str,
        input: &Value,
        expected: &Value,
        output: &Value,
    ) -> Result<Verdict>;
}

/// A judge's grade of one output.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The grade, in 0..=1.
    pub score: f64,
    /// Why, in a sentence or two.
    pub reason: String,
    /// What the judge's inference cost, in micro-dollars.
    pub cost_micros: u64,
}

/// The prompt that asks a judge to grade `output` for `input` against `expected` (`null` for
/// none) under `rubric`. It asks for a reply of the form `SCORE: <0..1>` then `REASON: …`.
///
/// Strings are shown as they are, other values as pretty JSON.
#[must_use]
pub fn judge_prompt(rubric: &str, input: &Value, expected: &Value, output: &Value) -> String {
    let reference = if expected.is_null() {
        "(none given)".to_owned()
    } else {
        block(expected)
    };
    format!(
        "You are an impartial grader. Grade the OUTPUT an AI system gave for the INPUT.\n\
         \n\
         RUBRIC:\n{rubric}\n\
         \n\
         INPUT:\n{input}\n\
         \n\
         REFERENCE ANSWER:\n{reference}\n\
         \n\
         OUTPUT:\n{output}\n\
         \n\
         Grade only the OUTPUT, against the RUBRIC. Reply with exactly two lines and nothing else:\n\
         SCORE: <a number from 0 to 1, where 1 fully meets the rubric and 0 does not at all>\n\
         REASON: <one sentence saying why>\n",
        rubric = rubric.trim(),
        input = block(input),
        output = block(output),
    )
}

fn block(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
    }
}

/// Reads a judge's reply: the score and the reason (`cost_micros` is 0 for the caller to set).
///
/// The score is the number after the word "score" (`SCORE: 0.8`, `**Score**: 8/10`,
/// `score = 85%`, `Score: 4 out of 5`); a bare number above 1 is read as out of 10 or, above
/// 10, out of 100. Without one, a `PASS` or `FAIL` (`PASSED`, `FAILED`) gives 1 or 0. The
/// reason is the `REASON:` line, else the text after the score on its line, else the other
/// lines. A reply with no score, or a score outside 0..=1, is an [`Error::Eval`].
pub fn parse_judge_reply(text: &str) -> Result<Verdict> {
    let found = text
        .lines()
        .enumerate()
        .find_map(|(n, line)| score_in_line(line).map(|(score, rest)| (n, line, score, rest)));
    let (score, line, rest) = match found {
        Some((n, line, score, rest)) => {
            let score = score.ok_or_else(|| {
                Error::Eval(format!(
                    "the judge's score is not in 0..=1: `{}`",
                    truncate(line.trim(), 200)
                ))
            })?;
            (score, n, rest)
        }
        None => pass_fail(text).ok_or_else(|| {
            Error::Eval(format!(
                "the judge's reply has no score: `{}`",
                truncate(text.trim(), 200)
            ))
        })?,
    };
    Ok(Verdict {
        score,
        reason: reason(text, line, rest),
        cost_micros: 0,
    })
}

/// The score after the word "score" in `line` (case-insensitive; `None` inside when it is out
/// of range), and the rest of the line.
fn score_in_line(line: &str) -> Option<(Option<f64>, &str)> {
    let lower = line.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("score") {
        let after = from + at + "score".len();
        from = after;
        let rest = line[after..].trim_start_matches(|c: char| {
            c.is_whitespace() || matches!(c, ':' | '=' | '*' | '_' | '`' | '"' | '\'' | '(' | '[')
        });
        // "a score of 3 out of 4", "the score is 0.8"
        let rest = ["of ", "is "]
            .iter()
            .find_map(|word| {
                rest.get(..word.len())
                    .filter(|w| w.eq_ignore_ascii_case(word))
                    .map(|w| rest[w.len()..].trim_start())
            })
            .unwrap_or(rest);
        if let Some((value, len)) = leading_number(rest) {
            return Some(normalise(value, &rest[len..]));
        }
    }
    None
}

/// A number at the start of `s` (digits with an optional fraction) and its length in bytes.
fn leading_number(s: &str) -> Option<(f64, usize)> {
    let end = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let token = s[..end].trim_end_matches('.');
    if !token.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse::<f64>().ok().map(|x| (x, token.len()))
}

/// Scales a score to 0..=1 from what follows it (`/ d`, `out of d`, `%`, or nothing) and
/// returns it (`None` when out of range) with the rest of the line.
fn normalise(value: f64, rest: &str) -> (Option<f64>, &str) {
    let trimmed = rest.trim_start();
    let (scaled, rest) = if let Some(after) = trimmed.strip_prefix('%') {
        (Some(value / 100.0), after)
    } else if let Some((denominator, after)) = denominator(trimmed) {
        ((denominator > 0.0).then(|| value / denominator), after)
    } else if value <= 1.0 {
        (Some(value), rest)
    } else if value <= 10.0 {
        (Some(value / 10.0), rest)
    } else if value <= 100.0 {
        (Some(value / 100.0), rest)
    } else {
        (None, rest)
    };
    (scaled.filter(|s| (0.0..=1.0).contains(s)), rest)
}

/// `/ 10` or `out of 10` at the start of `s`: the denominator and what follows it.
fn denominator(s: &str) -> Option<(f64, &str)> {
    let after = if let Some(after) = s.strip_prefix('/') {
        after
    } else {
        let head = s.get(..6)?;
        if !head.eq_ignore_ascii_case("out of") {
            return None;
        }
        &s[6..]
    };
    let after = after.trim_start();
    let (d, len) = leading_number(after)?;
    Some((d, &after[len..]))
}

/// The words of `line` (runs of ASCII letters and digits), each with the rest of the line.
fn words(line: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = line;
    std::iter::from_fn(move || {
        let start = rest.find(|c: char| c.is_ascii_alphanumeric())?;
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(tail.len());
        let (word, after) = tail.split_at(end);
        rest = after;
        Some((word, after))
    })
}

/// The first verdict word: an upper-case `PASS`/`PASSED`/`FAIL`/`FAILED` anywhere, else a
/// reply that starts with one in any case. Returns 1 or 0, its line and the rest of that line.
fn pass_fail(text: &str) -> Option<(f64, usize, &str)> {
    let verdict = |w: &str| match w {
        "PASS" | "PASSED" => Some(1.0),
        "FAIL" | "FAILED" => Some(0.0),
        _ => None,
    };
    let upper = text
        .lines()
        .enumerate()
        .find_map(|(n, line)| words(line).find_map(|(w, rest)| verdict(w).map(|s| (s, n, rest))));
    upper.or_else(|| {
        let (n, line) = text
            .lines()
            .enumerate()
            .find(|(_, l)| !l.trim().is_empty())?;
        let (first, rest) = words(line).next()?;
        verdict(&first.to_ascii_uppercase()).map(|s| (s, n, rest))
    })
}

/// The reason: a `REASON:` line, else what follows the score on its line (`rest`), else the
/// reply's other lines.
fn reason(text: &str, score_line: usize, rest: &str) -> String {
    let strip = |s: &str| {
        s.trim_start_matches(|c: char| {
            c.is_whitespace() || matches!(c, '*' | '_' | '#' | '-' | '>')
        })
        .trim_end()
        .to_owned()
    };
    let labelled = text.lines().find_map(|line| {
        let line = strip(line);
        let head = line.get(..6)?;
        if !head.eq_ignore_ascii_case("reason") {
            return None;
        }
        let tail = &line[6..];
        let tail = ["ing", "s"]
            .iter()
            .find_map(|suffix| {
                tail.get(..suffix.len())
                    .filter(|h| h.eq_ignore_ascii_case(suffix))
                    .map(|h| &tail[h.len()..])
            })
            .unwrap_or(tail);
        let tail = tail.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '*' | '_'));
        let tail = tail.strip_prefix(':').or_else(|| tail.strip_prefix('='))?;
        let tail = tail
            .trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '*' | '_'))
            .trim();
        (!tail.is_empty()).then(|| tail.to_owned())
    });
    let after_score = rest
        .trim_start_matches(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    '*' | '_' | '`' | ')' | ']' | '.' | ',' | ';' | ':' | '-' | '—'
                )
        })
        .trim();
    let reason = labelled.unwrap_or_else(|| {
        if after_score.is_empty() {
            text.lines()
                .enumerate()
                .filter(|&(n, _)| n != score_line)
                .map(|(_, l)| strip(l))
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            after_score.to_owned()
        }
    });
    truncate(&reason, REASON_CHARS).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests: a panic is the failure report"
    )]

    use super::*;

    fn score(text: &str) -> f64 {
        parse_judge_reply(text).unwrap().score
    }

    #[test]
    fn reads_scores_in_many_forms() {
        assert_eq!(score("SCORE: 0.8\nREASON: close"), 0.8);
        assert_eq!(score("Score: 8/10"), 0.8);
        assert_eq!(score("**Score**: 4 out of 5 — mostly right"), 0.8);
        assert_eq!(score("score = 85%"), 0.85);
        assert_eq!(score("Final score: 7"), 0.7);
        assert_eq!(score("Score: 90"), 0.9);
        assert_eq!(score("Score: 1."), 1.0);
        assert_eq!(score("The score reflects accuracy.\nSCORE: 0"), 0.0);
        assert_eq!(score("PASS - the answer is right"), 1.0);
        assert_eq!(score("The answer is wrong.\nVerdict: FAIL"), 0.0);
        assert_eq!(score("fail: wrong unit"), 0.0);
    }

    #[test]
    fn rejects_replies_without_a_usable_score() {
        for reply in [
            "",
            "I think it is good.",
            "Score: 150",
            "Score: 3/0",
            "SCORE: 7/5",
        ] {
            let err = parse_judge_reply(reply).unwrap_err();
            assert!(matches!(err, Error::Eval(_)), "{reply:?}: {err}");
        }
    }

    #[test]
    fn finds_the_reason() {
        let v = parse_judge_reply("SCORE: 0.25\nREASON: the unit is wrong").unwrap();
        assert_eq!(v.reason, "the unit is wrong");
        let v = parse_judge_reply("Score: 1 - exactly right").unwrap();
        assert_eq!(v.reason, "exactly right");
        let v = parse_judge_reply("The sum is correct.\nScore: 9/10").unwrap();
        assert_eq!(v.reason, "The sum is correct.");
        let v = parse_judge_reply("**Reasoning:** close enough\n**Score:** 0.6").unwrap();
        assert_eq!(v.reason, "close enough");
        let v = parse_judge_reply("PASS - the answer is right").unwrap();
        assert_eq!(v.reason, "the answer is right");
        let v = parse_judge_reply("Reasonable attempt.\nSCORE: 0.7").unwrap();
        assert_eq!(v.reason, "Reasonable attempt.");
    }

    #[test]
    fn the_prompt_shows_everything_and_asks_for_the_format() {
        let p = judge_prompt(
            "Be strict.",
            &Value::String("What is 2+2?".into()),
            &Value::Null,
            &serde_json::json!({"answer": 4}),
        );
        assert!(p.contains("Be strict."));
        assert!(p.contains("What is 2+2?"));
        assert!(p.contains("(none given)"));
        assert!(p.contains("\"answer\": 4"));
        assert!(p.contains("SCORE: <a number from 0 to 1"));
        assert_eq!(score("SCORE: 0.5\nREASON: x"), 0.5);
    }
}
