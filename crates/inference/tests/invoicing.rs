//! The invoicer on a real log (SQLite, and PostgreSQL shared by two nodes), with a clock moved
//! past the period's end: the closed invoice is the sum of the period's inferences at the
//! plan's prices, re-pricing under the closing book reproduces it to the micro-dollar and
//! writes nothing, and two nodes closing at once close it once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use switchyard_actors::billing::books::BooksCommand;
use switchyard_actors::billing::pricing::{BookFile, Calendar, ModelFile, PlanFile, rate_cost};
use switchyard_actors::billing::{Billing, BillingCommand, InvoiceStatus};
use switchyard_actors::tenant::{Tenant, TenantCommand};
use switchyard_actors::{Clock, Runtime, RuntimeConfig};
use switchyard_events::{
    Event, EventStore, ExpectedVersion, InferenceCompleted, Metadata, ModelRate, PlanPrices,
    PostgresOptions, PostgresStore, Scope, SqliteStore, StreamId, StreamVersion, TenantId,
};
use switchyard_inference::billing_feed::BillingFeed;
use switchyard_inference::follow::{Folder, follow};
use switchyard_inference::invoicing::{Invoicer, to_csv};

fn database_url() -> String {
    std::env::var("SWITCHYARD_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://switchyard:switchyard@127.0.0.1:5432/switchyard_test".into()
    })
}

async fn sqlite() -> Arc<dyn EventStore> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("switchyard-tests")
        .join(uuid::Uuid::now_v7().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    Arc::new(SqliteStore::open(dir.join("events.db")).await.unwrap())
}

async fn postgres() -> Arc<dyn EventStore> {
    let schema = format!("inv_{}", uuid::Uuid::now_v7().simple());
    let store = PostgresStore::connect(PostgresOptions::new(database_url()).schema(schema))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is required (run scripts/services.sh): {e}",
                database_url()
            )
        });
    Arc::new(store)
}

/// A clock that starts now and can be moved forward.
fn movable() -> (Clock, Arc<AtomicI64>) {
    let offset = Arc::new(AtomicI64::new(0));
    let moved = offset.clone();
    let clock: Clock = Arc::new(move || {
        time::OffsetDateTime::now_utc() + time::Duration::seconds(moved.load(Ordering::SeqCst))
    });
    (clock, offset)
}

/// One node: its billing feed, its folds and its invoicer.
async fn node(store: Arc<dyn EventStore>, clock: Clock) -> Arc<Invoicer> {
    let billing =
        Runtime::<Billing>::with_clock(store.clone(), RuntimeConfig::default(), clock.clone());
    let feed = BillingFeed::start(billing.clone());
    let folders: Vec<Arc<dyn Folder>> = vec![feed.clone()];
    let follower = follow(store.clone(), folders).await.unwrap();
    Arc::new(Invoicer::new(store, billing, feed, follower, clock))
}

async fn tenant(store: &Arc<dyn EventStore>, plan: &str) -> TenantId {
    let tenants = Runtime::<Tenant>::new(store.clone(), RuntimeConfig::default());
    let id = TenantId::new();
    tenants
        .send(
            &id,
            TenantCommand::Create {
                name: format!("t-{}", id.as_uuid().simple()),
                plan: plan.into(),
            },
            Metadata::default(),
        )
        .await
        .unwrap();
    id
}

/// An inference as the pipeline records it: its outcome on `inference-<id>`.
async fn inference(
    store: &Arc<dyn EventStore>,
    tenant: TenantId,
    model: &str,
    tokens_in: u64,
    tokens_out: u64,
    cost: u64,
) {
    let stream = StreamId::of("inference", uuid::Uuid::now_v7()).unwrap();
    let event = Event::InferenceCompleted(InferenceCompleted {
        model: model.into(),
        provider: "sim".into(),
        tokens_in,
        tokens_out,
        cost_micros: cost,
        latency_us: 1_000,
        ttft_us: 1_000,
        finish_reason: "stop".into(),
        attempts: 1,
        request: None,
        route: None,
    });
    store
        .append(
            tenant,
            &stream,
            ExpectedVersion::NoStream,
            vec![event.to_new_event(Metadata::default()).unwrap()],
        )
        .await
        .unwrap();
}

fn pro_prices() -> PlanPrices {
    PlanPrices {
        models: BTreeMap::from([(
            "sim-small".to_owned(),
            ModelRate {
                input_micros_per_million: 333_333,
                output_micros_per_million: 1_234_567,
                included_input_tokens: 500,
                ..ModelRate::default()
            },
        )]),
        discount_bps: 1_000,
        included_micros: 0,
    }
}

/// Seconds from now to an hour after the current period ends.
fn past_the_period() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    let calendar = Calendar::default();
    let end = calendar.end(&calendar.period_at(now)).unwrap();
    (end - now).whole_seconds() + 3_600
}

async fn finalized_events(store: &Arc<dyn EventStore>, tenant: TenantId) -> usize {
    let stream = StreamId::of("billing", tenant).unwrap();
    store
        .read_stream(Scope::Tenant(tenant), &stream, StreamVersion::NONE, 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.event_type == "InvoiceFinalized")
        .count()
}

