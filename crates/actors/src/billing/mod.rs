//! The billing actor: a tenant's usage ledger, its invoices and credit notes (stream
//! `billing-<tenant>`).
//!
//! Each usage record keeps its list cost (from its inference's event), so every invoice is
//! reproducible from the log. A usage id seen before is billed once. Periods are months that
//! start on the tenant's billing day (UTC; the 1st unless set). A period's invoice is open while
//! it runs; after it ends the invoicer prices it on the tenant's plan ([`pricing::price`], with
//! the plan's price book from [`books`]) and closes it for good with those lines; then it can be
//! paid and credited. Money is integer micro-dollars, rounded up per record.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use switchyard_events::{
    BillingDaySet, CreditNoteIssued, Event, InvoiceFinalized, InvoicePaid, TenantId, UsageRecorded,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::actor::Actor;

pub mod books; // the price books: every plan's versioned prices (a platform actor)
pub mod pricing; // pricing a period's usage on a plan; the calendar of billing periods
pub mod storage; // document storage metered per period
#[cfg(test)]
mod tests;

pub use pricing::Calendar;
pub use storage::{StorageMeter, StorageUsage};

/// The billing actor kind.
#[derive(Debug, Clone, Copy)]
pub struct Billing;

/// What one model costs, in micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub input_per_million_tokens: u64,
    pub output_per_million_tokens: u64,
    pub per_request: u64,
}

impl ModelPrice {
    /// The cost of `usage`, rounded up to the micro-dollar.
    pub fn cost(&self, requests: u64, tokens_in: u64, tokens_out: u64) -> u64 {
        let per_million = u128::from(tokens_in) * u128::from(self.input_per_million_tokens)
            + u128::from(tokens_out) * u128::from(self.output_per_million_tokens);
        let tokens = per_million.div_ceil(1_000_000);
        let total = tokens + u128::from(requests) * u128::from(self.per_request);
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}

/// One invoice line: a model's usage in a month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub requests: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub tool_calls: u64,
    pub cost_micros: u64,
}

/// Where a month's invoice stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    #[default]
    Open,
    Finalized,
    Paid,
}

/// A period of usage: while open, its list-price lines; once closed, what it bills for good.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub lines: BTreeMap<String, Line>,
    pub status: InvoiceStatus,
    /// Usage records in the period (a close must have priced them all).
    pub records: u64,
    /// The closed invoice, priced on the plan.
    pub closed: Option<InvoiceFinalized>,
    pub credit_notes: Vec<CreditNote>,
    /// The tenant's stored documents in the period (metered, not priced).
    #[serde(default)]
    pub storage: Option<StorageMeter>,
}

/// A credit note against a closed invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNote {
    pub id: Uuid,
    pub amount_micros: u64,
    pub reason: String,
}

impl Invoice {
    /// The total at list prices (an open invoice's running figure).
    pub fn total_micros(&self) -> u64 {
        self.lines
            .values()
            .fold(0u64, |sum, l| sum.saturating_add(l.cost_micros))
    }

    /// What the closed invoice bills, less its credit notes.
    pub fn credited_micros(&self) -> u64 {
        self.credit_notes
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.amount_micros))
    }

    /// The invoice as CSV: a header, one line per model, then the total.
    pub fn to_csv(&self, period: &str) -> String {
        let mut csv =
            String::from("period,model,requests,tokens_in,tokens_out,tool_calls,cost_usd\n");
        for (model, line) in &self.lines {
            let _ = writeln!(
                csv,
                "{period},{},{},{},{},{},{}",
                csv_field(model),
                line.requests,
                line.tokens_in,
                line.tokens_out,
                line.tool_calls,
                usd(line.cost_micros)
            );
        }
        let _ = writeln!(csv, "{period},TOTAL,,,,,{}", usd(self.total_micros()));
        csv
    }
}

/// Micro-dollars as an exact decimal string.
pub fn usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// A CSV field, quoted when it must be (and never read as a spreadsheet formula).
pub fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// A tenant's invoices by period (`YYYY-MM`, the month the period starts in).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingState {
    pub invoices: BTreeMap<String, Invoice>,
    /// When periods start.
    pub calendar: Calendar,
    /// Credit notes issued, so a retried one is issued once.
    credit_ids: BTreeSet<Uuid>,
    /// Usage ids already billed, per open month (retries arrive within minutes; a month's ids
    /// are dropped when its invoice is finalized, so the set does not grow for ever).
    seen: BTreeMap<String, BTreeSet<Uuid>>,
    /// The tenant's document bytes stored now.
    #[serde(default)]
    pub stored_bytes: u64,
    /// Document events metered (kept for good: a document's events are few, and the log's
    /// replay offers each again).
    #[serde(default)]
    storage_ids: BTreeSet<Uuid>,
}

