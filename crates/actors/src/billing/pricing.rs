//! Pricing a period's usage on a plan, and the calendar of billing periods.
//!
//! One pure function, [`price`], makes every invoice: the one the closer records, the draft of
//! an open period, and the what-if of `switchyard billing reprice`. So re-pricing a closed
//! period under the book that closed it gives the recorded invoice to the micro-dollar.
//!
//! Each usage record is priced on its own and rounded up, as its list cost was, in the order
//! the log holds them; a model's included allowance is used up by the first records of the
//! period. Then the plan's discount (rounded down) and its monthly credit come off the sum.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_events::{InvoiceFinalized, InvoiceLine, ModelRate, PlanPrices, UsageRecorded};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// The cost of usage at `rate`, in micro-dollars rounded up (the allowance not applied).
pub fn rate_cost(rate: &ModelRate, requests: u64, tokens_in: u64, tokens_out: u64) -> u64 {
    let per_million = u128::from(tokens_in) * u128::from(rate.input_micros_per_million)
        + u128::from(tokens_out) * u128::from(rate.output_micros_per_million);
    let total = per_million.div_ceil(1_000_000)
        + u128::from(requests) * u128::from(rate.micros_per_request);
    u64::try_from(total).unwrap_or(u64::MAX)
}

/// The part of `used` past what is `left` of an allowance, and what is left after it.
fn past_allowance(used: u64, left: &mut u64) -> u64 {
    let free = used.min(*left);
    *left -= free;
    used - free
}

/// Prices a period's usage records on `plan` with its book (`None`: list prices).
pub fn price<'a>(
    period: &str,
    plan: &str,
    book: Option<(u32, &PlanPrices)>,
    records: impl IntoIterator<Item = &'a UsageRecorded>,
) -> InvoiceFinalized {
    #[derive(Default)]
    struct Allowance {
        requests: u64,
        tokens_in: u64,
        tokens_out: u64,
    }
    let mut lines: BTreeMap<&str, InvoiceLine> = BTreeMap::new();
    let mut allowances: BTreeMap<&str, Allowance> = BTreeMap::new();
    let mut count = 0u64;
    for record in records {
        count += 1;
        let line = lines.entry(&record.model).or_insert_with(|| InvoiceLine {
            model: record.model.clone(),
            requests: 0,
            tokens_in: 0,
            tokens_out: 0,
            tool_calls: 0,
            list_micros: 0,
            amount_micros: 0,
        });
        line.requests = line.requests.saturating_add(record.requests);
        line.tokens_in = line.tokens_in.saturating_add(record.tokens_in);
        line.tokens_out = line.tokens_out.saturating_add(record.tokens_out);
        line.tool_calls = line.tool_calls.saturating_add(record.tool_calls);
        line.list_micros = line.list_micros.saturating_add(record.cost_micros);
        let rate = book.and_then(|(_, prices)| prices.models.get(&record.model));
        let amount = match rate {
            None => record.cost_micros,
            Some(rate) => {
                let left = allowances
                    .entry(&record.model)
                    .or_insert_with(|| Allowance {
                        requests: rate.included_requests,
                        tokens_in: rate.included_input_tokens,
                        tokens_out: rate.included_output_tokens,
                    });
                let requests = past_allowance(record.requests, &mut left.requests);
                let tokens_in = past_allowance(record.tokens_in, &mut left.tokens_in);
                let tokens_out = past_allowance(record.tokens_out, &mut left.tokens_out);
                rate_cost(rate, requests, tokens_in, tokens_out)
            }
        };
        line.amount_micros = line.amount_micros.saturating_add(amount);
    }
    let subtotal: u64 = lines
        .values()
        .fold(0, |sum, l| sum.saturating_add(l.amount_micros));
    let (discount, included) = match book {
        None => (0, 0),
        Some((_, prices)) => {
            let discount = u64::try_from(
                u128::from(subtotal) * u128::from(prices.discount_bps.min(10_000)) / 10_000,
            )
            .unwrap_or(subtotal);
            (discount, prices.included_micros.min(subtotal - discount))
        }
    };
    InvoiceFinalized {
        period: period.to_owned(),
        total_micros: subtotal - discount - included,
        plan: plan.to_owned(),
        book_version: book.map(|(version, _)| version),
        lines: lines.into_values().collect(),
        subtotal_micros: subtotal,
        discount_micros: discount,
        included_micros: included,
        records: count,
    }
}

/// A period's name, `YYYY-MM`, as (year, month); `None` when it is not one.
pub fn parse_period(period: &str) -> Option<(i32, Month)> {
    let (year, month) = period.split_once('-')?;
    if year.len() != 4
        || month.len() != 2
        || !year
            .bytes()
            .chain(month.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let year: i32 = year.parse().ok()?;
    let month = Month::try_from(month.parse::<u8>().ok()?).ok()?;
    (year >= 2000).then_some((year, month))
}

fn name(year: i32, month: Month) -> String {
    format!("{year:04}-{:02}", u8::from(month))
}

/// The period after `period` (which must parse).
pub fn next_period(period: &str) -> Option<String> {
    let (year, month) = parse_period(period)?;
    Some(match month {
        Month::December => name(year + 1, Month::January),
        _ => name(year, month.next()),
    })
}

/// The period before `period` (which must parse).
fn previous_period(period: &str) -> Option<String> {
    let (year, month) = parse_period(period)?;
    Some(match month {
        Month::January => name(year - 1, Month::December),
        _ => name(year, month.previous()),
    })
}

/// A tenant's billing calendar: the day of the month each period starts on, changed from a
/// period on. With no change, periods are UTC calendar months.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calendar {
    /// `(from_period, day)`, in period order.
    changes: Vec<(String, u8)>,
}

