//! Closing invoices on a plan's prices, credit notes, billing days and price books.

use std::collections::BTreeMap;

use switchyard_events::{ModelRate, PlanPrices};
use time::{Date, Month, OffsetDateTime};
use uuid::Uuid;

use super::{close, given, record, usage};
use crate::Actor;
use crate::billing::books::{BooksCommand, BooksRejection, BooksState, PriceBooks};
use crate::billing::pricing::{self, BookFile, Calendar};
use crate::billing::{Billing, BillingCommand, BillingRejection, InvoiceStatus};
use switchyard_events::{Event, UsageRecorded};

fn at(year: i32, month: Month, day: u8) -> OffsetDateTime {
    Date::from_calendar_date(year, month, day)
        .unwrap()
        .midnight()
        .assume_utc()
}

fn rate(input: u64, output: u64) -> ModelRate {
    ModelRate {
        input_micros_per_million: input,
        output_micros_per_million: output,
        ..ModelRate::default()
    }
}

fn usage_record(model: &str, tokens_in: u64, tokens_out: u64, cost: u64) -> UsageRecorded {
    UsageRecorded {
        usage_id: Uuid::now_v7(),
        period: "2026-11".into(),
        model: model.into(),
        requests: 1,
        tokens_in,
        tokens_out,
        tool_calls: 0,
        cost_micros: cost,
    }
}

#[test]
fn each_record_is_priced_on_the_plan_and_rounded_up_on_its_own() {
    let prices = PlanPrices {
        models: BTreeMap::from([("sim-small".to_owned(), rate(150_000, 600_000))]),
        ..PlanPrices::default()
    };
    // 3 tokens in at $0.15/M is 0.45 µ$: 1 µ$ each, 3 µ$ for three, not 2 for the sum.
    let records: Vec<_> = (0..3).map(|_| usage_record("sim-small", 3, 0, 7)).collect();
    let invoice = pricing::price("2026-11", "pro", Some((1, &prices)), &records);
    assert_eq!(invoice.lines[0].amount_micros, 3);
    assert_eq!(invoice.lines[0].list_micros, 21);
    assert_eq!(invoice.total_micros, 3);
    assert_eq!((invoice.book_version, invoice.records), (Some(1), 3));
    // A model the book does not price is billed at its list price.
    let records = vec![usage_record("sim-other", 1_000, 0, 42)];
    let invoice = pricing::price("2026-11", "pro", Some((1, &prices)), &records);
    assert_eq!(invoice.total_micros, 42);
    // No book at all: list prices.
    let invoice = pricing::price("2026-11", "pro", None, &records);
    assert_eq!((invoice.total_micros, invoice.book_version), (42, None));
}

#[test]
fn allowances_go_to_the_first_records_then_the_discount_and_the_credit_come_off() {
    let prices = PlanPrices {
        models: BTreeMap::from([(
            "sim-small".to_owned(),
            ModelRate {
                included_input_tokens: 1_500,
                included_requests: 1,
                micros_per_request: 1_000,
                ..rate(1_000_000, 2_000_000)
            },
        )]),
        discount_bps: 1_250, // 12.5%
        included_micros: 100,
    };
    let records = vec![
        usage_record("sim-small", 1_000, 10, 0), // free request, free input; 20 µ$ out
        usage_record("sim-small", 1_000, 10, 0), // 500 in billed: 500 + 20 + 1,000
        usage_record("sim-small", 1_000, 0, 0),  // 1,000 + 1,000
    ];
    let invoice = pricing::price("2026-11", "pro", Some((3, &prices)), &records);
    assert_eq!(invoice.subtotal_micros, 20 + 1_520 + 2_000);
    assert_eq!(invoice.discount_micros, 3_540 * 1_250 / 10_000); // 442.5 rounded down
    assert_eq!(invoice.included_micros, 100);
    assert_eq!(invoice.total_micros, 3_540 - 442 - 100);
    // The credit never takes the total below zero.
    let generous = PlanPrices {
        included_micros: 1_000_000,
        ..prices
    };
    let invoice = pricing::price("2026-11", "pro", Some((3, &generous)), &records);
    assert_eq!(
        (invoice.total_micros, invoice.included_micros),
        (0, 3_540 - 442)
    );
}

