//! The crate's one error type.

/// What can go wrong on the read side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The read-model database failed or refused a statement.
    #[error("read model database: {0}")]
    Db(#[from] sqlx::Error),
    /// The event log failed.
    #[error("event log: {0}")]
    Store(#[from] switchyard_events::Error),
    /// Another worker moved this projector's checkpoint: this worker's batch was rolled back.
    #[error("projector {0}: the checkpoint moved under this worker (another worker took over)")]
    Fenced(String),
    /// A caller asked for something that does not exist or is malformed.
    #[error("{0}")]
    Invalid(String),
    /// NATS refused or lost a publish.
    #[error("NATS: {0}")]
    Nats(String),
}

impl Error {
    /// Whether a database error is about the data of one statement (a poison event) rather than
    /// the connection, a lock, a race with a rebuild or the server's state (worth a retry).
    pub fn is_data_error(&self) -> bool {
        let db = match self {
            Error::Db(sqlx::Error::Database(db)) => db,
            // A value the driver cannot send (PostgreSQL text cannot hold NUL).
            Error::Db(sqlx::Error::Encode(_)) => return true,
            _ => return false,
        };
        let Some(code) = db.code() else {
            return true;
        };
        let postgres = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some();
        if !postgres {
            // SQLite: the primary result code is the low byte. BUSY, LOCKED, IOERR, FULL and
            // CANTOPEN are about the database, not the statement.
            let sqlite = code.parse::<u32>().unwrap_or(0);
            return !matches!(sqlite & 0xff, 5 | 6 | 10 | 13 | 14);
        }
        // PostgreSQL SQLSTATE classes: connection, rollback (serialization, deadlock),
        // resources, object state (locks), operator intervention, system; and an undefined
        // table (a rebuild swapped the tables mid-statement).
        let transient = ["08", "40", "53", "55", "57", "58", "42P01"];
        !transient.iter().any(|prefix| code.starts_with(prefix))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
