//! The invoicer: prices and closes each tenant's periods on its plan, drafts open ones, and
//! re-prices any period under another price book without writing anything.
//!
//! Closing a period is exact on any number of nodes:
//! 1. the node's billing feed is brought up to the log's head and flushed, so every inference
//!    recorded before the close is a usage record of the billing actor;
//! 2. every usage record of the period is read from the tenant's billing stream and priced by
//!    [`pricing::price`] with the plan's book in effect for the period;
//! 3. the billing actor closes the invoice only if it covers as many records as the actor holds
//!    (a record that arrived meanwhile makes it stale: priced again), and only once: two nodes
//!    closing at the same time append one `InvoiceFinalized` (the other sees it closed).
//!
//! The periodic close runs on one node at a time (the lease `invoice-close`), a grace period
//! after each period ends.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use switchyard_actors::billing::books::{BookVersion, PriceBooks};
use switchyard_actors::billing::pricing::{self, BookFile};
use switchyard_actors::billing::{
    Billing, BillingCommand, BillingRejection, BillingState, CreditNote, InvoiceStatus,
    StorageMeter, usd,
};
use switchyard_actors::tenant::Tenant;
use switchyard_actors::{Actor, Clock, Error as ActorError, Runtime};
use switchyard_events::{
    Event, EventStore, InvoiceFinalized, Metadata, PlanPrices, Scope, StreamId, StreamVersion,
    TenantId, UsageRecorded,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::billing_feed::BillingFeed;
use crate::follow::Follower;
use crate::{Error, Result};

#[expect(
    clippy::expect_used,
    reason = "a static metric definition; a bad one fails every test"
)]
static CLOSES: std::sync::LazyLock<prometheus::IntCounterVec> = std::sync::LazyLock::new(|| {
    let counter = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "switchyard_invoices_closed_total",
            "Invoice closes by outcome: closed, already_closed (another node or call was first), failed",
        ),
        &["outcome"],
    )
    .expect("valid metric");
    let _ = prometheus::register(Box::new(counter.clone()));
    counter
});

/// Longest wait for this node's folds to reach the log's head before a close.
const CATCH_UP: Duration = Duration::from_secs(30);
/// Attempts at a close that keeps going stale (usage still arriving).
const ATTEMPTS: u32 = 5;

/// A period's invoice as finance reads it: the priced lines (the closed invoice, or an open
/// period's draft on the current book), its credit notes and what is left to pay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceDocument {
    pub tenant: TenantId,
    pub period: String,
    /// `open` (a draft: the figures move until it closes), `finalized` or `paid`.
    pub status: InvoiceStatus,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(flatten)]
    pub invoice: InvoiceFinalized,
    pub credit_notes: Vec<CreditNote>,
    pub credited_micros: u64,
    /// `total - credited`.
    pub balance_micros: u64,
    /// The tenant's document storage in the period (metered; not priced).
    pub storage: StorageMeter,
    pub total_usd: String,
    pub balance_usd: String,
}

/// One tenant's period priced two ways: as billed (or drafted), and under another book.
#[derive(Debug, Clone, Serialize)]
pub struct Repriced {
    pub tenant: TenantId,
    pub plan: String,
    pub actual: InvoiceFinalized,
    pub repriced: InvoiceFinalized,
    /// `repriced - actual`, in micro-dollars.
    pub difference_micros: i128,
}

/// Closes, drafts and re-prices invoices (see the module docs).
pub struct Invoicer {
    store: Arc<dyn EventStore>,
    billing: Runtime<Billing>,
    books: Runtime<PriceBooks>,
    tenants: Runtime<Tenant>,
    feed: Arc<BillingFeed>,
    follower: Arc<Follower>,
    clock: Clock,
}

impl std::fmt::Debug for Invoicer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoicer").finish_non_exhaustive()
    }
}

fn refused(status: u16, code: &'static str, message: String) -> Error {
    Error::Billing {
        status,
        code,
        message,
    }
}

/// An actor error as the pipeline's: a rejection keeps its rule, the rest is "unavailable".
fn from_actor<R: std::error::Error>(
    error: ActorError<R>,
    rejection: impl FnOnce(R) -> Error,
) -> Error {
    match error {
        ActorError::Rejected(r) => rejection(r),
        ActorError::Store(error) => Error::Store(error),
        other => {
            tracing::warn!(error = %other, "a billing command was not decided");
            Error::Unavailable
        }
    }
}

