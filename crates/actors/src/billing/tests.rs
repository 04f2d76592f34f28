//! Given events, when a command, then events: the billing rules.

use time::{Date, Month, OffsetDateTime};
use uuid::Uuid;

use switchyard_events::PlanPrices;

use super::*;

mod invoices;

fn utc(month: Month, day: u8) -> OffsetDateTime {
    Date::from_calendar_date(2026, month, day)
        .unwrap()
        .midnight()
        .assume_utc()
}

fn given(events: &[Event]) -> BillingState {
    let mut state = BillingState::default();
    for event in events {
        Billing::apply(&mut state, event);
    }
    state
}

const PRICE: ModelPrice = ModelPrice {
    input_per_million_tokens: 150_000,
    output_per_million_tokens: 600_000,
    per_request: 0,
};

fn usage(id: Uuid, model: &str, tokens_in: u64, tokens_out: u64) -> BillingCommand {
    BillingCommand::RecordUsage {
        usage_id: id,
        model: model.into(),
        requests: 1,
        tokens_in,
        tokens_out,
        tool_calls: 0,
        price: PRICE,
    }
}

/// The close of `period` as the invoicer makes it: every usage record of the period priced.
fn close(history: &[Event], period: &str, book: Option<(u32, &PlanPrices)>) -> BillingCommand {
    let records: Vec<UsageRecorded> = history
        .iter()
        .filter_map(|e| match e {
            Event::UsageRecorded(u) if u.period == period => Some(u.clone()),
            _ => None,
        })
        .collect();
    BillingCommand::Close {
        invoice: pricing::price(period, "pro", book, &records),
    }
}

fn record(state: &BillingState, command: BillingCommand, at: OffsetDateTime) -> Vec<Event> {
    Billing::decide(state, command, at).unwrap()
}

#[test]
fn usage_is_priced_exactly_and_rounded_up_to_the_micro_dollar() {
    // 1,000 in at $0.15/M = 150 µ$, 500 out at $0.60/M = 300 µ$.
    assert_eq!(PRICE.cost(1, 1_000, 500), 450);
    // 1 token in costs 0.15 µ$: rounded up to 1, never down to 0.
    assert_eq!(PRICE.cost(1, 1, 0), 1);
    let per_request = ModelPrice {
        per_request: 2_000,
        ..PRICE
    };
    assert_eq!(per_request.cost(3, 0, 0), 6_000);
    assert_eq!(
        ModelPrice {
            input_per_million_tokens: u64::MAX,
            ..PRICE
        }
        .cost(0, u64::MAX, 0),
        u64::MAX
    );
}

#[test]
fn a_usage_event_seen_twice_is_billed_once() {
    let id = Uuid::now_v7();
    let first = record(
        &given(&[]),
        usage(id, "sim-small", 1_000, 500),
        utc(Month::November, 3),
    );
    let state = given(&first);
    assert_eq!(
        record(
            &state,
            usage(id, "sim-small", 1_000, 500),
            utc(Month::November, 4)
        ),
        vec![]
    );
    assert_eq!(state.invoices["2026-11"].total_micros(), 450);
}

#[test]
fn invoices_group_usage_by_month_and_model() {
    let mut history = Vec::new();
    for (model, month, tokens) in [
        ("sim-small", Month::November, 1_000),
        ("sim-large", Month::November, 2_000),
        ("sim-small", Month::November, 3_000),
        ("sim-small", Month::December, 1_000),
    ] {
        history.extend(record(
            &given(&history),
            usage(Uuid::now_v7(), model, tokens, 0),
            utc(month, 10),
        ));
    }
    let state = given(&history);
    let november = &state.invoices["2026-11"];
    assert_eq!(november.lines["sim-small"].tokens_in, 4_000);
    assert_eq!(november.lines["sim-small"].requests, 2);
    assert_eq!(november.lines["sim-large"].cost_micros, 300);
    assert_eq!(november.total_micros(), 900);
    assert_eq!(state.invoices["2026-12"].total_micros(), 150);
}

