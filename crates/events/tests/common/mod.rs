//! Shared set-up of the event-log tests: fresh stores on real SQLite files and real PostgreSQL.
#![allow(dead_code, reason = "each test binary uses part of it")]
#![allow(
    clippy::expect_used,
    reason = "test set-up: a panic is the failure report"
)]

use switchyard_events::{PostgresOptions, PostgresStore, SqliteStore};

/// The test database (see `scripts/services.sh`, which creates it).
pub fn database_url() -> String {
    std::env::var("SWITCHYARD_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://switchyard:switchyard@127.0.0.1:5432/switchyard_test".into()
    })
}

/// A new, empty PostgreSQL store in a schema of its own. Fails (never skips) when the server
/// cannot be reached.
pub async fn postgres_store() -> PostgresStore {
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    PostgresStore::connect(PostgresOptions::new(database_url()).schema(schema))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is required (run scripts/services.sh): {e}",
                database_url()
            )
        })
}

/// A directory for one test's files under Cargo's per-target temp dir (`scripts/test.sh` clears
/// `switchyard-tests/` before each run, so nothing is deleted while a test still uses it).
pub fn test_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("switchyard-tests")
        .join(uuid::Uuid::now_v7().simple().to_string());
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// A new, empty SQLite store in a file of its own.
pub async fn sqlite_store() -> SqliteStore {
    SqliteStore::open(test_dir().join("events.db"))
        .await
        .expect("open SQLite store")
}
