//! The budget gate of the request path: each tenant's spend and tokens this month and today,
//! folded from the `InferenceCompleted`/`InferenceFailed` events of the log, plus what requests
//! in flight have reserved. A request reserves its estimated cost and tokens before the provider
//! is called (refused with 402 when a monthly or daily budget, in money or in tokens, cannot
//! cover it), and settles with the real figures after.
//!
//! It lives in memory so the hot path never waits on the database; the log is its truth: on
//! start it is folded from the events, and a settled inference is counted once, whether the
//! settlement or the event reaches the meter first (the settling request marks its inference id,
//! and the fold skips marked ids). Reservations die with the process, which is right: the
//! requests holding them died too. Months and days are UTC.

use dashmap::DashMap;
use switchyard_actors::quota::period_of;

use super::below::Account;
use switchyard_actors::tenant::Limits;
use switchyard_events::TenantId;
use time::OffsetDateTime;
use uuid::Uuid;

/// Spend and tokens of one period (a month or a day).
#[derive(Debug, Default, Clone)]
struct Period {
    key: String,
    micros: u64,
    tokens: u64,
}

impl Period {
    /// Moves to `key` when a new period has begun; false for an older period (a late event).
    fn roll(&mut self, key: &str) -> bool {
        match key.cmp(self.key.as_str()) {
            std::cmp::Ordering::Greater => {
                *self = Period {
                    key: key.to_owned(),
                    micros: 0,
                    tokens: 0,
                };
                true
            }
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => false,
        }
    }

    fn add(&mut self, key: &str, micros: u64, tokens: u64) {
        if self.roll(key) {
            self.micros = self.micros.saturating_add(micros);
            self.tokens = self.tokens.saturating_add(tokens);
        }
    }

    fn sub(&mut self, key: &str, micros: u64, tokens: u64) {
        if self.key == key {
            self.micros = self.micros.saturating_sub(micros);
            self.tokens = self.tokens.saturating_sub(tokens);
        }
    }
}

#[derive(Debug, Default)]
struct Spend {
    month: Period,
    day: Period,
    reserved_micros: u64,
    reserved_tokens: u64,
}

pub(crate) fn day_of(now: OffsetDateTime) -> String {
    let utc = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}",
        utc.year(),
        u8::from(utc.month()),
        utc.day()
    )
}

/// Which budget refused a reservation, and what was left of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    /// `monthly_budget_usd`, `daily_budget_usd`, `monthly_token_budget` or `daily_token_budget`.
    pub budget: &'static str,
    /// Micro-dollars or tokens left.
    pub left: u64,
}

/// A tenant's figures, as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendView {
    pub period: String,
    pub spent_micros: u64,
    pub reserved_micros: u64,
    pub tokens: u64,
    pub day: String,
    pub day_spent_micros: u64,
    pub day_tokens: u64,
}

/// Every tenant's spend, and that of its keys, users and tags.
#[derive(Debug, Default)]
pub struct Meter {
    tenants: DashMap<Account, Spend>,
    /// Inference ids settled here whose events the fold has not yet seen.
    counted: DashMap<Uuid, ()>,
    /// The accounts below the tenant of inferences whose outcome the fold has not yet seen
    /// (from their `InferenceRequested`).
    pending: DashMap<Uuid, Vec<Account>>,
}

impl Meter {
    /// Reserves `micros` and `tokens` within every budget of `limits` that is set.
    pub fn reserve(
        &self,
        account: impl Into<Account>,
        limits: &Limits,
        micros: u64,
        tokens: u64,
        now: OffsetDateTime,
    ) -> Result<(), Exhausted> {
        let (month, day) = (period_of(now), day_of(now));
        let mut spend = self.tenants.entry(account.into()).or_default();
        spend.month.roll(&month);
        spend.day.roll(&day);
        let checks = [
            (
                "monthly_budget_usd",
                limits.monthly_budget_micros,
                spend.month.micros,
                spend.reserved_micros,
                micros,
            ),
            (
                "daily_budget_usd",
                limits.daily_budget_micros,
                spend.day.micros,
                spend.reserved_micros,
                micros,
            ),
            (
                "monthly_token_budget",
                limits.monthly_token_budget,
                spend.month.tokens,
                spend.reserved_tokens,
                tokens,
            ),
            (
                "daily_token_budget",
                limits.daily_token_budget,
                spend.day.tokens,
                spend.reserved_tokens,
                tokens,
            ),
        ];
        for (budget, limit, used, reserved, asked) in checks {
            if let Some(limit) = limit {
                let committed = used.saturating_add(reserved);
                if committed.saturating_add(asked) > limit {
                    return Err(Exhausted {
                        budget,
                        left: limit.saturating_sub(committed),
                    });
                }
            }
        }
        spend.reserved_micros = spend.reserved_micros.saturating_add(micros);
        spend.reserved_tokens = spend.reserved_tokens.saturating_add(tokens);
        Ok(())
    }