#[test]
fn an_invoice_is_finalized_after_its_month_and_then_paid() {
    let history = record(
        &given(&[]),
        usage(Uuid::now_v7(), "sim-small", 1_000, 500),
        utc(Month::November, 3),
    );
    let finalize = close(&history, "2026-11", None);
    assert_eq!(
        Billing::decide(&given(&history), finalize.clone(), utc(Month::November, 30)),
        Err(BillingRejection::MonthNotOver("2026-11".into()))
    );
    let finalized = record(&given(&history), finalize.clone(), utc(Month::December, 1));
    let [Event::InvoiceFinalized(closed)] = finalized.as_slice() else {
        panic!("{finalized:?}")
    };
    assert_eq!((closed.total_micros, closed.records), (450, 1));
    let history: Vec<Event> = history.into_iter().chain(finalized).collect();
    assert!(matches!(
        Billing::decide(&given(&history), finalize, utc(Month::December, 2)),
        Err(BillingRejection::WrongStatus { .. })
    ));
    let paid = record(
        &given(&history),
        BillingCommand::MarkPaid {
            period: "2026-11".into(),
        },
        utc(Month::December, 5),
    );
    let state = given(&history.iter().cloned().chain(paid).collect::<Vec<_>>());
    assert_eq!(state.invoices["2026-11"].status, InvoiceStatus::Paid);
    assert_eq!(
        Billing::decide(
            &given(&[]),
            BillingCommand::MarkPaid {
                period: "2026-10".into()
            },
            utc(Month::December, 5)
        ),
        Err(BillingRejection::NoInvoice("2026-10".into()))
    );
}

#[test]
fn invoices_export_as_csv_that_spreadsheets_cannot_misread() {
    let mut history = record(
        &given(&[]),
        usage(Uuid::now_v7(), "sim-small", 1_000, 500),
        utc(Month::November, 3),
    );
    history.extend(record(
        &given(&history),
        usage(Uuid::now_v7(), "=HYPERLINK(\"x\"),evil", 1_000, 0),
        utc(Month::November, 4),
    ));
    let csv = given(&history).invoices["2026-11"].to_csv("2026-11");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "period,model,requests,tokens_in,tokens_out,tool_calls,cost_usd"
    );
    assert!(
        lines.contains(&"2026-11,sim-small,1,1000,500,0,0.000450"),
        "{csv}"
    );
    assert!(
        lines.contains(&"2026-11,\"'=HYPERLINK(\"\"x\"\"),evil\",1,1000,0,0,0.000150"),
        "{csv}"
    );
    assert_eq!(lines.last(), Some(&"2026-11,TOTAL,,,,,0.000600"));
}

fn priced(id: Uuid, at: OffsetDateTime, cost: u64) -> PricedUsage {
    PricedUsage {
        usage_id: id,
        at,
        model: "sim-large".into(),
        requests: 1,
        tokens_in: 10,
        tokens_out: 5,
        tool_calls: 0,
        cost_micros: cost,
    }
}

#[test]
fn priced_usage_is_billed_once_in_its_own_month_and_never_into_a_closed_invoice() {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let batch = BillingCommand::RecordPriced(vec![
        priced(a, utc(Month::October, 31), 70),
        priced(b, utc(Month::November, 1), 30),
        priced(b, utc(Month::November, 1), 30), // the same usage twice in one batch
    ]);
    let events = record(&given(&[]), batch.clone(), utc(Month::November, 2));
    assert_eq!(events.len(), 2);
    let state = given(&events);
    assert_eq!(state.invoices["2026-10"].total_micros(), 70);
    assert_eq!(state.invoices["2026-11"].total_micros(), 30);
    // Fed again (a restart replays the log): nothing new.
    assert_eq!(record(&state, batch, utc(Month::November, 3)), vec![]);
    // October is closed: a late October usage does not change its invoice.
    let closed = record(
        &state,
        close(&events, "2026-10", None),
        utc(Month::November, 3),
    );
    let history: Vec<Event> = events.into_iter().chain(closed).collect();
    let late =
        BillingCommand::RecordPriced(vec![priced(Uuid::now_v7(), utc(Month::October, 30), 999)]);
    assert_eq!(
        record(&given(&history), late, utc(Month::November, 4)),
        vec![]
    );
    let bad = BillingCommand::RecordPriced(vec![PricedUsage {
        model: String::new(),
        ..priced(Uuid::now_v7(), utc(Month::November, 4), 1)
    }]);
    assert!(Billing::decide(&given(&history), bad, utc(Month::November, 4)).is_err());
}

