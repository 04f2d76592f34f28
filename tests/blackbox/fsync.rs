//! An acknowledged inference is on disk, not only in the page cache, before its answer leaves.
//!
//! A crash test kills the process, which leaves the OS page cache intact, so it would pass with
//! fsync off. Here the real binary runs under `strace -f`, and the trace is read back: for every
//! answered chat completion, the write-ahead log's file (`events.db-wal`) received a write
//! holding the inference's stream id, then an `fsync`/`fdatasync` of that same file descriptor,
//! and only then did the HTTP answer naming that inference go out on its socket. In `batched`
//! durability the answer goes first, and the same check says so (the second test).
//!
//! `strace` must be installed (`scripts/services.sh` installs it); the test fails without it.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

/// Sequential completions per run.
const REQUESTS: usize = 8;

const CONFIG: &str = r#"
[[providers]]
name = "sim"
kind = "sim"
[[models]]
name = "sim-small"
provider = "sim"
input_usd_per_million = "1"
sim = { latency_ms = 0 }
"#;

/// One system call in the trace: the lines where it began and ended (a call another thread
/// interrupted is printed `<unfinished ...>` at its start and `<... resumed>` at its end).
#[derive(Debug)]
struct Call {
    start: usize,
    end: usize,
    name: String,
    /// Everything after the name: arguments, then ` = ` and the result.
    text: String,
}

impl Call {
    /// The first argument as a file descriptor.
    fn fd(&self) -> Option<i64> {
        let args = self.text.strip_prefix('(')?;
        args.split([',', ')']).next()?.trim().parse().ok()
    }

    /// The result, when it is a number.
    fn result(&self) -> Option<i64> {
        let (_, result) = self.text.rsplit_once(" = ")?;
        result.split_whitespace().next()?.parse().ok()
    }

    /// The first quoted argument (a path for `openat`), as strace prints it.
    fn quoted(&self) -> Option<&str> {
        let from = self.text.find('"')? + 1;
        let len = self.text[from..].find('"')?;
        Some(&self.text[from..from + len])
    }
}

/// The calls of an `strace -f -tt` trace: `PID TIME name(args) = result`, split lines joined.
fn parse(trace: &str) -> Vec<Call> {
    let mut pending: HashMap<&str, (usize, String)> = HashMap::new();
    let mut calls = Vec::new();
    for (index, line) in trace.lines().enumerate() {
        // strace pads a short pid to five columns (`9975  12:00:00.000001 ...`), so the fields
        // are split on runs of spaces.
        let Some((pid, after)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((_time, rest)) = after.trim_start().split_once(' ') else {
            continue;
        };
        if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, (index, head.to_owned()));
            continue;
        }
        let (start, whole) = match rest.strip_prefix("<... ") {
            Some(resumed) => {
                let Some((_, tail)) = resumed.split_once(" resumed>") else {
                    continue;
                };
                let Some((start, head)) = pending.remove(pid) else {
                    continue;
                };
                (start, format!("{head}{tail}"))
            }
            None => (index, rest.to_owned()),
        };
        let Some(open) = whole.find('(') else {
            continue;
        };
        calls.push(Call {
            start,
            end: index,
            name: whole[..open].to_owned(),
            text: whole[open..].to_owned(),
        });
    }
    calls.sort_by_key(|call| call.end);
    calls
}

#[test]
fn the_parser_reads_padded_pids_and_joins_resumed_calls() {
    let trace = "\
9998  12:00:00.000001 pwrite64(11, \"abc\", 3, 0) = 3
9999  12:00:00.000002 fsync(11 <unfinished ...>
10000 12:00:00.000003 sendto(5, \"HTTP/1.1 200 OK\", 15, 0, NULL, 0) = 15
9999  12:00:00.000004 <... fsync resumed>) = 0
";
    let calls = parse(trace);
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["pwrite64", "sendto", "fsync"]);
    let fsync = &calls[2];
    assert_eq!(
        (fsync.start, fsync.end, fsync.fd(), fsync.result()),
        (1, 3, Some(11), Some(0))
    );
    assert_eq!(calls[0].result(), Some(3));
}

