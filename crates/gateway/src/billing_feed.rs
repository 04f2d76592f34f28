//! Feeds the billing actors from the log: every inference outcome with a cost or tokens
//! (`InferenceCompleted`, `InferenceFailed` of a stream cut mid-way) becomes a priced usage line
//! of its tenant's billing actor, in the month it happened, once per inference id.
//!
//! Batched per tenant (one command, one append of many `UsageRecorded` per flush), off the
//! request path. It reads the log from the start at every start-up: the billing actor
//! deduplicates by inference id and never adds to a closed invoice, so the replay is harmless.
//! (A checkpoint comes with the projector runtime of the read side.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use switchyard_actors::Runtime;
use switchyard_actors::billing::{Billing, BillingCommand, PricedUsage};
use switchyard_events::{Event, EventStore, GlobalPosition, Metadata, Scope, TenantId};
use uuid::Uuid;

/// Usage lines per tenant command.
const BATCH: usize = 500;
/// Longest wait before a partial batch is billed.
const FLUSH_AFTER: Duration = Duration::from_millis(200);

/// Starts the feeder in the background.
pub fn spawn(store: Arc<dyn EventStore>, billing: Runtime<Billing>) {
    tokio::spawn(async move {
        let mut events = store.subscribe_all(Scope::All, GlobalPosition::START);
        let mut pending: BTreeMap<TenantId, Vec<PricedUsage>> = BTreeMap::new();
        let mut count = 0usize;
        loop {
            match tokio::time::timeout(FLUSH_AFTER, events.next()).await {
                Ok(Some(Ok(recorded))) => {
                    if !matches!(
                        recorded.event_type.as_str(),
                        "InferenceCompleted" | "InferenceFailed"
                    ) {
                        continue;
                    }
                    let Some(id) = recorded
                        .stream_id
                        .as_str()
                        .strip_prefix("inference-")
                        .and_then(|id| id.parse::<Uuid>().ok())
                    else {
                        continue;
                    };
                    let line = match Event::from_recorded(&recorded) {
                        Ok(Event::InferenceCompleted(e)) => {
                            (e.model, e.tokens_in, e.tokens_out, e.cost_micros)
                        }
                        Ok(Event::InferenceFailed(e)) => {
                            (e.model, e.tokens_in, e.tokens_out, e.cost_micros)
                        }
                        _ => continue,
                    };
                    let (model, tokens_in, tokens_out, cost_micros) = line;
                    if model.is_empty() || (cost_micros == 0 && tokens_in + tokens_out == 0) {
                        continue; // refused before any work: nothing to bill
                    }
                    pending
                        .entry(recorded.tenant_id)
                        .or_default()
                        .push(PricedUsage {
                            usage_id: id,
                            at: recorded.recorded_at,
                            model,
                            requests: 1,
                            tokens_in,
                            tokens_out,
                            tool_calls: 0,
                            cost_micros,
                        });
                    count += 1;
                    if count >= BATCH {
                        flush(&billing, &mut pending).await;
                        count = 0;
                    }
                }
                Ok(Some(Err(error))) => {
                    tracing::error!(%error, "billing feed stopped reading the log");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    if count > 0 {
                        flush(&billing, &mut pending).await;
                        count = 0;
                    }
                }
            }
        }
    });
}

async fn flush(billing: &Runtime<Billing>, pending: &mut BTreeMap<TenantId, Vec<PricedUsage>>) {
    for (tenant, usages) in std::mem::take(pending) {
        let lines = usages.len();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let command = BillingCommand::RecordPriced(usages.clone());
            match billing.send(&tenant, command, Metadata::default()).await {
                Ok(applied) => {
                    tracing::debug!(%tenant, lines, billed = applied.events.len(), "usage billed");
                    break;
                }
                Err(error) if attempt < 5 => {
                    tracing::warn!(%tenant, %error, attempt, "billing a usage batch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(error) => {
                    // The lines stay in the log; the next start-up bills them.
                    tracing::error!(%tenant, %error, lines, "cannot bill a usage batch");
                    break;
                }
            }
        }
    }
}
