//! Feeds the billing actors from the log: every inference outcome with a cost or tokens
//! (`InferenceCompleted`, `InferenceFailed` of a stream cut mid-way) becomes a priced usage line
//! of its tenant's billing actor, in the month it happened, once per inference id; every
//! document added or deleted meters its bytes on the same ledger (`StorageMetered`), once per
//! document event.
//!
//! Batched per tenant (one command, one append of many `UsageRecorded` per flush), off the
//! request path. It sees the log from the start at every start-up (through the server's one
//! subscription): the billing actor deduplicates by inference id and never adds to a closed
//! invoice, so the replay is harmless. (A checkpoint comes with the read side's projectors.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_actors::Runtime;
use switchyard_actors::billing::{Billing, BillingCommand, PricedUsage, StorageUsage};
use switchyard_events::{Event, Metadata, RecordedEvent, TenantId};
use uuid::Uuid;

use crate::follow::{Folder, InferenceOutcome};

/// Usage lines per tenant command.
const BATCH: usize = 500;
/// Longest wait before a partial batch is billed.
const FLUSH_AFTER: Duration = Duration::from_millis(200);

/// The feed: a [`Folder`] on the server's one log subscription (so the log is not read a
/// second time), handing usage lines to a background task that bills them in batches.
pub struct BillingFeed {
    lines: tokio::sync::mpsc::UnboundedSender<Message>,
    /// Every tenant with billed usage (deleted ones too: their last invoice still closes).
    tenants: std::sync::Mutex<std::collections::BTreeSet<TenantId>>,
    /// Each live document's bytes, so its deletion meters what its addition did.
    documents: std::sync::Mutex<std::collections::HashMap<(TenantId, Uuid), u64>>,
}

/// A tenant's queued usage lines and storage changes.
type Pending = BTreeMap<TenantId, (Vec<PricedUsage>, Vec<StorageUsage>)>;

enum Message {
    Line(TenantId, PricedUsage),
    Storage(TenantId, StorageUsage),
    /// Bill everything queued before it, then answer whether all of it was billed.
    Flush(tokio::sync::oneshot::Sender<bool>),
}

impl std::fmt::Debug for BillingFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingFeed").finish_non_exhaustive()
    }
}

impl BillingFeed {
    /// Starts the billing task. The queue between the two is unbounded: a line must never be
    /// dropped, and it holds only what the billing actors have not taken yet.
    pub fn start(billing: Runtime<Billing>) -> Arc<Self> {
        let (lines, mut queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut pending = Pending::new();
            let queued = |pending: &Pending| -> usize {
                pending.values().map(|(u, s)| u.len() + s.len()).sum()
            };
            let mut count = 0usize;
            loop {
                match tokio::time::timeout(FLUSH_AFTER, queue.recv()).await {
                    Ok(Some(Message::Flush(done))) => {
                        let billed = flush(&billing, &mut pending).await;
                        count = queued(&pending);
                        let _ = done.send(billed);
                    }
                    Ok(Some(message @ (Message::Line(..) | Message::Storage(..)))) => {
                        match message {
                            Message::Line(tenant, line) => {
                                pending.entry(tenant).or_default().0.push(line);
                            }
                            Message::Storage(tenant, change) => {
                                pending.entry(tenant).or_default().1.push(change);
                            }
                            Message::Flush(_) => {}
                        }
                        count += 1;
                        if count >= BATCH {
                            flush(&billing, &mut pending).await;
                            count = queued(&pending);
                        }
                    }
                    Ok(None) => {
                        flush(&billing, &mut pending).await;
                        break;
                    }
                    Err(_) => {
                        if count > 0 {
                            flush(&billing, &mut pending).await;
                            count = queued(&pending);
                        }
                    }
                }
            }
        });
        Arc::new(BillingFeed {
            lines,
            tenants: std::sync::Mutex::default(),
            documents: std::sync::Mutex::default(),
        })
    }

    /// Every tenant this node has seen usage of, in id order.
    pub fn tenants(&self) -> Vec<TenantId> {
        self.tenants
            .lock()
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Returns once every usage line folded before the call is billed: `true` when all of it
    /// was; `false` when a batch failed (it stays queued and is tried again) or the billing
    /// task has stopped. An invoice is not closed on `false`.
    pub async fn flush(&self) -> bool {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.lines.send(Message::Flush(done)).is_ok() && wait.await.unwrap_or(false)
    }
}

