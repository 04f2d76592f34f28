//! The price books: every plan's versioned prices, one platform actor (stream
//! `pricebooks-<system tenant>`). A version is never changed once published; a new one takes
//! over from its `effective_from` period for every invoice still open when it closes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_events::{Event, PlanPrices, PriceBookPublished, TenantId};
use time::OffsetDateTime;

use super::pricing::{check_name, parse_period};
use crate::actor::Actor;

/// The price-book actor kind (one actor: [`TenantId::SYSTEM`]).
#[derive(Debug, Clone, Copy)]
pub struct PriceBooks;

/// One published version of a plan's book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookVersion {
    pub version: u32,
    pub effective_from: String,
    pub prices: PlanPrices,
}

/// Every plan's versions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BooksState {
    pub plans: BTreeMap<String, Vec<BookVersion>>,
}

impl BooksState {
    /// The book that prices `period` on `plan`: the newest version in effect by then, of the
    /// plan's own book, else of the default plan `*`; `None`: list prices.
    pub fn book_for(&self, plan: &str, period: &str) -> Option<&BookVersion> {
        let newest = |plan: &str| {
            self.plans.get(plan).and_then(|versions| {
                versions
                    .iter()
                    .rev()
                    .find(|v| v.effective_from.as_str() <= period)
            })
        };
        newest(plan).or_else(|| newest("*"))
    }
}

/// What can be asked of the price books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BooksCommand {
    /// Publish a new version of each plan's book, priced from `effective_from` on.
    Publish {
        effective_from: String,
        plans: BTreeMap<String, PlanPrices>,
    },
}

/// Why a price book is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BooksRejection {
    #[error("{0}")]
    Invalid(String),
}

impl Actor for PriceBooks {
    const KIND: &'static str = "pricebooks";
    const SNAPSHOT_VERSION: u16 = 1;
    type Id = TenantId;
    type State = BooksState;
    type Command = BooksCommand;
    type Rejection = BooksRejection;

    fn tenant(id: &TenantId) -> TenantId {
        *id
    }

    fn decide(
        state: &BooksState,
        command: BooksCommand,
        _now: OffsetDateTime,
    ) -> Result<Vec<Event>, BooksRejection> {
        let BooksCommand::Publish {
            effective_from,
            plans,
        } = command;
        if parse_period(&effective_from).is_none() {
            return Err(BooksRejection::Invalid(format!(
                "effective_from {effective_from:?} is not a period such as 2026-12"
            )));
        }
        if plans.is_empty() {
            return Err(BooksRejection::Invalid(
                "a price book names at least one plan".into(),
            ));
        }
        let mut events = Vec::with_capacity(plans.len());
        for (plan, prices) in plans {
            check_name("a plan name", &plan).map_err(BooksRejection::Invalid)?;
            if prices.discount_bps > 10_000 {
                return Err(BooksRejection::Invalid(format!(
                    "plan {plan}: the discount is over 100%"
                )));
            }
            for model in prices.models.keys() {
                check_name("a model name", model).map_err(BooksRejection::Invalid)?;
            }
            let versions = state.plans.get(&plan);
            let version = versions.map_or(0, Vec::len) + 1;
            let version = u32::try_from(version).map_err(|_| {
                BooksRejection::Invalid(format!("plan {plan} has too many versions"))
            })?;
            events.push(Event::PriceBookPublished(PriceBookPublished {
                plan,
                version,
                effective_from: effective_from.clone(),
                prices,
            }));
        }
        Ok(events)
    }

    fn apply(state: &mut BooksState, event: &Event) {
        if let Event::PriceBookPublished(e) = event {
            state
                .plans
                .entry(e.plan.clone())
                .or_default()
                .push(BookVersion {
                    version: e.version,
                    effective_from: e.effective_from.clone(),
                    prices: e.prices.clone(),
                });
        }
    }
}
