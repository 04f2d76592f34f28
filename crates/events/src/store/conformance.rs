//! The backend conformance suite: one set of tests, written once, that every [`EventStore`]
//! backend runs through [`conformance_suite!`](crate::conformance_suite).
//!
//! Each function takes a fresh, empty store and panics (via `assert!`) when the backend breaks
//! the contract.
//!
//! A test file (built only with the `test-util` feature), kept in one piece: it is the written
//! contract of `EventStore`, read top to bottom, and the macro that runs it lists every test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rand::Rng;

use crate::envelope::{MAX_PAYLOAD_BYTES, Metadata, NewEvent, Snapshot};
use crate::error::Error;
use crate::ids::{EventId, GlobalPosition, StreamId, StreamVersion, TenantId};
use crate::store::{EventStore, ExpectedVersion, Scope};

/// Generates one `#[tokio::test]` per conformance check for a backend. `$make` is an async
/// expression that yields a fresh, empty store.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@tests $make;
            appended_events_read_back_in_order_with_their_envelope,
            no_stream_expectation_creates_once_and_then_conflicts,
            exact_expected_version_conflict_writes_nothing,
            any_expected_version_always_appends,
            a_losing_writer_burns_no_global_position,
            concurrent_writers_to_one_stream_have_exactly_one_winner_per_version,
            reappending_the_same_event_ids_is_a_noop_returning_original_positions,
            reusing_some_event_ids_in_another_append_is_rejected,
            read_all_is_one_global_order_across_streams,
            reads_start_after_the_given_position_and_honour_the_limit,
            subscription_catches_up_then_follows_live_appends,
            subscription_sees_every_event_exactly_once_under_concurrent_writers,
            snapshots_keep_the_newest_and_refuse_to_run_ahead,
            snapshots_and_stream_metadata_are_scoped_to_the_owning_tenant,
            another_tenant_cannot_replay_an_append_it_does_not_own,
            reads_are_scoped_to_one_tenant,
            a_stream_belongs_to_one_tenant_forever,
            large_payloads_roundtrip_and_oversized_ones_are_rejected,
            empty_appends_and_malformed_events_are_rejected,
            bad_stream_names_are_rejected,
            missing_streams_read_as_empty,
            a_lease_has_one_holder_until_it_is_dropped,
            a_live_subscription_yields_exactly_what_a_read_returns,
            blobs_are_per_tenant_and_go_on_request_or_at_expiry,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = $make.await;
                $crate::store::conformance::$name(std::sync::Arc::new(store)).await;
            }
        )*
    };
}

type Store = Arc<dyn EventStore>;

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: "ConformanceProbe".into(),
        schema_version: 1,
        payload: Bytes::from(n.to_le_bytes().to_vec()),
        metadata: Metadata::default(),
    }
}

fn events(n: u64) -> Vec<NewEvent> {
    (0..n).map(event).collect()
}

fn stream(name: &str) -> StreamId {
    StreamId::parse(format!("probe-{name}")).unwrap()
}

