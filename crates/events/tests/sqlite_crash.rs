//! Crash safety of the embedded store: a child process appends in a loop and reports each
//! acknowledged append on a pipe; it is killed with SIGKILL at a random moment; the reopened
//! store must hold every acknowledged event, intact, with no hole in the global order. Repeated
//! on the same file, so recovery after recovery is covered too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use switchyard_events::{EventId, EventStore, GlobalPosition, Scope, SqliteStore};

const ROUNDS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill_intact_and_without_holes() {
    let path = common::test_dir().join("crash.db");
    let mut acknowledged: HashMap<EventId, u64> = HashMap::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard-append-probe"))
            .arg(&path)
            .arg("8")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the probe");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        // Start the clock only once the probe acknowledges its first append, so opening and
        // migrating the store on a slow machine cannot eat the whole window.
        let mut first = Vec::new();
        stdout
            .read_until(b'\n', &mut first)
            .expect("read the first acknowledgement");
        assert!(
            first.ends_with(b"\n"),
            "round {round}: the probe died before acknowledging anything"
        );
        let reader = std::thread::spawn(move || {
            // Only whole lines count: a line cut by the kill was never fully acknowledged.
            let mut lines = vec![first[..first.len() - 1].to_vec()];
            lines.extend(stdout.split(b'\n').map_while(Result::ok));
            lines
        });
        let kill_after = Duration::from_millis(rand::rng().random_range(20..600));
        let started = Instant::now();
        while started.elapsed() < kill_after {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the probe exited on its own"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL the probe");
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let before = acknowledged.len();
        for line in lines {
            let line = String::from_utf8(line).unwrap();
            let (id, position) = line.split_once(' ').unwrap();
            acknowledged.insert(id.parse().unwrap(), position.parse().unwrap());
        }
        assert!(
            acknowledged.len() > before,
            "round {round}: the probe acknowledged nothing before the kill"
        );

        let store = SqliteStore::open(&path).await.expect("reopen after kill");
        let all = store
            .read_all(Scope::All, GlobalPosition::START, 1_000_000)
            .await
            .unwrap();
        for (i, event) in all.iter().enumerate() {
            assert_eq!(
                event.global_position.0,
                i as u64 + 1,
                "hole in the global order"
            );
        }
        let by_id: HashMap<EventId, &switchyard_events::RecordedEvent> =
            all.iter().map(|e| (e.event_id, e)).collect();
        for (id, position) in &acknowledged {
            let event = by_id
                .get(id)
                .unwrap_or_else(|| panic!("round {round}: acknowledged event {id} lost"));
            assert_eq!(event.global_position.0, *position);
            assert_eq!(
                &event.payload[..],
                &id.as_uuid().as_bytes().repeat(12)[..],
                "payload damaged"
            );
        }
        drop(store);
    }
}
