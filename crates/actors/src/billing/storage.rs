//! Document storage on the tenant's ledger: each document added or deleted is a storage change
//! (`StorageMetered`, once per document event), and each period keeps a meter of it. Metered,
//! not priced.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use switchyard_events::{Event, StorageMetered};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{BillingState, InvoiceStatus};

/// Document storage in one period: what was added and deleted, and the bytes stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageMeter {
    pub documents_added: u64,
    pub documents_deleted: u64,
    pub bytes_added: u64,
    pub bytes_deleted: u64,
    /// Bytes stored at the period's end (so far, while it is open).
    pub stored_bytes: u64,
    /// The most bytes stored at once in the period.
    pub peak_bytes: u64,
}

/// A document's bytes added (positive) or deleted (negative), metered once per `usage_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageUsage {
    pub usage_id: Uuid,
    /// When it happened (its invoice period).
    pub at: OffsetDateTime,
    pub document_id: Uuid,
    pub bytes: i64,
}

impl BillingState {
    /// Document storage in `period`: its meter, or, for a period with no document added or
    /// deleted, the bytes stored since the latest period before it that had one.
    pub fn storage(&self, period: &str) -> StorageMeter {
        if let Some(meter) = self.invoices.get(period).and_then(|i| i.storage) {
            return meter;
        }
        let carried = self
            .invoices
            .range(..period.to_owned())
            .rev()
            .find_map(|(_, i)| i.storage)
            .map_or(0, |m| m.stored_bytes);
        StorageMeter {
            stored_bytes: carried,
            peak_bytes: carried,
            ..StorageMeter::default()
        }
    }
}

/// `MeterStorage`: each change in the period it happened, once per usage id (for good: a
/// replay of the log at start-up offers every change again). A change dated in a closed period
/// (the feed met it late, or the tenant's documents predate metering) goes into the period
/// open at `now`, so the bytes stored stay right.
pub(super) fn meter(
    state: &BillingState,
    changes: Vec<StorageUsage>,
    now: OffsetDateTime,
) -> Vec<Event> {
    let mut batch = BTreeSet::new();
    let mut events = Vec::with_capacity(changes.len());
    let open = |period: &String| {
        state
            .invoices
            .get(period)
            .is_none_or(|i| i.status == InvoiceStatus::Open)
    };
    for change in changes {
        if state.storage_ids.contains(&change.usage_id) || !batch.insert(change.usage_id) {
            continue;
        }
        let period = Some(state.calendar.period_at(change.at))
            .filter(open)
            .or_else(|| Some(state.calendar.period_at(now)).filter(open));
        let Some(period) = period else {
            continue;
        };
        events.push(Event::StorageMetered(StorageMetered {
            usage_id: change.usage_id,
            period,
            document_id: change.document_id,
            bytes: change.bytes,
        }));
    }
    events
}

/// Folds a `StorageMetered`.
pub(super) fn apply(state: &mut BillingState, e: &StorageMetered) {
    state.storage_ids.insert(e.usage_id);
    let stored = (i128::from(state.stored_bytes) + i128::from(e.bytes)).max(0);
    state.stored_bytes = u64::try_from(stored).unwrap_or(u64::MAX);
    let mut meter = state.storage(&e.period);
    let size = e.bytes.unsigned_abs();
    if e.bytes >= 0 {
        meter.documents_added += 1;
        meter.bytes_added = meter.bytes_added.saturating_add(size);
    } else {
        meter.documents_deleted += 1;
        meter.bytes_deleted = meter.bytes_deleted.saturating_add(size);
    }
    meter.stored_bytes = state.stored_bytes;
    meter.peak_bytes = meter.peak_bytes.max(state.stored_bytes);
    state.invoices.entry(e.period.clone()).or_default().storage = Some(meter);
}
