//! The budget gate of the request path: each tenant's spend this month, folded from the
//! `InferenceCompleted`/`InferenceFailed` events of the log, plus what requests in flight have
//! reserved. A request reserves its estimated cost before the provider is called (refused with
//! 402 when the monthly budget cannot cover it), and settles with the real cost after.
//!
//! It lives in memory so the hot path never waits on the database; the log is its truth: on
//! start it is folded from the events, and a settled inference is counted once, whether the
//! settlement or the event reaches the meter first (the settling request marks its inference id,
//! and the fold skips marked ids). Reservations die with the process, which is right: the
//! requests holding them died too.

use dashmap::DashMap;
use switchyard_actors::quota::period_of;
use switchyard_events::TenantId;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Default)]
struct Spend {
    /// `YYYY-MM` the figures are for.
    period: String,
    spent_micros: u64,
    reserved_micros: u64,
    tokens: u64,
}

impl Spend {
    /// Moves to `period` when a new month has begun (a late event of an old month is ignored).
    fn roll(&mut self, period: &str) -> bool {
        match period.cmp(self.period.as_str()) {
            std::cmp::Ordering::Greater => {
                self.period = period.to_owned();
                self.spent_micros = 0;
                self.tokens = 0;
                true
            }
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => false,
        }
    }
}

/// A tenant's spend this month, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendView {
    pub period: String,
    pub spent_micros: u64,
    pub reserved_micros: u64,
    pub tokens: u64,
}

/// Every tenant's spend.
#[derive(Debug, Default)]
pub struct Meter {
    tenants: DashMap<TenantId, Spend>,
    /// Inference ids settled here whose events the fold has not yet seen.
    counted: DashMap<Uuid, ()>,
}

impl Meter {
    /// Reserves `micros` within `budget` (`None`: no budget). `Err` carries what is left.
    pub fn reserve(
        &self,
        tenant: TenantId,
        budget: Option<u64>,
        micros: u64,
        now: OffsetDateTime,
    ) -> Result<(), u64> {
        let period = period_of(now);
        let mut spend = self.tenants.entry(tenant).or_default();
        spend.roll(&period);
        if let Some(budget) = budget {
            let committed = spend.spent_micros.saturating_add(spend.reserved_micros);
            if committed.saturating_add(micros) > budget {
                return Err(budget.saturating_sub(committed));
            }
        }
        spend.reserved_micros = spend.reserved_micros.saturating_add(micros);
        Ok(())
    }

    /// Replaces a reservation by the real cost of inference `id`, before its event is
    /// appended. [`Meter::unsettle`] undoes it if the append fails.
    pub fn settle(
        &self,
        tenant: TenantId,
        id: Uuid,
        reserved: u64,
        cost: u64,
        tokens: u64,
        now: OffsetDateTime,
    ) {
        let period = period_of(now);
        self.counted.insert(id, ());
        let mut spend = self.tenants.entry(tenant).or_default();
        spend.reserved_micros = spend.reserved_micros.saturating_sub(reserved);
        if spend.roll(&period) {
            spend.spent_micros = spend.spent_micros.saturating_add(cost);
            spend.tokens = spend.tokens.saturating_add(tokens);
        }
    }

    /// Takes back a settlement whose event could not be written.
    pub fn unsettle(&self, tenant: TenantId, id: Uuid, cost: u64, tokens: u64) {
        self.counted.remove(&id);
        if let Some(mut spend) = self.tenants.get_mut(&tenant) {
            spend.spent_micros = spend.spent_micros.saturating_sub(cost);
            spend.tokens = spend.tokens.saturating_sub(tokens);
        }
    }

    /// Folds a logged inference outcome (from the log, at start and live).
    pub fn fold(&self, tenant: TenantId, id: Uuid, cost: u64, tokens: u64, at: OffsetDateTime) {
        if self.counted.remove(&id).is_some() {
            return; // settled by this process already
        }
        let period = period_of(at);
        let mut spend = self.tenants.entry(tenant).or_default();
        if spend.roll(&period) {
            spend.spent_micros = spend.spent_micros.saturating_add(cost);
            spend.tokens = spend.tokens.saturating_add(tokens);
        }
    }

    /// A tenant's figures for the current month.
    pub fn view(&self, tenant: TenantId, now: OffsetDateTime) -> SpendView {
        let period = period_of(now);
        match self.tenants.get(&tenant) {
            Some(spend) if spend.period == period => SpendView {
                period,
                spent_micros: spend.spent_micros,
                reserved_micros: spend.reserved_micros,
                tokens: spend.tokens,
            },
            Some(spend) => SpendView {
                period,
                spent_micros: 0,
                reserved_micros: spend.reserved_micros,
                tokens: 0,
            },
            None => SpendView {
                period,
                spent_micros: 0,
                reserved_micros: 0,
                tokens: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(month: u8) -> OffsetDateTime {
        time::Date::from_calendar_date(2026, time::Month::try_from(month).unwrap(), 15)
            .unwrap()
            .midnight()
            .assume_utc()
    }

    #[test]
    fn reservations_hold_budget_and_settlement_replaces_them_with_the_real_cost() {
        let meter = Meter::default();
        let tenant = TenantId::new();
        let now = at(3);
        meter.reserve(tenant, Some(1_000), 600, now).unwrap();
        // 600 held: 500 more would pass the budget.
        assert_eq!(meter.reserve(tenant, Some(1_000), 500, now), Err(400));
        let id = Uuid::now_v7();
        meter.settle(tenant, id, 600, 150, 30, now);
        assert_eq!(meter.view(tenant, now).spent_micros, 150);
        assert_eq!(meter.view(tenant, now).reserved_micros, 0);
        meter.reserve(tenant, Some(1_000), 850, now).unwrap();
        assert_eq!(meter.reserve(tenant, Some(1_000), 1, now), Err(0));
        // No budget: never refused.
        meter.reserve(tenant, None, u64::MAX, now).unwrap();
    }

    #[test]
    fn an_outcome_is_counted_once_whichever_way_it_arrives_first() {
        let meter = Meter::default();
        let tenant = TenantId::new();
        let now = at(3);
        let settled_here = Uuid::now_v7();
        meter.reserve(tenant, None, 100, now).unwrap();
        meter.settle(tenant, settled_here, 100, 70, 7, now);
        meter.fold(tenant, settled_here, 70, 7, now); // its event comes back from the log
        let from_elsewhere = Uuid::now_v7();
        meter.fold(tenant, from_elsewhere, 30, 3, now); // another node's inference
        let view = meter.view(tenant, now);
        assert_eq!((view.spent_micros, view.tokens), (100, 10));
        // A failed append takes the settlement back.
        let lost = Uuid::now_v7();
        meter.settle(tenant, lost, 0, 5, 1, now);
        meter.unsettle(tenant, lost, 5, 1);
        assert_eq!(meter.view(tenant, now).spent_micros, 100);
    }

    #[test]
    fn a_new_month_starts_from_zero_and_late_old_events_do_not_count() {
        let meter = Meter::default();
        let tenant = TenantId::new();
        meter.fold(tenant, Uuid::now_v7(), 500, 5, at(3));
        meter.fold(tenant, Uuid::now_v7(), 20, 2, at(4));
        meter.fold(tenant, Uuid::now_v7(), 999, 9, at(3));
        assert_eq!(meter.view(tenant, at(4)).spent_micros, 20);
        assert_eq!(meter.reserve(tenant, Some(100), 90, at(4)), Err(80));
        meter.reserve(tenant, Some(100), 90, at(5)).unwrap();
    }
}
