//! Given events, when a command, then events: the quota's money rules.

use time::{Date, Month, OffsetDateTime};
use uuid::Uuid;

use super::*;

fn utc(month: Month, day: u8) -> OffsetDateTime {
    Date::from_calendar_date(2026, month, day)
        .unwrap()
        .midnight()
        .assume_utc()
}

fn given(events: &[Event]) -> QuotaState {
    let mut state = QuotaState::default();
    for event in events {
        Quota::apply(&mut state, event);
    }
    state
}

fn reserve(id: Uuid, micros: u64, budget: Option<u64>) -> QuotaCommand {
    QuotaCommand::Reserve {
        reservation_id: id,
        micros,
        tokens: 100,
        budget_micros: budget,
    }
}

fn reserved(id: Uuid, micros: u64, period: &str) -> Event {
    Event::QuotaReserved(QuotaReserved {
        reservation_id: id,
        period: period.into(),
        micros,
        tokens: 100,
    })
}

#[test]
fn a_reservation_within_the_budget_is_granted() {
    let id = Uuid::now_v7();
    assert_eq!(
        Quota::decide(
            &given(&[]),
            reserve(id, 400, Some(1_000)),
            utc(Month::November, 15)
        ),
        Ok(vec![reserved(id, 400, "2026-11")])
    );
}

#[test]
fn open_reservations_and_spend_count_against_the_budget() {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let history = [reserved(a, 600, "2026-11")];
    assert_eq!(
        Quota::decide(
            &given(&history),
            reserve(b, 500, Some(1_000)),
            utc(Month::November, 15)
        ),
        Err(QuotaRejection::BudgetExhausted {
            remaining_micros: 400
        })
    );
    assert!(
        Quota::decide(
            &given(&history),
            reserve(b, 400, Some(1_000)),
            utc(Month::November, 15)
        )
        .is_ok()
    );
    // Settling for less gives the difference back.
    let settled = Event::QuotaSettled(QuotaSettled {
        reservation_id: a,
        micros: 250,
        tokens: 80,
    });
    let state = given(&[history[0].clone(), settled]);
    assert_eq!(
        (state.spent_micros, state.reserved_micros(), state.tokens),
        (250, 0, 80)
    );
    assert!(
        Quota::decide(
            &state,
            reserve(b, 750, Some(1_000)),
            utc(Month::November, 15)
        )
        .is_ok()
    );
    assert!(
        Quota::decide(
            &state,
            reserve(b, 751, Some(1_000)),
            utc(Month::November, 15)
        )
        .is_err()
    );
}

#[test]
fn a_released_reservation_costs_nothing() {
    let id = Uuid::now_v7();
    let state = given(&[
        reserved(id, 900, "2026-11"),
        Event::QuotaReleased(QuotaReleased { reservation_id: id }),
    ]);
    assert_eq!((state.spent_micros, state.reserved_micros()), (0, 0));
    assert_eq!(
        Quota::decide(
            &state,
            QuotaCommand::Release { reservation_id: id },
            utc(Month::November, 15)
        ),
        Err(QuotaRejection::UnknownReservation)
    );
}

#[test]
fn a_new_month_starts_from_zero() {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let settled = Event::QuotaSettled(QuotaSettled {
        reservation_id: a,
        micros: 1_000,
        tokens: 1,
    });
    let november = given(&[reserved(a, 1_000, "2026-11"), settled]);
    assert!(
        Quota::decide(
            &november,
            reserve(b, 1, Some(1_000)),
            utc(Month::November, 15)
        )
        .is_err(),
        "November is spent"
    );
    let granted = Quota::decide(
        &november,
        reserve(b, 1_000, Some(1_000)),
        utc(Month::December, 1),
    )
    .unwrap();
    assert_eq!(granted, vec![reserved(b, 1_000, "2026-12")]);
}

#[test]
fn last_months_open_reservation_settles_outside_this_month() {
    let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
    let state = given(&[
        reserved(old, 500, "2026-11"),
        reserved(new, 100, "2026-12"),
        Event::QuotaSettled(QuotaSettled {
            reservation_id: old,
            micros: 500,
            tokens: 1,
        }),
    ]);
    assert_eq!(
        (
            state.period.as_str(),
            state.spent_micros,
            state.reserved_micros()
        ),
        ("2026-12", 0, 100)
    );
}

#[test]
fn ids_are_checked_and_no_budget_means_no_limit() {
    let id = Uuid::now_v7();
    let history = [reserved(id, 5, "2026-11")];
    assert_eq!(
        Quota::decide(
            &given(&history),
            reserve(id, 5, None),
            utc(Month::November, 15)
        ),
        Err(QuotaRejection::DuplicateReservation)
    );
    let unknown = QuotaCommand::Settle {
        reservation_id: Uuid::now_v7(),
        micros: 1,
        tokens: 1,
    };
    assert_eq!(
        Quota::decide(&given(&history), unknown, utc(Month::November, 15)),
        Err(QuotaRejection::UnknownReservation)
    );
    assert!(
        Quota::decide(
            &given(&[]),
            reserve(Uuid::now_v7(), u64::MAX, None),
            utc(Month::November, 15)
        )
        .is_ok()
    );
}
