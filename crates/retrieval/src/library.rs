//! Every tenant's index on this node, folded from the log.
//!
//! The node's log follower offers each committed event ([`Library::offer`]); document events go
//! to one indexing thread, which applies them per tenant and commits each touched tenant's
//! index once per batch. [`Library::wait_for`] answers once everything up to a log position is
//! searchable, so a query that first waits for the log's head sees every document any node
//! added or deleted before it: any node gives the answer one node would.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use switchyard_events::{Event, GlobalPosition, RecordedEvent, TenantId};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::index::{Hit, Listed, Query, TenantIndex};
use crate::metrics::METRICS;

/// Events applied per batch (then each touched index commits once).
const BATCH: usize = 1_024;

/// Every tenant's index on this node.
pub struct Library {
    tenants: DashMap<TenantId, Arc<Mutex<TenantIndex>>>,
    /// The highest position offered.
    seen: AtomicU64,
    /// The positions of document events offered and not yet searchable, oldest first.
    pending: Mutex<VecDeque<u64>>,
    sender: Mutex<mpsc::Sender<(TenantId, Uuid, GlobalPosition, Event)>>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("tenants", &self.tenants.len())
            .field("seen", &self.seen.load(Ordering::SeqCst))
            .field("pending", &self.queued().len())
            .finish()
    }
}

impl Library {
    /// An empty library and its indexing thread.
    pub fn start() -> Arc<Library> {
        let (sender, receiver) = mpsc::channel();
        let library = Arc::new(Library {
            tenants: DashMap::new(),
            seen: AtomicU64::new(0),
            pending: Mutex::new(VecDeque::new()),
            sender: Mutex::new(sender),
        });
        let weak = Arc::downgrade(&library);
        let spawned = std::thread::Builder::new()
            .name("switchyard-library".into())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match receiver.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    let Some(library) = weak.upgrade() else {
                        return;
                    };
                    library.apply(&batch);
                    let mut pending = library.queued();
                    for _ in 0..batch.len() {
                        pending.pop_front();
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the library's indexing thread");
        }
        library
    }

    /// Offers one committed event (every event passes; document events are indexed).
    pub fn offer(&self, recorded: &RecordedEvent) {
        if recorded.event_type.starts_with("Document") {
            match (
                Event::from_recorded(recorded),
                recorded
                    .stream_id
                    .as_str()
                    .strip_prefix("document-")
                    .and_then(|id| id.parse::<Uuid>().ok()),
            ) {
                (Ok(event), Some(id)) => {
                    // Queued before `seen` passes it (see `caught_up`).
                    self.queued().push_back(recorded.global_position.0);
                    let sent = self
                        .sender
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .send((recorded.tenant_id, id, recorded.global_position, event));
                    if sent.is_err() {
                        self.queued().pop_back();
                        tracing::error!("the library's indexing thread is gone");
                    }
                }
                (Err(error), _) => {
                    tracing::error!(%error, position = %recorded.global_position, "a document event does not decode; not indexed");
                }
                (_, None) => {}
            }
        }
        self.seen
            .fetch_max(recorded.global_position.0, Ordering::SeqCst);
    }

    fn apply(&self, batch: &[(TenantId, Uuid, GlobalPosition, Event)]) {
        let started = Instant::now();
        let mut touched: Vec<TenantId> = Vec::new();
        for (tenant, id, position, event) in batch {
            let index = match self.tenant(*tenant) {
                Ok(index) => index,
                Err(error) => {
                    tracing::error!(%error, %tenant, "cannot open a tenant's index");
                    continue;
                }
            };
            let mut index = index.lock().unwrap_or_else(PoisonError::into_inner);
            let before = index.chunk_count();
            if let Err(error) = index.apply(*id, event) {
                tracing::error!(%error, %tenant, document = %id, %position, "a document event could not be indexed");
            }
            // The node's chunk count moves by what this event changed (no other tenant's
            // index is locked to count it).
            METRICS
                .chunks
                .add(index.chunk_count() as i64 - before as i64);
            if !touched.contains(tenant) {
                touched.push(*tenant);
            }
        }
        for tenant in touched {
            if let Some(index) = self.tenants.get(&tenant) {
                let mut index = index.lock().unwrap_or_else(PoisonError::into_inner);
                if let Err(error) = index.commit() {
                    tracing::error!(%error, %tenant, "a tenant's index could not commit");
                }
            }
        }
        METRICS.indexed.inc_by(batch.len() as u64);
        METRICS
            .index_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    fn tenant(&self, tenant: TenantId) -> Result<Arc<Mutex<TenantIndex>>> {
        if let Some(index) = self.tenants.get(&tenant) {
            return Ok(index.clone());
        }
        let index = Arc::new(Mutex::new(TenantIndex::new()?));
        Ok(self.tenants.entry(tenant).or_insert(index).clone())
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, VecDeque<u64>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether every event up to `position` is searchable: offered, and no document event at
    /// or before it still waiting (later ones, another tenant's ingestion, do not hold it up).
    pub fn caught_up(&self, position: GlobalPosition) -> bool {
        // `seen` first: a document event is queued before `seen` passes it.
        let seen = self.seen.load(Ordering::SeqCst);
        seen >= position.0
            && self
                .queued()
                .front()
                .is_none_or(|oldest| *oldest > position.0)
    }

    /// Waits (at most `timeout`) until everything up to `position` is searchable.
    pub async fn wait_for(&self, position: GlobalPosition, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.caught_up(position) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// The tenant's best chunks for a query: another tenant's are never looked at.
    pub fn search(&self, tenant: TenantId, query: &Query<'_>) -> Result<Vec<Hit>> {
        let started = Instant::now();
        let hits = match self.tenants.get(&tenant) {
            Some(index) => index
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .search(query)?,
            None => {
                if query.vector.is_none() && query.mode != crate::index::Mode::Keyword {
                    return Err(Error::Query(
                        "this mode needs the query's embedding, and no embedding model is configured for retrieval".into(),
                    ));
                }
                Vec::new()
            }
        };
        METRICS
            .query_seconds
            .with_label_values(&[match query.mode {
                crate::index::Mode::Hybrid => "hybrid",
                crate::index::Mode::Keyword => "keyword",
                crate::index::Mode::Vector => "vector",
            }])
            .observe(started.elapsed().as_secs_f64());
        Ok(hits)
    }

    /// The tenant's documents.
    pub fn documents(&self, tenant: TenantId) -> Vec<Listed> {
        self.tenants.get(&tenant).map_or_else(Vec::new, |index| {
            index
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .documents()
        })
    }
}
