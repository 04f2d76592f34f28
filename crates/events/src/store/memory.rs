//! The in-memory backend: the reference implementation for tests. Nothing survives the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::watch;

use super::metrics::{self, StoreMetrics};
use crate::envelope::{NewEvent, RecordedEvent, Snapshot, now_micros, timestamp_from_micros};
use crate::error::{Error, Result};
use crate::ids::{GlobalPosition, StreamId, StreamVersion, TenantId};
use crate::store::plan::{self, Known, Pending, StoredAt};
use crate::store::{
    AppendResult, Blob, EventStore, EventStream, ExpectedVersion, Scope, StreamMetadata, subscribe,
};

#[derive(Debug, Default)]
struct Log {
    /// Event at position `p` is at index `p - 1`.
    events: Vec<RecordedEvent>,
    streams: HashMap<StreamId, (StreamMetadata, Vec<usize>)>,
    ids: HashMap<crate::EventId, StoredAt>,
    snapshots: HashMap<StreamId, Snapshot>,
}

/// An event store held in memory.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    log: Arc<Mutex<Log>>,
    head: Arc<watch::Sender<GlobalPosition>>,
    metrics: StoreMetrics,
    leases: Arc<Mutex<std::collections::HashSet<String>>>,
    blobs: Arc<Mutex<std::collections::BTreeMap<(TenantId, String), Blob>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            log: Arc::default(),
            head: Arc::new(watch::channel(GlobalPosition::START).0),
            metrics: metrics::store("memory"),
            leases: Arc::default(),
            blobs: Arc::default(),
        }
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        tenant: TenantId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let pending = Pending::new(tenant, stream, expected, events)?;
        let outcome = {
            let mut log = self.log();
            let known = Known {
                streams: log
                    .streams
                    .get(stream)
                    .map(|(meta, _)| (stream.clone(), *meta))
                    .into_iter()
                    .collect(),
                events: pending
                    .events
                    .iter()
                    .filter_map(|e| log.ids.get(&e.event_id).map(|at| (e.event_id, at.clone())))
                    .collect(),
                next_position: log.events.len() as u64 + 1,
            };
            let mut plan = plan::plan(&[&pending], known);
            let recorded_at = timestamp_from_micros(now_micros())?;
            for row in &plan.rows {
                let index = log.events.len();
                log.ids.insert(
                    row.event.event_id,
                    StoredAt {
                        tenant: row.tenant,
                        stream: row.stream.clone(),
                        version: row.version,
                        position: row.position,
                    },
                );
                let entry = log.streams.entry(row.stream.clone()).or_insert_with(|| {
                    (
                        StreamMetadata {
                            tenant_id: row.tenant,
                            version: StreamVersion::NONE,
                        },
                        vec![],
                    )
                });
                entry.0.version = row.version;
                entry.1.push(index);
                log.events.push(RecordedEvent {
                    event_id: row.event.event_id,
                    tenant_id: row.tenant,
                    stream_id: row.stream.clone(),
                    stream_version: row.version,
                    global_position: row.position,
                    event_type: row.event.event_type.clone(),
                    schema_version: row.event.schema_version,
                    recorded_at,
                    metadata: row.event.metadata.clone(),
                    payload: row.event.payload.clone(),
                });
            }
            if let Some(head) = plan.head() {
                self.head.send_replace(head);
            }
            plan.outcomes.pop().unwrap_or(Err(Error::Closed))
        };
        self.metrics.observe_outcome(&outcome);
        outcome
    }

    async fn read_stream(
        &self,
        scope: Scope,
        stream: &StreamId,
        after: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let log = self.log();
        let Some((meta, indexes)) = log.streams.get(stream) else {
            return Ok(vec![]);
        };
        if !scope.admits(meta.tenant_id) {
            return Ok(vec![]);
        }
        let skip = usize::try_from(after.0).unwrap_or(usize::MAX);
        Ok(indexes
            .iter()
            .skip(skip)
            .take(limit)
            .map(|&i| log.events[i].clone())
            .collect())
    }

    async fn read_all(
        &self,
        scope: Scope,
        after: GlobalPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let log = self.log();
        let skip = usize::try_from(after.0).unwrap_or(usize::MAX);
        Ok(log
            .events
            .iter()
            .skip(skip)
            .filter(|e| scope.admits(e.tenant_id))
            .take(limit)
            .cloned()
            .collect())
    }

    fn subscribe_all(&self, scope: Scope, after: GlobalPosition) -> EventStream {
        subscribe::subscribe(
            self.clone(),
            self.head.subscribe(),
            None,
            scope,
            after,
            None,
        )
    }

    async fn stream_metadata(
        &self,
        scope: Scope,
        stream: &StreamId,
    ) -> Result<Option<StreamMetadata>> {
        Ok(self
            .log()
            .streams
            .get(stream)
            .map(|(meta, _)| *meta)
            .filter(|meta| scope.admits(meta.tenant_id)))
    }

    async fn head(&self) -> Result<GlobalPosition> {
        Ok(GlobalPosition(self.log().events.len() as u64))
    }

    async fn try_lease(&self, name: &str) -> Result<Option<super::lease::Lease>> {
        Ok(super::lease::Lease::local(&self.leases, name))
    }

    async fn save_snapshot(
        &self,
        tenant: TenantId,
        stream: &StreamId,
        snapshot: Snapshot,
    ) -> Result<()> {
        let mut log = self.log();
        let current = log.streams.get(stream).map(|(meta, _)| *meta);
        plan::check_snapshot(tenant, stream, &snapshot, current)?;
        let newer = log
            .snapshots
            .get(stream)
            .is_none_or(|stored| stored.version <= snapshot.version);
        if newer {
            log.snapshots.insert(stream.clone(), snapshot);
        }
        Ok(())
    }

    async fn load_snapshot(&self, scope: Scope, stream: &StreamId) -> Result<Option<Snapshot>> {
        let log = self.log();
        let admitted = log
            .streams
            .get(stream)
            .is_some_and(|(meta, _)| scope.admits(meta.tenant_id));
        Ok(if admitted {
            log.snapshots.get(stream).cloned()
        } else {
            None
        })
    }

    async fn put_blob(&self, blob: Blob) -> Result<()> {
        let mut blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        blobs
            .entry((blob.tenant, blob.hash.clone()))
            .or_insert(blob);
        Ok(())
    }

    async fn get_blob(&self, tenant: TenantId, hash: &str) -> Result<Option<Vec<u8>>> {
        let blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        Ok(blobs
            .get(&(tenant, hash.to_owned()))
            .map(|b| b.body.clone()))
    }

    async fn delete_blobs(&self, tenant: TenantId, before_us: Option<i64>) -> Result<u64> {
        let mut blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        let before = blobs.len();
        blobs.retain(|(owner, _), b| {
            *owner != tenant || before_us.is_some_and(|t| b.created_at_us >= t)
        });
        Ok(u64::try_from(before - blobs.len()).unwrap_or(u64::MAX))
    }

    async fn expire_blobs(&self, now_us: i64) -> Result<Vec<(TenantId, u64)>> {
        let mut blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts = std::collections::BTreeMap::<TenantId, u64>::new();
        blobs.retain(|(tenant, _), b| {
            let expired = b.expires_at_us.is_some_and(|t| t <= now_us);
            if expired {
                *counts.entry(*tenant).or_default() += 1;
            }
            !expired
        });
        Ok(counts.into_iter().collect())
    }
}
