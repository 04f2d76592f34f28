//! The blob statements of the SQL backends (table `blobs`, migration 0003): SQLite on a
//! `rusqlite` connection (the writer's for changes, a reader's for reads), PostgreSQL on the
//! pool.

use rusqlite::{Connection, OptionalExtension};
use sqlx::PgPool;
use uuid::Uuid;

use super::Blob;
use crate::error::{Error, Result};
use crate::ids::TenantId;

fn tenant_of(bytes: &[u8]) -> Result<TenantId> {
    Uuid::from_slice(bytes)
        .map(TenantId::from_uuid)
        .map_err(|e| Error::decode("blob tenant_id", e))
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

pub(super) fn sqlite_put(conn: &Connection, blob: &Blob) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO blobs (tenant_id, hash, body, created_at_us, expires_at_us) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant_id, hash) DO NOTHING",
    )?
    .execute(rusqlite::params![
        blob.tenant.as_uuid().as_bytes(),
        blob.hash,
        blob.body,
        blob.created_at_us,
        blob.expires_at_us,
    ])?;
    Ok(())
}

pub(super) fn sqlite_get(
    conn: &Connection,
    tenant: TenantId,
    hash: &str,
) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT body FROM blobs WHERE tenant_id = ?1 AND hash = ?2")?
        .query_row(
            rusqlite::params![tenant.as_uuid().as_bytes(), hash],
            |row| row.get(0),
        )
        .optional()?)
}

pub(super) fn sqlite_delete(
    conn: &Connection,
    tenant: TenantId,
    before_us: Option<i64>,
) -> Result<u64> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM blobs WHERE tenant_id = ?1 AND (?2 IS NULL OR created_at_us < ?2)",
        )?
        .execute(rusqlite::params![tenant.as_uuid().as_bytes(), before_us])?;
    Ok(count(deleted))
}

pub(super) fn sqlite_expire(conn: &mut Connection, now_us: i64) -> Result<Vec<(TenantId, u64)>> {
    let tx = conn.transaction()?;
    let mut counts = Vec::new();
    {
        let mut select = tx.prepare_cached(
            "SELECT tenant_id, COUNT(*) FROM blobs WHERE expires_at_us <= ?1 GROUP BY tenant_id",
        )?;
        let rows = select.query_map([now_us], |row| {
            Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (tenant, n) = row?;
            counts.push((tenant_of(&tenant)?, u64::try_from(n).unwrap_or(0)));
        }
        tx.prepare_cached("DELETE FROM blobs WHERE expires_at_us <= ?1")?
            .execute([now_us])?;
    }
    tx.commit()?;
    Ok(counts)
}

pub(super) async fn pg_put(pool: &PgPool, blob: &Blob) -> Result<()> {
    sqlx::query(
        "INSERT INTO blobs (tenant_id, hash, body, created_at_us, expires_at_us) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, hash) DO NOTHING",
    )
    .bind(blob.tenant.as_uuid())
    .bind(&blob.hash)
    .bind(&blob.body)
    .bind(blob.created_at_us)
    .bind(blob.expires_at_us)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn pg_get(pool: &PgPool, tenant: TenantId, hash: &str) -> Result<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT body FROM blobs WHERE tenant_id = $1 AND hash = $2")
            .bind(tenant.as_uuid())
            .bind(hash)
            .fetch_optional(pool)
            .await?,
    )
}

pub(super) async fn pg_delete(
    pool: &PgPool,
    tenant: TenantId,
    before_us: Option<i64>,
) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM blobs WHERE tenant_id = $1 AND ($2::bigint IS NULL OR created_at_us < $2)",
    )
    .bind(tenant.as_uuid())
    .bind(before_us)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub(super) async fn pg_expire(pool: &PgPool, now_us: i64) -> Result<Vec<(TenantId, u64)>> {
    // One statement: the rows counted are the rows deleted, whatever another sweeper does.
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "WITH gone AS (DELETE FROM blobs WHERE expires_at_us <= $1 RETURNING tenant_id) \
         SELECT tenant_id, COUNT(*) FROM gone GROUP BY tenant_id",
    )
    .bind(now_us)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, n)| (TenantId::from_uuid(tenant), u64::try_from(n).unwrap_or(0)))
        .collect())
}
