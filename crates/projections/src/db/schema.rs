//! The DDL: the checkpoint and dead-letter tables, and every projector's tables with their
//! indexes and, in PostgreSQL, row-level security policies and the analytics role's grants.

use super::tx::Tx;
use super::{ANALYTICS_ROLE, ReadDb, first_int, now_us};
use crate::error::Result;
use crate::model::{Col, Table, Val};

impl ReadDb {
    /// Creates what is missing: the checkpoint and dead-letter tables and every projector's
    /// tables (with their row-level security policies in PostgreSQL).
    pub async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        let (serial, int) = if tx.is_postgres() {
            ("BIGSERIAL PRIMARY KEY", "BIGINT")
        } else {
            ("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER")
        };
        tx.exec(
            &format!(
                "CREATE TABLE IF NOT EXISTS proj_checkpoints (projector TEXT PRIMARY KEY, \
                 position {int} NOT NULL, updated_at_us {int} NOT NULL)"
            ),
            &[],
        )
        .await?;
        tx.exec(
            &format!(
                "CREATE TABLE IF NOT EXISTS proj_dlq (id {serial}, projector TEXT NOT NULL, \
                 position {int} NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL, \
                 stream_id TEXT NOT NULL, tenant_id TEXT NOT NULL, error TEXT NOT NULL, \
                 recorded_at_us {int} NOT NULL, resolved_at_us {int}, \
                 UNIQUE (projector, event_id))"
            ),
            &[],
        )
        .await?;
        for projector in crate::projectors::ALL {
            for table in projector.tables {
                create_table(&mut tx, table, table.name).await?;
            }
        }
        tx.commit().await
    }
}

/// Creates a table (and its indexes, policies and grants) named `physical` if it is missing.
pub(super) async fn create_table(tx: &mut Tx, table: &Table, physical: &str) -> Result<()> {
    let postgres = tx.is_postgres();
    let exists = if postgres {
        tx.rows(
            "SELECT COUNT(*) FROM pg_class WHERE oid = to_regclass($1)",
            &[Val::from(physical)],
            &[Col::Int],
        )
        .await?
    } else {
        tx.rows(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
            &[Val::from(physical)],
            &[Col::Int],
        )
        .await?
    };
    if first_int(&exists).unwrap_or(0) > 0 {
        return Ok(());
    }
    let mut columns: Vec<String> = table
        .columns
        .iter()
        .map(|(name, col)| match (col, postgres) {
            (Col::Int, true) => format!("{name} BIGINT NOT NULL DEFAULT 0"),
            (Col::Int, false) => format!("{name} INTEGER NOT NULL DEFAULT 0"),
            (Col::Text, _) => format!("{name} TEXT NOT NULL DEFAULT ''"),
            (Col::Uuid, true) => format!("{name} UUID NOT NULL"),
            (Col::Uuid, false) => format!("{name} TEXT NOT NULL"),
        })
        .collect();
    if table.versioned {
        columns.push(if postgres {
            "version BIGINT NOT NULL DEFAULT 0".into()
        } else {
            "version INTEGER NOT NULL DEFAULT 0".into()
        });
    }
    columns.push(format!("PRIMARY KEY ({})", table.key.join(", ")));
    let partition = match (table.partition, postgres) {
        (Some((column, _)), true) => format!(" PARTITION BY RANGE ({column})"),
        _ => String::new(),
    };
    tx.exec(
        &format!(
            "CREATE TABLE {physical} ({}){partition}",
            columns.join(", ")
        ),
        &[],
    )
    .await?;
    let generation = now_us();
    for (i, index) in table.indexes.iter().enumerate() {
        tx.exec(
            &format!(
                "CREATE INDEX idx_{physical}_{i}_{generation} ON {physical} ({})",
                index.join(", ")
            ),
            &[],
        )
        .await?;
    }
    if postgres {
        tx.exec(
            &format!("ALTER TABLE {physical} ENABLE ROW LEVEL SECURITY"),
            &[],
        )
        .await?;
        tx.exec(
            &format!(
                "CREATE POLICY tenant_isolation ON {physical} FOR SELECT \
                 USING (tenant_id = NULLIF(current_setting('switchyard.tenant', true), '')::uuid)"
            ),
            &[],
        )
        .await?;
        // The analytics role may read through the policy; it is created by the deployment (or
        // here, when this role may create roles).
        tx.exec(
            &format!(
                "DO $$ BEGIN \
                   IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ANALYTICS_ROLE}') \
                      AND (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN \
                     CREATE ROLE {ANALYTICS_ROLE} NOLOGIN NOBYPASSRLS; \
                   END IF; \
                   IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ANALYTICS_ROLE}') THEN \
                     EXECUTE format('GRANT USAGE ON SCHEMA %I TO {ANALYTICS_ROLE}', current_schema()); \
                     EXECUTE 'GRANT SELECT ON {physical} TO {ANALYTICS_ROLE}'; \
                   END IF; \
                 END $$"
            ),
            &[],
        )
        .await?;
    }
    Ok(())
}