    /// Replaces a reservation by the real cost of inference `id`, before its event is
    /// appended. [`Meter::unsettle`] undoes it if the append fails.
    #[allow(
        clippy::too_many_arguments,
        reason = "the reservation and the real figures"
    )]
    pub fn settle(
        &self,
        tenant: TenantId,
        id: Uuid,
        reserved_micros: u64,
        reserved_tokens: u64,
        cost: u64,
        tokens: u64,
        now: OffsetDateTime,
    ) {
        self.counted.insert(id, ());
        self.settle_below(
            &tenant.into(),
            reserved_micros,
            reserved_tokens,
            cost,
            tokens,
            now,
        );
    }

    /// [`Meter::settle`] of an account below the tenant (the tenant's settlement marks the
    /// inference as counted for all of them).
    pub fn settle_below(
        &self,
        account: &Account,
        reserved_micros: u64,
        reserved_tokens: u64,
        cost: u64,
        tokens: u64,
        now: OffsetDateTime,
    ) {
        let mut spend = self.tenants.entry(account.clone()).or_default();
        spend.reserved_micros = spend.reserved_micros.saturating_sub(reserved_micros);
        spend.reserved_tokens = spend.reserved_tokens.saturating_sub(reserved_tokens);
        spend.month.add(&period_of(now), cost, tokens);
        spend.day.add(&day_of(now), cost, tokens);
    }

    /// Gives back a reservation whose request was refused before it ran.
    pub fn release(&self, account: &Account, micros: u64, tokens: u64) {
        if let Some(mut spend) = self.tenants.get_mut(account) {
            spend.reserved_micros = spend.reserved_micros.saturating_sub(micros);
            spend.reserved_tokens = spend.reserved_tokens.saturating_sub(tokens);
        }
    }

    /// Takes back a settlement whose event could not be written.
    pub fn unsettle(
        &self,
        tenant: TenantId,
        id: Uuid,
        cost: u64,
        tokens: u64,
        now: OffsetDateTime,
    ) {
        self.counted.remove(&id);
        self.unsettle_below(&tenant.into(), cost, tokens, now);
    }

    /// [`Meter::unsettle`] of an account below the tenant.
    pub fn unsettle_below(&self, account: &Account, cost: u64, tokens: u64, now: OffsetDateTime) {
        if let Some(mut spend) = self.tenants.get_mut(account) {
            spend.month.sub(&period_of(now), cost, tokens);
            spend.day.sub(&day_of(now), cost, tokens);
        }
    }

    /// Folds a logged inference outcome (from the log, at start and live), into the tenant
    /// and the accounts `below` it.
    pub fn fold(
        &self,
        tenant: TenantId,
        id: Uuid,
        below: &[Account],
        cost: u64,
        tokens: u64,
        at: OffsetDateTime,
    ) {
        if self.counted.remove(&id).is_some() {
            return; // settled by this process already
        }
        for account in std::iter::once(&Account::from(tenant)).chain(below) {
            let mut spend = self.tenants.entry(account.clone()).or_default();
            spend.month.add(&period_of(at), cost, tokens);
            spend.day.add(&day_of(at), cost, tokens);
        }
    }

    /// An account's figures for the current month and day.
    pub fn view(&self, account: impl Into<Account>, now: OffsetDateTime) -> SpendView {
        let (month, day) = (period_of(now), day_of(now));
        let spend = self.tenants.get(&account.into());
        let pick = |p: Option<&Period>, key: &str| {
            p.filter(|p| p.key == key)
                .map_or((0, 0), |p| (p.micros, p.tokens))
        };
        let (spent_micros, tokens) = pick(spend.as_ref().map(|s| &s.month), &month);
        let (day_spent_micros, day_tokens) = pick(spend.as_ref().map(|s| &s.day), &day);
        SpendView {
            period: month,
            spent_micros,
            reserved_micros: spend.as_ref().map_or(0, |s| s.reserved_micros),
            tokens,
            day,
            day_spent_micros,
            day_tokens,
        }
    }
}

