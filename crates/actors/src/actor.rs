//! The actor contract: pure decisions and pure state transitions. The runtime does all I/O.

use std::fmt::{Debug, Display};
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_events::{Event, TenantId};
use time::OffsetDateTime;

/// An event-sourced actor: its state is the fold of its stream's events.
///
/// `decide` and `apply` are pure, so they are tested as given-events / when-command /
/// then-events with no runtime at all.
pub trait Actor: Send + Sync + 'static {
    /// The stream category (`<category>-<id>`) and metric label of this kind of actor.
    const KIND: &'static str;
    /// Version of the snapshot encoding of [`Actor::State`]: bump it when `State` changes shape;
    /// older snapshots are then ignored and the actor is rebuilt from its events.
    const SNAPSHOT_VERSION: u16;

    /// Identifies one actor of this kind.
    type Id: Clone + Eq + Hash + Display + Debug + Send + Sync + 'static;
    /// The folded state.
    type State: Default + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What callers ask for.
    type Command: Clone + Debug + Send + 'static;
    /// Why a command is refused.
    type Rejection: std::error::Error + Clone + Send + Sync + 'static;

    /// The tenant that owns the actor's stream.
    fn tenant(id: &Self::Id) -> TenantId;

    /// The events that carrying out `command` on `state` produces (none: nothing to do), or why
    /// it is refused. `now` is the runtime's clock, passed in so decisions stay pure.
    fn decide(
        state: &Self::State,
        command: Self::Command,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, Self::Rejection>;

    /// Folds one event into the state. Events of types the actor does not know are ignored.
    fn apply(state: &mut Self::State, event: &Event);
}
