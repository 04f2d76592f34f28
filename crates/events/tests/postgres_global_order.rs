//! Deterministic tests of the PostgreSQL global order: a transaction that took a position and
//! commits late, a rolled-back append, an idle-in-transaction session, and two nodes writing to
//! one log. Readers must see every committed event exactly once and never skip one.
//!
//! With BIGSERIAL positions the first test is the classic failure: B commits position 3 while A
//! still holds 2, a reader advances past 3 and never sees 2. Here writers serialise on the
//! store's advisory lock, so B cannot even take a position until A has committed or rolled back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use sqlx::{Connection, PgConnection};
use switchyard_events::{
    EventId, EventStore, EventStream, ExpectedVersion, GlobalPosition, Metadata, NewEvent,
    PostgresOptions, PostgresStore, RecordedEvent, Scope, StreamId, TenantId,
};

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|_| NewEvent {
            event_id: EventId::new(),
            event_type: "GapProbe".into(),
            schema_version: 1,
            payload: Bytes::from_static(b"\x01probe"),
            metadata: Metadata::default(),
        })
        .collect()
}

fn stream(name: &str) -> StreamId {
    StreamId::parse(format!("gap-{name}")).unwrap()
}

async fn next(subscription: &mut EventStream) -> RecordedEvent {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("nothing delivered within 10 s")
        .expect("subscription ended")
        .expect("subscription failed")
}

async fn nothing_more(subscription: &mut EventStream) {
    let extra = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await;
    assert!(extra.is_err(), "unexpected delivery: {extra:?}");
}