/// For each inference id, why its answer was not preceded by a write of its events to the
/// log's WAL and an fsync of that file; empty when every answer was.
fn unsynced(calls: &[Call], ids: &[String]) -> Vec<String> {
    // Each call with the file its descriptor named then (descriptors are reused after close).
    let mut open: HashMap<i64, String> = HashMap::new();
    let mut files: Vec<Option<String>> = Vec::with_capacity(calls.len());
    for call in calls {
        files.push(call.fd().and_then(|fd| open.get(&fd).cloned()));
        match call.name.as_str() {
            "openat" => {
                if let (Some(fd), Some(path)) = (call.result(), call.quoted()) {
                    open.insert(fd, path.to_owned());
                }
            }
            "close" => {
                if let Some(fd) = call.fd() {
                    open.remove(&fd);
                }
            }
            _ => {}
        }
    }
    let wal = |i: usize| {
        files[i]
            .as_deref()
            .is_some_and(|f| f.ends_with("/events.db-wal"))
    };
    let mut problems = Vec::new();
    for id in ids {
        let answer = calls.iter().position(|c| {
            ["write", "writev", "sendto", "sendmsg"].contains(&c.name.as_str())
                && c.text.contains("HTTP/1.1 200")
                && c.text.contains(id.as_str())
        });
        let Some(answer) = answer else {
            problems.push(format!("{id}: no HTTP answer naming it in the trace"));
            continue;
        };
        let answered_at = calls[answer].start;
        // The last write of its events to the WAL that ended before the answer began.
        let written = (0..calls.len()).rev().find(|&i| {
            calls[i].name == "pwrite64"
                && calls[i].end < answered_at
                && wal(i)
                && calls[i].text.contains(id.as_str())
        });
        let Some(written) = written else {
            problems.push(format!(
                "{id}: answered (trace line {}) before any write of it to events.db-wal",
                answered_at + 1
            ));
            continue;
        };
        let fd = calls[written].fd();
        let synced = (0..calls.len()).any(|i| {
            ["fsync", "fdatasync"].contains(&calls[i].name.as_str())
                && calls[i].fd() == fd
                && calls[i].start > calls[written].end
                && calls[i].end < answered_at
        });
        if !synced {
            problems.push(format!(
                "{id}: written to events.db-wal (trace line {}) but answered (line {}) before an fsync of it",
                calls[written].end + 1,
                answered_at + 1
            ));
        }
    }
    problems
}

/// The parent process id in `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// The traced server process, killed when dropped (killing strace would leave it running).
struct Tracee(u32);

impl Tracee {
    /// The child strace started.
    fn of(strace: u32) -> Tracee {
        let pids = std::fs::read_dir("/proc").unwrap();
        let child = pids
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&pid| parent_of(pid) == Some(strace))
            .expect("strace has a child process");
        Tracee(child)
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

/// Runs `REQUESTS` sequential completions against the binary under strace in `durability`
/// mode; returns each answer's inference id and `x-switchyard-position`, and the trace.
async fn traced_completions(dir: &Path, durability: &str) -> (Vec<(String, Option<u64>)>, String) {
    let strace = which("strace").expect(
        "strace is required to watch the server's fsyncs (scripts/services.sh installs it)",
    );
    let config = dir.join("config.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let trace = dir.join("strace.txt");
    let mut server = Server::start_wrapped(
        dir,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
            ("SWITCHYARD_DURABILITY", durability),
        ],
        &[
            strace.to_str().unwrap(),
            "-f",
            "--seccomp-bpf",
            "-tt",
            "-s",
            "8192",
            "-e",
            "trace=openat,close,pwrite64,fsync,fdatasync,write,writev,sendto,sendmsg",
            "-o",
            trace.to_str().unwrap(),
        ],
    );
    let tracee = Tracee::of(server.pid());
    let (_, key, _) = tenant_with_key(&server).await;
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for n in 0..REQUESTS {
        let response = client
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "sim-small",
                          "messages": [{"role": "user", "content": format!("request {n}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let id = header("x-switchyard-inference-id").expect("an inference id");
        let position = header("x-switchyard-position").and_then(|p| p.parse().ok());
        answers.push((id, position));
        response.bytes().await.unwrap();
    }
    // The trace is complete once strace has seen its tracee die.
    drop(tracee);
    server.wait();
    (answers, std::fs::read_to_string(&trace).unwrap())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

#[tokio::test]
async fn an_answered_completion_was_fsynced_to_the_log_before_its_answer_left() {
    let dir = data_dir();
    let (answers, trace) = traced_completions(&dir, "durable").await;
    let calls = parse(&trace);
    let ids: Vec<String> = answers.iter().map(|(id, _)| id.clone()).collect();
    let problems = unsynced(&calls, &ids);
    assert!(
        problems.is_empty(),
        "{} of {REQUESTS} answers were not durable when sent (trace: {}):\n{}",
        problems.len(),
        dir.join("strace.txt").display(),
        problems.join("\n")
    );
    // Each answer names its place in the log, in order.
    let positions: Vec<u64> = answers
        .iter()
        .map(|(id, position)| position.unwrap_or_else(|| panic!("{id}: no position")))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]) && positions[0] > 0,
        "{positions:?}"
    );
}

/// The check above can fail: in `batched` durability the answer leaves before its events are
/// written, and the trace shows it for (nearly) every answer.
#[tokio::test]
async fn in_batched_durability_the_trace_shows_answers_leaving_before_their_fsync() {
    let dir = data_dir();
    let (answers, trace) = traced_completions(&dir, "batched").await;
    let calls = parse(&trace);
    let ids: Vec<String> = answers.iter().map(|(id, _)| id.clone()).collect();
    let problems = unsynced(&calls, &ids);
    assert!(
        !problems.is_empty(),
        "every batched answer looked durable (trace: {})",
        dir.join("strace.txt").display()
    );
    // The events were written all the same, after the answers: the check found the writes.
    assert!(
        calls
            .iter()
            .any(|c| c.name == "fdatasync" || c.name == "fsync"),
        "no fsync at all in the trace"
    );
}
