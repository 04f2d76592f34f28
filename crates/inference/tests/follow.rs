//! The in-memory folds' log subscription survives a failure: it is taken up again from the last
//! event folded, folds every event once, and says it was down meanwhile.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use switchyard_events::store::lease::Lease;
use switchyard_events::{
    AppendResult, Error, EventStore, EventStream, ExpectedVersion, GlobalPosition, MemoryStore,
    Metadata, NewEvent, RecordedEvent, Result, Scope, Snapshot, StreamId, StreamMetadata,
    StreamVersion, TenantCreated, TenantId,
};
use switchyard_inference::follow::{Folder, follow_with};

/// A memory store whose first live subscription fails after `fail_after` events.
#[derive(Debug)]
struct Flaky {
    inner: MemoryStore,
    subscriptions: AtomicUsize,
    fail_after: usize,
}

#[async_trait]
impl EventStore for Flaky {
    async fn append(
        &self,
        tenant: TenantId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.inner.append(tenant, stream, expected, events).await
    }
    async fn read_stream(
        &self,
        scope: Scope,
        stream: &StreamId,
        after: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner.read_stream(scope, stream, after, limit).await
    }
    async fn read_all(
        &self,
        scope: Scope,
        after: GlobalPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(scope, after, limit).await
    }
    fn subscribe_all(&self, scope: Scope, after: GlobalPosition) -> EventStream {
        let live = self.inner.subscribe_all(scope, after);
        if self.subscriptions.fetch_add(1, Ordering::SeqCst) > 0 {
            return live;
        }
        let failure = futures_util::stream::once(async {
            Err(Error::Unavailable("the database went away".into()))
        });
        live.take(self.fail_after).chain(failure).boxed()
    }
    async fn stream_metadata(
        &self,
        scope: Scope,
        stream: &StreamId,
    ) -> Result<Option<StreamMetadata>> {
        self.inner.stream_metadata(scope, stream).await
    }
    async fn head(&self) -> Result<GlobalPosition> {
        self.inner.head().await
    }
    async fn try_lease(&self, name: &str) -> Result<Option<Lease>> {
        self.inner.try_lease(name).await
    }
    async fn save_snapshot(
        &self,
        tenant: TenantId,
        stream: &StreamId,
        snapshot: Snapshot,
    ) -> Result<()> {
        self.inner.save_snapshot(tenant, stream, snapshot).await
    }
    async fn load_snapshot(&self, scope: Scope, stream: &StreamId) -> Result<Option<Snapshot>> {
        self.inner.load_snapshot(scope, stream).await
    }
}

/// Records every position folded.
#[derive(Default)]
struct Seen(Mutex<Vec<u64>>);

impl Folder for Seen {
    fn fold(&self, recorded: &RecordedEvent) {
        self.0.lock().unwrap().push(recorded.global_position.0);
    }
}

async fn append(store: &dyn EventStore, n: usize) {
    for _ in 0..n {
        let tenant = TenantId::new();
        let event = switchyard_events::Event::TenantCreated(TenantCreated {
            name: "t".into(),
            plan: "free".into(),
        })
        .to_new_event(Metadata::default())
        .unwrap();
        store
            .append(
                tenant,
                &StreamId::of("tenant", tenant).unwrap(),
                ExpectedVersion::NoStream,
                vec![event],
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_failed_subscription_is_taken_up_again_from_the_last_event_folded() {
    let store = Arc::new(Flaky {
        inner: MemoryStore::new(),
        subscriptions: AtomicUsize::new(0),
        fail_after: 5,
    });
    append(store.as_ref(), 3).await;
    let seen = Arc::new(Seen::default());
    let follower = follow_with(
        store.clone(),
        vec![seen.clone() as Arc<dyn Folder>],
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert_eq!(follower.position(), GlobalPosition(3));
    assert!(follower.healthy());
    // Two more pass, the third breaks the first subscription: the follower says so...
    append(store.as_ref(), 4).await;
    let mut down = false;
    for _ in 0..100 {
        if !follower.healthy() {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(down, "the follower reports the failed subscription");
    // ...and takes it up again from the last event folded: every event once, in order.
    append(store.as_ref(), 2).await;
    for _ in 0..200 {
        if follower.position() == GlobalPosition(9) && follower.healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(follower.healthy());
    assert_eq!(*seen.0.lock().unwrap(), (1..=9).collect::<Vec<u64>>());
    assert_eq!(store.subscriptions.load(Ordering::SeqCst), 2);
}