async fn closes_at_plan_prices(store: Arc<dyn EventStore>, nodes: usize) {
    let (clock, offset) = movable();
    let mut invoicers = Vec::new();
    for _ in 0..nodes {
        invoicers.push(node(store.clone(), clock.clone()).await);
    }
    let pro = tenant(&store, "pro").await;
    let free = tenant(&store, "free").await;
    let period = Calendar::default().period_at(time::OffsetDateTime::now_utc());
    invoicers[0]
        .books()
        .send(
            &TenantId::SYSTEM,
            BooksCommand::Publish {
                effective_from: period.clone(),
                plans: BTreeMap::from([("pro".to_owned(), pro_prices())]),
            },
            Metadata::default(),
        )
        .await
        .unwrap();
    // Odd token counts, so that rounding per inference matters; one model the book does not
    // price (billed at its list cost), and a tenant on a plan with no book (list prices).
    let mut expected = 0u64;
    let mut left = 500u64;
    let rate = pro_prices().models["sim-small"];
    for i in 1..=40u64 {
        let (tokens_in, tokens_out) = (i * 37, i * 11);
        inference(&store, pro, "sim-small", tokens_in, tokens_out, i).await;
        let free_in = tokens_in.min(left);
        left -= free_in;
        expected += rate_cost(&rate, 1, tokens_in - free_in, tokens_out);
    }
    inference(&store, pro, "sim-unpriced", 10, 10, 777).await;
    expected += 777;
    inference(&store, free, "sim-small", 100, 100, 55).await;

    // The open period's draft already prices on the plan.
    let draft = loop {
        let draft = invoicers[nodes - 1].document(pro, &period).await.unwrap();
        if draft.invoice.records == 41 {
            break draft;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(draft.status, InvoiceStatus::Open);
    assert_eq!(draft.invoice.subtotal_micros, expected);
    let discount = expected / 10;
    assert_eq!(draft.invoice.total_micros, expected - discount);

    // Before the period ends nothing closes; after it (and the grace), every node tries at once.
    assert_eq!(invoicers[0].close_due(Duration::from_secs(3_600)).await, 0);
    offset.store(past_the_period(), Ordering::SeqCst);
    let closes = invoicers.iter().map(|i| {
        let i = i.clone();
        tokio::spawn(async move { i.close_due(Duration::from_secs(60)).await })
    });
    let closed: usize = futures_util::future::join_all(closes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    assert!(closed >= 2, "both tenants closed (by some node): {closed}");
    assert_eq!(finalized_events(&store, pro).await, 1, "closed once");
    assert_eq!(finalized_events(&store, free).await, 1, "closed once");

    for invoicer in &invoicers {
        let invoice = invoicer.document(pro, &period).await.unwrap();
        assert_eq!(invoice.status, InvoiceStatus::Finalized);
        assert_eq!(invoice.invoice.total_micros, expected - discount);
        assert_eq!(invoice.invoice.book_version, Some(1));
        let list = invoicer.document(free, &period).await.unwrap();
        assert_eq!(
            (list.invoice.total_micros, list.invoice.book_version),
            (55, None)
        );
    }

    // Re-pricing under the book that closed it gives the invoice to the micro-dollar, and
    // writes nothing; another book gives another total.
    let head = store.head().await.unwrap();
    let same = BookFile {
        effective_from: None,
        plans: BTreeMap::from([(
            "pro".to_owned(),
            PlanFile {
                models: BTreeMap::from([(
                    "sim-small".to_owned(),
                    ModelFile {
                        input_usd_per_million: 0.333_333,
                        output_usd_per_million: 1.234_567,
                        included_input_tokens: 500,
                        ..ModelFile::default()
                    },
                )]),
                discount_percent: 10.0,
                included_usd: 0.0,
            },
        )]),
    };
    let rows = invoicers[0].reprice(&same, &period).await.unwrap();
    let row = rows.iter().find(|r| r.tenant == pro).unwrap();
    assert_eq!(row.repriced.total_micros, row.actual.total_micros);
    assert_eq!(row.repriced.lines, row.actual.lines);
    assert_eq!(row.difference_micros, 0);
    let mut cheaper = same.clone();
    cheaper.plans.get_mut("pro").unwrap().discount_percent = 50.0;
    let rows = invoicers[0].reprice(&cheaper, &period).await.unwrap();
    let row = rows.iter().find(|r| r.tenant == pro).unwrap();
    assert_eq!(row.repriced.total_micros, expected - expected / 2);
    assert_eq!(
        store.head().await.unwrap(),
        head,
        "re-pricing wrote nothing"
    );

    // Usage recorded late is not added to the closed invoice; a credit note is a separate line.
    invoicers[0]
        .send(
            pro,
            BillingCommand::IssueCreditNote {
                id: uuid::Uuid::now_v7(),
                period: period.clone(),
                amount_micros: 1_000,
                reason: "goodwill".into(),
            },
            Metadata::default(),
        )
        .await
        .unwrap();
    let document = invoicers[0].document(pro, &period).await.unwrap();
    assert_eq!(document.balance_micros, expected - discount - 1_000);
    let csv = to_csv(&[document]);
    assert!(csv.contains(",credit_note,"), "{csv}");
    assert!(csv.lines().any(|l| l.contains(",total,")), "{csv}");
}

#[tokio::test]
async fn a_closed_invoice_is_the_sum_of_its_inferences_at_the_plans_prices_on_sqlite() {
    closes_at_plan_prices(sqlite().await, 1).await;
}

#[tokio::test]
async fn two_nodes_on_postgresql_close_each_invoice_once() {
    closes_at_plan_prices(postgres().await, 2).await;
}
