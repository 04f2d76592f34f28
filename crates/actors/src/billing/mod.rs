//! The billing actor: a tenant's usage ledger and monthly invoices (stream `billing-<tenant>`).
//!
//! Each usage record is priced when it is recorded, from the price-book entry the caller passes
//! in (per model and plan, see [`PriceBook`]), and the cost is stored in the event: an invoice is
//! reproducible from the log even after prices change. A usage id seen before is billed once.
//! Months are UTC calendar months; an invoice is open during its month, then finalized, then
//! paid. Money is integer micro-dollars, rounded up per record.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use switchyard_events::{Event, InvoiceFinalized, InvoicePaid, TenantId, UsageRecorded};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::actor::Actor;
use crate::quota::period_of;

#[cfg(test)]
mod tests;

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

/// Prices per (plan, model), with `*` as the plan that applies when a plan has no own price.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBook {
    pub prices: BTreeMap<String, BTreeMap<String, ModelPrice>>,
}

impl PriceBook {
    /// The price of `model` on `plan`, if the book has one.
    pub fn price(&self, plan: &str, model: &str) -> Option<ModelPrice> {
        [plan, "*"].iter().find_map(|p| {
            self.prices
                .get(*p)
                .and_then(|models| models.get(model))
                .copied()
        })
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

/// A month of usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub lines: BTreeMap<String, Line>,
    pub status: InvoiceStatus,
}

impl Invoice {
    pub fn total_micros(&self) -> u64 {
        self.lines.values().map(|l| l.cost_micros).sum()
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
fn csv_field(value: &str) -> String {
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

/// A tenant's invoices by period (`YYYY-MM`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingState {
    pub invoices: BTreeMap<String, Invoice>,
    /// Usage ids already billed, per open month (retries arrive within minutes; a month's ids
    /// are dropped when its invoice is finalized, so the set does not grow for ever).
    seen: BTreeMap<String, BTreeSet<Uuid>>,
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
    /// Close a past month's invoice.
    Finalize { period: String },
    /// Record that a finalized invoice was paid.
    MarkPaid { period: String },
}

/// Why a billing command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingRejection {
    #[error("no invoice for {0}")]
    NoInvoice(String),
    #[error("the invoice for {0} cannot be finalized before its month has ended")]
    MonthNotOver(String),
    #[error("the invoice for {period} is {status:?}")]
    WrongStatus {
        period: String,
        status: InvoiceStatus,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Actor for Billing {
    const KIND: &'static str = "billing";
    const SNAPSHOT_VERSION: u16 = 1;
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
                    period: period_of(now),
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
                    let period = period_of(usage.at);
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
            BillingCommand::Finalize { period } => {
                let invoice = state
                    .invoices
                    .get(&period)
                    .ok_or_else(|| BillingRejection::NoInvoice(period.clone()))?;
                if period >= period_of(now) {
                    return Err(BillingRejection::MonthNotOver(period));
                }
                match invoice.status {
                    InvoiceStatus::Open => Ok(vec![Event::InvoiceFinalized(InvoiceFinalized {
                        total_micros: invoice.total_micros(),
                        period,
                    })]),
                    status => Err(BillingRejection::WrongStatus { period, status }),
                }
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
                let line = invoice.lines.entry(e.model.clone()).or_default();
                line.requests += e.requests;
                line.tokens_in += e.tokens_in;
                line.tokens_out += e.tokens_out;
                line.tool_calls += e.tool_calls;
                line.cost_micros = line.cost_micros.saturating_add(e.cost_micros);
            }
            Event::InvoiceFinalized(e) => {
                if let Some(invoice) = state.invoices.get_mut(&e.period) {
                    invoice.status = InvoiceStatus::Finalized;
                }
                state.seen.remove(&e.period);
            }
            Event::InvoicePaid(e) => {
                if let Some(invoice) = state.invoices.get_mut(&e.period) {
                    invoice.status = InvoiceStatus::Paid;
                }
            }
            // Not billing's: other streams' events.
            Event::TenantCreated(_)
            | Event::TenantRenamed(_)
            | Event::TenantSuspended(_)
            | Event::TenantResumed(_)
            | Event::TenantFlagSet(_)
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
