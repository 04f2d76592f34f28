//! The SQLite log's writer thread (issue 14: a commit wakes one thread, not a runtime worker, a
//! blocking-pool thread and the worker again): it exists while the store does, answers
//! appenders on any kind of runtime, and ends with the store, so a process that opens and closes
//! stores does not gather threads.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_events::{
    EventId, EventStore, ExpectedVersion, GlobalPosition, Metadata, NewEvent, Scope, SqliteStore,
    StreamId, TenantId,
};

fn writer_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "sqlite-writer")
        .count()
}

async fn wait_for_writer_threads(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while writer_threads() != n {
        assert!(
            Instant::now() < deadline,
            "expected {n} writer threads, found {}",
            writer_threads()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn probe(n: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: "WriterProbe".into(),
        schema_version: 1,
        payload: Bytes::from(n.to_le_bytes().to_vec()),
        metadata: Metadata::default(),
    }
}

/// One test, not several: `cargo test` (without nextest) would run tests as threads of one
/// process, and each would count the others' writer threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_thread_per_store_answering_every_runtime_and_ending_with_the_store() {
    let dir = common::test_dir();
    let path = dir.join("events.db");
    assert_eq!(writer_threads(), 0);
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let other = SqliteStore::open(dir.join("other.db")).await.unwrap();
    wait_for_writer_threads(2).await;
    let tenant = TenantId::new();

    // Appends from a single-threaded runtime on another thread are answered, in order.
    let serial = store.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let stream = StreamId::parse("probe-serial").unwrap();
            let mut expected = ExpectedVersion::NoStream;
            for n in 0..20 {
                let result = serial
                    .append(tenant, &stream, expected, vec![probe(n)])
                    .await
                    .unwrap();
                expected = ExpectedVersion::Exact(result.stream_version);
            }
        });
    })
    .join()
    .unwrap();

    // 64 concurrent appenders on this multi-threaded runtime each get their own outcome: a
    // second append expecting no stream loses, and says so, without failing the others.
    let mut tasks = Vec::new();
    for n in 0..64_u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::parse(format!("probe-{n}")).unwrap();
            let first = store
                .append(tenant, &stream, ExpectedVersion::NoStream, vec![probe(n)])
                .await
                .unwrap();
            let lost = store
                .append(tenant, &stream, ExpectedVersion::NoStream, vec![probe(n)])
                .await;
            (first.positions.len(), lost.is_err())
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), (1, true));
    }
    assert_eq!(writer_threads(), 2);

    drop(store);
    wait_for_writer_threads(1).await;
    drop(other);
    wait_for_writer_threads(0).await;

    // The writer let go of the file: a new store on it reads every event back, densely.
    let reopened = SqliteStore::open(&path).await.unwrap();
    let events = reopened
        .read_all(Scope::All, GlobalPosition::START, 1000)
        .await
        .unwrap();
    let positions: Vec<u64> = events.iter().map(|e| e.global_position.0).collect();
    assert_eq!(positions, (1..=84).collect::<Vec<_>>(), "dense, in order");
    let serial: Vec<u64> = events
        .iter()
        .filter(|e| e.stream_id.as_str() == "probe-serial")
        .map(|e| u64::from_le_bytes(e.payload[..8].try_into().unwrap()))
        .collect();
    assert_eq!(serial, (0..20).collect::<Vec<_>>());
}
