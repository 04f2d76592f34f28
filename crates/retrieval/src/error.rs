//! The one error type of the retrieval crate.

/// Why a document could not be ingested or a query answered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The document is of a kind, an encoding or a shape that is not taken.
    #[error("{0}")]
    Unsupported(String),
    /// The document is over a configured limit.
    #[error("the document is too large: {0}")]
    TooLarge(String),
    /// The query is not valid.
    #[error("{0}")]
    Query(String),
    /// The index failed.
    #[error("index: {0}")]
    Index(String),
    /// The log failed.
    #[error(transparent)]
    Store(#[from] switchyard_events::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
