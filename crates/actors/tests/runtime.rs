//! The actor runtime over real stores: restart, snapshots, passivation, concurrency and
//! conflicts between two runtimes (two nodes) on one log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::sync::Arc;
use std::time::Duration;

use switchyard_actors::tenant::{Tenant, TenantCommand, TenantRejection};
use switchyard_actors::{Error, Runtime, RuntimeConfig};
use switchyard_events::{
    EventStore, MemoryStore, Metadata, Scope, SqliteStore, StreamId, StreamVersion, TenantId,
};

fn sqlite_path() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("switchyard-tests")
        .join(uuid::Uuid::now_v7().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("events.db")
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_of_the_runtime_and_the_store() {
    let path = sqlite_path();
    let tenant = TenantId::new();
    {
        let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&path).await.unwrap());
        let runtime = Runtime::<Tenant>::new(store, RuntimeConfig::default());
        runtime
            .send(&tenant, create("Acme"), Metadata::default())
            .await
            .unwrap();
        runtime
            .send(
                &tenant,
                TenantCommand::Rename {
                    name: "Acme Corp".into(),
                },
                Metadata::default(),
            )
            .await
            .unwrap();
    }
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let runtime = Runtime::<Tenant>::new(store, RuntimeConfig::default());
    let (state, version) = runtime.read(&tenant).await.unwrap();
    assert_eq!(
        (state.name.as_str(), state.plan.as_str(), version),
        ("Acme Corp", "pro", StreamVersion(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_reach_the_caller_and_write_nothing() {
    let store = Arc::new(MemoryStore::new());
    let runtime = Runtime::<Tenant>::new(store.clone(), RuntimeConfig::default());
    let tenant = TenantId::new();
    let err = runtime
        .send(&tenant, TenantCommand::Resume, Metadata::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Rejected(TenantRejection::NotFound)),
        "{err:?}"
    );
    assert_eq!(store.head().await.unwrap().0, 0);
    let unchanged = runtime
        .send(&tenant, create("Acme"), Metadata::default())
        .await
        .unwrap();
    assert_eq!(unchanged.events.len(), 1);
    let noop = runtime
        .send(
            &tenant,
            TenantCommand::Rename {
                name: "Acme".into(),
            },
            Metadata::default(),
        )
        .await
        .unwrap();
    assert_eq!((noop.events.len(), noop.last_position), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_taken_every_n_events_and_rebuild_the_same_state() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let config = RuntimeConfig {
        snapshot_every: 10,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::<Tenant>::new(store.clone(), config.clone());
    let tenant = TenantId::new();
    runtime
        .send(&tenant, create("Acme"), Metadata::default())
        .await
        .unwrap();
    for i in 0..24 {
        runtime
            .send(&tenant, flag(i), Metadata::default())
            .await
            .unwrap();
    }
    let stream = StreamId::of("tenant", tenant).unwrap();
    let snapshot = store
        .load_snapshot(Scope::All, &stream)
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(snapshot.version, StreamVersion(20));
    let (live_state, _) = runtime.read(&tenant).await.unwrap();
    let fresh = Runtime::<Tenant>::new(store, config);
    let (rebuilt, version) = fresh.read(&tenant).await.unwrap();
    assert_eq!(version, StreamVersion(25));
    assert_eq!(rebuilt, live_state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_are_passivated_and_come_back_on_the_next_command() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let config = RuntimeConfig {
        idle_after: Duration::from_millis(50),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::<Tenant>::new(store, config);
    let tenant = TenantId::new();
    runtime
        .send(&tenant, create("Acme"), Metadata::default())
        .await
        .unwrap();
    assert_eq!(runtime.live(), 1);
    for _ in 0..100 {
        if runtime.live() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(runtime.live(), 0, "the idle actor stayed in memory");
    let applied = runtime
        .send(&tenant, flag(1), Metadata::default())
        .await
        .unwrap();
    assert_eq!(applied.version, StreamVersion(2));
    assert_eq!(applied.state.name, "Acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_commands_on_one_tenant_lose_no_update() {
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(sqlite_path()).await.unwrap());
    let runtime = Runtime::<Tenant>::new(store, RuntimeConfig::default());
    let tenant = TenantId::new();
    runtime
        .send(&tenant, create("Acme"), Metadata::default())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let runtime = runtime.clone();
            tokio::spawn(async move { runtime.send(&tenant, flag(i), Metadata::default()).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let (state, version) = runtime.read(&tenant).await.unwrap();
    assert_eq!(state.flags.len(), 100);
    assert_eq!(version, StreamVersion(101));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_writing_one_tenant_resolve_conflicts_without_surfacing_them() {
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(sqlite_path()).await.unwrap());
    let nodes = [
        Runtime::<Tenant>::new(
            store.clone(),
            RuntimeConfig {
                max_attempts: 50,
                ..RuntimeConfig::default()
            },
        ),
        Runtime::<Tenant>::new(
            store.clone(),
            RuntimeConfig {
                max_attempts: 50,
                ..RuntimeConfig::default()
            },
        ),
    ];
    let tenant = TenantId::new();
    nodes[0]
        .send(&tenant, create("Acme"), Metadata::default())
        .await
        .unwrap();
    nodes[1].read(&tenant).await.unwrap(); // both nodes hold a live copy of the actor
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move { node.send(&tenant, flag(i), Metadata::default()).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    for node in &nodes {
        // A read catches the copy up to the stream's head: both nodes answer the same.
        let (state, version) = node.read(&tenant).await.unwrap();
        assert_eq!(state.flags.len(), 40);
        assert_eq!(version, StreamVersion(41));
    }
    let fresh = Runtime::<Tenant>::new(store, RuntimeConfig::default());
    let (state, version) = fresh.read(&tenant).await.unwrap();
    assert_eq!(state.flags.len(), 40);
    assert_eq!(version, StreamVersion(41));
}

fn limits(requests_per_minute: u32) -> TenantCommand {
    TenantCommand::SetLimits(switchyard_actors::tenant::Limits {
        requests_per_minute: Some(requests_per_minute),
        ..Default::default()
    })
}

/// A decision taken on another node's stale copy: a no-op, a rejection and a read must all be
/// answered from the stream's head, as one node would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_op_rejection_and_read_are_decided_on_the_head_not_on_a_stale_copy() {
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(sqlite_path()).await.unwrap());
    let one = Runtime::<Tenant>::new(store.clone(), RuntimeConfig::default());
    let two = Runtime::<Tenant>::new(store.clone(), RuntimeConfig::default());
    let tenant = TenantId::new();
    one.send(&tenant, create("Acme"), Metadata::default())
        .await
        .unwrap();

    // The lost update: 500 on node two, 600 on node one, 500 on node two again.
    two.send(&tenant, limits(500), Metadata::default())
        .await
        .unwrap();
    one.send(&tenant, limits(600), Metadata::default())
        .await
        .unwrap();
    let again = two
        .send(&tenant, limits(500), Metadata::default())
        .await
        .unwrap();
    assert_eq!(again.events.len(), 1, "500 replaces 600: not a no-op");
    for node in [&one, &two] {
        let (state, _) = node.read(&tenant).await.unwrap();
        assert_eq!(state.limits.requests_per_minute, Some(500));
    }
    // A real no-op on the head still appends nothing.
    let same = one
        .send(&tenant, limits(500), Metadata::default())
        .await
        .unwrap();
    assert!(same.events.is_empty());

    // The stale rejection: a key issued on node one is known to node two's live copy.
    let key_id = uuid::Uuid::now_v7();
    one.send(
        &tenant,
        TenantCommand::IssueKey {
            key_id,
            name: "k".into(),
            key_hash: "ab".repeat(32),
            prefix: "sy_".into(),
            scopes: Vec::new(),
            expires_at_unix: None,
        },
        Metadata::default(),
    )
    .await
    .unwrap();
    let revoked = two
        .send(
            &tenant,
            TenantCommand::RevokeKey { key_id },
            Metadata::default(),
        )
        .await
        .unwrap();
    assert_eq!(revoked.events.len(), 1);
    let (state, _) = one.read(&tenant).await.unwrap();
    assert!(state.keys[&key_id].revoked);
}
