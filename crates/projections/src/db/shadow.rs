//! A rebuild's shadow tables: created fresh, then swapped in for the live tables (which fences
//! a live worker's batch) once the rebuild has caught up.

use super::schema::create_table;
use super::{ReadDb, SHADOW, first_int, now_us};
use crate::error::Result;
use crate::model::{Col, Val};
use crate::projectors::Projector;

impl ReadDb {
    /// Drops any leftover shadow tables of the projector and creates fresh ones.
    pub(crate) async fn create_shadow(&self, projector: &Projector) -> Result<()> {
        let mut tx = self.begin().await?;
        for table in projector.tables {
            tx.exec(&format!("DROP TABLE IF EXISTS {}{SHADOW}", table.name), &[])
                .await?;
            create_table(&mut tx, table, &format!("{}{SHADOW}", table.name)).await?;
        }
        tx.commit().await?;
        self.forget_partitions();
        Ok(())
    }

    /// Swaps a rebuild's shadow tables in if the live projector has not passed `shadow_at`;
    /// returns false (nothing changed) if it has, so the caller catches the shadow up and tries
    /// again. The swap sets the checkpoint to `shadow_at`, which fences a live worker's batch.
    pub(crate) async fn swap_shadow(&self, projector: &Projector, shadow_at: u64) -> Result<bool> {
        let mut tx = self.begin().await?;
        // Locks the checkpoint row (and, in SQLite, the file) before reading it.
        tx.exec(
            "UPDATE proj_checkpoints SET updated_at_us = updated_at_us WHERE projector = $1",
            &[Val::from(projector.name)],
        )
        .await?;
        let live = tx
            .rows(
                "SELECT position FROM proj_checkpoints WHERE projector = $1",
                &[Val::from(projector.name)],
                &[Col::Int],
            )
            .await?;
        let live = first_int(&live).unwrap_or(0);
        if live > crate::model::sat(shadow_at) {
            tx.rollback().await?;
            return Ok(false);
        }
        let postgres = tx.is_postgres();
        for table in projector.tables {
            let shadow = format!("{}{SHADOW}", table.name);
            let partitions = if postgres && table.partition.is_some() {
                tx.rows(
                    "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                     WHERE i.inhparent = to_regclass($1)",
                    &[Val::Text(shadow.clone())],
                    &[Col::Text],
                )
                .await?
            } else {
                Vec::new()
            };
            tx.exec(&format!("DROP TABLE IF EXISTS {}", table.name), &[])
                .await?;
            tx.exec(
                &format!("ALTER TABLE {shadow} RENAME TO {}", table.name),
                &[],
            )
            .await?;
            for row in partitions {
                if let [Val::Text(partition)] = row.as_slice() {
                    let renamed = partition.replacen(&shadow, table.name, 1);
                    tx.exec(&format!("ALTER TABLE {partition} RENAME TO {renamed}"), &[])
                        .await?;
                }
            }
        }
        tx.exec(
            "INSERT INTO proj_checkpoints (projector, position, updated_at_us) VALUES ($1, $2, $3) \
             ON CONFLICT (projector) DO UPDATE SET position = excluded.position, updated_at_us = excluded.updated_at_us",
            &[Val::from(projector.name), Val::from(shadow_at), Val::Int(now_us())],
        )
        .await?;
        tx.commit().await?;
        self.forget_partitions();
        Ok(true)
    }
}
