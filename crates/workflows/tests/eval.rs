//! Evals: task sets, scorers, eval runs, reports and comparisons.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use serde_json::{Value, json};
use switchyard_workflows::eval::{
    Judge, MAX_LINE_BYTES, MAX_TASKS, MAX_TOTAL_BYTES, Outcome, Report, RunOptions, Score, Scorer,
    Status, Subject, Task, TaskResult, TaskSet, Verdict, compare, judge_prompt, load_task_set,
    parse_judge_reply, parse_task_set, run_eval, score_output,
};
use switchyard_workflows::{Error, Result};

// ---------------------------------------------------------------------------------------------
// Helpers

/// One task from one task set line.
fn task(line: &str) -> Task {
    let mut tasks = parse_task_set(line).unwrap();
    assert_eq!(tasks.len(), 1);
    tasks.remove(0)
}

/// Scores without a judge; every scorer but `judge` completes without waiting.
fn score(task: &Task, output: Value) -> Score {
    score_output(task, &output, None)
        .now_or_never()
        .expect("a deterministic scorer does not wait")
        .unwrap()
}

fn assert_score(task: &Task, output: Value, value: f64, passed: bool) -> Score {
    let s = score(task, output.clone());
    assert_eq!(
        (s.value, s.passed),
        (value, passed),
        "{output} for {}: {s:?}",
        task.id
    );
    assert_eq!(
        s.detail.is_empty(),
        passed,
        "a failure explains itself: {s:?}"
    );
    s
}

/// The error of a task set, which must be a `TaskSet` error on `line` mentioning `needle`.
fn rejects(text: &str, line: usize, needle: &str) -> String {
    match parse_task_set(text) {
        Err(Error::TaskSet { line: at, message }) => {
            assert_eq!(at, line, "wrong line for {message:?}");
            assert!(
                message.contains(needle),
                "{message:?} does not mention {needle:?}"
            );
            message
        }
        other => panic!("expected a task set error on line {line}, got {other:?}"),
    }
}

/// The answer to "What is a op b?" in `input`.
fn arithmetic(input: &str) -> Option<f64> {
    let re = regex::Regex::new(r"(-?\d+) ([-+*/]) (-?\d+)").unwrap();
    let c = re.captures(input)?;
    let (a, b): (f64, f64) = (c[1].parse().ok()?, c[3].parse().ok()?);
    Some(match &c[2] {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        _ => a / b,
    })
}

