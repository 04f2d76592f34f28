//! Workflow runs per workflow in a time window, from the `workflows` projector.

use serde::Serialize;

use super::{filter, int, sum, text};
use crate::db::ReadDb;
use crate::error::Result;
use crate::model::{Col, Val};

/// Workflow runs of one workflow in a time window (runs that started in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkflowSummary {
    pub workflow: String,
    pub runs: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub running: i64,
    pub steps: i64,
    pub failed_steps: i64,
    pub cost_micros: i64,
    /// Mean and longest duration of the runs that ended, in milliseconds.
    pub mean_duration_ms: i64,
    pub max_duration_ms: i64,
}

impl ReadDb {
    /// Runs per workflow that started in `[from_ms, to_ms)`, from the `workflows` projector.
    pub async fn workflows(
        &self,
        tenant: uuid::Uuid,
        from_ms: i64,
        to_ms: i64,
        workflow: Option<&str>,
    ) -> Result<Vec<WorkflowSummary>> {
        let mut params = vec![Val::Uuid(tenant), Val::Int(from_ms), Val::Int(to_ms)];
        let filters = filter(&mut params, "workflow", workflow);
        let count = |status: &str| {
            format!(
                "CAST(COALESCE(SUM(CASE WHEN status = '{status}' THEN 1 ELSE 0 END), 0) AS BIGINT)"
            )
        };
        let ended = "CASE WHEN ended_ms > 0 THEN ended_ms - started_ms END";
        let sql = format!(
            "SELECT workflow, CAST(COUNT(*) AS BIGINT), {}, {}, {}, {}, {}, {}, {}, \
             CAST(COALESCE(AVG({ended}), 0) AS BIGINT), CAST(COALESCE(MAX({ended}), 0) AS BIGINT) \
             FROM workflow_runs WHERE tenant_id = $1 AND started_ms >= $2 AND started_ms < $3{filters} \
             GROUP BY workflow ORDER BY workflow",
            count("completed"),
            count("failed"),
            count("cancelled"),
            count("running"),
            sum("steps"),
            sum("failed_steps"),
            sum("cost_micros"),
        );
        let mut tx = self.begin_tenant(tenant).await?;
        let mut columns = vec![Col::Text];
        columns.extend([Col::Int; 10]);
        let rows = tx.rows(&sql, &params, &columns).await?;
        tx.rollback().await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let [
                    workflow,
                    runs,
                    completed,
                    failed,
                    cancelled,
                    running,
                    steps,
                    failed_steps,
                    cost,
                    mean,
                    max,
                ] = row.as_slice()
                else {
                    return None;
                };
                Some(WorkflowSummary {
                    workflow: text(workflow),
                    runs: int(runs),
                    completed: int(completed),
                    failed: int(failed),
                    cancelled: int(cancelled),
                    running: int(running),
                    steps: int(steps),
                    failed_steps: int(failed_steps),
                    cost_micros: int(cost),
                    mean_duration_ms: int(mean),
                    max_duration_ms: int(max),
                })
            })
            .collect())
    }
}