fn billing_refusal(rejection: BillingRejection) -> Error {
    let message = rejection.to_string();
    match rejection {
        BillingRejection::NoInvoice(_) => refused(404, "invoice_not_found", message),
        BillingRejection::MonthNotOver(_) => refused(409, "period_not_over", message),
        BillingRejection::WrongStatus { .. } => refused(409, "invoice_status", message),
        BillingRejection::Stale { .. } => refused(409, "invoice_stale", message),
        BillingRejection::CreditExceeds { .. } => refused(422, "credit_exceeds_invoice", message),
        BillingRejection::CreditIdReused(_) => refused(409, "credit_note_id_reused", message),
        BillingRejection::Invalid(_) => refused(422, "invalid_request", message),
    }
}

fn rfc3339(at: Option<OffsetDateTime>) -> String {
    at.and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

impl Invoicer {
    /// An invoicer over the server's log, its billing feed and its folds.
    pub fn new(
        store: Arc<dyn EventStore>,
        billing: Runtime<Billing>,
        feed: Arc<BillingFeed>,
        follower: Arc<Follower>,
        clock: Clock,
    ) -> Self {
        let config = switchyard_actors::RuntimeConfig::default();
        Invoicer {
            books: Runtime::with_clock(store.clone(), config.clone(), clock.clone()),
            tenants: Runtime::with_clock(store.clone(), config, clock.clone()),
            store,
            billing,
            feed,
            follower,
            clock,
        }
    }

    /// The price books, to publish and list.
    pub fn books(&self) -> &Runtime<PriceBooks> {
        &self.books
    }

    /// The tenant's billing state (strongly consistent: read from its stream).
    pub async fn state(&self, tenant: TenantId) -> Result<BillingState> {
        self.billing
            .read(&tenant)
            .await
            .map(|(state, _)| state)
            .map_err(|e| from_actor(e, billing_refusal))
    }

    /// Every tenant with billed usage.
    pub fn tenants(&self) -> Vec<TenantId> {
        self.feed.tenants()
    }

    /// Carries out a billing command on the tenant's billing actor.
    pub async fn send(
        &self,
        tenant: TenantId,
        command: BillingCommand,
        metadata: Metadata,
    ) -> Result<()> {
        self.billing
            .send(&tenant, command, metadata)
            .await
            .map(|_| ())
            .map_err(|e| from_actor(e, billing_refusal))
    }

    /// The tenant's plan; 404 for a tenant that never existed.
    pub async fn plan(&self, tenant: TenantId) -> Result<String> {
        let state = self
            .tenants
            .read(&tenant)
            .await
            .map_err(|e| from_actor(e, |r| refused(422, "invalid_request", r.to_string())))?
            .0;
        if !state.created {
            return Err(refused(404, "not_found", "no such tenant".into()));
        }
        Ok(state.plan)
    }

    /// The book that prices `period` on `plan` now.
    pub async fn book_for(&self, plan: &str, period: &str) -> Result<Option<BookVersion>> {
        let books = self
            .books
            .read(&TenantId::SYSTEM)
            .await
            .map_err(|e| from_actor(e, |r| refused(422, "invalid_request", r.to_string())))?;
        Ok(books.0.book_for(plan, period).cloned())
    }

    /// Every usage record of the tenant's `period`, in log order.
    pub async fn records(&self, tenant: TenantId, period: &str) -> Result<Vec<UsageRecorded>> {
        let stream =
            StreamId::of(Billing::KIND, tenant).map_err(|e| Error::Config(e.to_string()))?;
        let mut out = Vec::new();
        let mut after = StreamVersion::NONE;
        loop {
            let page = self
                .store
                .read_stream(Scope::Tenant(tenant), &stream, after, 1_000)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.stream_version;
            for recorded in &page {
                if let Ok(Event::UsageRecorded(usage)) = Event::from_recorded(recorded)
                    && usage.period == period
                {
                    out.push(usage);
                }
            }
        }
        Ok(out)
    }

    /// The period's usage priced on `plan` with `book` (`None`: list prices).
    async fn priced(
        &self,
        tenant: TenantId,
        period: &str,
        plan: &str,
        book: Option<(u32, &PlanPrices)>,
    ) -> Result<InvoiceFinalized> {
        let records = self.records(tenant, period).await?;
        Ok(pricing::price(period, plan, book, &records))
    }

    /// A period's invoice: as closed, or an open period's draft on the book in effect now.
    pub async fn document(&self, tenant: TenantId, period: &str) -> Result<InvoiceDocument> {
        if pricing::parse_period(period).is_none() {
            return Err(refused(
                422,
                "invalid_request",
                format!("{period:?} is not a period such as 2026-11"),
            ));
        }
        let plan = self.plan(tenant).await?;
        let state = self.state(tenant).await?;
        let invoice = state.invoices.get(period);
        let status = invoice.map(|i| i.status).unwrap_or_default();
        let priced = match invoice.and_then(|i| i.closed.clone()) {
            Some(closed) => closed,
            None => {
                let book = self.book_for(&plan, period).await?;
                self.priced(
                    tenant,
                    period,
                    &plan,
                    book.as_ref().map(|b| (b.version, &b.prices)),
                )
                .await?
            }
        };
        let credit_notes = invoice.map(|i| i.credit_notes.clone()).unwrap_or_default();
        let credited = invoice.map_or(0, |i| i.credited_micros());
        let balance = priced.total_micros.saturating_sub(credited);
        Ok(InvoiceDocument {
            tenant,
            period: period.to_owned(),
            status,
            starts_at: rfc3339(state.calendar.start(period)),
            ends_at: rfc3339(state.calendar.end(period)),
            total_usd: usd(priced.total_micros),
            balance_usd: usd(balance),
            invoice: priced,
            credit_notes,
            credited_micros: credited,
            balance_micros: balance,
            storage: state.storage(period),
        })
    }

    /// Waits until this node's folds (and so its billing feed) have reached the log's head as
    /// it is now, and the feed has billed all it was given.
    async fn catch_up(&self) -> Result<()> {
        let head = self.store.head().await?;
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        while self.follower.position() < head {
            if tokio::time::Instant::now() >= deadline {
                return Err(refused(
                    503,
                    "unavailable",
                    "this node's billing feed is behind the log; retry shortly".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !self.feed.flush().await {
            return Err(refused(
                503,
                "unavailable",
                "this node could not bill all of its usage yet (logged); retry shortly".into(),
            ));
        }
        Ok(())
    }

    /// Closes the tenant's `period` on its plan (see the module docs); answers the closed
    /// invoice, also when it was closed already.
    pub async fn close(
        &self,
        tenant: TenantId,
        period: &str,
        metadata: Metadata,
    ) -> Result<InvoiceFinalized> {
        let plan = self.plan(tenant).await?;
        self.catch_up().await?;
        for attempt in 1..=ATTEMPTS {
            let state = self.state(tenant).await?;
            if let Some(closed) = state.invoices.get(period).and_then(|i| i.closed.clone()) {
                return Ok(closed);
            }
            let book = self.book_for(&plan, period).await?;
            let invoice = self
                .priced(
                    tenant,
                    period,
                    &plan,
                    book.as_ref().map(|b| (b.version, &b.prices)),
                )
                .await?;
            let command = BillingCommand::Close {
                invoice: invoice.clone(),
            };
            match self.billing.send(&tenant, command, metadata.clone()).await {
                Ok(_) => {
                    CLOSES.with_label_values(&["closed"]).inc();
                    tracing::info!(%tenant, period, plan, total_micros = invoice.total_micros,
                        book_version = ?invoice.book_version, records = invoice.records, "invoice closed");
                    return Ok(invoice);
                }
                Err(ActorError::Rejected(BillingRejection::Stale { .. })) if attempt < ATTEMPTS => {
                    tracing::debug!(%tenant, period, attempt, "usage arrived while pricing; pricing again");
                }
                Err(ActorError::Rejected(BillingRejection::WrongStatus { .. })) => {
                    // Another node closed it first.
                    CLOSES.with_label_values(&["already_closed"]).inc();
                    if let Some(closed) = self
                        .state(tenant)
                        .await?
                        .invoices
                        .get(period)
                        .and_then(|i| i.closed.clone())
                    {
                        return Ok(closed);
                    }
                }
                Err(error) => return Err(from_actor(error, billing_refusal)),
            }
        }
        Err(refused(
            409,
            "invoice_stale",
            format!("usage kept arriving while {period} was priced; retry"),
        ))
    }

    /// Closes every open period that ended at least `grace` ago, of every tenant with usage.
    /// Answers how many closed; a tenant that fails is logged and tried again next time.
    pub async fn close_due(&self, grace: Duration) -> usize {
        let now = (self.clock)();
        let cutoff = now - grace;
        let mut closed = 0;
        for tenant in self.feed.tenants() {
            let state = match self.state(tenant).await {
                Ok(state) => state,
                Err(error) => {
                    tracing::warn!(%tenant, %error, "invoicing: cannot read the billing state");
                    continue;
                }
            };
            for (period, invoice) in &state.invoices {
                let due = state.calendar.end(period).is_some_and(|end| end <= cutoff);
                if invoice.status != InvoiceStatus::Open || !due {
                    continue;
                }
                match self.close(tenant, period, Metadata::default()).await {
                    Ok(_) => closed += 1,
                    Err(error) => {
                        CLOSES.with_label_values(&["failed"]).inc();
                        tracing::warn!(%tenant, period, %error, "invoicing: the close failed");
                    }
                }
            }
        }
        closed
    }

    /// Each tenant's `period` priced under `book` beside its invoice as closed (or drafted on
    /// the current book). Writes nothing.
    pub async fn reprice(&self, book: &BookFile, period: &str) -> Result<Vec<Repriced>> {
        if pricing::parse_period(period).is_none() {
            return Err(refused(
                422,
                "invalid_request",
                format!("{period:?} is not a period such as 2026-11"),
            ));
        }
        let plans = book
            .prices()
            .map_err(|m| refused(422, "invalid_request", m))?;
        let mut out = Vec::new();
        for tenant in self.feed.tenants() {
            let state = self.state(tenant).await?;
            if !state.invoices.contains_key(period) {
                continue; // no usage that period
            }
            let plan = self.plan(tenant).await?;
            let actual = self.document(tenant, period).await?.invoice;
            let what_if = plans.get(&plan).or_else(|| plans.get("*"));
            let records = self.records(tenant, period).await?;
            let repriced = pricing::price(period, &plan, what_if.map(|p| (0, p)), &records);
            out.push(Repriced {
                tenant,
                difference_micros: i128::from(repriced.total_micros)
                    - i128::from(actual.total_micros),
                plan,
                actual,
                repriced,
            });
        }
        Ok(out)
    }

    /// Now, by the invoicer's clock.
    pub fn now(&self) -> OffsetDateTime {
        (self.clock)()
    }
}

/// Closes due invoices every `every`, on one node at a time (the lease `invoice-close`), a
/// `grace` after each period ends. Runs until the process ends.
pub async fn run(invoicer: Arc<Invoicer>, every: Duration, grace: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let lease = match invoicer.store.try_lease("invoice-close").await {
            Ok(Some(lease)) => lease,
            Ok(None) => continue, // another node closes
            Err(error) => {
                tracing::warn!(%error, "invoicing: the lease cannot be taken");
                continue;
            }
        };
        let closed = invoicer.close_due(grace).await;
        if closed > 0 {
            tracing::info!(closed, "invoicing: periods closed");
        }
        drop(lease);
    }
}

/// Invoices as one CSV: a row per line, then the invoice's subtotal, discount, credit, total,
/// each credit note and the balance, all with the tenant, period, status, plan and book.
pub fn to_csv(documents: &[InvoiceDocument]) -> String {
    use std::fmt::Write as _;
    use switchyard_actors::billing::csv_field;
    let mut csv = String::from(
        "tenant,period,status,plan,book_version,row,model,requests,tokens_in,tokens_out,tool_calls,list_usd,amount_usd\n",
    );
    for doc in documents {
        let status = match doc.status {
            InvoiceStatus::Open => "open",
            InvoiceStatus::Finalized => "finalized",
            InvoiceStatus::Paid => "paid",
        };
        let book = doc
            .invoice
            .book_version
            .map(|v| v.to_string())
            .unwrap_or_default();
        let head = format!(
            "{},{},{status},{},{book}",
            doc.tenant,
            doc.period,
            csv_field(&doc.invoice.plan)
        );
        for line in &doc.invoice.lines {
            let _ = writeln!(
                csv,
                "{head},line,{},{},{},{},{},{},{}",
                csv_field(&line.model),
                line.requests,
                line.tokens_in,
                line.tokens_out,
                line.tool_calls,
                usd(line.list_micros),
                usd(line.amount_micros)
            );
        }
        let mut summary = |row: &str, what: &str, micros: u64, negative: bool| {
            let sign = if negative && micros > 0 { "-" } else { "" };
            let _ = writeln!(
                csv,
                "{head},{row},{},,,,,,{sign}{}",
                csv_field(what),
                usd(micros)
            );
        };
        summary("subtotal", "", doc.invoice.subtotal_micros, false);
        summary("discount", "", doc.invoice.discount_micros, true);
        summary("included", "", doc.invoice.included_micros, true);
        summary("total", "", doc.invoice.total_micros, false);
        for note in &doc.credit_notes {
            summary(
                "credit_note",
                &format!("{} {}", note.id, note.reason),
                note.amount_micros,
                true,
            );
        }
        summary("balance", "", doc.balance_micros, false);
    }
    csv
}