/// Waits until a session is blocked on *this store's* write lock (our appender behind
/// transaction A), so the test proves B queued rather than assuming it.
async fn wait_for_lock_waiter(store: &PostgresStore) {
    let key = store.write_lock_key().cast_unsigned();
    let (classid, objid) = (
        i64::try_from(key >> 32).unwrap(),
        i64::try_from(key & 0xffff_ffff).unwrap(),
    );
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1",
        )
        .bind(classid)
        .bind(objid)
        .fetch_one(store.pool())
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the second appender never queued behind the first transaction");
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.global_position.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_commits_late_is_seen_exactly_once_and_in_order() {
    let store = common::postgres_store().await;
    let tenant = TenantId::new();
    store
        .append(
            tenant,
            &stream("before"),
            ExpectedVersion::NoStream,
            events(1),
        )
        .await
        .unwrap();
    let mut subscription = store.subscribe_all(Scope::All, GlobalPosition(1));

    // A takes position 2 and holds its transaction open.
    let mut a = store.pool().begin().await.unwrap();
    let a_result = store
        .append_in(
            &mut a,
            tenant,
            &stream("a"),
            ExpectedVersion::NoStream,
            events(1),
        )
        .await
        .unwrap();
    assert_eq!(a_result.positions, vec![GlobalPosition(2)]);

    // B appends afterwards. It must not commit ahead of A: it queues on the write lock.
    let b_task = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(tenant, &stream("b"), ExpectedVersion::NoStream, events(1))
                .await
        })
    };
    wait_for_lock_waiter(&store).await;

    // A reader now sees nothing after position 1: no later position can be visible before 2.
    assert!(
        store
            .read_all(Scope::All, GlobalPosition(1), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.head().await.unwrap(), GlobalPosition(1));
    nothing_more(&mut subscription).await;
    assert!(!b_task.is_finished());

    a.commit().await.unwrap();
    let b_result = b_task.await.unwrap().unwrap();
    assert_eq!(b_result.positions, vec![GlobalPosition(3)]);

    let read = store
        .read_all(Scope::All, GlobalPosition(1), 100)
        .await
        .unwrap();
    assert_eq!(positions(&read), vec![2, 3]);
    assert_eq!(read[0].stream_id, stream("a"));
    assert_eq!(read[1].stream_id, stream("b"));
    assert_eq!(
        next(&mut subscription).await.global_position,
        GlobalPosition(2)
    );
    assert_eq!(
        next(&mut subscription).await.global_position,
        GlobalPosition(3)
    );
    nothing_more(&mut subscription).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_append_leaves_no_hole_and_is_never_delivered() {
    let store = common::postgres_store().await;
    let tenant = TenantId::new();
    let mut subscription = store.subscribe_all(Scope::All, GlobalPosition::START);

    let mut a = store.pool().begin().await.unwrap();
    let doomed = store
        .append_in(
            &mut a,
            tenant,
            &stream("a"),
            ExpectedVersion::NoStream,
            events(2),
        )
        .await
        .unwrap();
    assert_eq!(doomed.positions, vec![GlobalPosition(1), GlobalPosition(2)]);
    let b_task = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(tenant, &stream("b"), ExpectedVersion::NoStream, events(1))
                .await
        })
    };
    wait_for_lock_waiter(&store).await;
    a.rollback().await.unwrap();

    // B takes the first free position: the rollback burned nothing.
    let b_result = b_task.await.unwrap().unwrap();
    assert_eq!(b_result.positions, vec![GlobalPosition(1)]);
    let delivered = next(&mut subscription).await;
    assert_eq!(
        (delivered.global_position, delivered.stream_id.clone()),
        (GlobalPosition(1), stream("b"))
    );
    nothing_more(&mut subscription).await;
    assert!(
        store
            .stream_metadata(Scope::All, &stream("a"))
            .await
            .unwrap()
            .is_none()
    );
    // The rolled-back stream can still be created afresh.
    store
        .append(tenant, &stream("a"), ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    assert_eq!(
        positions(
            &store
                .read_all(Scope::All, GlobalPosition::START, 10)
                .await
                .unwrap()
        ),
        vec![1, 2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_in_refuses_a_snapshot_isolated_transaction() {
    let store = common::postgres_store().await;
    let mut tx = store
        .pool()
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let err = store
        .append_in(
            &mut tx,
            TenantId::new(),
            &stream("rr"),
            ExpectedVersion::NoStream,
            events(1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, switchyard_events::Error::Transaction(_)),
        "{err:?}"
    );
    tx.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_sessions_hold_back_neither_writers_nor_readers() {
    let store = common::postgres_store().await;
    let tenant = TenantId::new();
    // One idle session that holds a transaction id (the worst case for designs that read below
    // the oldest running transaction) and one that holds only a snapshot.
    let mut with_xid = PgConnection::connect(&common::database_url())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut with_xid).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut with_xid)
        .await
        .unwrap();
    let mut with_snapshot = PgConnection::connect(&common::database_url())
        .await
        .unwrap();
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut with_snapshot)
        .await
        .unwrap();
    sqlx::query("SELECT 1")
        .execute(&mut with_snapshot)
        .await
        .unwrap();
    let idle: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(idle >= 2, "the idle sessions are not idle in transaction");

    let mut subscription = store.subscribe_all(Scope::All, GlobalPosition::START);
    for i in 0..5 {
        store
            .append(
                tenant,
                &stream(&format!("s{i}")),
                ExpectedVersion::NoStream,
                events(2),
            )
            .await
            .unwrap();
    }
    for expected in 1..=10 {
        assert_eq!(
            next(&mut subscription).await.global_position,
            GlobalPosition(expected)
        );
    }
    assert_eq!(
        store
            .read_all(Scope::All, GlobalPosition::START, 100)
            .await
            .unwrap()
            .len(),
        10
    );
    sqlx::query("ROLLBACK")
        .execute(&mut with_xid)
        .await
        .unwrap();
    sqlx::query("ROLLBACK")
        .execute(&mut with_snapshot)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_writing_one_log_produce_one_gapless_order_seen_by_both() {
    let first = common::postgres_store().await;
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(first.pool())
        .await
        .unwrap();
    let second =
        PostgresStore::connect(PostgresOptions::new(common::database_url()).schema(schema))
            .await
            .unwrap();
    let tenant = TenantId::new();
    let mut on_first = first.subscribe_all(Scope::All, GlobalPosition::START);
    let mut on_second = second.subscribe_all(Scope::All, GlobalPosition::START);

    let mut tasks = Vec::new();
    for node in [first.clone(), second.clone()] {
        for w in 0..4 {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..25 {
                    let batch = events(1 + i % 2);
                    ids.extend(batch.iter().map(|e| e.event_id));
                    node.append(
                        tenant,
                        &stream(&format!("w{w}")),
                        ExpectedVersion::Any,
                        batch,
                    )
                    .await
                    .unwrap();
                }
                ids
            }));
        }
    }
    let mut appended = std::collections::HashSet::new();
    for task in tasks {
        appended.extend(task.await.unwrap());
    }
    let total = appended.len() as u64;
    let all = first
        .read_all(Scope::All, GlobalPosition::START, 10_000)
        .await
        .unwrap();
    assert_eq!(positions(&all), (1..=total).collect::<Vec<_>>());
    for subscription in [&mut on_first, &mut on_second] {
        let mut seen = std::collections::HashSet::new();
        for expected in 1..=total {
            let event = next(subscription).await;
            assert_eq!(event.global_position, GlobalPosition(expected));
            assert!(seen.insert(event.event_id));
        }
        assert_eq!(seen, appended);
    }
}
