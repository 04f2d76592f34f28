//! The quota actor: a tenant's spend against its monthly budget, with reservation before work
//! and settlement after it (stream `quota-<tenant>`).
//!
//! Work reserves what it may cost at most; the reservation counts against the budget until it
//! is settled with the real cost (the difference goes back) or released whole. Money is integer
//! micro-dollars. The budget comes with each reservation (the caller reads it from the tenant's
//! limits), so the actor needs no other stream and `decide` stays pure. Months are UTC calendar
//! months: the first reservation of a new month starts its spend at zero.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_events::{Event, QuotaReleased, QuotaReserved, QuotaSettled, TenantId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::actor::Actor;

#[cfg(test)]
mod tests;

/// The quota actor kind.
#[derive(Debug, Clone, Copy)]
pub struct Quota;

/// A reservation not yet settled or released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub micros: u64,
    pub tokens: u64,
    /// Whether it counts against the current period (a reservation from last month does not).
    pub current: bool,
}

/// A tenant's spend in the current period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaState {
    /// `YYYY-MM` of the current period ("" before the first reservation).
    pub period: String,
    pub spent_micros: u64,
    pub tokens: u64,
    pub open: BTreeMap<Uuid, Reservation>,
}

impl QuotaState {
    /// Micro-dollars held by open reservations of the current period.
    pub fn reserved_micros(&self) -> u64 {
        self.open
            .values()
            .filter(|r| r.current)
            .map(|r| r.micros)
            .sum()
    }
}

/// What can be asked of a tenant's quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaCommand {
    /// Set `micros` aside for work `reservation_id`, within `budget_micros` (`None`: no budget).
    Reserve {
        reservation_id: Uuid,
        micros: u64,
        tokens: u64,
        budget_micros: Option<u64>,
    },
    /// The work cost `micros` and `tokens`; the rest of the reservation goes back.
    Settle {
        reservation_id: Uuid,
        micros: u64,
        tokens: u64,
    },
    /// The work did not run: the whole reservation goes back.
    Release { reservation_id: Uuid },
}

/// Why a quota command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaRejection {
    /// The 402 of the API: the month's budget cannot cover the reservation.
    #[error("the monthly budget is spent ({remaining_micros} micro-dollars left)")]
    BudgetExhausted { remaining_micros: u64 },
    #[error("this reservation id is already in use")]
    DuplicateReservation,
    #[error("no open reservation with this id")]
    UnknownReservation,
}

/// `YYYY-MM` of `now` in UTC.
pub fn period_of(now: OffsetDateTime) -> String {
    let utc = now.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}", utc.year(), u8::from(utc.month()))
}

impl Actor for Quota {
    const KIND: &'static str = "quota";
    const SNAPSHOT_VERSION: u16 = 1;
    type Id = TenantId;
    type State = QuotaState;
    type Command = QuotaCommand;
    type Rejection = QuotaRejection;

    fn tenant(id: &TenantId) -> TenantId {
        *id
    }

    fn decide(
        state: &QuotaState,
        command: QuotaCommand,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, QuotaRejection> {
        match command {
            QuotaCommand::Reserve {
                reservation_id,
                micros,
                tokens,
                budget_micros,
            } => {
                if state.open.contains_key(&reservation_id) {
                    return Err(QuotaRejection::DuplicateReservation);
                }
                let period = period_of(now);
                let (spent, reserved) = if period == state.period {
                    (state.spent_micros, state.reserved_micros())
                } else {
                    (0, 0)
                };
                if let Some(budget) = budget_micros {
                    let committed = spent.saturating_add(reserved);
                    if committed.saturating_add(micros) > budget {
                        return Err(QuotaRejection::BudgetExhausted {
                            remaining_micros: budget.saturating_sub(committed),
                        });
                    }
                }
                Ok(vec![Event::QuotaReserved(QuotaReserved {
                    reservation_id,
                    period,
                    micros,
                    tokens,
                })])
            }
            QuotaCommand::Settle {
                reservation_id,
                micros,
                tokens,
            } => {
                if !state.open.contains_key(&reservation_id) {
                    return Err(QuotaRejection::UnknownReservation);
                }
                Ok(vec![Event::QuotaSettled(QuotaSettled {
                    reservation_id,
                    micros,
                    tokens,
                })])
            }
            QuotaCommand::Release { reservation_id } => {
                if !state.open.contains_key(&reservation_id) {
                    return Err(QuotaRejection::UnknownReservation);
                }
                Ok(vec![Event::QuotaReleased(QuotaReleased { reservation_id })])
            }
        }
    }

    fn apply(state: &mut QuotaState, event: &Event) {
        match event {
            Event::QuotaReserved(e) => {
                if e.period != state.period {
                    // A new month: last month's spend stops counting, and so do its open
                    // reservations (they settle into last month).
                    state.period = e.period.clone();
                    state.spent_micros = 0;
                    state.tokens = 0;
                    for reservation in state.open.values_mut() {
                        reservation.current = false;
                    }
                }
                state.open.insert(
                    e.reservation_id,
                    Reservation {
                        micros: e.micros,
                        tokens: e.tokens,
                        current: true,
                    },
                );
            }
            Event::QuotaSettled(e) => {
                if let Some(reservation) = state.open.remove(&e.reservation_id)
                    && reservation.current
                {
                    state.spent_micros = state.spent_micros.saturating_add(e.micros);
                    state.tokens = state.tokens.saturating_add(e.tokens);
                }
            }
            Event::QuotaReleased(e) => {
                state.open.remove(&e.reservation_id);
            }
            // Not the quota's: other streams' events.
            Event::TenantCreated(_)
            | Event::TenantRenamed(_)
            | Event::TenantSuspended(_)
            | Event::TenantResumed(_)
            | Event::TenantFlagSet(_)
            | Event::FeatureFlagSet(_)
            | Event::TenantSettingSet(_)
            | Event::ApiKeyIssued(_)
            | Event::ApiKeyRevoked(_)
            | Event::ApiKeyRotated(_)
            | Event::TenantDeleted(_)
            | Event::TenantLimitsSet(_)
            | Event::IdempotencyKeyClaimed(_)
            | Event::IdempotentResponseRecorded(_)
            | Event::IdempotencyKeyReleased(_)
            | Event::UsageRecorded(_)
            | Event::InvoiceFinalized(_)
            | Event::CreditNoteIssued(_)
            | Event::StorageMetered(_)
            | Event::BillingDaySet(_)
            | Event::PriceBookPublished(_)
            | Event::InvoicePaid(_)
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
            | Event::PromptRegistered(_)
            | Event::ManifestSigned(_)
            | Event::DocumentAdded(_)
            | Event::DocumentChunked(_)
            | Event::DocumentIndexed(_)
            | Event::DocumentDeleted(_)
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