#[test]
fn a_close_priced_before_the_last_record_is_refused_and_a_closed_invoice_never_changes() {
    let mut history = Vec::new();
    for day in [3, 9] {
        history.extend(record(
            &given(&history),
            usage(Uuid::now_v7(), "sim-small", 1_000, 500),
            at(2026, Month::November, day),
        ));
    }
    let stale = close(&history[..1], "2026-11", None);
    assert!(matches!(
        Billing::decide(&given(&history), stale, at(2026, Month::December, 1)),
        Err(BillingRejection::Stale {
            priced: 1,
            recorded: 2,
            ..
        })
    ));
    let closed = record(
        &given(&history),
        close(&history, "2026-11", None),
        at(2026, Month::December, 1),
    );
    history.extend(closed);
    let state = given(&history);
    let invoice = &state.invoices["2026-11"];
    assert_eq!(invoice.status, InvoiceStatus::Finalized);
    assert_eq!(invoice.closed.as_ref().unwrap().total_micros, 900);
    // Closing again is refused; its usage stays as it was.
    assert!(matches!(
        Billing::decide(
            &state,
            close(&history, "2026-11", None),
            at(2026, Month::December, 2)
        ),
        Err(BillingRejection::WrongStatus { .. })
    ));
}

#[test]
fn credit_notes_credit_closed_invoices_once_and_never_beyond_their_total() {
    let mut history = record(
        &given(&[]),
        usage(Uuid::now_v7(), "sim-small", 1_000, 500),
        at(2026, Month::November, 3),
    );
    let note = |id: Uuid, amount: u64| BillingCommand::IssueCreditNote {
        id,
        period: "2026-11".into(),
        amount_micros: amount,
        reason: "outage".into(),
    };
    let december = at(2026, Month::December, 2);
    // Not on an open invoice.
    assert!(matches!(
        Billing::decide(&given(&history), note(Uuid::now_v7(), 100), december),
        Err(BillingRejection::WrongStatus { .. })
    ));
    history.extend(record(
        &given(&history),
        close(&history, "2026-11", None),
        december,
    ));
    let id = Uuid::now_v7();
    let issued = record(&given(&history), note(id, 400), december);
    assert_eq!(issued.len(), 1);
    history.extend(issued);
    // The same note again: nothing; more than is left: refused; zero or no reason: refused.
    assert_eq!(record(&given(&history), note(id, 400), december), vec![]);
    // …but the same id with another amount is a mistake, not a retry.
    assert_eq!(
        Billing::decide(&given(&history), note(id, 10), december),
        Err(BillingRejection::CreditIdReused(id))
    );
    assert_eq!(
        Billing::decide(&given(&history), note(Uuid::now_v7(), 51), december),
        Err(BillingRejection::CreditExceeds {
            period: "2026-11".into(),
            left: 50,
            asked: 51
        })
    );
    assert!(Billing::decide(&given(&history), note(Uuid::now_v7(), 0), december).is_err());
    for reason in ["", "   ", "a\u{0}b", &"x".repeat(501)] {
        let command = BillingCommand::IssueCreditNote {
            id: Uuid::now_v7(),
            period: "2026-11".into(),
            amount_micros: 1,
            reason: reason.into(),
        };
        assert!(Billing::decide(&given(&history), command, december).is_err());
    }
    let state = given(&history);
    assert_eq!(state.invoices["2026-11"].credited_micros(), 400);
    assert_eq!(
        state.invoices["2026-11"]
            .closed
            .as_ref()
            .unwrap()
            .total_micros,
        450
    );
}

