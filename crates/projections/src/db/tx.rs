//! An open transaction on either backend: statements and queries with their parameters bound
//! and their rows decoded the same way for SQLite and PostgreSQL.
//!
//! Every text parameter passes through [`storable`] here, at the read-model boundary: events
//! carry text from outside (a tool's error body, a tenant's names), and PostgreSQL refuses a NUL
//! in text, which would dead-letter the event and leave its row stale for ever.

use std::str::FromStr;

use sqlx::{AssertSqlSafe, Postgres, Row, Sqlite, Transaction};

use crate::error::{Error, Result};
use crate::model::{Col, Val};

/// An open transaction on either backend.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tx::Sqlite(_) => "Tx::Sqlite",
            Tx::Postgres(_) => "Tx::Postgres",
        })
    }
}

macro_rules! bind_all {
    ($query:expr, $params:expr, $native_uuid:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                Val::Int(value) => query.bind(*value),
                Val::Text(value) => query.bind(storable(value)),
                Val::Uuid(value) if $native_uuid => query.bind(*value),
                Val::Uuid(value) => query.bind(value.to_string()),
            };
        }
        query
    }};
}

/// Text as both backends store it: each NUL (which PostgreSQL refuses in text) replaced by
/// U+FFFD, the Unicode replacement character. Applied to every text bound, so a query's
/// parameters match the rows they were stored as, on SQLite as on PostgreSQL.
fn storable(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text.to_owned()
    }
}

macro_rules! decode_row {
    ($row:expr, $cols:expr, $native_uuid:expr) => {{
        let row = $row;
        let mut out = Vec::with_capacity($cols.len());
        for (index, col) in $cols.iter().enumerate() {
            out.push(match col {
                Col::Int => Val::Int(row.try_get::<Option<i64>, _>(index)?.unwrap_or(0)),
                Col::Text => {
                    Val::Text(row.try_get::<Option<String>, _>(index)?.unwrap_or_default())
                }
                Col::Uuid if $native_uuid => Val::Uuid(row.try_get::<uuid::Uuid, _>(index)?),
                Col::Uuid => {
                    let text: String = row.try_get(index)?;
                    Val::Uuid(uuid::Uuid::from_str(&text).map_err(|error| {
                        Error::Invalid(format!("stored uuid {text:?}: {error}"))
                    })?)
                }
            });
        }
        out
    }};
}

impl Tx {
    /// Runs a statement; returns the rows it changed.
    pub(crate) async fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let sql = AssertSqlSafe(sql.to_owned());
        Ok(match self {
            Tx::Sqlite(tx) => bind_all!(sqlx::query(sql), params, false)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Tx::Postgres(tx) => bind_all!(sqlx::query(sql), params, true)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    /// Runs a query and decodes each row's columns as `cols` (NULL reads as 0 or '').
    pub(crate) async fn rows(
        &mut self,
        sql: &str,
        params: &[Val],
        cols: &[Col],
    ) -> Result<Vec<Vec<Val>>> {
        let sql = AssertSqlSafe(sql.to_owned());
        let mut out = Vec::new();
        match self {
            Tx::Sqlite(tx) => {
                for row in bind_all!(sqlx::query(sql), params, false)
                    .fetch_all(&mut **tx)
                    .await?
                {
                    out.push(decode_row!(&row, cols, false));
                }
            }
            Tx::Postgres(tx) => {
                for row in bind_all!(sqlx::query(sql), params, true)
                    .fetch_all(&mut **tx)
                    .await?
                {
                    out.push(decode_row!(&row, cols, true));
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        match self {
            Tx::Sqlite(tx) => tx.rollback().await?,
            Tx::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    pub(super) fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }
}

#[cfg(test)]
mod tests {
    use super::storable;

    #[test]
    fn nul_bytes_become_replacement_characters() {
        assert_eq!(storable("a\0b\0"), "a\u{fffd}b\u{fffd}");
        assert_eq!(storable("plain"), "plain");
        assert_eq!(storable(""), "");
    }
}
