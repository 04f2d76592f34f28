//! The dead-letter queue: poison events recorded with their error and skipped, listed for an
//! operator, and marked resolved in the same transaction as the ops of their retry.

use super::render::{Placeholders, render};
use super::{ReadDb, now_us};
use crate::error::Result;
use crate::model::{Col, Op, Val};
use crate::projectors::Projector;

/// A poison event: recorded in the dead-letter queue with the error, and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub position: u64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub stream_id: String,
    pub tenant_id: uuid::Uuid,
    pub error: String,
}

/// A dead-letter queue entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DlqEntry {
    pub id: i64,
    pub projector: String,
    pub position: i64,
    pub event_id: String,
    pub event_type: String,
    pub stream_id: String,
    pub tenant_id: String,
    pub error: String,
    pub recorded_at_us: i64,
    pub resolved_at_us: Option<i64>,
}

impl ReadDb {
    /// Dead letters, newest first; unresolved only unless `all`.
    pub async fn dead_letters(
        &self,
        projector: Option<&str>,
        all: bool,
        limit: i64,
    ) -> Result<Vec<DlqEntry>> {
        let mut tx = self.begin().await?;
        let rows = tx
            .rows(
                &format!(
                    "SELECT {DLQ_SELECT} FROM proj_dlq \
                     WHERE ($1 = '' OR projector = $1) {} ORDER BY id DESC LIMIT $2",
                    if all {
                        ""
                    } else {
                        "AND resolved_at_us IS NULL"
                    }
                ),
                &[Val::from(projector.unwrap_or("")), Val::Int(limit)],
                &DLQ_COLUMNS,
            )
            .await?;
        tx.rollback().await?;
        Ok(rows.into_iter().filter_map(dlq_entry).collect())
    }

    /// One dead letter, resolved or not.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<DlqEntry>> {
        let mut tx = self.begin().await?;
        let rows = tx
            .rows(
                &format!("SELECT {DLQ_SELECT} FROM proj_dlq WHERE id = $1"),
                &[Val::Int(id)],
                &DLQ_COLUMNS,
            )
            .await?;
        tx.rollback().await?;
        Ok(rows.into_iter().find_map(dlq_entry))
    }

    /// Marks a dead letter resolved in the same transaction as the ops of its retry.
    pub(crate) async fn resolve_dead_letter(
        &self,
        projector: &Projector,
        id: i64,
        ops: &[Op],
    ) -> Result<bool> {
        self.ensure_partitions(ops, "").await?;
        let mut tx = self.begin().await?;
        let marked = tx
            .exec(
                "UPDATE proj_dlq SET resolved_at_us = $1 WHERE id = $2 AND projector = $3 AND resolved_at_us IS NULL",
                &[Val::Int(now_us()), Val::Int(id), Val::from(projector.name)],
            )
            .await?;
        if marked != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        for op in ops {
            let (sql, params) = render(op, "", Placeholders::of(tx.is_postgres()))?;
            tx.exec(&sql, &params).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// The columns `dlq_entry` reads, and their types.
const DLQ_SELECT: &str = "id, projector, position, event_id, event_type, stream_id, tenant_id, error, \
     recorded_at_us, COALESCE(resolved_at_us, -1)";
const DLQ_COLUMNS: [Col; 10] = [
    Col::Int,
    Col::Text,
    Col::Int,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Int,
];

fn dlq_entry(row: Vec<Val>) -> Option<DlqEntry> {
    let mut cells = row.into_iter();
    let mut int = || match cells.next() {
        Some(Val::Int(v)) => Some(Val::Int(v)),
        other => other,
    };
    let (
        Some(Val::Int(id)),
        Some(Val::Text(projector)),
        Some(Val::Int(position)),
        Some(Val::Text(event_id)),
        Some(Val::Text(event_type)),
        Some(Val::Text(stream_id)),
        Some(Val::Text(tenant_id)),
        Some(Val::Text(error)),
        Some(Val::Int(recorded_at_us)),
        Some(Val::Int(resolved)),
    ) = (
        int(),
        int(),
        int(),
        int(),
        int(),
        int(),
        int(),
        int(),
        int(),
        int(),
    )
    else {
        return None;
    };
    Some(DlqEntry {
        id,
        projector,
        position,
        event_id,
        event_type,
        stream_id,
        tenant_id,
        error,
        recorded_at_us,
        resolved_at_us: (resolved >= 0).then_some(resolved),
    })
}
