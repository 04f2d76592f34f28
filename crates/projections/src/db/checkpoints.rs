//! The projectors' checkpoints and leases, and the batch that writes a projector's ops and
//! dead letters with its checkpoint's compare-and-set in one transaction.

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use super::dlq::DeadLetter;
use super::render::{Placeholders, max_params, render_batch};
use super::{Backend, ReadDb, first_int, now_us};
use crate::error::{Error, Result};
use crate::model::{Col, Op, Val};
use crate::projectors::Projector;

/// A held lease: the one active worker of a projector. In PostgreSQL a session advisory lock on
/// a connection of its own (released when the connection closes, also on a crash); in SQLite
/// the file has one writer process, so the lease is implicit.
#[derive(Debug)]
pub struct Lease {
    connection: Option<PgConnection>,
}

impl Lease {
    /// Whether the lease is still held (its connection answers).
    pub async fn alive(&mut self) -> bool {
        match &mut self.connection {
            None => true,
            Some(connection) => connection.ping().await.is_ok(),
        }
    }
}

const LOCK_KEY: &str =
    "hashtextextended('switchyard.projector.' || current_schema() || '.' || $1, 0)";

impl ReadDb {
    /// The projector's checkpoint (0 before its first batch), creating its row.
    pub async fn checkpoint(&self, projector: &str) -> Result<u64> {
        let mut tx = self.begin().await?;
        tx.exec(
            "INSERT INTO proj_checkpoints (projector, position, updated_at_us) VALUES ($1, 0, $2) \
             ON CONFLICT (projector) DO NOTHING",
            &[Val::from(projector), Val::Int(now_us())],
        )
        .await?;
        let rows = tx
            .rows(
                "SELECT position FROM proj_checkpoints WHERE projector = $1",
                &[Val::from(projector)],
                &[Col::Int],
            )
            .await?;
        tx.commit().await?;
        Ok(first_int(&rows).map_or(0, |p| u64::try_from(p).unwrap_or(0)))
    }

    /// Every checkpoint: `(projector, position, updated_at_us)`.
    pub async fn checkpoints(&self) -> Result<Vec<(String, u64, i64)>> {
        let mut tx = self.begin().await?;
        let rows = tx
            .rows(
                "SELECT projector, position, updated_at_us FROM proj_checkpoints ORDER BY projector",
                &[],
                &[Col::Text, Col::Int, Col::Int],
            )
            .await?;
        tx.rollback().await?;
        Ok(rows
            .into_iter()
            .map(|row| match row.as_slice() {
                [Val::Text(name), Val::Int(position), Val::Int(at)] => {
                    (name.clone(), u64::try_from(*position).unwrap_or(0), *at)
                }
                _ => (String::new(), 0, 0),
            })
            .collect())
    }

    /// Moves a checkpoint from `from` to `to` (compare-and-set; [`Error::Fenced`] if it was not
    /// at `from`). For consumers whose effect is outside this database (the NATS relay).
    pub async fn advance(&self, name: &str, from: u64, to: u64) -> Result<()> {
        let mut tx = self.begin().await?;
        let moved = tx
            .exec(
                "UPDATE proj_checkpoints SET position = $1, updated_at_us = $2 \
                 WHERE projector = $3 AND position = $4",
                &[
                    Val::from(to),
                    Val::Int(now_us()),
                    Val::from(name),
                    Val::from(from),
                ],
            )
            .await?;
        if moved != 1 {
            tx.rollback().await?;
            return Err(Error::Fenced(name.into()));
        }
        tx.commit().await
    }

    /// Takes the projector's lease, or `None` if another worker holds it.
    pub async fn try_lease(&self, projector: &str) -> Result<Option<Lease>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Some(Lease { connection: None })),
            Backend::Postgres { pool, .. } => {
                let mut connection = PgConnection::connect_with(&pool.connect_options()).await?;
                let held: bool = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT pg_try_advisory_lock({LOCK_KEY})"
                )))
                .bind(projector)
                .fetch_one(&mut connection)
                .await?;
                if held {
                    Ok(Some(Lease {
                        connection: Some(connection),
                    }))
                } else {
                    connection.close().await?;
                    Ok(None)
                }
            }
        }
    }

    /// Applies one batch: advances the checkpoint from `from` to `to` (compare-and-set: if it is
    /// not at `from`, nothing is written and the result is [`Error::Fenced`]), writes the ops to
    /// the tables with `suffix` ("" for the live tables) and records the dead letters, all in
    /// one transaction. `checkpoint: None` writes without a checkpoint (a rebuild's shadow).
    pub(crate) async fn apply(
        &self,
        projector: &Projector,
        checkpoint: Option<(u64, u64)>,
        suffix: &str,
        ops: &[Op],
        dead: &[DeadLetter],
    ) -> Result<()> {
        self.apply_parts(&[Part {
            projector,
            checkpoint,
            suffix,
            ops,
            dead,
        }])
        .await
    }

    /// Applies the batches of several projectors in one transaction (each with its checkpoint's
    /// compare-and-set): one commit for all of them instead of one each. Any refusal or fence
    /// writes nothing.
    pub(crate) async fn apply_parts(&self, parts: &[Part<'_>]) -> Result<()> {
        for part in parts {
            self.ensure_partitions(part.ops, part.suffix).await?;
        }
        let mut tx = self.begin().await?;
        if tx.is_postgres() {
            // The checkpoint commits with the rows, and PostgreSQL never commits a transaction
            // partially: a crash can lose the last batches (re-applied from the older
            // checkpoint), never split them. So the batch does not wait for its WAL flush.
            tx.exec("SET LOCAL synchronous_commit = off", &[]).await?;
        }
        for part in parts {
            let projector = part.projector;
            if let Some((from, to)) = part.checkpoint {
                // The write comes first, so that SQLite takes its write lock at once.
                let moved = tx
                    .exec(
                        "UPDATE proj_checkpoints SET position = $1, updated_at_us = $2 \
                         WHERE projector = $3 AND position = $4",
                        &[
                            Val::from(to),
                            Val::Int(now_us()),
                            Val::from(projector.name),
                            Val::from(from),
                        ],
                    )
                    .await?;
                if moved != 1 {
                    tx.rollback().await?;
                    return Err(Error::Fenced(projector.name.into()));
                }
            }
            let postgres = tx.is_postgres();
            let marks = Placeholders::of(postgres);
            for (sql, params) in render_batch(part.ops, part.suffix, max_params(postgres), marks)? {
                tx.exec(&sql, &params).await?;
            }
            for letter in part.dead {
                tx.exec(
                    "INSERT INTO proj_dlq (projector, position, event_id, event_type, stream_id, \
                     tenant_id, error, recorded_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (projector, event_id) DO NOTHING",
                    &[
                        Val::from(projector.name),
                        Val::from(letter.position),
                        Val::Text(letter.event_id.to_string()),
                        Val::Text(letter.event_type.clone()),
                        Val::Text(letter.stream_id.clone()),
                        Val::Text(letter.tenant_id.to_string()),
                        Val::Text(letter.error.chars().take(4000).collect()),
                        Val::Int(now_us()),
                    ],
                )
                .await?;
            }
        }
        tx.commit().await
    }
}

/// One projector's share of a transaction ([`ReadDb::apply_parts`]).
#[derive(Debug)]
pub(crate) struct Part<'a> {
    pub projector: &'a Projector,
    /// The checkpoint's move (`from`, `to`); `None` for a rebuild's shadow.
    pub checkpoint: Option<(u64, u64)>,
    pub suffix: &'a str,
    pub ops: &'a [Op],
    pub dead: &'a [DeadLetter],
}