/// The meter's truth is the log: each inference outcome's cost and tokens, counted once (see
/// [`Meter::fold`]).
impl crate::follow::Folder for Meter {
    fn fold(&self, recorded: &switchyard_events::RecordedEvent) {
        // The accounts below the tenant come with the request, the cost with the outcome (in
        // one event since v2; v1 logs hold the request as an event of its own). An inference
        // this node settled is counted already, its accounts too: its request is not decoded
        // again.
        if recorded.event_type == "InferenceRequested" {
            let Some(id) = recorded
                .stream_id
                .as_str()
                .strip_prefix("inference-")
                .and_then(|id| Uuid::parse_str(id).ok())
                .filter(|id| !self.counted.contains_key(id))
            else {
                return;
            };
            let Ok(switchyard_events::Event::InferenceRequested(requested)) =
                switchyard_events::Event::from_recorded(recorded)
            else {
                return;
            };
            let below = Account::of_inference(
                recorded.tenant_id,
                requested.key_id,
                requested.user.as_deref(),
                &requested.tags,
            );
            self.pending.insert(id, below);
            return;
        }
        // Stream `inference-<id>`: the id is what the settling request marked.
        if let Some(outcome) = crate::follow::InferenceOutcome::of(recorded) {
            let below = match &outcome.request {
                // Since v2 the outcome carries its request; an inference this node counted
                // already needs no accounts.
                Some(requested) if !self.counted.contains_key(&outcome.id) => {
                    Account::of_inference(
                        recorded.tenant_id,
                        requested.key_id,
                        requested.user.as_deref(),
                        &requested.tags,
                    )
                }
                Some(_) => Default::default(),
                // v1: the request was an event of its own, folded before.
                None => self
                    .pending
                    .remove(&outcome.id)
                    .map(|(_, below)| below)
                    .unwrap_or_default(),
            };
            Meter::fold(
                self,
                recorded.tenant_id,
                outcome.id,
                &below,
                outcome.cost_micros,
                outcome.tokens_in + outcome.tokens_out,
                recorded.recorded_at,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(month: u8, day: u8) -> OffsetDateTime {
        time::Date::from_calendar_date(2026, time::Month::try_from(month).unwrap(), day)
            .unwrap()
            .midnight()
            .assume_utc()
    }

    fn monthly(micros: u64) -> Limits {
        Limits {
            monthly_budget_micros: Some(micros),
            ..Limits::default()
        }
    }

    #[test]
    fn reservations_hold_budget_and_settlement_replaces_them_with_the_real_cost() {
        let meter = Meter::default();
        let tenant = TenantId::new();
        let now = at(3, 15);
        meter
            .reserve(tenant, &monthly(1_000), 600, 10, now)
            .unwrap();
        // 600 held: 500 more would pass the budget.
        assert_eq!(
            meter.reserve(tenant, &monthly(1_000), 500, 10, now),
            Err(Exhausted {
                budget: "monthly_budget_usd",
                left: 400
            })
        );
        let id = Uuid::now_v7();
        meter.settle(tenant, id, 600, 10, 150, 30, now);
        let view = meter.view(tenant, now);
        assert_eq!((view.spent_micros, view.reserved_micros), (150, 0));
        meter.reserve(tenant, &monthly(1_000), 850, 1, now).unwrap();
        assert_eq!(
            meter
                .reserve(tenant, &monthly(1_000), 1, 1, now)
                .unwrap_err()
                .left,
            0
        );
        // No budget: never refused.
        meter
            .reserve(tenant, &Limits::default(), u64::MAX, u64::MAX, now)
            .unwrap();
    }

    #[test]
    fn daily_and_token_budgets_refuse_on_their_own_and_a_new_day_starts_from_zero() {
        let meter = Meter::default();
        let tenant = TenantId::new();
        let limits = Limits {
            daily_budget_micros: Some(100),
            daily_token_budget: Some(1_000),
            monthly_token_budget: Some(1_500),
            ..Limits::default()
        };
        let day1 = at(5, 1);
        meter.reserve(tenant, &limits, 90, 900, day1).unwrap();
        meter.settle(tenant, Uuid::now_v7(), 90, 900, 90, 900, day1);
        assert_eq!(
            meter
                .reserve(tenant, &limits, 20, 10, day1)
                .unwrap_err()
                .budget,
            "daily_budget_usd"
        );
        assert_eq!(
            meter
                .reserve(tenant, &limits, 5, 200, day1)
                .unwrap_err()
                .budget,
            "daily_token_budget"
        );
        let day2 = at(5, 2);
        meter.reserve(tenant, &limits, 90, 500, day2).unwrap();
        // The month's tokens still count: 900 used + 500 held, 200 more would pass 1,500.
        assert_eq!(
            meter.reserve(tenant, &limits, 1, 200, day2).unwrap_err(),
            Exhausted {
                budget: "monthly_token_budget",
                left: 100
            }
        );
    }

    #[test]
    fn an_outcome_is_counted_once_whichever_way_it_arrives_first() {
        let meter = Meter::default();
        let tenant = TenantId::new();
        let now = at(3, 15);
        let settled_here = Uuid::now_v7();
        meter
            .reserve(tenant, &Limits::default(), 100, 10, now)
            .unwrap();
        meter.settle(tenant, settled_here, 100, 10, 70, 7, now);
        meter.fold(tenant, settled_here, &[], 70, 7, now); // its event comes back from the log
        let from_elsewhere = Uuid::now_v7();
        meter.fold(tenant, from_elsewhere, &[], 30, 3, now); // another node's inference
        let view = meter.view(tenant, now);
        assert_eq!((view.spent_micros, view.tokens), (100, 10));
        assert_eq!((view.day_spent_micros, view.day_tokens), (100, 10));
        // A failed append takes the settlement back.
        let lost = Uuid::now_v7();
        meter.settle(tenant, lost, 0, 0, 5, 1, now);
        meter.unsettle(tenant, lost, 5, 1, now);
        assert_eq!(meter.view(tenant, now).spent_micros, 100);
    }

    #[test]
    fn accounts_below_the_tenant_are_reserved_settled_and_folded_once() {
        use crate::admission::below::Below;
        let meter = Meter::default();
        let tenant = TenantId::new();
        let now = at(3, 15);
        let user = Account::below(tenant, Below::User("alice".into()));
        meter
            .reserve(user.clone(), &monthly(100), 60, 0, now)
            .unwrap();
        let id = Uuid::now_v7();
        meter.settle(tenant, id, 0, 0, 50, 5, now);
        meter.settle_below(&user, 60, 0, 50, 5, now);
        meter.fold(tenant, id, std::slice::from_ref(&user), 50, 5, now); // settled here: skipped
        assert_eq!(meter.view(user.clone(), now).spent_micros, 50);
        meter.fold(
            tenant,
            Uuid::now_v7(),
            std::slice::from_ref(&user),
            30,
            3,
            now,
        );
        assert_eq!(meter.view(user.clone(), now).spent_micros, 80);
        assert_eq!(meter.view(tenant, now).spent_micros, 80);
        assert_eq!(
            meter.reserve(user, &monthly(100), 30, 0, now),
            Err(Exhausted {
                budget: "monthly_budget_usd",
                left: 20
            })
        );
        // Another user's budget is untouched; a released reservation holds nothing.
        let bob = Account::below(tenant, Below::User("bob".into()));
        meter
            .reserve(bob.clone(), &monthly(100), 100, 0, now)
            .unwrap();
        meter.release(&bob, 100, 0);
        meter.reserve(bob, &monthly(100), 100, 0, now).unwrap();
    }

    #[test]
    fn a_new_month_starts_from_zero_and_late_old_events_do_not_count() {
        let meter = Meter::default();
        let tenant = TenantId::new();
        meter.fold(tenant, Uuid::now_v7(), &[], 500, 5, at(3, 15));
        meter.fold(tenant, Uuid::now_v7(), &[], 20, 2, at(4, 15));
        meter.fold(tenant, Uuid::now_v7(), &[], 999, 9, at(3, 15));
        assert_eq!(meter.view(tenant, at(4, 15)).spent_micros, 20);
        assert_eq!(
            meter
                .reserve(tenant, &monthly(100), 90, 0, at(4, 15))
                .unwrap_err()
                .left,
            80
        );
        meter
            .reserve(tenant, &monthly(100), 90, 0, at(5, 15))
            .unwrap();
    }
}