/// Usage with its cost already known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedUsage {
    pub usage_id: Uuid,
    /// When it happened (its invoice month).
    pub at: OffsetDateTime,
    pub model: String,
    pub requests: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub tool_calls: u64,
    pub cost_micros: u64,
}

/// What can be asked of a tenant's billing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingCommand {
    /// Bill one piece of usage (billed once per `usage_id`) at `price`.
    RecordUsage {
        usage_id: Uuid,
        model: String,
        requests: u64,
        tokens_in: u64,
        tokens_out: u64,
        tool_calls: u64,
        price: ModelPrice,
    },
    /// Bill usage that is priced already (an inference's cost, taken from its event so the
    /// invoice equals the log), each in the month it happened, once per `usage_id`. Usage of a
    /// month whose invoice is closed is not added to it.
    RecordPriced(Vec<PricedUsage>),
    /// Meter document storage, each change in the period it happened (or, if that one is
    /// closed, the one open now), once per `usage_id`.
    MeterStorage(Vec<StorageUsage>),
    /// Close a period's invoice with what it bills, priced by [`pricing::price`] from every
    /// usage record of the period (refused as stale when records arrived since).
    Close { invoice: InvoiceFinalized },
    /// Record that a closed invoice was paid.
    MarkPaid { period: String },
    /// Credit a closed invoice (once per id), never beyond what it bills.
    IssueCreditNote {
        id: Uuid,
        period: String,
        amount_micros: u64,
        reason: String,
    },
    /// Start periods on `day` of the month (1-28), from the first period that has not begun.
    SetBillingDay { day: u8 },
}

/// Why a billing command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingRejection {
    #[error("no invoice for {0}")]
    NoInvoice(String),
    #[error("the invoice for {0} cannot be closed before its period has ended")]
    MonthNotOver(String),
    #[error(
        "the invoice for {period} covers {priced} usage records but {recorded} are recorded; price it again"
    )]
    Stale {
        period: String,
        priced: u64,
        recorded: u64,
    },
    #[error("the invoice for {period} has {left} micro-dollars left to credit; {asked} asked")]
    CreditExceeds {
        period: String,
        left: u64,
        asked: u64,
    },
    #[error("the invoice for {period} is {status:?}")]
    WrongStatus {
        period: String,
        status: InvoiceStatus,
    },
    #[error("credit note {0} was issued with other terms")]
    CreditIdReused(Uuid),
    #[error("{0}")]
    Invalid(String),
}

impl Actor for Billing {
    const KIND: &'static str = "billing";
    const SNAPSHOT_VERSION: u16 = 3;
    type Id = TenantId;
    type State = BillingState;
    type Command = BillingCommand;
    type Rejection = BillingRejection;

    fn tenant(id: &TenantId) -> TenantId {
        *id
    }