fn number_text(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// A deterministic subject that does arithmetic right, except for the `wrong` ids (off by
/// one) and the `failing` ids (an error). It answers in the form the question asks for; each
/// answer costs 10 µ$ and "takes" 10 ms × its position in the set.
struct Calculator {
    wrong: HashSet<&'static str>,
    failing: HashSet<&'static str>,
    /// Real time each run sleeps, so completions come out of order: the first task sleeps the
    /// longest.
    stagger: Duration,
    order: Mutex<Vec<String>>,
}

impl Calculator {
    fn new() -> Self {
        Calculator {
            wrong: HashSet::new(),
            failing: HashSet::new(),
            stagger: Duration::ZERO,
            order: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait::async_trait]
impl Subject for Calculator {
    fn label(&self) -> String {
        "calculator".to_owned()
    }

    async fn run(&self, task: &Task) -> Result<Outcome> {
        let position: u32 = task.tags.first().and_then(|t| t.parse().ok()).unwrap_or(0);
        if self.failing.contains(task.id.as_str()) {
            return Err(Error::Eval(format!("calculator overheated on {}", task.id)));
        }
        tokio::time::sleep(self.stagger.saturating_sub(self.stagger / 10 * position)).await;
        self.order.lock().unwrap().push(task.id.clone());
        let question = task.input.as_str().unwrap_or_default();
        let mut answer = arithmetic(question).unwrap_or(0.0);
        if self.wrong.contains(task.id.as_str()) {
            answer += 1.0;
        }
        let text = number_text(answer);
        let output = if question.contains("as JSON") {
            json!({ "result": answer })
        } else if question.contains("in a sentence") {
            json!(format!("The answer is {text}."))
        } else if question.contains("yes or no") {
            json!("yes")
        } else if question.contains("Explain") {
            json!(format!("It is {text}, by counting."))
        } else {
            json!(text)
        };
        Ok(Outcome {
            output,
            cost_micros: 10,
            latency: Duration::from_millis(10 * u64::from(position)),
            episode: Some(format!("run-{}", task.id)),
        })
    }
}

/// A deterministic judge: 0.9 when the output has the right number, else 0.1; 100 µ$ a call.
struct ArithmeticJudge {
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Judge for ArithmeticJudge {
    async fn judge(
        &self,
        model: &str,
        rubric: &str,
        input: &Value,
        expected: &Value,
        output: &Value,
    ) -> Result<Verdict> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        assert_eq!(model, "sim-large");
        let prompt = judge_prompt(rubric, input, expected, output);
        let right = number_text(arithmetic(input.as_str().unwrap_or_default()).unwrap());
        let output = output.as_str().unwrap_or_default();
        let reply = if output.contains(&right) {
            "SCORE: 0.9\nREASON: the result is right"
        } else {
            "SCORE: 1/10\nREASON: the result is wrong"
        };
        assert!(prompt.contains(output));
        Ok(Verdict {
            cost_micros: 100,
            ..parse_judge_reply(reply)?
        })
    }
}

fn arith_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/evals/arith.jsonl")
}

/// A task set of arithmetic questions whose first tag is their position (1-based).
fn numbered(lines: &[&str]) -> Vec<Task> {
    parse_task_set(&lines.join("\n"))
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.with_tags([(i + 1).to_string()]))
        .collect()
}

fn result(id: &str, score: f64, passed: bool, cost_micros: u64) -> TaskResult {
    TaskResult {
        id: id.to_owned(),
        score,
        passed,
        output: json!(format!("out {id}")),
        expected: Some(json!("x")),
        detail: if passed {
            String::new()
        } else {
            "wrong".to_owned()
        },
        error: None,
        cost_micros,
        judge_cost_micros: 0,
        latency_ms: 12.5,
        episode: None,
        tags: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Scorers

#[test]
fn exact_compares_text_trimmed_and_case_sensitive_by_default() {
    let t = task(r#"{"id": "e", "input": "q", "expected": "Paris"}"#);
    assert!(matches!(
        t.scorer,
        Scorer::Exact {
            trim: true,
            case_sensitive: true
        }
    ));
    assert_score(&t, json!("Paris"), 1.0, true);
    assert_score(&t, json!("  Paris\n"), 1.0, true);
    let s = assert_score(&t, json!("paris"), 0.0, false);
    assert_eq!(s.detail, "expected `Paris`, got `paris`");
    assert_score(&t, json!("Paris, France"), 0.0, false);

    let t = task(
        r#"{"input": "q", "expected": "ÉCOLE", "scorer": {"type": "exact", "trim": false, "case_sensitive": false}}"#,
    );
    assert_score(&t, json!("école"), 1.0, true);
    assert_score(&t, json!(" école"), 0.0, false);
}

#[test]
fn exact_compares_json_values_for_non_strings() {
    let t = task(r#"{"input": "q", "expected": {"a": [1, 2.5], "b": null}, "scorer": "exact"}"#);
    assert_score(&t, json!({"b": null, "a": [1.0, 2.5]}), 1.0, true);
    assert_score(&t, json!(" {\"a\": [1, 2.5], \"b\": null} "), 1.0, true);
    assert_score(&t, json!({"a": [1, 2.5]}), 0.0, false);
    assert_score(&t, json!("not json"), 0.0, false);

    let t = task(r#"{"input": "q", "expected": 4}"#);
    assert_score(&t, json!(4), 1.0, true);
    assert_score(&t, json!("4"), 1.0, true);
    assert_score(&t, json!(4.0), 1.0, true);
    assert_score(&t, json!("four"), 0.0, false);

    // A string expectation against a non-string output compares with its JSON text.
    let t = task(r#"{"input": "q", "expected": "true"}"#);
    assert_score(&t, json!(true), 1.0, true);
}

#[test]
fn contains_scores_the_fraction_found() {
    let t = task(r#"{"input": "q", "expected": "Paris", "scorer": "contains"}"#);
    assert_score(&t, json!("The capital is Paris."), 1.0, true);
    assert_score(&t, json!("The capital is paris."), 0.0, false);

    let t = task(
        r#"{"input": "q", "expected": ["red", "green", "blue", "alpha"], "scorer": {"type": "contains", "case_sensitive": false}}"#,
    );
    assert_score(&t, json!("RED, Green and blue and ALPHA"), 1.0, true);
    let s = assert_score(&t, json!("Red and blue"), 0.5, false);
    assert_eq!(s.detail, "missing 2 of 4: `green`, `alpha`");
    assert_score(&t, json!(["red", "green", "blue"]), 0.75, false);
}

#[test]
fn regex_must_match_the_output() {
    let t = task(r#"{"input": "q", "scorer": {"type": "regex", "pattern": "^\\d{3}-\\d{4}$"}}"#);
    assert_score(&t, json!("555-1234"), 1.0, true);
    let s = assert_score(&t, json!("call 555-1234"), 0.0, false);
    assert!(s.detail.contains("does not match"), "{s:?}");
    assert_score(&t, json!(5551234), 0.0, false);

    let t = task(r#"{"input": "q", "scorer": {"type": "regex", "pattern": "(?i)\\bparis\\b"}}"#);
    assert_score(&t, json!("It is PARIS."), 1.0, true);
    assert_score(&t, json!("Parisian"), 0.0, false);
}

#[test]
fn json_schema_validates_the_output() {
    let t = task(
        r#"{"input": "q", "scorer": {"type": "json_schema", "schema": {"type": "object", "required": ["name", "age"], "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}}}"#,
    );
    assert_score(&t, json!({"name": "Ada", "age": 36}), 1.0, true);
    assert_score(&t, json!("{\"name\": \"Ada\", \"age\": 36}"), 1.0, true);
    let s = assert_score(&t, json!({"name": "Ada", "age": -1}), 0.0, false);
    assert!(s.detail.contains("/age"), "{s:?}");
    let s = assert_score(&t, json!({"name": "Ada"}), 0.0, false);
    assert!(s.detail.contains("age"), "{s:?}");
    let s = assert_score(&t, json!("Ada, 36"), 0.0, false);
    assert!(s.detail.contains("not JSON"), "{s:?}");
}

#[test]
fn numeric_allows_the_tolerance_and_reads_numbers_from_text() {
    let t = task(
        r#"{"input": "q", "expected": 2.5, "scorer": {"type": "numeric", "tolerance": 0.01}}"#,
    );
    assert_score(&t, json!(2.495), 1.0, true);
    assert_score(&t, json!("It is about 2.505."), 1.0, true);
    let s = assert_score(&t, json!("2.6"), 0.0, false);
    assert!(s.detail.contains("expected 2.5"), "{s:?}");
    let s = assert_score(&t, json!("pi"), 0.0, false);
    assert!(s.detail.contains("no number"), "{s:?}");
    assert_score(&t, json!(true), 0.0, false);

    let t = task(
        r#"{"input": "q", "expected": 1000000, "scorer": {"type": "numeric", "tolerance": 0, "relative": 0.01}}"#,
    );
    assert_score(&t, json!("1,009,999 units"), 1.0, true);
    assert_score(&t, json!(1_010_001), 0.0, false);

    // The default tolerance is tight.
    let t = task(r#"{"input": "q", "expected": -2, "scorer": "numeric"}"#);
    assert_score(&t, json!("-2.0"), 1.0, true);
    assert_score(&t, json!(-2.001), 0.0, false);
}

#[tokio::test]
async fn judge_scores_through_the_judge() {
    let t = task(
        r#"{"input": "What is 2 + 2?", "expected": "4", "scorer": {"type": "judge", "model": "sim-large", "threshold": 0.95}}"#,
    );
    let judge = ArithmeticJudge {
        calls: AtomicUsize::new(0),
    };
    let s = score_output(&t, &json!("It is 4."), Some(&judge))
        .await
        .unwrap();
    assert_eq!(
        s,
        Score {
            value: 0.9,
            passed: false,
            detail: "the result is right".to_owned(),
            cost_micros: 100
        }
    );
    let t =
        task(r#"{"input": "What is 2 + 2?", "scorer": {"type": "judge", "model": "sim-large"}}"#);
    let s = score_output(&t, &json!("It is 4."), Some(&judge))
        .await
        .unwrap();
    assert_eq!((s.value, s.passed), (0.9, true));
    let s = score_output(&t, &json!("It is 5."), Some(&judge))
        .await
        .unwrap();
    assert_eq!((s.value, s.passed), (0.1, false));
    assert_eq!(judge.calls.load(Ordering::SeqCst), 3);

    let err = score_output(&t, &json!("It is 4."), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Eval(m) if m.contains("no judge")),
        "{err}"
    );
}

#[tokio::test]
async fn a_judge_score_out_of_range_is_an_error() {
    struct Generous;
    #[async_trait::async_trait]
    impl Judge for Generous {
        async fn judge(
            &self,
            _: &str,
            _: &str,
            _: &Value,
            _: &Value,
            _: &Value,
        ) -> Result<Verdict> {
            Ok(Verdict {
                score: 1.5,
                reason: "great".to_owned(),
                cost_micros: 0,
            })
        }
    }
    let t = task(r#"{"input": "q", "scorer": {"type": "judge", "model": "m"}}"#);
    let err = score_output(&t, &json!("a"), Some(&Generous))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("outside 0..=1"), "{err}");
}

#[test]
fn judge_replies_are_read_robustly() {
    let read = |text: &str| parse_judge_reply(text).unwrap();
    assert_eq!(read("SCORE: 0.75\nREASON: mostly right").score, 0.75);
    assert_eq!(
        read("SCORE: 0.75\nREASON: mostly right").reason,
        "mostly right"
    );
    assert_eq!(read("Score: 8/10").score, 0.8);
    assert_eq!(read("**Score:** 85%").score, 0.85);
    assert_eq!(read("I'd give it a score of 3 out of 4.").score, 0.75);
    assert_eq!(read("PASS").score, 1.0);
    assert_eq!(read("Verdict: FAIL\nThe unit is missing.").score, 0.0);
    assert_eq!(
        read("Verdict: FAIL\nThe unit is missing.").reason,
        "The unit is missing."
    );
    assert_eq!(read("SCORE: 1").cost_micros, 0);
    assert!(matches!(
        parse_judge_reply("Looks fine to me."),
        Err(Error::Eval(_))
    ));
    assert!(matches!(
        parse_judge_reply("SCORE: 12/10"),
        Err(Error::Eval(_))
    ));
}

#[test]
fn hand_built_tasks_are_checked() {
    let t = Task::new(
        "t",
        json!("q"),
        Some(json!(1)),
        Scorer::Numeric {
            tolerance: 0.5,
            relative: None,
        },
    )
    .unwrap();
    assert_score(&t, json!("1.4"), 1.0, true);
    let err = Task::new("t", json!("q"), None, Scorer::default()).unwrap_err();
    assert!(err.to_string().contains("needs `expected`"), "{err}");
    let err = Task::new("", json!("q"), Some(json!(1)), Scorer::default()).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");

    // A task whose `expected` was changed after the check gives an error, not a panic.
    let mut t = t;
    t.expected = Some(json!("one"));
    let err = score_output(&t, &json!(1), None)
        .now_or_never()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("needs a number"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Task sets

#[test]
fn the_example_task_set_parses() {
    let tasks = load_task_set(arith_path()).unwrap();
    assert!((10..=20).contains(&tasks.len()), "{}", tasks.len());
    let kinds: HashSet<&str> = tasks.iter().map(|t| t.scorer.kind()).collect();
    for kind in [
        "exact",
        "contains",
        "regex",
        "json_schema",
        "numeric",
        "judge",
    ] {
        assert!(kinds.contains(kind), "the example has no {kind} task");
    }
    assert_eq!(tasks[0].id, "add-small");
    assert_eq!(tasks[0].tags, ["add"]);

    let set = TaskSet::load(arith_path()).unwrap();
    assert_eq!(set.len(), tasks.len());
    assert_eq!(
        set.get("mul-json-schema").unwrap().scorer.kind(),
        "json_schema"
    );
    assert!(set.get("nope").is_none());
}

#[test]
fn defaults_comments_and_line_endings() {
    let text = "\u{feff}# a comment\r\n\r\n{\"input\": \"a\", \"expected\": \"a\"}\r\n   # indented comment\n{\"input\": {\"x\": 1}, \"expected\": null, \"tags\": [\"t\"]}\n\n";
    let tasks = parse_task_set(text).unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0].id, "line-3");
    assert_eq!(tasks[1].id, "line-5");
    assert_eq!(
        tasks[1].expected,
        Some(Value::Null),
        "an explicit null is expected"
    );
    assert_eq!(tasks[1].tags, ["t"]);
    assert!(parse_task_set("").unwrap().is_empty());
    assert!(parse_task_set("# nothing\n\n").unwrap().is_empty());
}

#[test]
fn hostile_lines_name_the_line_and_the_problem() {
    let ok = r#"{"id": "ok", "input": 1, "expected": 1}"#;
    rejects(&format!("{ok}\n{{\"input\": }}"), 2, "invalid JSON");
    rejects(&format!("{ok}\n{{\"input\": 1"), 2, "invalid JSON");
    rejects("[1, 2]", 1, "expected a JSON object");
    rejects("\"input\"", 1, "expected a JSON object");
    rejects(
        r#"{"input": 1, "expected": 1} trailing"#,
        1,
        "trailing characters",
    );
    rejects(
        r#"{"id": 5, "input": 1, "expected": 1}"#,
        1,
        "invalid type: integer `5`, expected a string",
    );
    rejects(
        r#"{"input": 1, "expected": 1, "tags": "math"}"#,
        1,
        "expected a sequence",
    );
    rejects(r#"{"input": 1, "expected": 1, "tags": [""]}"#, 1, "`tags`");
    rejects(
        &format!("# header\n{ok}\n{{\"expected\": 1}}"),
        3,
        "missing field `input`",
    );
    rejects(
        r#"{"input": 1, "expected": 1, "inptu": 2}"#,
        1,
        "unknown field `inptu`",
    );
    rejects(r#"{"id": "", "input": 1, "expected": 1}"#, 1, "`id`");
    rejects(
        r#"{"id": "a\u0007b", "input": 1, "expected": 1}"#,
        1,
        "control characters",
    );
    rejects(
        &format!(
            r#"{{"id": "{}", "input": 1, "expected": 1}}"#,
            "x".repeat(300)
        ),
        1,
        "256 bytes",
    );
    let deep = format!(
        r#"{{"input": {}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    rejects(&deep, 1, "recursion limit");
}

#[test]
fn duplicate_ids_are_rejected_with_both_lines() {
    let text = "{\"id\": \"a\", \"input\": 1, \"expected\": 1}\n\n{\"id\": \"b\", \"input\": 1, \"expected\": 1}\n{\"id\": \"a\", \"input\": 2, \"expected\": 2}";
    rejects(text, 4, "duplicate id `a` (first on line 1)");
    // A default id can collide with an explicit one.
    let text =
        "{\"id\": \"line-2\", \"input\": 1, \"expected\": 1}\n{\"input\": 1, \"expected\": 1}";
    rejects(text, 2, "duplicate id `line-2`");
}

#[test]
fn bad_scorers_are_rejected() {
    rejects(
        r#"{"input": 1, "scorer": "fuzzy"}"#,
        1,
        "unknown variant `fuzzy`",
    );
    rejects(
        r#"{"input": 1, "scorer": {"type": "fuzzy"}}"#,
        1,
        "unknown variant `fuzzy`",
    );
    rejects(
        r#"{"input": 1, "scorer": {"tolerance": 1}}"#,
        1,
        "missing field `type`",
    );
    rejects(
        r#"{"input": 1, "scorer": 42}"#,
        1,
        "`scorer` must be a name",
    );
    rejects(
        r#"{"input": 1, "expected": 1, "scorer": {"type": "exact", "trim": "yes"}}"#,
        1,
        "invalid type",
    );
    rejects(
        r#"{"input": 1, "expected": 1, "scorer": {"type": "exact", "strict": true}}"#,
        1,
        "unknown field `strict`",
    );
    rejects(r#"{"input": 1, "scorer": "exact"}"#, 1, "needs `expected`");
    rejects(
        r#"{"input": 1, "expected": 4, "scorer": "contains"}"#,
        1,
        "a string or a non-empty list",
    );
    rejects(
        r#"{"input": 1, "expected": [], "scorer": "contains"}"#,
        1,
        "non-empty list",
    );
    rejects(
        r#"{"input": 1, "expected": ["a", 1], "scorer": "contains"}"#,
        1,
        "list of strings",
    );
    rejects(
        r#"{"input": 1, "expected": "4", "scorer": "numeric"}"#,
        1,
        "needs a number",
    );
    rejects(
        r#"{"input": 1, "scorer": "numeric"}"#,
        1,
        "needs `expected`",
    );
    rejects(
        r#"{"input": 1, "expected": 4, "scorer": {"type": "numeric", "tolerance": -1}}"#,
        1,
        "tolerance",
    );
    rejects(
        r#"{"input": 1, "expected": 4, "scorer": {"type": "numeric", "relative": -0.1}}"#,
        1,
        "relative",
    );
    rejects(
        r#"{"input": 1, "scorer": "regex"}"#,
        1,
        "missing field `pattern`",
    );
    rejects(
        r#"{"input": 1, "scorer": "judge"}"#,
        1,
        "missing field `model`",
    );
    rejects(
        r#"{"input": 1, "scorer": {"type": "judge", "model": " "}}"#,
        1,
        "needs a `model`",
    );
    rejects(
        r#"{"input": 1, "scorer": {"type": "judge", "model": "m", "threshold": 2}}"#,
        1,
        "threshold",
    );
}

#[test]
fn invalid_regexes_and_schemas_are_rejected_when_read() {
    let m = rejects(
        r#"{"input": 1, "scorer": {"type": "regex", "pattern": "(unclosed"}}"#,
        1,
        "invalid regex `(unclosed`",
    );
    assert!(m.contains("unclosed group"), "{m}");
    rejects(
        r#"{"input": 1, "scorer": {"type": "regex", "pattern": "\\w{1000}{1000}"}}"#,
        1,
        "exceeds the 1048576-byte limit",
    );
    rejects(
        r#"{"input": 1, "scorer": {"type": "regex", "pattern": 5}}"#,
        1,
        "invalid type",
    );
    rejects(
        r#"{"input": 1, "scorer": {"type": "json_schema", "schema": {"type": "nonsense"}}}"#,
        1,
        "invalid JSON Schema",
    );
    rejects(
        r#"{"input": 1, "scorer": {"type": "json_schema", "schema": {"minimum": "zero"}}}"#,
        1,
        "invalid JSON Schema",
    );
    rejects(
        r#"{"input": 1, "scorer": {"type": "json_schema", "schema": {"$ref": "https://example.com/s.json"}}}"#,
        1,
        "invalid JSON Schema",
    );
    rejects(
        r#"{"input": 1, "scorer": {"type": "json_schema"}}"#,
        1,
        "missing field `schema`",
    );
}

#[test]
fn a_line_over_one_mib_is_rejected_before_it_is_parsed() {
    let long = format!(
        r#"{{"input": "{}", "expected": 1}}"#,
        "x".repeat(MAX_LINE_BYTES)
    );
    let text = format!("# header\n{long}\n");
    rejects(&text, 2, "1 MiB");
    // Just under the limit is fine.
    let fits = format!(
        r#"{{"input": "{}", "expected": 1}}"#,
        "x".repeat(MAX_LINE_BYTES - 40)
    );
    assert_eq!(parse_task_set(&fits).unwrap().len(), 1);
}

#[test]
fn more_than_the_most_tasks_is_rejected() {
    let mut text = String::from("# many\n");
    for _ in 0..MAX_TASKS {
        text.push_str("{\"input\": 1, \"expected\": 1}\n");
    }
    assert_eq!(parse_task_set(&text).unwrap().len(), MAX_TASKS);
    text.push_str("# comments do not count\n{\"input\": 1, \"expected\": 1}\n");
    rejects(&text, MAX_TASKS + 3, "more than 100000 tasks");
}

#[test]
fn a_task_set_over_64_mib_is_rejected() {
    // Lines of 1 KiB (comments): byte 64 MiB is the first byte of line 65,537.
    let line = format!("#{}\n", "x".repeat(1022));
    assert_eq!(line.len(), 1024);
    let text = line.repeat(MAX_TOTAL_BYTES / 1024 + 1);
    rejects(&text, MAX_TOTAL_BYTES / 1024 + 1, "64 MiB");
    assert!(parse_task_set(&text[..MAX_TOTAL_BYTES]).unwrap().is_empty());
}

#[test]
fn loading_reports_io_and_encoding_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let err = load_task_set(&missing).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("missing.jsonl")),
        "{err}"
    );

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        b"{\"input\": 1, \"expected\": 1}\n# ok\n{\"input\": \"\xff\"}\n",
    )
    .unwrap();
    match load_task_set(&bad) {
        Err(Error::TaskSet { line, message }) => {
            assert_eq!(line, 3);
            assert!(message.contains("UTF-8"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Running

#[tokio::test]
async fn the_example_task_set_passes_with_a_correct_subject() {
    let tasks = load_task_set(arith_path()).unwrap();
    let subject = Calculator::new();
    let judge = ArithmeticJudge {
        calls: AtomicUsize::new(0),
    };
    let options = RunOptions {
        concurrency: 4,
        progress: true,
        name: Some("arith".to_owned()),
    };
    let report = run_eval(&tasks, &subject, Some(&judge), &options).await;
    let failures: Vec<_> = report.results.iter().filter(|r| !r.passed).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(report.aggregate.passed, tasks.len());
    assert_eq!(judge.calls.load(Ordering::SeqCst), 2);
    assert_eq!(report.aggregate.judge_cost_micros, 200);

    // The same subject getting two wrong fails exactly those two.
    let mut wrong = Calculator::new();
    wrong.wrong = ["add-numeric", "sub-judge"].into_iter().collect();
    let report = run_eval(&tasks, &wrong, Some(&judge), &options).await;
    let failed: Vec<&str> = report
        .results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(failed, ["add-numeric", "sub-judge"]);
    assert_eq!(report.result("sub-judge").unwrap().score, 0.1);
}

#[tokio::test]
async fn run_eval_reports_exact_aggregates_in_task_set_order() {
    let tasks = numbered(&[
        r#"{"id": "a", "input": "What is 1 + 1?", "expected": "2"}"#,
        r#"{"id": "b", "input": "What is 2 + 2?", "expected": 4, "scorer": "numeric"}"#,
        r#"{"id": "c", "input": "What is 3 + 3?", "expected": "6"}"#,
        r#"{"id": "d", "input": "What is 4 + 4?", "expected": "8"}"#,
        r#"{"id": "e", "input": "What is 5 + 5? Answer in a sentence.", "expected": ["10", "twelve"], "scorer": "contains"}"#,
        r#"{"id": "f", "input": "What is 6 + 6? Answer in a sentence.", "scorer": {"type": "judge", "model": "sim-large"}}"#,
    ]);
    let mut subject = Calculator::new();
    subject.wrong = ["c"].into_iter().collect();
    subject.failing = ["d"].into_iter().collect();
    subject.stagger = Duration::from_millis(150);
    let judge = ArithmeticJudge {
        calls: AtomicUsize::new(0),
    };
    let options = RunOptions {
        concurrency: 6,
        progress: false,
        name: Some("exact".to_owned()),
    };
    let future = run_eval(&tasks, &subject, Some(&judge), &options);
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&future);
    let report = future.await;

    // Completion order differs from the task set's; the report keeps the task set's.
    let order = subject.order.lock().unwrap().clone();
    let at = |id: &str| order.iter().position(|o| o == id).unwrap();
    assert!(
        at("f") < at("a"),
        "the stagger reorders completions: {order:?}"
    );
    let ids: Vec<&str> = report.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e", "f"]);

    let scores: Vec<(f64, bool)> = report.results.iter().map(|r| (r.score, r.passed)).collect();
    assert_eq!(
        scores,
        [
            (1.0, true),
            (1.0, true),
            (0.0, false),
            (0.0, false),
            (0.5, false),
            (0.9, true)
        ]
    );
    let d = &report.results[3];
    assert_eq!(d.error.as_deref(), Some("eval: calculator overheated on d"));
    assert_eq!(
        (d.output.clone(), d.cost_micros, d.episode.clone()),
        (Value::Null, 0, None)
    );
    let c = &report.results[2];
    assert_eq!(c.output, json!("7"));
    assert_eq!(c.detail, "expected `6`, got `7`");
    assert_eq!(c.error, None);
    assert_eq!(c.episode.as_deref(), Some("run-c"));
    assert_eq!(report.results[4].detail, "missing 1 of 2: `twelve`");
    assert_eq!(report.results[5].detail, "the result is right");

    let a = &report.aggregate;
    assert_eq!((a.tasks, a.passed, a.failed, a.errors), (6, 3, 3, 1));
    assert_eq!(a.pass_rate, 0.5);
    assert_eq!(
        a.mean_score,
        [1.0, 1.0, 0.0, 0.0, 0.5, 0.9].iter().sum::<f64>() / 6.0
    );
    assert_eq!((a.cost_micros, a.cost_usd.as_str()), (50, "0.000050"));
    assert_eq!(
        (a.judge_cost_micros, a.judge_cost_usd.as_str()),
        (100, "0.000100")
    );
    // Latencies 10, 20, 30, (d: measured, under 10), 50, 60 ms.
    assert!(
        report.results[3].latency_ms < 10.0,
        "{}",
        report.results[3].latency_ms
    );
    assert_eq!(report.results[1].latency_ms, 20.0);
    assert_eq!(
        (a.latency_p50_ms, a.latency_p95_ms, a.latency_max_ms),
        (20.0, 60.0, 60.0)
    );
    assert_eq!(report.name, "exact");
    assert_eq!(report.subject, "calculator");
    assert!(
        time::OffsetDateTime::parse(
            &report.started_at,
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    assert!(report.duration_ms >= 135, "{}", report.duration_ms);
}

#[tokio::test]
async fn judge_tasks_without_a_judge_and_panicking_subjects_are_task_errors() {
    struct Fragile;
    #[async_trait::async_trait]
    impl Subject for Fragile {
        fn label(&self) -> String {
            "fragile".to_owned()
        }
        async fn run(&self, task: &Task) -> Result<Outcome> {
            if task.id == "boom" {
                panic!("subject bug");
            }
            Ok(Outcome {
                output: json!("ok"),
                ..Outcome::default()
            })
        }
    }
    let tasks = parse_task_set(
        "{\"id\": \"judged\", \"input\": 1, \"scorer\": {\"type\": \"judge\", \"model\": \"m\"}}\n\
         {\"id\": \"boom\", \"input\": 1, \"expected\": \"ok\"}\n\
         {\"id\": \"fine\", \"input\": 1, \"expected\": \"ok\"}",
    )
    .unwrap();
    let report = run_eval(&tasks, &Fragile, None, &RunOptions::default()).await;
    let errors: Vec<(&str, Option<&str>)> = report
        .results
        .iter()
        .map(|r| (r.id.as_str(), r.error.as_deref()))
        .collect();
    assert_eq!(
        errors,
        [
            (
                "judged",
                Some("eval: task `judged` has a judge scorer but the eval has no judge")
            ),
            ("boom", Some("the subject panicked: subject bug")),
            ("fine", None),
        ]
    );
    // The judged task kept its output although it could not be scored.
    assert_eq!(report.results[0].output, json!("ok"));
    assert_eq!((report.aggregate.passed, report.aggregate.errors), (1, 2));
}

/// Counts the runs in flight and the most at once.
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

#[async_trait::async_trait]
impl Subject for Gauge {
    fn label(&self) -> String {
        "gauge".to_owned()
    }

    async fn run(&self, _: &Task) -> Result<Outcome> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(Outcome {
            output: json!("x"),
            ..Outcome::default()
        })
    }
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let tasks: Vec<Task> = (0..24)
        .map(|i| {
            Task::new(
                format!("t{i}"),
                json!(i),
                Some(json!("x")),
                Scorer::default(),
            )
            .unwrap()
        })
        .collect();
    for (limit, expect_max) in [(0, 1), (1, 1), (3, 3), (8, 8)] {
        let gauge = Gauge {
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
        };
        let options = RunOptions {
            concurrency: limit,
            ..RunOptions::default()
        };
        let report = run_eval(&tasks, &gauge, None, &options).await;
        assert_eq!(report.aggregate.passed, 24);
        let max = gauge.max.load(Ordering::SeqCst);
        assert!(max <= expect_max, "limit {limit}: {max} in flight");
        if expect_max > 1 {
            assert!(max > 1, "limit {limit}: runs did not overlap");
        }
    }
}

#[tokio::test]
async fn an_empty_task_set_gives_an_empty_report() {
    let report = run_eval(&[], &Calculator::new(), None, &RunOptions::default()).await;
    assert_eq!(report.name, "eval");
    assert_eq!(
        (
            report.aggregate.tasks,
            report.aggregate.pass_rate,
            report.aggregate.mean_score
        ),
        (0, 0.0, 0.0)
    );
    assert_eq!(report.aggregate.latency_max_ms, 0.0);
    assert!(report.to_markdown().contains("| tasks | 0 |"));
}

// ---------------------------------------------------------------------------------------------
// Reports

fn sample_report() -> Report {
    let mut tricky = result("tricky|id", 0.25, false, 7);
    tricky.output = json!(format!("line one | pipe\nline two <b>{}", "z".repeat(200)));
    tricky.error = Some("boom\nagain".to_owned());
    tricky.episode = Some("inference-42".to_owned());
    tricky.tags = vec!["hard".to_owned()];
    let mut judged = result("judged", 0.75, true, 3);
    judged.judge_cost_micros = 1_000_000;
    judged.expected = None;
    judged.output = json!({"answer": 4});
    Report::new(
        "sample run",
        "model sim-large",
        "2025-01-02T03:04:05Z",
        1234,
        vec![result("plain", 1.0, true, 5), tricky, judged],
    )
}

#[test]
fn the_aggregate_of_a_built_report() {
    let a = sample_report().aggregate;
    assert_eq!((a.tasks, a.passed, a.failed, a.errors), (3, 2, 1, 1));
    assert_eq!(a.mean_score, 2.0 / 3.0);
    assert_eq!((a.cost_micros, a.cost_usd.as_str()), (15, "0.000015"));
    assert_eq!(a.judge_cost_usd, "1.000000");
}

#[test]
fn markdown_escapes_cells_and_truncates_outputs() {
    let md = sample_report().to_markdown();
    assert!(md.starts_with("# Eval report: sample run\n"), "{md}");
    assert!(md.contains("| passed | 2 (66.7%) |"), "{md}");
    assert!(md.contains("| mean score | 0.667 |"), "{md}");
    assert!(md.contains("tricky\\|id"), "{md}");
    assert!(
        md.contains("line one \\| pipe<br>line two &lt;b&gt;zz"),
        "{md}"
    );
    assert!(md.contains("boom<br>again"), "{md}");
    assert!(md.contains("…"), "long outputs are truncated");
    assert!(!md.contains(&"z".repeat(100)), "{md}");
    assert!(md.contains("{\"answer\":4}"), "{md}");
    // Every task row of the table has the same number of unescaped separators.
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| 1 ") || l.starts_with("| 2 ") || l.starts_with("| 3 "))
        .collect();
    assert_eq!(rows.len(), 3, "{md}");
    for row in rows {
        let cells = row.replace("\\|", "").matches('|').count();
        assert_eq!(cells, 10, "{row}");
    }
}

#[test]
fn the_terminal_table_shows_every_task_and_the_aggregate() {
    let table = sample_report().to_table();
    for needle in [
        "plain",
        "tricky|id",
        "judged",
        "ERROR",
        "pass",
        "mean score",
        "0.667",
        "model sim-large",
    ] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }
    // A line break in an output does not break the table's row.
    assert!(
        table
            .lines()
            .any(|l| l.contains("line one | pipe line two")),
        "{table}"
    );
}

#[test]
fn reports_round_trip_through_files() {
    let dir = tempfile::tempdir().unwrap();
    let report = sample_report();
    let (json_path, md_path) = report.write_files(dir.path().join("runs/v1.2")).unwrap();
    assert_eq!(json_path, dir.path().join("runs/v1.2.json"));
    assert_eq!(md_path, dir.path().join("runs/v1.2.md"));
    assert_eq!(
        std::fs::read_to_string(&md_path).unwrap(),
        report.to_markdown()
    );
    let loaded = Report::load(&json_path).unwrap();
    assert_eq!(loaded, report);
    assert_eq!(loaded.to_json().unwrap(), report.to_json().unwrap());

    // Into an existing directory, named after the report.
    let (json_path, _) = report.write_files(dir.path()).unwrap();
    assert_eq!(json_path, dir.path().join("sample-run.json"));
    assert_eq!(Report::load(&json_path).unwrap(), report);

    let err = Report::load(&md_path).unwrap_err();
    assert!(err.to_string().contains("not an eval report"), "{err}");
    let err = Report::load(dir.path().join("none.json")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[tokio::test]
async fn a_run_report_round_trips() {
    let tasks = load_task_set(arith_path()).unwrap();
    let judge = ArithmeticJudge {
        calls: AtomicUsize::new(0),
    };
    let report = run_eval(
        &tasks,
        &Calculator::new(),
        Some(&judge),
        &RunOptions::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (json_path, _) = report.write_files(dir.path().join("arith")).unwrap();
    let loaded = Report::load(json_path).unwrap();
    assert_eq!(loaded.aggregate, report.aggregate);
    assert_eq!(loaded.results.len(), tasks.len());
    assert_eq!(loaded.results[0].episode.as_deref(), Some("run-add-small"));
}

// ---------------------------------------------------------------------------------------------
// Comparisons

#[test]
fn compare_finds_regressions_and_improvements() {
    let base = Report::new(
        "base",
        "model small",
        "2025-01-01T00:00:00Z",
        10,
        vec![
            result("same", 1.0, true, 100),
            result("broke", 1.0, true, 100),
            result("fixed", 0.0, false, 100),
            result("slipped", 0.9, true, 100),
            result("better", 0.5, false, 100),
            result("dropped", 1.0, true, 100),
            result("noise", 0.8, true, 100),
        ],
    );
    let mut candidate = Report::new(
        "candidate",
        "model large",
        "2025-01-02T00:00:00Z",
        10,
        vec![
            result("added", 1.0, true, 50),
            result("same", 1.0, true, 50),
            result("broke", 0.0, false, 50),
            result("fixed", 1.0, true, 50),
            result("slipped", 0.7, true, 50),
            result("better", 0.6, false, 50),
            result("noise", 0.8 + 1e-12, true, 50),
        ],
    );
    candidate.aggregate.latency_p50_ms = 10.0;

    let cmp = compare(&base, &candidate);
    let statuses: Vec<(&str, Status)> = cmp
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), t.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("same", Status::Unchanged),
            ("broke", Status::Regressed),
            ("fixed", Status::Improved),
            ("slipped", Status::Regressed),
            ("better", Status::Improved),
            ("dropped", Status::OnlyInBase),
            ("noise", Status::Unchanged),
            ("added", Status::OnlyInCandidate),
        ]
    );
    let regressed: Vec<&str> = cmp.regressions().iter().map(|t| t.id.as_str()).collect();
    assert_eq!(regressed, ["broke", "slipped"]);
    let slipped = &cmp.tasks[3];
    assert_eq!(
        (slipped.base_score, slipped.candidate_score),
        (Some(0.9), Some(0.7))
    );
    assert!((slipped.delta.unwrap() + 0.2).abs() < 1e-12);
    assert_eq!(cmp.tasks[5].candidate_score, None);

    let a = &cmp.aggregate;
    assert_eq!(
        (
            a.regressed,
            a.improved,
            a.unchanged,
            a.only_in_base,
            a.only_in_candidate
        ),
        (2, 2, 2, 1, 1)
    );
    assert_eq!(
        (a.pass_rate.base, a.pass_rate.candidate),
        (5.0 / 7.0, 5.0 / 7.0)
    );
    assert_eq!(a.pass_rate.delta, 0.0);
    assert_eq!(
        (
            a.cost.base_micros,
            a.cost.candidate_micros,
            a.cost.delta_micros
        ),
        (700, 350, -350)
    );
    assert_eq!(
        (
            a.latency_p50_ms.base,
            a.latency_p50_ms.candidate,
            a.latency_p50_ms.delta
        ),
        (12.5, 10.0, -2.5)
    );
    assert_eq!(
        a.mean_score.delta,
        candidate.aggregate.mean_score - base.aggregate.mean_score
    );

    let md = cmp.to_markdown();
    assert!(
        md.starts_with("# Eval comparison: base vs candidate"),
        "{md}"
    );
    let regressions = md
        .split("## Regressions")
        .nth(1)
        .expect("a regressions section");
    let regressions = regressions.split("## Changes").next().unwrap();
    assert!(
        regressions.contains("| broke | 1.000 ✓ | 0.000 ✗ | -1.000 |"),
        "{md}"
    );
    assert!(regressions.contains("| slipped |"), "{md}");
    assert!(!regressions.contains("| fixed |"), "{md}");
    assert!(md.contains("| fixed | improved |"), "{md}");
    assert!(
        md.contains("| dropped | only_in_base | 1.000 ✓ | — | — |"),
        "{md}"
    );
    assert!(
        md.contains("| cost ($) | 0.000700 | 0.000350 | -0.000350 |"),
        "{md}"
    );
    assert!(
        md.contains("2 regressed, 2 improved, 2 unchanged, 1 only in base, 1 only in candidate"),
        "{md}"
    );
    assert!(
        !md.contains("| same |"),
        "unchanged tasks are left out: {md}"
    );

    let table = cmp.to_table();
    for needle in [
        "broke",
        "regressed",
        "only_in_candidate",
        "pass rate",
        "71.4%",
    ] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }

    let json = cmp.to_json().unwrap();
    let value: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["tasks"][1]["status"], "regressed");
    assert_eq!(value["tasks"][7]["status"], "only_in_candidate");
    assert_eq!(
        serde_json::from_str::<switchyard_workflows::eval::Comparison>(&json).unwrap(),
        cmp
    );
}

#[test]
fn comparing_a_report_with_itself_changes_nothing() {
    let report = sample_report();
    let cmp = compare(&report, &report);
    assert!(cmp.regressions().is_empty());
    assert!(cmp.tasks.iter().all(|t| t.status == Status::Unchanged));
    assert!(!cmp.to_markdown().contains("## Regressions"));
}
