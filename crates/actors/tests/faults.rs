//! The actor runtime under an event log that fails or stalls on command
//! (`switchyard_events::store::faulty`): a failed append, a lost acknowledgement, failing reads
//! during activation, and a stalled log that fills an actor's mailbox.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use switchyard_actors::tenant::{Tenant, TenantCommand, TenantRejection};
use switchyard_actors::{Error, Runtime, RuntimeConfig};
use switchyard_events::store::faulty::{Fault, FaultyStore};
use switchyard_events::{
    EventStore, MemoryStore, Metadata, Scope, StreamId, StreamVersion, TenantId,
};

fn create(name: &str) -> TenantCommand {
    TenantCommand::Create {
        name: name.into(),
        plan: "pro".into(),
    }
}

fn flag(i: usize) -> TenantCommand {
    TenantCommand::SetFlag {
        flag: format!("flag{i}"),
        enabled: true,
    }
}

fn rename(name: &str) -> TenantCommand {
    TenantCommand::Rename { name: name.into() }
}

/// The event types in the tenant's stream, in order.
async fn stream_of(store: &dyn EventStore, tenant: TenantId) -> Vec<String> {
    store
        .read_stream(
            Scope::All,
            &StreamId::of("tenant", tenant).unwrap(),
            StreamVersion::NONE,
            1000,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

fn is_store_error(error: &Error<TenantRejection>) -> bool {
    matches!(error, Error::Store(e) if e.is_transient())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_reaches_the_caller_writes_nothing_and_the_actor_goes_on() {
    let memory = Arc::new(MemoryStore::new());
    let store = FaultyStore::new(memory.clone());
    let faults = store.faults();
    let runtime = Runtime::<Tenant>::new(Arc::new(store), RuntimeConfig::default());
    let tenant = TenantId::new();
    runtime
        .send(&tenant, create("Acme"), Metadata::default())
        .await
        .unwrap();

    faults.set(Fault::FailAppends, true);
    let error = runtime
        .send(&tenant, rename("Lost"), Metadata::default())
        .await
        .unwrap_err();
    assert!(is_store_error(&error), "{error:?}");
    faults.heal();

    // Nothing was written, and the live actor did not keep the failed decision.
    let (state, version) = runtime.read(&tenant).await.unwrap();
    assert_eq!((state.name.as_str(), version), ("Acme", StreamVersion(1)));
    runtime
        .send(&tenant, rename("Acme Corp"), Metadata::default())
        .await
        .unwrap();
    assert_eq!(
        stream_of(memory.as_ref(), tenant).await,
        ["TenantCreated", "TenantRenamed"]
    );
}

/// The append committed but its acknowledgement was lost: the caller hears an error, and the
/// actor must not act on a state without that event (nor write it twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_lost_acknowledgement_the_actor_sees_what_was_committed() {
    let memory = Arc::new(MemoryStore::new());
    let store = FaultyStore::new(memory.clone());
    let faults = store.faults();
    let runtime = Runtime::<Tenant>::new(Arc::new(store), RuntimeConfig::default());
    let tenant = TenantId::new();
    runtime
        .send(&tenant, create("Acme"), Metadata::default())
        .await
        .unwrap();

    faults.set(Fault::LoseAcks, true);
    let error = runtime
        .send(&tenant, rename("Committed"), Metadata::default())
        .await
        .unwrap_err();
    assert!(is_store_error(&error), "{error:?}");
    faults.heal();

    let (state, version) = runtime.read(&tenant).await.unwrap();
    assert_eq!(
        (state.name.as_str(), version),
        ("Committed", StreamVersion(2))
    );
    // The next command decides on the committed state and appends after it.
    runtime
        .send(&tenant, flag(1), Metadata::default())
        .await
        .unwrap();
    assert_eq!(
        stream_of(memory.as_ref(), tenant).await,
        ["TenantCreated", "TenantRenamed", "TenantFlagSet"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_failing_during_activation_fail_the_command_and_the_next_one_rehydrates() {
    let memory = Arc::new(MemoryStore::new());
    let tenant = TenantId::new();
    Runtime::<Tenant>::new(memory.clone(), RuntimeConfig::default())
        .send(&tenant, create("Acme"), Metadata::default())
        .await
        .unwrap();

    // A second runtime (another node, or this one after a restart) activates from the log.
    let store = FaultyStore::new(memory.clone());
    let faults = store.faults();
    let runtime = Runtime::<Tenant>::new(Arc::new(store), RuntimeConfig::default());
    faults.set(Fault::FailReads, true);
    let error = runtime
        .send(&tenant, rename("Never"), Metadata::default())
        .await
        .unwrap_err();
    assert!(
        is_store_error(&error) || matches!(error, Error::Stopped),
        "{error:?}"
    );
    assert_eq!(faults.appends_asked.load(Ordering::SeqCst), 0);
    faults.heal();
    runtime
        .send(&tenant, rename("Acme Corp"), Metadata::default())
        .await
        .unwrap();
    let (state, version) = runtime.read(&tenant).await.unwrap();
    assert_eq!(
        (state.name.as_str(), version),
        ("Acme Corp", StreamVersion(2))
    );
}

/// A stalled log holds the actor on its first command; the mailbox (2) fills, and each sender
/// that finds it full waits `send_timeout`, then gets `Overloaded` (nothing is written for it).
/// Of ten concurrent commands exactly three are accepted (one in the actor, two waiting), and
/// once the log moves again each of them is carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_fills_the_mailbox_and_further_senders_are_told_overloaded() {
    let memory = Arc::new(MemoryStore::new());
    let store = FaultyStore::new(memory.clone());
    let faults = store.faults();
    let config = RuntimeConfig {
        mailbox: 2,
        send_timeout: Duration::from_millis(200),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::<Tenant>::new(Arc::new(store), config);
    let tenant = TenantId::new();
    runtime
        .send(&tenant, create("Acme"), Metadata::default())
        .await
        .unwrap();

    faults.stall_appends();
    let started = Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let runtime = runtime.clone();
            tokio::spawn(async move { runtime.send(&tenant, flag(i), Metadata::default()).await })
        })
        .collect();
    // Seven senders are refused while the log is stalled; the three accepted wait on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tasks.iter().filter(|t| t.is_finished()).count() < 7 {
        assert!(
            Instant::now() < deadline,
            "senders to a full mailbox were not refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert_eq!(
        faults.appends_done.load(Ordering::SeqCst),
        1,
        "only the create"
    );
    faults.release_appends();
    let mut accepted = Vec::new();
    let mut overloaded = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(_) => accepted.push(format!("flag{i}")),
            Err(Error::Overloaded) => overloaded += 1,
            Err(other) => panic!("command {i}: {other:?}"),
        }
    }
    assert_eq!((accepted.len(), overloaded), (3, 7), "{accepted:?}");
    let (state, _) = runtime.read(&tenant).await.unwrap();
    let mut flags: Vec<String> = state.flags.keys().cloned().collect();
    flags.sort();
    accepted.sort();
    assert_eq!(flags, accepted);
    assert_eq!(
        stream_of(memory.as_ref(), tenant).await,
        [
            "TenantCreated",
            "TenantFlagSet",
            "TenantFlagSet",
            "TenantFlagSet"
        ]
    );
}