#[test]
fn periods_start_on_the_billing_day_and_a_new_day_never_moves_billed_usage() {
    let mut calendar = Calendar::default();
    assert_eq!(calendar.period_at(at(2026, Month::November, 30)), "2026-11");
    assert_eq!(
        calendar.end("2026-12").unwrap(),
        at(2027, Month::January, 1)
    );
    calendar.set("2026-12", 15);
    assert_eq!(calendar.period_at(at(2026, Month::December, 14)), "2026-11");
    assert_eq!(calendar.period_at(at(2026, Month::December, 15)), "2026-12");
    assert_eq!(
        calendar.end("2026-11").unwrap(),
        at(2026, Month::December, 15)
    );
    assert_eq!(calendar.period_at(at(2027, Month::January, 3)), "2026-12");

    // Set on 20 November (periods on the 1st): November has begun, December starts on the 15th.
    let history = record(
        &given(&[]),
        BillingCommand::SetBillingDay { day: 15 },
        at(2026, Month::November, 20),
    );
    assert_eq!(
        history,
        vec![Event::BillingDaySet(switchyard_events::BillingDaySet {
            day: 15,
            from_period: "2026-12".into()
        })]
    );
    // Usage of 10 December is November's: its period now runs to the 15th; it cannot close
    // before then.
    let state = given(&history);
    let mut all = history;
    all.extend(record(
        &state,
        usage(Uuid::now_v7(), "sim-small", 1_000, 0),
        at(2026, Month::December, 10),
    ));
    assert!(given(&all).invoices.contains_key("2026-11"));
    assert!(matches!(
        Billing::decide(
            &given(&all),
            close(&all, "2026-11", None),
            at(2026, Month::December, 14)
        ),
        Err(BillingRejection::MonthNotOver(_))
    ));
    assert!(
        Billing::decide(
            &given(&all),
            close(&all, "2026-11", None),
            at(2026, Month::December, 15)
        )
        .is_ok()
    );
    // Moving to an earlier day on the 10th (periods on the 15th): December's start (the 5th)
    // is past, so the change waits for January.
    let mut later = Calendar::default();
    later.set("2026-11", 15);
    assert_eq!(
        later.first_changeable(at(2026, Month::December, 10), 5),
        "2027-01"
    );
    for day in [0, 29, 31] {
        assert!(
            Billing::decide(
                &given(&[]),
                BillingCommand::SetBillingDay { day },
                at(2026, Month::November, 1)
            )
            .is_err()
        );
    }
}

fn books(events: &[Event]) -> BooksState {
    let mut state = BooksState::default();
    for event in events {
        PriceBooks::apply(&mut state, event);
    }
    state
}

fn publish(state: &BooksState, from: &str, plan: &str, input: u64) -> Vec<Event> {
    let command = BooksCommand::Publish {
        effective_from: from.into(),
        plans: BTreeMap::from([(
            plan.to_owned(),
            PlanPrices {
                models: BTreeMap::from([("sim-small".to_owned(), rate(input, 0))]),
                ..PlanPrices::default()
            },
        )]),
    };
    PriceBooks::decide(state, command, at(2026, Month::November, 1)).unwrap()
}

#[test]
fn the_book_of_a_period_is_the_newest_version_in_effect_then_else_the_default_plan() {
    let mut history = publish(&BooksState::default(), "2026-10", "*", 1);
    history.extend(publish(&books(&history), "2026-11", "pro", 2));
    history.extend(publish(&books(&history), "2027-01", "pro", 3));
    let state = books(&history);
    let version = |plan: &str, period: &str| {
        state.book_for(plan, period).map(|b| {
            (
                b.version,
                b.prices.models["sim-small"].input_micros_per_million,
            )
        })
    };
    assert_eq!(version("pro", "2026-10"), Some((1, 1))); // the default's
    assert_eq!(version("pro", "2026-12"), Some((1, 2)));
    assert_eq!(version("pro", "2027-02"), Some((2, 3)));
    assert_eq!(version("free", "2027-02"), Some((1, 1)));
    assert_eq!(version("free", "2026-09"), None);
    let bad = BooksCommand::Publish {
        effective_from: "2026-13".into(),
        plans: BTreeMap::from([("pro".to_owned(), PlanPrices::default())]),
    };
    assert!(matches!(
        PriceBooks::decide(&state, bad, at(2026, Month::November, 1)),
        Err(BooksRejection::Invalid(_))
    ));
}