impl Calendar {
    /// From `from_period` on, periods start on `day`.
    pub fn set(&mut self, from_period: &str, day: u8) {
        self.changes.retain(|(from, _)| from.as_str() < from_period);
        self.changes.push((from_period.to_owned(), day));
    }

    /// The day periods start on in `period`.
    pub fn day(&self, period: &str) -> u8 {
        self.changes
            .iter()
            .rev()
            .find(|(from, _)| from.as_str() <= period)
            .map_or(1, |(_, day)| *day)
    }

    /// When `period` starts (UTC midnight of its day).
    pub fn start(&self, period: &str) -> Option<OffsetDateTime> {
        let (year, month) = parse_period(period)?;
        let date = Date::from_calendar_date(year, month, self.day(period)).ok()?;
        Some(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc())
    }

    /// When `period` ends: the next period's start.
    pub fn end(&self, period: &str) -> Option<OffsetDateTime> {
        self.start(&next_period(period)?)
    }

    /// The period `at` falls in.
    pub fn period_at(&self, at: OffsetDateTime) -> String {
        let utc = at.to_offset(time::UtcOffset::UTC);
        let month = name(utc.year(), utc.month());
        match self.start(&month) {
            Some(start) if start > utc => previous_period(&month).unwrap_or(month),
            _ => month,
        }
    }

    /// The first period a change of day made at `now` can take effect from: one that has not
    /// started under either day, so no usage already billed moves.
    pub fn first_changeable(&self, now: OffsetDateTime, day: u8) -> String {
        let mut candidate = next_period(&self.period_at(now)).unwrap_or_default();
        loop {
            let mut trial = self.clone();
            trial.set(&candidate, day);
            match trial.start(&candidate) {
                Some(start) if start > now => return candidate,
                Some(_) => candidate = next_period(&candidate).unwrap_or_default(),
                None => return candidate,
            }
        }
    }
}

/// A price book as people write it (TOML for the CLI, JSON for the API): dollars, percent.
/// [`BookFile::prices`] turns it into exact micro-dollars, refusing what does not convert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookFile {
    /// `YYYY-MM`: the first period it prices (publishing only; the current period if absent).
    #[serde(default)]
    pub effective_from: Option<String>,
    pub plans: BTreeMap<String, PlanFile>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    #[serde(default)]
    pub models: BTreeMap<String, ModelFile>,
    #[serde(default)]
    pub discount_percent: f64,
    #[serde(default)]
    pub included_usd: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    #[serde(default)]
    pub input_usd_per_million: f64,
    #[serde(default)]
    pub output_usd_per_million: f64,
    #[serde(default)]
    pub usd_per_request: f64,
    #[serde(default)]
    pub included_requests: u64,
    #[serde(default)]
    pub included_input_tokens: u64,
    #[serde(default)]
    pub included_output_tokens: u64,
}

/// Most a single price may be: a million dollars.
const MAX_USD: f64 = 1_000_000.0;

/// Dollars as exact micro-dollars: refused when negative, not a number, too large, or finer
/// than a micro-dollar.
pub fn micros(field: &str, usd: f64) -> Result<u64, String> {
    if !usd.is_finite() || !(0.0..=MAX_USD).contains(&usd) {
        return Err(format!(
            "{field} must be a number of dollars from 0 to {MAX_USD}"
        ));
    }
    let scaled = usd * 1_000_000.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-3 {
        return Err(format!("{field} is finer than a micro-dollar"));
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked in range above"
    )]
    Ok(rounded as u64)
}

/// A plan or model name: 1-200 characters, no control characters.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(format!(
            "{what} must be 1-200 characters with no control characters"
        ));
    }
    Ok(())
}

impl BookFile {
    /// Each plan's prices in micro-dollars, or what is wrong, named by plan and model.
    pub fn prices(&self) -> Result<BTreeMap<String, PlanPrices>, String> {
        if self.plans.is_empty() {
            return Err("a price book names at least one plan under `plans`".into());
        }
        if let Some(from) = &self.effective_from
            && parse_period(from).is_none()
        {
            return Err(format!(
                "effective_from {from:?} is not a period such as 2026-12"
            ));
        }
        let mut out = BTreeMap::new();
        for (plan, file) in &self.plans {
            check_name("a plan name", plan)?;
            let at = |field: &str| format!("plans.{plan}.{field}");
            if !file.discount_percent.is_finite() || !(0.0..=100.0).contains(&file.discount_percent)
            {
                return Err(format!("{} must be 0-100", at("discount_percent")));
            }
            let bps = file.discount_percent * 100.0;
            if (bps - bps.round()).abs() > 1e-6 {
                return Err(format!("{} is finer than 0.01%", at("discount_percent")));
            }
            let mut models = BTreeMap::new();
            for (model, m) in &file.models {
                check_name("a model name", model)?;
                let field = |f: &str| format!("plans.{plan}.models.{model}.{f}");
                models.insert(
                    model.clone(),
                    ModelRate {
                        input_micros_per_million: micros(
                            &field("input_usd_per_million"),
                            m.input_usd_per_million,
                        )?,
                        output_micros_per_million: micros(
                            &field("output_usd_per_million"),
                            m.output_usd_per_million,
                        )?,
                        micros_per_request: micros(&field("usd_per_request"), m.usd_per_request)?,
                        included_requests: m.included_requests,
                        included_input_tokens: m.included_input_tokens,
                        included_output_tokens: m.included_output_tokens,
                    },
                );
            }
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "0-10,000 checked above"
            )]
            let discount_bps = bps.round() as u32;
            out.insert(
                plan.clone(),
                PlanPrices {
                    models,
                    discount_bps,
                    included_micros: micros(&at("included_usd"), file.included_usd)?,
                },
            );
        }
        Ok(out)
    }
}