    fn decide(
        state: &BillingState,
        command: BillingCommand,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, BillingRejection> {
        match command {
            BillingCommand::RecordUsage {
                usage_id,
                model,
                requests,
                tokens_in,
                tokens_out,
                tool_calls,
                price,
            } => {
                if state.seen.values().any(|ids| ids.contains(&usage_id)) {
                    return Ok(vec![]); // a retry: billed once
                }
                if model.is_empty() || model.len() > 200 || model.chars().any(char::is_control) {
                    return Err(BillingRejection::Invalid(
                        "model must be 1-200 characters".into(),
                    ));
                }
                let cost_micros = price.cost(requests, tokens_in, tokens_out);
                Ok(vec![Event::UsageRecorded(UsageRecorded {
                    usage_id,
                    period: state.calendar.period_at(now),
                    model,
                    requests,
                    tokens_in,
                    tokens_out,
                    tool_calls,
                    cost_micros,
                })])
            }
            BillingCommand::RecordPriced(usages) => {
                let mut events = Vec::with_capacity(usages.len());
                let mut batch = BTreeSet::new();
                for usage in usages {
                    let period = state.calendar.period_at(usage.at);
                    let closed = state
                        .invoices
                        .get(&period)
                        .is_some_and(|i| i.status != InvoiceStatus::Open);
                    if closed
                        || !batch.insert(usage.usage_id)
                        || state.seen.values().any(|ids| ids.contains(&usage.usage_id))
                    {
                        continue;
                    }
                    if usage.model.is_empty()
                        || usage.model.len() > 200
                        || usage.model.chars().any(char::is_control)
                    {
                        return Err(BillingRejection::Invalid(
                            "model must be 1-200 characters".into(),
                        ));
                    }
                    events.push(Event::UsageRecorded(UsageRecorded {
                        usage_id: usage.usage_id,
                        period,
                        model: usage.model,
                        requests: usage.requests,
                        tokens_in: usage.tokens_in,
                        tokens_out: usage.tokens_out,
                        tool_calls: usage.tool_calls,
                        cost_micros: usage.cost_micros,
                    }));
                }
                Ok(events)
            }
            BillingCommand::MeterStorage(changes) => Ok(storage::meter(state, changes, now)),
            BillingCommand::Close { invoice: priced } => {
                let period = priced.period.clone();
                let invoice = state
                    .invoices
                    .get(&period)
                    .ok_or_else(|| BillingRejection::NoInvoice(period.clone()))?;
                if state.calendar.end(&period).is_none_or(|end| now < end) {
                    return Err(BillingRejection::MonthNotOver(period));
                }
                if invoice.status != InvoiceStatus::Open {
                    return Err(BillingRejection::WrongStatus {
                        period,
                        status: invoice.status,
                    });
                }
                if priced.records != invoice.records {
                    return Err(BillingRejection::Stale {
                        period,
                        priced: priced.records,
                        recorded: invoice.records,
                    });
                }
                Ok(vec![Event::InvoiceFinalized(priced)])
            }
            BillingCommand::IssueCreditNote {
                id,
                period,
                amount_micros,
                reason,
            } => {
                if state.credit_ids.contains(&id) {
                    // A retry is issued once; the same id with other terms is refused.
                    let same = state.invoices.get(&period).is_some_and(|invoice| {
                        invoice.credit_notes.iter().any(|note| {
                            note.id == id
                                && note.amount_micros == amount_micros
                                && note.reason == reason.trim()
                        })
                    });
                    return if same {
                        Ok(vec![])
                    } else {
                        Err(BillingRejection::CreditIdReused(id))
                    };
                }
                let invoice = state
                    .invoices
                    .get(&period)
                    .ok_or_else(|| BillingRejection::NoInvoice(period.clone()))?;
                let Some(closed) = &invoice.closed else {
                    return Err(BillingRejection::WrongStatus {
                        period,
                        status: invoice.status,
                    });
                };
                let reason = reason.trim().to_owned();
                if reason.is_empty() || reason.len() > 500 || reason.chars().any(char::is_control) {
                    return Err(BillingRejection::Invalid(
                        "a credit note's reason must be 1-500 characters with no control characters".into(),
                    ));
                }
                if amount_micros == 0 {
                    return Err(BillingRejection::Invalid(
                        "a credit note's amount must be more than zero".into(),
                    ));
                }
                let left = closed
                    .total_micros
                    .saturating_sub(invoice.credited_micros());
                if amount_micros > left {
                    return Err(BillingRejection::CreditExceeds {
                        period,
                        left,
                        asked: amount_micros,
                    });
                }
                Ok(vec![Event::CreditNoteIssued(CreditNoteIssued {
                    credit_note_id: id,
                    period,
                    amount_micros,
                    reason,
                })])
            }
            BillingCommand::SetBillingDay { day } => {
                if !(1..=28).contains(&day) {
                    return Err(BillingRejection::Invalid(
                        "the billing day must be 1-28 (every month has it)".into(),
                    ));
                }
                let current = state.calendar.period_at(now);
                if state.calendar.day(&current) == day
                    && state
                        .calendar
                        .day(&pricing::next_period(&current).unwrap_or_default())
                        == day
                {
                    return Ok(vec![]); // already so
                }
                Ok(vec![Event::BillingDaySet(BillingDaySet {
                    from_period: state.calendar.first_changeable(now, day),
                    day,
                })])
            }
            BillingCommand::MarkPaid { period } => {
                let invoice = state
                    .invoices
                    .get(&period)
                    .ok_or_else(|| BillingRejection::NoInvoice(period.clone()))?;
                match invoice.status {
                    InvoiceStatus::Finalized => {
                        Ok(vec![Event::InvoicePaid(InvoicePaid { period })])
                    }
                    InvoiceStatus::Paid => Ok(vec![]),
                    status @ InvoiceStatus::Open => {
                        Err(BillingRejection::WrongStatus { period, status })
                    }
                }
            }
        }
    }

    fn apply(state: &mut BillingState, event: &Event) {
        match event {
            Event::UsageRecorded(e) => {
                state
                    .seen
                    .entry(e.period.clone())
                    .or_default()
                    .insert(e.usage_id);
                let invoice = state.invoices.entry(e.period.clone()).or_default();
                invoice.records += 1;
                let line = invoice.lines.entry(e.model.clone()).or_default();
                line.requests = line.requests.saturating_add(e.requests);
                line.tokens_in = line.tokens_in.saturating_add(e.tokens_in);
                line.tokens_out = line.tokens_out.saturating_add(e.tokens_out);
                line.tool_calls = line.tool_calls.saturating_add(e.tool_calls);
                line.cost_micros = line.cost_micros.saturating_add(e.cost_micros);
            }
            Event::StorageMetered(e) => storage::apply(state, e),
            Event::InvoiceFinalized(e) => {
                let invoice = state.invoices.entry(e.period.clone()).or_default();
                invoice.status = InvoiceStatus::Finalized;
                invoice.closed = Some(e.clone());
                state.seen.remove(&e.period);
            }
            Event::CreditNoteIssued(e) => {
                state.credit_ids.insert(e.credit_note_id);
                if let Some(invoice) = state.invoices.get_mut(&e.period) {
                    invoice.credit_notes.push(CreditNote {
                        id: e.credit_note_id,
                        amount_micros: e.amount_micros,
                        reason: e.reason.clone(),
                    });
                }
            }
            Event::BillingDaySet(e) => state.calendar.set(&e.from_period, e.day),
            Event::InvoicePaid(e) => {
                if let Some(invoice) = state.invoices.get_mut(&e.period) {
                    invoice.status = InvoiceStatus::Paid;
                }
            }
            // Not billing's: other streams' events.
            Event::PriceBookPublished(_)
            | Event::TenantCreated(_)
            | Event::TenantRenamed(_)
            | Event::TenantSuspended(_)
            | Event::TenantResumed(_)
            | Event::TenantFlagSet(_)
            | Event::FeatureFlagSet(_)
            | Event::TenantSettingSet(_)
            | Event::ApiKeyIssued(_)
            | Event::ApiKeyRevoked(_)
            | Event::ApiKeyRotated(_)
            | Event::TenantDeleted(_)
            | Event::TenantLimitsSet(_)
            | Event::IdempotencyKeyClaimed(_)
            | Event::IdempotentResponseRecorded(_)
            | Event::IdempotencyKeyReleased(_)
            | Event::QuotaReserved(_)
            | Event::QuotaSettled(_)
            | Event::QuotaReleased(_)
            | Event::RateLimitSet(_)
            | Event::InferenceRequested(_)
            | Event::RouteChosen(_)
            | Event::InferenceCompleted(_)
            | Event::InferenceFailed(_)
            | Event::GuardrailChecked(_)
            | Event::InferenceCaptured(_)
            | Event::CapturesDeleted(_)
            | Event::RewardRecorded(_)
            | Event::RouterConfigured(_)
            | Event::CircuitChanged(_)
            | Event::WorkflowRegistered(_)
            | Event::FragmentRegistered(_)
            | Event::ToolRegistered(_)
            | Event::PromptRegistered(_)
            | Event::ManifestSigned(_)
            | Event::DocumentAdded(_)
            | Event::DocumentChunked(_)
            | Event::DocumentIndexed(_)
            | Event::DocumentDeleted(_)
            | Event::RunStarted(_)
            | Event::StepStarted(_)
            | Event::StepCompleted(_)
            | Event::StepFailed(_)
            | Event::TimerStarted(_)
            | Event::TimerFired(_)
            | Event::SignalReceived(_)
            | Event::RunCancelRequested(_)
            | Event::RunCompleted(_)
            | Event::RunFailed(_)
            | Event::RunCancelled(_)
            | Event::RunContinued(_)
            | Event::SegmentStarted(_) => {}
        }
    }
}
