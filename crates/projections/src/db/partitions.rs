//! Monthly partitions of the partitioned tables in PostgreSQL, created ahead of the batches
//! that write to them, and the retention that drops old partitions or deletes old rows.

use sqlx::AssertSqlSafe;
use time::OffsetDateTime;

use super::{Backend, ReadDb};
use crate::error::Result;
use crate::model::{Col, Op, Val};

impl ReadDb {
    /// Forgets which partitions exist (after a failed batch, which may have raced a rebuild).
    pub(crate) fn forget_partitions(&self) {
        if let Ok(mut known) = self.partitions.lock() {
            known.clear();
        }
    }

    /// Creates the monthly partitions the ops write to (PostgreSQL), outside the batch's
    /// transaction so that a concurrent creator cannot abort it.
    pub(super) async fn ensure_partitions(&self, ops: &[Op], suffix: &str) -> Result<()> {
        let Backend::Postgres { pool, .. } = &self.backend else {
            return Ok(());
        };
        let mut wanted = Vec::new();
        for op in ops {
            let Some((column, units)) = op.table.partition else {
                continue;
            };
            let Some(Val::Int(value)) = op.key.iter().find(|(c, _)| *c == column).map(|(_, v)| v)
            else {
                continue;
            };
            let (name, from, to) = month_partition(op.table.name, suffix, *value, units);
            let known = self
                .partitions
                .lock()
                .map(|k| k.contains(&name))
                .unwrap_or(false);
            if !known && !wanted.iter().any(|(n, _, _, _)| *n == name) {
                wanted.push((name, format!("{}{suffix}", op.table.name), from, to));
            }
        }
        for (name, parent, from, to) in wanted {
            let created = sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {parent} FOR VALUES FROM ({from}) TO ({to})"
            )))
            .execute(pool)
            .await;
            match created {
                Ok(_) => {}
                // 42P17: the range is covered by a partition of another name (a rebuild's).
                // 42P07/23505: a concurrent creator won.
                Err(sqlx::Error::Database(db))
                    if matches!(db.code().as_deref(), Some("42P17" | "42P07" | "23505")) => {}
                Err(error) => return Err(error.into()),
            }
            if let Ok(mut known) = self.partitions.lock() {
                known.insert(name);
            }
        }
        Ok(())
    }

    /// Deletes read-model data older than `cutoff_unix` seconds: whole monthly partitions in
    /// PostgreSQL (those that end before it), rows in SQLite and in unpartitioned hourly tables.
    /// Returns what it dropped or deleted.
    pub async fn retention(&self, cutoff_unix: i64) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let mut tx = self.begin().await?;
        let postgres = tx.is_postgres();
        for projector in crate::projectors::ALL {
            for table in projector.tables {
                let (column, units) = match (table.partition, table.has("hour")) {
                    (Some(partition), _) => partition,
                    (None, true) => ("hour", 1),
                    (None, false) => continue,
                };
                let cutoff = cutoff_unix.saturating_mul(units);
                if postgres && table.partition.is_some() {
                    let parts = tx
                        .rows(
                            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                             WHERE i.inhparent = to_regclass($1)",
                            &[Val::from(table.name)],
                            &[Col::Text],
                        )
                        .await?;
                    for row in parts {
                        let [Val::Text(partition)] = row.as_slice() else {
                            continue;
                        };
                        let Some(end) = partition_end(partition, units) else {
                            continue;
                        };
                        if end <= cutoff {
                            tx.exec(&format!("DROP TABLE {partition}"), &[]).await?;
                            done.push(format!("dropped partition {partition}"));
                        }
                    }
                } else {
                    let deleted = tx
                        .exec(
                            &format!("DELETE FROM {} WHERE {column} < $1", table.name),
                            &[Val::Int(cutoff)],
                        )
                        .await?;
                    if deleted > 0 {
                        done.push(format!("deleted {deleted} rows of {}", table.name));
                    }
                }
            }
        }
        tx.commit().await?;
        self.forget_partitions();
        Ok(done)
    }
}

/// The monthly partition that holds `value` (a unix time in `1/units` seconds):
/// its name and its bounds.
pub(super) fn month_partition(
    table: &str,
    suffix: &str,
    value: i64,
    units: i64,
) -> (String, i64, i64) {
    let seconds = value.div_euclid(units.max(1));
    let date = OffsetDateTime::from_unix_timestamp(seconds)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date();
    let (year, month) = (date.year(), date.month());
    let start = time::Date::from_calendar_date(year, month, 1)
        .unwrap_or(date)
        .midnight()
        .assume_utc();
    let next_month = month.next();
    let next_year = if next_month == time::Month::January {
        year + 1
    } else {
        year
    };
    let end = time::Date::from_calendar_date(next_year, next_month, 1)
        .unwrap_or(date)
        .midnight()
        .assume_utc();
    (
        format!("{table}{suffix}_p{:04}{:02}", year, u8::from(month)),
        start.unix_timestamp().saturating_mul(units),
        end.unix_timestamp().saturating_mul(units),
    )
}

/// The upper bound of a partition from its name's `_pYYYYMM` suffix.
pub(super) fn partition_end(name: &str, units: i64) -> Option<i64> {
    let stamp = name.rsplit_once("_p")?.1;
    if stamp.len() != 6 {
        return None;
    }
    let year: i32 = stamp[..4].parse().ok()?;
    let month: u8 = stamp[4..].parse().ok()?;
    let month = time::Month::try_from(month).ok()?;
    let first = time::Date::from_calendar_date(year, month, 1).ok()?;
    let (_, _, end) = month_partition(
        "",
        "",
        first.midnight().assume_utc().unix_timestamp() * units,
        units,
    );
    Some(end)
}
