//! Named leases on a store: at most one holder of a name at a time among every process that
//! uses the same log, released when the holder drops it or dies.
//!
//! - PostgreSQL: a session advisory lock (keyed by the name and the store's schema) on a
//!   connection of the lease's own. A holder killed with `kill -9` closes its socket and
//!   PostgreSQL releases the lock at once; a holder cut off from the database learns it from
//!   [`Lease::alive`].
//! - SQLite: an exclusive `flock` on a file beside the database, released by the kernel when
//!   the process ends.
//! - Memory: a set of held names in the store (one process).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::Connection;

use crate::error::{Error, Result};

/// A held lease (see the module docs). Dropping it releases the name.
#[derive(Debug)]
pub struct Lease {
    name: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Local(Arc<Mutex<HashSet<String>>>),
    /// Held for its lock, which the kernel drops with the file.
    File {
        _locked: std::fs::File,
    },
    Postgres(Box<sqlx::PgConnection>),
}

impl Lease {
    /// The leased name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the lease is still held: always for a local or file lease; for PostgreSQL,
    /// whether its connection (which holds the lock) still answers.
    pub async fn alive(&mut self) -> bool {
        match &mut self.kind {
            Kind::Local(_) | Kind::File { .. } => true,
            Kind::Postgres(connection) => connection.ping().await.is_ok(),
        }
    }

    /// A lease among the holders of one process-local set.
    pub(crate) fn local(held: &Arc<Mutex<HashSet<String>>>, name: &str) -> Option<Lease> {
        let mut names = held.lock().unwrap_or_else(PoisonError::into_inner);
        names.insert(name.to_owned()).then(|| Lease {
            name: name.to_owned(),
            kind: Kind::Local(held.clone()),
        })
    }

    /// An exclusive lock on the file `<database>.lease-<name>` beside `database`.
    pub(crate) fn file(database: &Path, name: &str) -> Result<Option<Lease>> {
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut path = database.as_os_str().to_owned();
        path.push(format!(".lease-{safe}"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Unavailable(format!("cannot open a lease file: {e}")))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lease {
                name: name.to_owned(),
                kind: Kind::File { _locked: file },
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::Unavailable(format!("cannot lock a lease file: {e}")))
            }
        }
    }

    /// A session advisory lock on a connection of its own; `seed` keys the store (its
    /// schema). A standby's connection is kept in `spare` between tries, so polling for a
    /// lease does not open a connection each time.
    pub(crate) async fn postgres(
        options: &sqlx::postgres::PgConnectOptions,
        spare: &tokio::sync::Mutex<Option<sqlx::PgConnection>>,
        seed: i64,
        name: &str,
    ) -> Result<Option<Lease>> {
        let mut slot = spare.lock().await;
        let mut connection = match slot.take() {
            Some(connection) => connection,
            None => sqlx::PgConnection::connect_with(options)
                .await
                .map_err(|e| Error::Unavailable(format!("cannot connect for a lease: {e}")))?,
        };
        let (held,): (bool,) =
            sqlx::query_as("SELECT pg_try_advisory_lock(hashtextextended($1, $2))")
                .bind(format!("switchyard.lease.{name}"))
                .bind(seed)
                .fetch_one(&mut connection)
                .await
                .map_err(|e| Error::Unavailable(format!("cannot take a lease: {e}")))?;
        if !held {
            // A broken connection failed the query above and is dropped; this one is kept.
            *slot = Some(connection);
            return Ok(None);
        }
        Ok(Some(Lease {
            name: name.to_owned(),
            kind: Kind::Postgres(Box::new(connection)),
        }))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // A file lock goes with its file, an advisory lock with its connection.
        if let Kind::Local(held) = &self.kind {
            held.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.name);
        }
    }
}
