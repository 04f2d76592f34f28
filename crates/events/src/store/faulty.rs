//! An [`EventStore`] that fails or stalls on command, for fault-injection tests of what is built
//! on the log (the actor runtime, the projectors, the pipeline).
//!
//! ```ignore
//! let store = FaultyStore::new(Arc::new(MemoryStore::new()));
//! let faults = store.faults();
//! faults.set(Fault::LoseAcks, true);   // appends commit, but the caller hears "unavailable"
//! faults.stall_appends();              // appends wait ...
//! faults.release_appends();            // ... until released
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use futures_util::StreamExt;

use super::{
    AppendResult, Blob, EventStore, EventStream, ExpectedVersion, Scope, StreamMetadata, lease,
};
use crate::envelope::{NewEvent, RecordedEvent, Snapshot};
use crate::error::{Error, Result};
use crate::ids::{GlobalPosition, StreamId, StreamVersion, TenantId};

/// What can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Appends fail before reaching the store (nothing is written).
    FailAppends,
    /// Appends are written, but the caller is told the store is unavailable (a lost ack).
    LoseAcks,
    /// Reads (`read_stream`, `read_all`, `stream_metadata`, `head`, `load_snapshot`) fail.
    FailReads,
    /// New subscriptions yield an error at once; open ones end with an error at their next
    /// event.
    FailSubscriptions,
}

/// The switches of a [`FaultyStore`], shared with the test that drives it.
#[derive(Debug)]
pub struct Faults {
    fail_appends: AtomicBool,
    lose_acks: AtomicBool,
    fail_reads: AtomicBool,
    fail_subscriptions: AtomicBool,
    stalled: tokio::sync::watch::Sender<bool>,
    /// Appends the store was asked for, and those that reached the inner store.
    pub appends_asked: AtomicU64,
    pub appends_done: AtomicU64,
}

impl Faults {
    fn flag(&self, fault: Fault) -> &AtomicBool {
        match fault {
            Fault::FailAppends => &self.fail_appends,
            Fault::LoseAcks => &self.lose_acks,
            Fault::FailReads => &self.fail_reads,
            Fault::FailSubscriptions => &self.fail_subscriptions,
        }
    }

    /// Turns `fault` on or off.
    pub fn set(&self, fault: Fault, on: bool) {
        self.flag(fault).store(on, Ordering::SeqCst);
    }

    fn on(&self, fault: Fault) -> bool {
        self.flag(fault).load(Ordering::SeqCst)
    }

    /// Every fault off and appends released.
    pub fn heal(&self) {
        for fault in [
            Fault::FailAppends,
            Fault::LoseAcks,
            Fault::FailReads,
            Fault::FailSubscriptions,
        ] {
            self.set(fault, false);
        }
        self.release_appends();
    }

    /// Appends wait (before reaching the store) until [`Faults::release_appends`].
    pub fn stall_appends(&self) {
        self.stalled.send_replace(true);
    }

    pub fn release_appends(&self) {
        self.stalled.send_replace(false);
    }

    fn injected(what: &str) -> Error {
        Error::Unavailable(format!("injected fault: {what}"))
    }
}

/// Wraps a store; see the module docs.
#[derive(Debug, Clone)]
pub struct FaultyStore {
    inner: Arc<dyn EventStore>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn EventStore>) -> FaultyStore {
        FaultyStore {
            inner,
            faults: Arc::new(Faults {
                fail_appends: AtomicBool::new(false),
                lose_acks: AtomicBool::new(false),
                fail_reads: AtomicBool::new(false),
                fail_subscriptions: AtomicBool::new(false),
                stalled: tokio::sync::watch::Sender::new(false),
                appends_asked: AtomicU64::new(0),
                appends_done: AtomicU64::new(0),
            }),
        }
    }

    /// The switches.
    pub fn faults(&self) -> Arc<Faults> {
        self.faults.clone()
    }

    fn read_fault(&self) -> Result<()> {
        if self.faults.on(Fault::FailReads) {
            return Err(Faults::injected("read failed"));
        }
        Ok(())
    }
}

#[async_trait]
impl EventStore for FaultyStore {
    async fn append(
        &self,
        tenant: TenantId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.faults.appends_asked.fetch_add(1, Ordering::SeqCst);
        let mut stalled = self.faults.stalled.subscribe();
        // The sender lives in `faults`, which outlives this call: waiting cannot fail.
        let _ = stalled.wait_for(|stalled| !stalled).await;
        if self.faults.on(Fault::FailAppends) {
            return Err(Faults::injected("append refused"));
        }
        let result = self.inner.append(tenant, stream, expected, events).await?;
        self.faults.appends_done.fetch_add(1, Ordering::SeqCst);
        if self.faults.on(Fault::LoseAcks) {
            return Err(Faults::injected("append committed, acknowledgement lost"));
        }
        Ok(result)
    }

    async fn read_stream(
        &self,
        scope: Scope,
        stream: &StreamId,
        after: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_fault()?;
        self.inner.read_stream(scope, stream, after, limit).await
    }

    async fn read_all(
        &self,
        scope: Scope,
        after: GlobalPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_fault()?;
        self.inner.read_all(scope, after, limit).await
    }

    fn subscribe_all(&self, scope: Scope, after: GlobalPosition) -> EventStream {
        if self.faults.on(Fault::FailSubscriptions) {
            return futures_util::stream::once(async {
                Err(Faults::injected("subscription failed"))
            })
            .boxed();
        }
        let faults = self.faults.clone();
        self.inner
            .subscribe_all(scope, after)
            .scan(false, move |ended, item| {
                if *ended {
                    return std::future::ready(None);
                }
                if faults.on(Fault::FailSubscriptions) {
                    *ended = true;
                    return std::future::ready(Some(Err(Faults::injected("subscription broke"))));
                }
                std::future::ready(Some(item))
            })
            .boxed()
    }

    async fn stream_metadata(
        &self,
        scope: Scope,
        stream: &StreamId,
    ) -> Result<Option<StreamMetadata>> {
        self.read_fault()?;
        self.inner.stream_metadata(scope, stream).await
    }

    async fn head(&self) -> Result<GlobalPosition> {
        self.read_fault()?;
        self.inner.head().await
    }

    async fn try_lease(&self, name: &str) -> Result<Option<lease::Lease>> {
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
        self.read_fault()?;
        self.inner.load_snapshot(scope, stream).await
    }

    async fn put_blob(&self, blob: Blob) -> Result<()> {
        self.inner.put_blob(blob).await
    }

    async fn get_blob(&self, tenant: TenantId, hash: &str) -> Result<Option<Vec<u8>>> {
        self.read_fault()?;
        self.inner.get_blob(tenant, hash).await
    }

    async fn delete_blobs(&self, tenant: TenantId, before_us: Option<i64>) -> Result<u64> {
        self.inner.delete_blobs(tenant, before_us).await
    }

    async fn expire_blobs(&self, now_us: i64) -> Result<Vec<(TenantId, u64)>> {
        self.inner.expire_blobs(now_us).await
    }
}