pub async fn appended_events_read_back_in_order_with_their_envelope(store: Store) {
    let tenant = TenantId::new();
    let s = stream("envelope");
    let mut batch = events(3);
    batch[1].metadata = Metadata {
        correlation_id: Some("req-123".into()),
        causation_id: Some(*EventId::new().as_uuid()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: Some("vendor=x".into()),
        actor: Some(crate::envelope::Actor {
            subject: "alice@example.com".into(),
            issuer: Some("https://idp.example.com/".into()),
            role: "platform-admin".into(),
            via: "oidc".into(),
        }),
    };
    batch[2].schema_version = 7;
    let result = store
        .append(tenant, &s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(result.stream_version, StreamVersion(3));
    assert_eq!(result.positions.len(), 3);
    assert!(!result.deduplicated);
    let read = store
        .read_stream(Scope::All, &s, StreamVersion::NONE, 100)
        .await
        .unwrap();
    assert_eq!(read.len(), 3);
    for (i, (got, sent)) in read.iter().zip(&batch).enumerate() {
        assert_eq!(got.event_id, sent.event_id);
        assert_eq!(got.tenant_id, tenant);
        assert_eq!(got.stream_id, s);
        assert_eq!(got.stream_version, StreamVersion(i as u64 + 1));
        assert_eq!(got.global_position, result.positions[i]);
        assert_eq!(got.event_type, sent.event_type);
        assert_eq!(got.schema_version, sent.schema_version);
        assert_eq!(got.metadata, sent.metadata);
        assert_eq!(got.payload, sent.payload);
        let age = time::OffsetDateTime::now_utc() - got.recorded_at;
        assert!(
            age >= -time::Duration::seconds(5) && age < time::Duration::minutes(5),
            "recorded_at {age}"
        );
    }
    let meta = store
        .stream_metadata(Scope::All, &s)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((meta.tenant_id, meta.version), (tenant, StreamVersion(3)));
    assert_eq!(store.head().await.unwrap(), result.last_position());
}

pub async fn no_stream_expectation_creates_once_and_then_conflicts(store: Store) {
    let tenant = TenantId::new();
    let s = stream("create");
    store
        .append(tenant, &s, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    let err = store
        .append(tenant, &s, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                actual: StreamVersion(1),
                ..
            }
        ),
        "expected a conflict, got {err:?}"
    );
}

pub async fn exact_expected_version_conflict_writes_nothing(store: Store) {
    let tenant = TenantId::new();
    let s = stream("exact");
    store
        .append(tenant, &s, ExpectedVersion::NoStream, events(2))
        .await
        .unwrap();
    for wrong in [0, 1, 3, 99] {
        let err = store
            .append(
                tenant,
                &s,
                ExpectedVersion::Exact(StreamVersion(wrong)),
                events(1),
            )
            .await
            .unwrap_err();
        assert!(err.is_conflict(), "version {wrong}: {err:?}");
    }
    let ok = store
        .append(
            tenant,
            &s,
            ExpectedVersion::Exact(StreamVersion(2)),
            events(1),
        )
        .await
        .unwrap();
    assert_eq!(ok.stream_version, StreamVersion(3));
    assert_eq!(
        store
            .read_stream(Scope::All, &s, StreamVersion::NONE, 100)
            .await
            .unwrap()
            .len(),
        3
    );
}

pub async fn any_expected_version_always_appends(store: Store) {
    let tenant = TenantId::new();
    let s = stream("any");
    for n in 1..=3 {
        let result = store
            .append(tenant, &s, ExpectedVersion::Any, events(1))
            .await
            .unwrap();
        assert_eq!(result.stream_version, StreamVersion(n));
    }
}

pub async fn a_losing_writer_burns_no_global_position(store: Store) {
    let tenant = TenantId::new();
    let first = store
        .append(tenant, &stream("a"), ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    let lost = store
        .append(tenant, &stream("a"), ExpectedVersion::NoStream, events(5))
        .await;
    assert!(lost.unwrap_err().is_conflict());
    let next = store
        .append(tenant, &stream("b"), ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    assert_eq!(
        next.positions[0].0,
        first.positions[0].0 + 1,
        "the conflict left a hole in the global order"
    );
}

pub async fn concurrent_writers_to_one_stream_have_exactly_one_winner_per_version(store: Store) {
    let tenant = TenantId::new();
    let s = stream("race");
    for round in 0..5u64 {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (store, s) = (store.clone(), s.clone());
            let expected = if round == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(StreamVersion(round))
            };
            tasks.push(tokio::spawn(async move {
                store.append(tenant, &s, expected, events(1)).await
            }));
        }
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(result) => {
                    winners += 1;
                    assert_eq!(result.stream_version, StreamVersion(round + 1));
                }
                Err(err) => assert!(err.is_conflict(), "{err:?}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    assert_eq!(
        store
            .read_stream(Scope::All, &s, StreamVersion::NONE, 100)
            .await
            .unwrap()
            .len(),
        5
    );
}

pub async fn reappending_the_same_event_ids_is_a_noop_returning_original_positions(store: Store) {
    let tenant = TenantId::new();
    let s = stream("idem");
    let batch = events(3);
    let first = store
        .append(tenant, &s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    store
        .append(tenant, &stream("other"), ExpectedVersion::Any, events(2))
        .await
        .unwrap();
    // A retry after a lost reply: same ids, same (now stale) expectation, and with `Any`.
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
        ExpectedVersion::Exact(StreamVersion(17)),
    ] {
        let again = store
            .append(tenant, &s, expected, batch.clone())
            .await
            .unwrap();
        assert!(again.deduplicated);
        assert_eq!(again.positions, first.positions);
        assert_eq!(again.stream_version, first.stream_version);
    }
    assert_eq!(
        store
            .read_stream(Scope::All, &s, StreamVersion::NONE, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store
            .read_all(Scope::All, GlobalPosition::START, 100)
            .await
            .unwrap()
            .len(),
        5
    );
}

pub async fn reusing_some_event_ids_in_another_append_is_rejected(store: Store) {
    let tenant = TenantId::new();
    let s = stream("reuse");
    let batch = events(2);
    store
        .append(tenant, &s, ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    let mut partial = events(2);
    partial[1] = batch[0].clone();
    let err = store
        .append(tenant, &s, ExpectedVersion::Any, partial)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err:?}");
    let err = store
        .append(tenant, &stream("elsewhere"), ExpectedVersion::Any, batch)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err:?}");
    assert_eq!(store.head().await.unwrap(), GlobalPosition(2));
}

pub async fn read_all_is_one_global_order_across_streams(store: Store) {
    let tenant = TenantId::new();
    let mut appended = Vec::new();
    for i in 0..30u64 {
        let s = stream(&format!("order{}", i % 4));
        let result = store
            .append(tenant, &s, ExpectedVersion::Any, events(1 + i % 3))
            .await
            .unwrap();
        appended.extend(result.positions);
    }
    let all = store
        .read_all(Scope::All, GlobalPosition::START, 1000)
        .await
        .unwrap();
    let positions: Vec<_> = all.iter().map(|e| e.global_position).collect();
    assert_eq!(
        positions, appended,
        "read_all must return every event in append order"
    );
    assert!(
        positions.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "positions must have no holes"
    );
    assert_eq!(positions[0], GlobalPosition(1));
}

pub async fn reads_start_after_the_given_position_and_honour_the_limit(store: Store) {
    let tenant = TenantId::new();
    let s = stream("middle");
    store
        .append(tenant, &s, ExpectedVersion::NoStream, events(10))
        .await
        .unwrap();
    let tail = store
        .read_stream(Scope::All, &s, StreamVersion(4), 3)
        .await
        .unwrap();
    let versions: Vec<_> = tail.iter().map(|e| e.stream_version.0).collect();
    assert_eq!(versions, vec![5, 6, 7]);
    let page = store
        .read_all(Scope::All, GlobalPosition(8), 100)
        .await
        .unwrap();
    let positions: Vec<_> = page.iter().map(|e| e.global_position.0).collect();
    assert_eq!(positions, vec![9, 10]);
    assert!(
        store
            .read_all(Scope::All, GlobalPosition(10), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(Scope::All, &s, StreamVersion(10), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_all(Scope::All, GlobalPosition::START, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn subscription_catches_up_then_follows_live_appends(store: Store) {
    let tenant = TenantId::new();
    store
        .append(tenant, &stream("sub"), ExpectedVersion::Any, events(5))
        .await
        .unwrap();
    let mut subscription = store.subscribe_all(Scope::All, GlobalPosition(2));
    for expected in 3..=5 {
        let got = next(&mut subscription).await;
        assert_eq!(got.global_position, GlobalPosition(expected));
    }
    let writer = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer
            .append(tenant, &stream("sub"), ExpectedVersion::Any, events(2))
            .await
            .unwrap();
    });
    assert_eq!(
        next(&mut subscription).await.global_position,
        GlobalPosition(6)
    );
    assert_eq!(
        next(&mut subscription).await.global_position,
        GlobalPosition(7)
    );
}

async fn next(subscription: &mut crate::EventStream) -> crate::RecordedEvent {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("the subscription delivered nothing within 10 s")
        .expect("the subscription ended")
        .expect("the subscription failed")
}

/// 8 writers append concurrently (random streams, random batch sizes, with idempotent retries and
/// optimistic conflicts mixed in) while a subscriber reads live from the start; afterwards a second
/// subscriber catches up from the middle. Every acknowledged event is seen exactly once, in
/// global order, and nothing else is.
pub async fn subscription_sees_every_event_exactly_once_under_concurrent_writers(store: Store) {
    const WRITERS: usize = 8;
    const APPENDS: usize = 40;
    let tenant = TenantId::new();
    let (total_tx, total_rx) = tokio::sync::watch::channel(None::<usize>);
    let live_reader = {
        let mut subscription = store.subscribe_all(Scope::All, GlobalPosition::START);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                if total_rx.borrow().is_some_and(|total| seen.len() >= total) {
                    break;
                }
                match tokio::time::timeout(Duration::from_millis(100), subscription.next()).await {
                    Ok(Some(event)) => seen.push(event.expect("subscription failed")),
                    Ok(None) => panic!("subscription ended"),
                    Err(_idle) => continue,
                }
            }
            let extra = tokio::time::timeout(Duration::from_millis(200), subscription.next()).await;
            assert!(extra.is_err(), "more events delivered than were appended");
            seen
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..APPENDS {
                let (stream_no, size, retry, racy) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(0..6),
                        rng.random_range(1..4u64),
                        rng.random_bool(0.2),
                        rng.random_bool(0.2),
                    )
                };
                let s = stream(&format!("w{w}s{stream_no}"));
                let batch = events(size);
                let expected = if racy {
                    ExpectedVersion::Exact(StreamVersion(i as u64))
                } else {
                    ExpectedVersion::Any
                };
                match store.append(tenant, &s, expected, batch.clone()).await {
                    Ok(result) => {
                        acknowledged.extend(batch.iter().map(|e| e.event_id));
                        if retry {
                            let again = store
                                .append(tenant, &s, ExpectedVersion::Any, batch)
                                .await
                                .unwrap();
                            assert_eq!(again.positions, result.positions);
                        }
                    }
                    Err(err) => assert!(err.is_conflict(), "{err:?}"),
                }
                if i % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = HashSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    let total = acknowledged.len();
    total_tx.send_replace(Some(total));
    let live = tokio::time::timeout(Duration::from_secs(30), live_reader)
        .await
        .expect("the live reader did not see every acknowledged event within 30 s")
        .unwrap();
    let middle = GlobalPosition(total as u64 / 2);
    let mut late_subscription = store.subscribe_all(Scope::All, middle);
    let mut late = Vec::new();
    for _ in 0..total - total / 2 {
        late.push(next(&mut late_subscription).await);
    }
    for (seen, from) in [(live, GlobalPosition::START), (late, middle)] {
        let mut ids = HashSet::new();
        let mut last = from;
        for event in &seen {
            assert!(
                event.global_position > last,
                "out of order: {} after {}",
                event.global_position,
                last
            );
            last = event.global_position;
            assert!(
                acknowledged.contains(&event.event_id),
                "unacknowledged event delivered"
            );
            assert!(ids.insert(event.event_id), "event delivered twice");
        }
        assert_eq!(ids.len(), total - usize::try_from(from.0).unwrap());
    }
}

pub async fn snapshots_keep_the_newest_and_refuse_to_run_ahead(store: Store) {
    let tenant = TenantId::new();
    let s = stream("snap");
    assert!(store.load_snapshot(Scope::All, &s).await.unwrap().is_none());
    store
        .append(tenant, &s, ExpectedVersion::NoStream, events(5))
        .await
        .unwrap();
    let at = |v: u64, body: &'static [u8]| Snapshot {
        version: StreamVersion(v),
        schema_version: 2,
        payload: Bytes::from_static(body),
    };
    store
        .save_snapshot(tenant, &s, at(3, b"three"))
        .await
        .unwrap();
    assert_eq!(
        store.load_snapshot(Scope::All, &s).await.unwrap(),
        Some(at(3, b"three"))
    );
    store
        .save_snapshot(tenant, &s, at(5, b"five"))
        .await
        .unwrap();
    store
        .save_snapshot(tenant, &s, at(4, b"stale"))
        .await
        .unwrap();
    assert_eq!(
        store.load_snapshot(Scope::All, &s).await.unwrap(),
        Some(at(5, b"five"))
    );
    let err = store
        .save_snapshot(tenant, &s, at(6, b"ahead"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SnapshotAhead { .. }), "{err:?}");
    let tail = store
        .read_stream(Scope::All, &s, StreamVersion(5), 100)
        .await
        .unwrap();
    assert!(tail.is_empty());
}

pub async fn snapshots_and_stream_metadata_are_scoped_to_the_owning_tenant(store: Store) {
    let (owner, other) = (TenantId::new(), TenantId::new());
    let s = stream("scoped-snap");
    store
        .append(owner, &s, ExpectedVersion::NoStream, events(2))
        .await
        .unwrap();
    let snapshot = Snapshot {
        version: StreamVersion(2),
        schema_version: 1,
        payload: Bytes::from_static(b"state"),
    };
    let err = store
        .save_snapshot(other, &s, snapshot.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongTenant { .. }), "{err:?}");
    store
        .save_snapshot(owner, &s, snapshot.clone())
        .await
        .unwrap();
    assert_eq!(
        store.load_snapshot(Scope::Tenant(owner), &s).await.unwrap(),
        Some(snapshot.clone())
    );
    assert_eq!(
        store.load_snapshot(Scope::Tenant(other), &s).await.unwrap(),
        None
    );
    assert_eq!(
        store.load_snapshot(Scope::All, &s).await.unwrap(),
        Some(snapshot)
    );
    assert!(
        store
            .stream_metadata(Scope::Tenant(other), &s)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .stream_metadata(Scope::Tenant(owner), &s)
            .await
            .unwrap()
            .unwrap()
            .tenant_id,
        owner
    );
    let zero = Snapshot {
        version: StreamVersion::NONE,
        schema_version: 1,
        payload: Bytes::new(),
    };
    assert!(store.save_snapshot(owner, &s, zero).await.is_err());
}

pub async fn another_tenant_cannot_replay_an_append_it_does_not_own(store: Store) {
    let (owner, other) = (TenantId::new(), TenantId::new());
    let s = stream("replay");
    let batch = events(2);
    store
        .append(owner, &s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    let err = store
        .append(other, &s, ExpectedVersion::Any, batch)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::WrongTenant { .. }),
        "a replay by another tenant must be refused: {err:?}"
    );
    assert_eq!(store.head().await.unwrap(), GlobalPosition(2));
}

pub async fn reads_are_scoped_to_one_tenant(store: Store) {
    let (a, b) = (TenantId::new(), TenantId::new());
    store
        .append(a, &stream("a1"), ExpectedVersion::Any, events(3))
        .await
        .unwrap();
    store
        .append(b, &stream("b1"), ExpectedVersion::Any, events(2))
        .await
        .unwrap();
    store
        .append(a, &stream("a2"), ExpectedVersion::Any, events(1))
        .await
        .unwrap();
    for (tenant, own, other, count) in [(a, "a1", "b1", 4), (b, "b1", "a1", 2)] {
        let all = store
            .read_all(Scope::Tenant(tenant), GlobalPosition::START, 100)
            .await
            .unwrap();
        assert_eq!(all.len(), count);
        assert!(all.iter().all(|e| e.tenant_id == tenant));
        assert!(
            !store
                .read_stream(
                    Scope::Tenant(tenant),
                    &stream(own),
                    StreamVersion::NONE,
                    100
                )
                .await
                .unwrap()
                .is_empty()
        );
        let leaked = store
            .read_stream(
                Scope::Tenant(tenant),
                &stream(other),
                StreamVersion::NONE,
                100,
            )
            .await
            .unwrap();
        assert!(leaked.is_empty(), "tenant read another tenant's stream");
        let mut subscription = store.subscribe_all(Scope::Tenant(tenant), GlobalPosition::START);
        for _ in 0..count {
            assert_eq!(next(&mut subscription).await.tenant_id, tenant);
        }
    }
    let mut b_live = store.subscribe_all(Scope::Tenant(b), GlobalPosition(6));
    store
        .append(a, &stream("a1"), ExpectedVersion::Any, events(1))
        .await
        .unwrap();
    store
        .append(b, &stream("b1"), ExpectedVersion::Any, events(1))
        .await
        .unwrap();
    let live = next(&mut b_live).await;
    assert_eq!(
        (live.tenant_id, live.global_position),
        (b, GlobalPosition(8))
    );
}

pub async fn a_stream_belongs_to_one_tenant_forever(store: Store) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let s = stream("owned");
    store
        .append(a, &s, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::Exact(StreamVersion(1)),
    ] {
        let err = store.append(b, &s, expected, events(1)).await.unwrap_err();
        assert!(matches!(err, Error::WrongTenant { .. }), "{err:?}");
    }
    assert_eq!(
        store
            .stream_metadata(Scope::All, &s)
            .await
            .unwrap()
            .unwrap()
            .version,
        StreamVersion(1)
    );
}