fn stored(id: Uuid, document: Uuid, bytes: i64, at: OffsetDateTime) -> StorageUsage {
    StorageUsage {
        usage_id: id,
        at,
        document_id: document,
        bytes,
    }
}

#[test]
fn document_storage_is_metered_once_per_change_per_period_and_carried_into_quiet_periods() {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let (add_a, add_b, del_a) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut history = Vec::new();
    let november = utc(Month::November, 10);
    let command = BillingCommand::MeterStorage(vec![
        stored(add_a, a, 1_000, november),
        stored(add_b, b, 500, november),
        // The same change twice in one batch: metered once.
        stored(add_b, b, 500, november),
    ]);
    history.extend(record(&given(&history), command, november));
    assert_eq!(history.len(), 2);
    // Redelivered (a restart replays the log): nothing new.
    let again = BillingCommand::MeterStorage(vec![stored(add_a, a, 1_000, november)]);
    assert!(record(&given(&history), again, november).is_empty());
    let deleted = BillingCommand::MeterStorage(vec![stored(del_a, a, -1_000, november)]);
    history.extend(record(&given(&history), deleted, november));

    let state = given(&history);
    assert_eq!(state.stored_bytes, 500);
    assert_eq!(
        state.storage("2026-11"),
        StorageMeter {
            documents_added: 2,
            documents_deleted: 1,
            bytes_added: 1_500,
            bytes_deleted: 1_000,
            stored_bytes: 500,
            peak_bytes: 1_500,
        }
    );
    // A later period with no change stores what the last one left; an earlier one nothing.
    assert_eq!(
        state.storage("2027-01"),
        StorageMeter {
            stored_bytes: 500,
            peak_bytes: 500,
            ..StorageMeter::default()
        }
    );
    assert_eq!(state.storage("2026-10"), StorageMeter::default());
    // Storage adds no usage record: the invoice still closes on its usage alone.
    assert_eq!(state.invoices["2026-11"].records, 0);

    // A change dated in a closed period goes into the period open now, not into the closed
    // one; and a change metered before the close is not metered again when the log's replay
    // offers it after.
    let closing = close(&history, "2026-11", None);
    history.extend(record(&given(&history), closing, utc(Month::December, 2)));
    let late = BillingCommand::MeterStorage(vec![
        stored(Uuid::now_v7(), b, 10, november),
        stored(add_a, a, 1_000, november),
    ]);
    let events = record(&given(&history), late, utc(Month::December, 3));
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        matches!(&events[0], Event::StorageMetered(e) if e.period == "2026-12" && e.bytes == 10)
    );
    history.extend(events);
    let state = given(&history);
    assert_eq!(state.stored_bytes, 510);
    assert_eq!(
        state.storage("2026-11").stored_bytes,
        500,
        "the closed period kept its meter"
    );
    assert_eq!(state.storage("2026-12").stored_bytes, 510);
    // A deletion larger than what is stored never goes below zero.
    let odd = BillingCommand::MeterStorage(vec![stored(
        Uuid::now_v7(),
        b,
        -9_999,
        utc(Month::December, 3),
    )]);
    history.extend(record(&given(&history), odd, utc(Month::December, 3)));
    assert_eq!(given(&history).stored_bytes, 0);
}