#[test]
fn book_files_convert_to_exact_micro_dollars_and_refuse_what_does_not() {
    let file: BookFile = toml::from_str(
        r#"
        effective_from = "2026-12"
        [plans.pro]
        discount_percent = 12.5
        included_usd = 5
        [plans.pro.models.sim-small]
        input_usd_per_million = 0.15
        output_usd_per_million = 0.6
        usd_per_request = 0.000001
        included_input_tokens = 1000
        "#,
    )
    .unwrap();
    let prices = file.prices().unwrap();
    let pro = &prices["pro"];
    assert_eq!(pro.discount_bps, 1_250);
    assert_eq!(pro.included_micros, 5_000_000);
    let small = pro.models["sim-small"];
    assert_eq!(
        (
            small.input_micros_per_million,
            small.output_micros_per_million,
            small.micros_per_request
        ),
        (150_000, 600_000, 1)
    );
    for (field, value) in [
        ("input_usd_per_million", "-1"),
        ("input_usd_per_million", "nan"),
        ("input_usd_per_million", "inf"),
        ("input_usd_per_million", "1e12"),
        ("usd_per_request", "0.0000001"),
    ] {
        let text = format!("[plans.pro.models.m]\n{field} = {value}\n");
        let file: BookFile = toml::from_str(&text).unwrap();
        assert!(file.prices().is_err(), "{text} accepted");
    }
    for text in [
        "[plans.pro]\ndiscount_percent = 101\n",
        "[plans.pro]\ndiscount_percent = 10.001\n",
        "effective_from = \"next month\"\n[plans.pro]\n",
        "plans = {}\n",
    ] {
        let file: BookFile = toml::from_str(text).unwrap();
        assert!(file.prices().is_err(), "{text} accepted");
    }
    // Unknown fields are refused, not ignored.
    assert!(toml::from_str::<BookFile>("[plans.pro]\ndiscount = 10\n").is_err());
}

#[test]
fn repricing_under_the_closing_book_gives_the_closed_invoice_to_the_micro_dollar() {
    let prices = PlanPrices {
        models: BTreeMap::from([(
            "sim-small".to_owned(),
            ModelRate {
                included_output_tokens: 777,
                ..rate(333_333, 777_777)
            },
        )]),
        discount_bps: 333,
        included_micros: 12,
    };
    // Odd token counts so that rounding per record matters.
    let records: Vec<_> = (1..200u64)
        .map(|i| {
            usage_record(
                if i % 3 == 0 { "sim-x" } else { "sim-small" },
                i * 7,
                i * 13,
                i,
            )
        })
        .collect();
    let closed = pricing::price("2026-11", "pro", Some((4, &prices)), &records);
    let expected: u64 = {
        let mut out_left = 777u64;
        records
            .iter()
            .map(|r| {
                if r.model == "sim-x" {
                    return r.cost_micros;
                }
                let free = r.tokens_out.min(out_left);
                out_left -= free;
                pricing::rate_cost(
                    &prices.models["sim-small"],
                    1,
                    r.tokens_in,
                    r.tokens_out - free,
                )
            })
            .sum()
    };
    assert_eq!(closed.subtotal_micros, expected);
    assert_eq!(
        pricing::price("2026-11", "pro", Some((4, &prices)), &records),
        closed
    );
}
