//! `switchyard sim workload` and `switchyard router bench` (issue 16): the generator is
//! deterministic and its tasks score exactly; the bench drives a real server once per policy
//! and reports numbers that agree with what it served.

use std::process::Command;

use serde_json::Value;

use crate::server::data_dir;

fn switchyard(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_remove("SWITCHYARD_CONFIG")
        .env_remove("SWITCHYARD_DATABASE_URL")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_workload_is_the_same_for_the_same_seed_and_reads_as_an_eval_task_set() {
    let (ok, first, err) = switchyard(&["sim", "workload", "--n", "300", "--seed", "42"]);
    assert!(ok, "{err}");
    let (_, again, _) = switchyard(&["sim", "workload", "--n", "300", "--seed", "42"]);
    assert_eq!(first, again);
    let (_, other, _) = switchyard(&["sim", "workload", "--n", "300", "--seed", "43"]);
    assert_ne!(first, other);
    let lines: Vec<Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 300);
    for family in ["arithmetic", "extraction", "classification"] {
        let count = lines
            .iter()
            .filter(|l| l["tags"][0] == format!("family:{family}"))
            .count();
        assert!(count > 60, "{family}: {count}");
    }
    for line in &lines {
        assert_eq!(line["scorer"], "exact");
        assert!(
            line["input"].is_string() && !line["expected"].is_null(),
            "{line}"
        );
    }
}

#[test]
fn the_bench_serves_every_policy_and_reports_what_it_served() {
    let dir = data_dir();
    let out = dir.join("bench");
    let (ok, markdown, err) = switchyard(&[
        "router",
        "bench",
        "--n",
        "120",
        "--seed",
        "3",
        "--cost-weights",
        "0.15",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    for section in [
        "# Router bench",
        "APGR",
        "CPT(50%)",
        "## Off-policy",
        "## Targets",
    ] {
        assert!(markdown.contains(section), "{section}: {markdown}");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    // Two statics, the logger, cheapest, ε-greedy, Thompson, one LinUCB.
    assert_eq!(runs.len(), 7, "{report}");
    for run in runs {
        assert_eq!(run["requests"], 120, "{run}");
        let share = run["strong_share"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&share));
    }
    let run = |name: &str| runs.iter().find(|r| r["name"] == name).unwrap();
    assert_eq!(run("always sim-small")["strong_share"], 0.0);
    assert_eq!(run("always sim-large")["strong_share"], 1.0);
    assert!(
        run("always sim-large")["cost_usd"].as_f64() > run("always sim-small")["cost_usd"].as_f64()
    );
    // The oracle's curve is the best there is.
    let oracle = report["oracle"]["apgr"].as_f64().unwrap();
    assert!(oracle > 0.5 && oracle <= 1.0, "{oracle}");
    // Every policy at the common cost weight was judged on the logger's traffic.
    assert_eq!(report["ope"].as_array().unwrap().len(), 6, "{report}");
    for plot in ["quality.svg", "regret.svg"] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{plot}");
    }
}

#[test]
fn the_bench_refuses_bad_input_with_a_clear_error() {
    let dir = data_dir();
    let tasks = dir.join("tasks.jsonl");
    std::fs::write(&tasks, "{\"id\": \"a\", \"input\": \"x\"\nnot json\n").unwrap();
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    let (ok, _, err) = switchyard(&[
        "router",
        "bench",
        "--tasks",
        tasks.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert!(!ok);
    assert!(
        err.contains("line") || err.contains("JSON") || err.contains("json"),
        "{err}"
    );
    let (ok, _, err) = switchyard(&[
        "router", "bench", "--n", "5", "--weak", "ghost", "--out", out,
    ]);
    assert!(!ok);
    assert!(err.contains("ghost"), "{err}");
    let (ok, _, err) = switchyard(&["router", "bench", "--n", "0", "--out", out]);
    assert!(!ok);
    assert!(err.contains("no tasks"), "{err}");
}