impl BillingFeed {
    /// A document added or deleted: its bytes metered on its tenant's ledger.
    fn meter(&self, recorded: &RecordedEvent) {
        let added = match recorded.event_type.as_str() {
            "DocumentAdded" => true,
            "DocumentDeleted" => false,
            _ => return,
        };
        let Some(document_id) = recorded
            .stream_id
            .as_str()
            .strip_prefix("document-")
            .and_then(|id| id.parse::<Uuid>().ok())
        else {
            return;
        };
        let key = (recorded.tenant_id, document_id);
        let Ok(mut documents) = self.documents.lock() else {
            return;
        };
        let bytes = if added {
            let Ok(Event::DocumentAdded(event)) = Event::from_recorded(recorded) else {
                tracing::error!(event = %recorded.event_id, "an unreadable DocumentAdded: not metered");
                return;
            };
            documents.insert(key, event.bytes);
            i64::try_from(event.bytes).unwrap_or(i64::MAX)
        } else {
            match documents.remove(&key) {
                Some(bytes) => -i64::try_from(bytes).unwrap_or(i64::MAX),
                None => return, // never added as far as the log says: nothing stored
            }
        };
        drop(documents);
        let change = StorageUsage {
            usage_id: *recorded.event_id.as_uuid(),
            at: recorded.recorded_at,
            document_id,
            bytes,
        };
        self.remember(recorded.tenant_id);
        if self
            .lines
            .send(Message::Storage(recorded.tenant_id, change))
            .is_err()
        {
            tracing::error!("the billing task has stopped; the next start-up meters this document");
        }
    }

    fn remember(&self, tenant: TenantId) {
        if let Ok(mut tenants) = self.tenants.lock()
            && !tenants.contains(&tenant)
        {
            tenants.insert(tenant);
        }
    }
}

impl Folder for BillingFeed {
    fn fold(&self, recorded: &RecordedEvent) {
        if recorded.event_type.starts_with("Document") {
            self.meter(recorded);
            return;
        }
        let Some(InferenceOutcome {
            id,
            model,
            tokens_in,
            tokens_out,
            cost_micros,
            ..
        }) = InferenceOutcome::of(recorded)
        else {
            return;
        };
        if model.is_empty() || (cost_micros == 0 && tokens_in + tokens_out == 0) {
            return; // refused before any work: nothing to bill
        }
        let line = PricedUsage {
            usage_id: id,
            at: recorded.recorded_at,
            model,
            requests: 1,
            tokens_in,
            tokens_out,
            tool_calls: 0,
            cost_micros,
        };
        self.remember(recorded.tenant_id);
        if self
            .lines
            .send(Message::Line(recorded.tenant_id, line))
            .is_err()
        {
            tracing::error!("the billing task has stopped; the next start-up bills this usage");
        }
    }
}

/// Bills every pending batch (usage lines, then storage changes); a batch that still fails
/// after its retries stays in `pending` (billing is idempotent per usage id, so trying it again
/// is safe). `false` when one failed.
async fn flush(billing: &Runtime<Billing>, pending: &mut Pending) -> bool {
    let mut all = true;
    for (tenant, (usages, changes)) in std::mem::take(pending) {
        if !usages.is_empty()
            && !send(
                billing,
                tenant,
                BillingCommand::RecordPriced(usages.clone()),
                usages.len(),
            )
            .await
        {
            pending.entry(tenant).or_default().0.extend(usages);
            all = false;
        }
        if !changes.is_empty()
            && !send(
                billing,
                tenant,
                BillingCommand::MeterStorage(changes.clone()),
                changes.len(),
            )
            .await
        {
            pending.entry(tenant).or_default().1.extend(changes);
            all = false;
        }
    }
    all
}

/// One batch to a tenant's billing actor, retried; `false` when it should be kept to try again.
async fn send(
    billing: &Runtime<Billing>,
    tenant: TenantId,
    command: BillingCommand,
    lines: usize,
) -> bool {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match billing
            .send(&tenant, command.clone(), Metadata::default())
            .await
        {
            Ok(applied) => {
                tracing::debug!(%tenant, lines, billed = applied.events.len(), "usage billed");
                return true;
            }
            Err(switchyard_actors::Error::Rejected(rejection)) => {
                // The actor refuses the batch for what it holds: trying again cannot help.
                tracing::error!(%tenant, %rejection, lines, "a usage batch was refused; not billed");
                return true;
            }
            Err(error) if attempt < 5 => {
                tracing::warn!(%tenant, %error, attempt, "billing a usage batch failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(error) => {
                // Kept for the next flush (and in the log for the next start-up).
                tracing::error!(%tenant, %error, lines, "cannot bill a usage batch; kept to try again");
                return false;
            }
        }
    }
}
