//! The one error type of the actor runtime.

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum Error<R: std::error::Error + 'static> {
    /// The actor's domain refused the command (`decide` returned a rejection). Nothing was
    /// written.
    #[error(transparent)]
    Rejected(R),

    /// The command lost the optimistic-concurrency race this many times in a row (other nodes
    /// kept writing the same stream); nothing was written.
    #[error("the stream kept changing under the command ({attempts} attempts)")]
    Contended { attempts: u32 },

    /// The actor's mailbox is full: the caller should back off.
    #[error("the actor is overloaded (mailbox full)")]
    Overloaded,

    /// The event log failed.
    #[error(transparent)]
    Store(#[from] switchyard_events::Error),

    /// The actor stopped before answering (it crashed; the next command restarts it from the log).
    #[error("the actor stopped before answering")]
    Stopped,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, R> = std::result::Result<T, Error<R>>;
