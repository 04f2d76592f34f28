//! The write side of Switchyard: the actor contract (pure `decide`/`apply`), the runtime that
//! activates, rehydrates, snapshots and passivates actors, and the domain actors.

mod actor; // the Actor trait
pub mod billing; // the billing actor: usage ledger, price books, monthly invoices, CSV export
mod error; // the crate's error type
pub mod flags; // feature flags: the platform flags actor, and their evaluation (kill switch, targets, sticky rollouts)
pub mod quota; // the quota actor: monthly budget, reservation before work, settlement after it
pub mod router; // the router actor: rewards folded into bandit state; policies; off-policy evaluation
mod runtime; // activation, mailboxes, conflict retries, snapshots, passivation
pub mod tenant; // the tenant actor: name, plan, suspension, flags, settings, API keys

pub use actor::Actor;
pub use error::{Error, Result};
pub use runtime::{Applied, Clock, Runtime, RuntimeConfig};