pub async fn large_payloads_roundtrip_and_oversized_ones_are_rejected(store: Store) {
    let tenant = TenantId::new();
    let s = stream("large");
    let mut big = event(0);
    let body: Vec<u8> = (0..MAX_PAYLOAD_BYTES).map(|i| (i % 251) as u8).collect();
    big.payload = Bytes::from(body);
    store
        .append(tenant, &s, ExpectedVersion::NoStream, vec![big.clone()])
        .await
        .unwrap();
    let read = store
        .read_stream(Scope::All, &s, StreamVersion::NONE, 1)
        .await
        .unwrap();
    assert_eq!(read[0].payload, big.payload);
    let mut too_big = event(1);
    too_big.payload = Bytes::from(vec![0u8; MAX_PAYLOAD_BYTES + 1]);
    let err = store
        .append(tenant, &s, ExpectedVersion::Any, vec![too_big])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidEvent(_)), "{err:?}");
    assert_eq!(store.head().await.unwrap(), GlobalPosition(1));
}

pub async fn empty_appends_and_malformed_events_are_rejected(store: Store) {
    let tenant = TenantId::new();
    let s = stream("bad");
    let err = store
        .append(tenant, &s, ExpectedVersion::Any, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidEvent(_)), "{err:?}");
    let mut bad_type = event(0);
    bad_type.event_type = "drop table; --".into();
    let mut dup = events(1);
    dup.push(dup[0].clone());
    let mut nul = event(0);
    nul.metadata.correlation_id = Some("req\u{0}".into());
    for bad in [vec![bad_type], dup, vec![nul]] {
        let err = store
            .append(tenant, &s, ExpectedVersion::Any, bad)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidEvent(_)), "{err:?}");
    }
    assert_eq!(store.head().await.unwrap(), GlobalPosition::START);
    assert!(
        store
            .stream_metadata(Scope::All, &s)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn bad_stream_names_are_rejected(store: Store) {
    for bad in [
        "",
        "nocategory",
        "-x",
        "Probe-1",
        "probe-",
        "probe-a b",
        "probe-'; DROP TABLE events; --",
        "probe-\u{202e}",
    ] {
        assert!(
            matches!(StreamId::parse(bad), Err(Error::InvalidStreamName { .. })),
            "{bad:?} accepted"
        );
    }
    // A hostile but valid name is stored verbatim and isolated like any other.
    let tricky = StreamId::parse("probe-a:b.c-d_e--%").err();
    assert!(tricky.is_some(), "'%' must be refused");
    let odd = StreamId::parse("probe-a:b.c-d_e--").unwrap();
    store
        .append(TenantId::new(), &odd, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    assert_eq!(
        store
            .read_stream(Scope::All, &odd, StreamVersion::NONE, 10)
            .await
            .unwrap()[0]
            .stream_id,
        odd
    );
}

pub async fn missing_streams_read_as_empty(store: Store) {
    let s = stream("missing");
    assert!(
        store
            .read_stream(Scope::All, &s, StreamVersion::NONE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .stream_metadata(Scope::All, &s)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .read_all(Scope::All, GlobalPosition::START, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.head().await.unwrap(), GlobalPosition::START);
}

pub async fn a_lease_has_one_holder_until_it_is_dropped(store: Store) {
    let name = format!("engine-{}", uuid::Uuid::now_v7().simple());
    let mut first = store
        .try_lease(&name)
        .await
        .unwrap()
        .expect("a free name is leased");
    assert_eq!(first.name(), name);
    assert!(first.alive().await);
    assert!(
        store.try_lease(&name).await.unwrap().is_none(),
        "held: no second holder"
    );
    let other = store.try_lease(&format!("{name}-other")).await.unwrap();
    assert!(other.is_some(), "another name is independent");
    drop(first);
    let again = store.try_lease(&name).await.unwrap();
    assert!(again.is_some(), "released when dropped");
}

/// Live events reach a subscription (from the writer's feed where the backend has one) exactly
/// as a read returns them: every field, in order, none twice, none missing, across concurrent
/// appends of several streams and tenants, with envelopes that carry every metadata field.
pub async fn a_live_subscription_yields_exactly_what_a_read_returns(store: Store) {
    let start = store.head().await.unwrap();
    let mut live = store.subscribe_all(Scope::All, start);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let tenant = TenantId::new();
                let s = stream(&format!("live-{w}-{}", uuid::Uuid::now_v7().simple()));
                for round in 0..5 {
                    let mut batch = events(1 + (w + round) as u64 % 3);
                    batch[0].metadata = Metadata {
                        correlation_id: Some(format!("w{w}r{round}")),
                        causation_id: Some(*EventId::new().as_uuid()),
                        traceparent: Some(
                            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                        ),
                        tracestate: None,
                        actor: None,
                    };
                    store
                        .append(tenant, &s, ExpectedVersion::Any, batch)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let head = store.head().await.unwrap();
    let read = store.read_all(Scope::All, start, 10_000).await.unwrap();
    assert_eq!(read.last().map(|e| e.global_position), Some(head));
    let mut seen = Vec::with_capacity(read.len());
    while seen.len() < read.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("the subscription delivers every appended event")
            .unwrap()
            .unwrap();
        seen.push(event);
    }
    assert_eq!(seen, read);
}

pub async fn blobs_are_per_tenant_and_go_on_request_or_at_expiry(store: Store) {
    use crate::store::Blob;
    let (a, b) = (TenantId::new(), TenantId::new());
    let blob = |tenant, hash: &str, created_at_us, expires_at_us| Blob {
        tenant,
        hash: hash.into(),
        body: format!("body of {hash}").into_bytes(),
        created_at_us,
        expires_at_us,
    };
    store
        .put_blob(blob(a, "h1", 100, Some(1_000)))
        .await
        .unwrap();
    store.put_blob(blob(a, "h2", 200, None)).await.unwrap();
    store
        .put_blob(blob(a, "h3", 300, Some(5_000)))
        .await
        .unwrap();
    store
        .put_blob(blob(b, "h1", 100, Some(1_000)))
        .await
        .unwrap();
    // The same tenant and hash again keeps the first.
    let mut again = blob(a, "h1", 999, None);
    again.body = b"other".to_vec();
    store.put_blob(again).await.unwrap();
    assert_eq!(
        store.get_blob(a, "h1").await.unwrap().as_deref(),
        Some(&b"body of h1"[..])
    );
    // Another tenant never reads a tenant's blob, even under the same hash.
    assert_eq!(store.get_blob(b, "h2").await.unwrap(), None);
    // Expiry: only what is due, counted per tenant.
    let mut expired = store.expire_blobs(1_000).await.unwrap();
    expired.sort();
    let mut want = vec![(a, 1), (b, 1)];
    want.sort();
    assert_eq!(expired, want);
    assert_eq!(store.get_blob(a, "h1").await.unwrap(), None);
    assert!(store.get_blob(a, "h3").await.unwrap().is_some());
    assert_eq!(store.expire_blobs(1_000).await.unwrap(), Vec::new());
    // On request: before a time, then all; another tenant's stay.
    store.put_blob(blob(b, "h9", 100, None)).await.unwrap();
    assert_eq!(store.delete_blobs(a, Some(250)).await.unwrap(), 1);
    assert!(store.get_blob(a, "h2").await.unwrap().is_none());
    assert_eq!(store.delete_blobs(a, None).await.unwrap(), 1);
    assert_eq!(store.delete_blobs(a, None).await.unwrap(), 0);
    assert!(store.get_blob(b, "h9").await.unwrap().is_some());
}
