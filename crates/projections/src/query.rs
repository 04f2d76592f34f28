//! Tenant-scoped analytics queries over the read models. Every answer comes from the rollups or
//! the inference log's indexes, never from the raw events; in PostgreSQL every query runs under
//! row-level security as the analytics role (see [`ReadDb::begin_tenant`]).

use serde::Serialize;

use crate::db::ReadDb;
use crate::error::{Error, Result};
use crate::model::{Col, Val};
use crate::projectors::bucket_upper_us;

/// A way to group usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Hour,
    Day,
    Model,
}

impl std::str::FromStr for Group {
    type Err = Error;

    fn from_str(value: &str) -> Result<Group> {
        match value {
            "hour" => Ok(Group::Hour),
            "day" => Ok(Group::Day),
            "model" => Ok(Group::Model),
            other => Err(Error::Invalid(format!(
                "cannot group by {other:?}: use hour, day and/or model"
            ))),
        }
    }
}

/// A time window in unix seconds, `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: i64,
    pub to: i64,
}

impl Window {
    pub fn new(from: i64, to: i64) -> Result<Window> {
        if from >= to {
            return Err(Error::Invalid(format!(
                "empty time range: from {from} is not before to {to}"
            )));
        }
        Ok(Window { from, to })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hour: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub requests: i64,
    pub failures: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyRow {
    pub model: String,
    pub count: i64,
    pub mean_ms: f64,
    /// Upper bounds of the histogram buckets the quantiles fall in (buckets are 19% wide).
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterRow {
    pub policy: String,
    pub model: String,
    pub decisions: i64,
    pub rewards: i64,
    pub mean_reward: Option<f64>,
    pub reward_cost_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BillingRow {
    pub period: String,
    pub model: String,
    pub requests: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub tool_calls: i64,
    pub cost_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceRow {
    pub period: String,
    pub total_micros: i64,
    pub status: String,
    pub finalized_at_us: i64,
    pub paid_at_us: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InferenceRow {
    pub inference_id: uuid::Uuid,
    pub started_ms: i64,
    pub endpoint: String,
    pub model_requested: String,
    pub model: String,
    pub provider: String,
    pub policy: String,
    pub status: String,
    pub stream: bool,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_micros: i64,
    pub latency_us: i64,
    pub ttft_us: i64,
    pub error_code: String,
    pub position: i64,
}

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

/// Filters and paging of the inference log.
#[derive(Debug, Clone, Default)]
pub struct InferenceQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub model: Option<String>,
    pub status: Option<String>,
    pub limit: i64,
    /// Continue after this row (`started_ms`, `inference_id`) of the previous page.
    pub after: Option<(i64, uuid::Uuid)>,
}

/// ` AND column = $n` with the value added to `params` when a filter is given, else nothing.
/// Only the filters asked for appear in the SQL: a `($n = '' OR column = $n)` pattern keeps
/// PostgreSQL's generic plan of the prepared statement from using the indexes.
fn filter(params: &mut Vec<Val>, column: &str, value: Option<&str>) -> String {
    match value {
        Some(value) => {
            params.push(Val::from(value));
            format!(" AND {column} = ${}", params.len())
        }
        None => String::new(),
    }
}

/// `SUM` as a `BIGINT` on both backends (PostgreSQL sums `BIGINT`s as `NUMERIC`).
fn sum(column: &str) -> String {
    format!("CAST(COALESCE(SUM({column}), 0) AS BIGINT)")
}

fn int(value: &Val) -> i64 {
    match value {
        Val::Int(v) => *v,
        _ => 0,
    }
}

fn text(value: &Val) -> String {
    match value {
        Val::Text(v) => v.clone(),
        Val::Int(v) => v.to_string(),
        Val::Uuid(v) => v.to_string(),
    }
}

impl ReadDb {
    /// Usage totals of `tenant` in `window`, grouped as asked (no groups: one total row).
    pub async fn usage(
        &self,
        tenant: uuid::Uuid,
        window: Window,
        groups: &[Group],
        model: Option<&str>,
    ) -> Result<Vec<UsageRow>> {
        let mut select = Vec::new();
        let mut cols = Vec::new();
        for group in groups {
            match group {
                Group::Hour => select.push("hour"),
                Group::Day => select.push("hour - (hour % 86400)"),
                Group::Model => select.push("model"),
            }
            cols.push(if *group == Group::Model {
                Col::Text
            } else {
                Col::Int
            });
        }
        let grouping = if select.is_empty() {
            String::new()
        } else {
            let positions: Vec<String> = (1..=select.len()).map(|i| i.to_string()).collect();
            format!(
                " GROUP BY {} ORDER BY {}",
                positions.join(", "),
                positions.join(", ")
            )
        };
        let mut columns = select.join(", ");
        if !columns.is_empty() {
            columns.push_str(", ");
        }
        let mut params = vec![
            Val::Uuid(tenant),
            Val::Int(window.from),
            Val::Int(window.to),
        ];
        let model_filter = filter(&mut params, "model", model);
        let sql = format!(
            "SELECT {columns}{}, {}, {}, {}, {} \
             FROM usage_hourly WHERE tenant_id = $1 AND hour >= $2 AND hour < $3{model_filter}{grouping}",
            sum("requests"),
            sum("failures"),
            sum("tokens_in"),
            sum("tokens_out"),
            sum("cost_micros"),
        );
        cols.extend([Col::Int; 5]);
        let mut tx = self.begin_tenant(tenant).await?;
        let rows = tx.rows(&sql, &params, &cols).await?;
        tx.rollback().await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let mut row = row.into_iter();
                let mut out = UsageRow {
                    hour: None,
                    day: None,
                    model: None,
                    requests: 0,
                    failures: 0,
                    tokens_in: 0,
                    tokens_out: 0,
                    cost_micros: 0,
                };
                for group in groups {
                    let value = row.next().unwrap_or(Val::Int(0));
                    match group {
                        Group::Hour => out.hour = Some(int(&value)),
                        Group::Day => out.day = Some(int(&value)),
                        Group::Model => out.model = Some(text(&value)),
                    }
                }
                let rest: Vec<i64> = row.map(|v| int(&v)).collect();
                if let [requests, failures, tokens_in, tokens_out, cost] = rest.as_slice() {
                    out.requests = *requests;
                    out.failures = *failures;
                    out.tokens_in = *tokens_in;
                    out.tokens_out = *tokens_out;
                    out.cost_micros = *cost;
                }
                out
            })
            .collect())
    }

    /// Latency percentiles per model in `window`, from the hourly histograms.
    pub async fn latency(
        &self,
        tenant: uuid::Uuid,
        window: Window,
        model: Option<&str>,
    ) -> Result<Vec<LatencyRow>> {
        let mut params = vec![
            Val::Uuid(tenant),
            Val::Int(window.from),
            Val::Int(window.to),
        ];
        let model_filter = filter(&mut params, "model", model);
        let mut tx = self.begin_tenant(tenant).await?;
        let rows = tx
            .rows(
                &format!(
                    "SELECT model, bucket, CAST(SUM(count) AS BIGINT), CAST(SUM(sum_us) AS BIGINT) \
                     FROM latency_hist WHERE tenant_id = $1 AND hour >= $2 AND hour < $3{model_filter} \
                     GROUP BY model, bucket ORDER BY model, bucket"
                ),
                &params,
                &[Col::Text, Col::Int, Col::Int, Col::Int],
            )
            .await?;
        tx.rollback().await?;
        // Per model: (bucket, count) pairs and the latency sum.
        type Histogram = (String, Vec<(i64, i64)>, i64);
        let mut out: Vec<Histogram> = Vec::new();
        for row in rows {
            let [model, bucket, count, sum] = row.as_slice() else {
                continue;
            };
            let model = text(model);
            match out.last_mut() {
                Some((last, buckets, total)) if *last == model => {
                    buckets.push((int(bucket), int(count)));
                    *total = total.saturating_add(int(sum));
                }
                _ => out.push((model, vec![(int(bucket), int(count))], int(sum))),
            }
        }
        Ok(out
            .into_iter()
            .map(|(model, buckets, sum_us)| {
                let count: i64 = buckets.iter().map(|(_, c)| c).sum();
                let quantile = |q: f64| {
                    let rank = (q * count as f64).ceil().max(1.0) as i64;
                    let mut seen = 0;
                    for (bucket, n) in &buckets {
                        seen += n;
                        if seen >= rank {
                            return bucket_upper_us(*bucket) / 1000.0;
                        }
                    }
                    0.0
                };
                LatencyRow {
                    mean_ms: if count > 0 {
                        sum_us as f64 / count as f64 / 1000.0
                    } else {
                        0.0
                    },
                    p50_ms: quantile(0.5),
                    p90_ms: quantile(0.9),
                    p99_ms: quantile(0.99),
                    model,
                    count,
                }
            })
            .collect())
    }

    /// Router decisions and rewards per policy and model in `window`.
    pub async fn router(&self, tenant: uuid::Uuid, window: Window) -> Result<Vec<RouterRow>> {
        let mut tx = self.begin_tenant(tenant).await?;
        let rows = tx
            .rows(
                "SELECT policy, model, CAST(SUM(decisions) AS BIGINT), CAST(SUM(rewards) AS BIGINT), \
                 CAST(SUM(reward_sum_milli) AS BIGINT), CAST(SUM(reward_cost_micros) AS BIGINT) \
                 FROM router_stats WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 \
                 GROUP BY policy, model ORDER BY policy, model",
                &[Val::Uuid(tenant), Val::Int(window.from), Val::Int(window.to)],
                &[Col::Text, Col::Text, Col::Int, Col::Int, Col::Int, Col::Int],
            )
            .await?;
        tx.rollback().await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let [policy, model, decisions, rewards, sum, cost] = row.as_slice() else {
                    return None;
                };
                let rewards = int(rewards);
                Some(RouterRow {
                    policy: text(policy),
                    model: text(model),
                    decisions: int(decisions),
                    rewards,
                    mean_reward: (rewards > 0).then(|| int(sum) as f64 / 1000.0 / rewards as f64),
                    reward_cost_micros: int(cost),
                })
            })
            .collect())
    }

    /// Billed usage per period and model (one period, or all).
    pub async fn billing_usage(
        &self,
        tenant: uuid::Uuid,
        period: Option<&str>,
    ) -> Result<Vec<BillingRow>> {
        let mut tx = self.begin_tenant(tenant).await?;
        let rows = tx
            .rows(
                "SELECT period, model, requests, tokens_in, tokens_out, tool_calls, cost_micros \
                 FROM billing_usage WHERE tenant_id = $1 AND ($2 = '' OR period = $2) \
                 ORDER BY period, model",
                &[Val::Uuid(tenant), Val::from(period.unwrap_or(""))],
                &[
                    Col::Text,
                    Col::Text,
                    Col::Int,
                    Col::Int,
                    Col::Int,
                    Col::Int,
                    Col::Int,
                ],
            )
            .await?;
        tx.rollback().await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let [period, model, requests, tokens_in, tokens_out, tools, cost] = row.as_slice()
                else {
                    return None;
                };
                Some(BillingRow {
                    period: text(period),
                    model: text(model),
                    requests: int(requests),
                    tokens_in: int(tokens_in),
                    tokens_out: int(tokens_out),
                    tool_calls: int(tools),
                    cost_micros: int(cost),
                })
            })
            .collect())
    }

    /// The tenant's invoices, newest period first.
    pub async fn invoices(&self, tenant: uuid::Uuid) -> Result<Vec<InvoiceRow>> {
        let mut tx = self.begin_tenant(tenant).await?;
        let rows = tx
            .rows(
                "SELECT period, total_micros, status, finalized_at_us, paid_at_us FROM invoices \
                 WHERE tenant_id = $1 ORDER BY period DESC",
                &[Val::Uuid(tenant)],
                &[Col::Text, Col::Int, Col::Text, Col::Int, Col::Int],
            )
            .await?;
        tx.rollback().await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let [period, total, status, finalized, paid] = row.as_slice() else {
                    return None;
                };
                Some(InvoiceRow {
                    period: text(period),
                    total_micros: int(total),
                    status: text(status),
                    finalized_at_us: int(finalized),
                    paid_at_us: (int(paid) > 0).then(|| int(paid)),
                })
            })
            .collect())
    }

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

    /// One page of the inference log, newest first; the cursor of the next page if there is one.
    pub async fn inferences(
        &self,
        tenant: uuid::Uuid,
        query: &InferenceQuery,
    ) -> Result<(Vec<InferenceRow>, Option<(i64, uuid::Uuid)>)> {
        let limit = query.limit.clamp(1, 500);
        let (after_ms, after_id) = query.after.unwrap_or((i64::MAX, uuid::Uuid::max()));
        let mut params = vec![
            Val::Uuid(tenant),
            Val::Int(query.from_ms),
            Val::Int(query.to_ms),
            Val::Int(after_ms),
            Val::Uuid(after_id),
        ];
        let mut filters = filter(&mut params, "model", query.model.as_deref());
        filters.push_str(&filter(&mut params, "status", query.status.as_deref()));
        params.push(Val::Int(limit + 1));
        let sql = format!(
            "SELECT inference_id, started_ms, endpoint, model_requested, model, provider, policy, status, \
             stream, tokens_in, tokens_out, cost_micros, latency_us, ttft_us, error_code, position \
             FROM inference_log WHERE tenant_id = $1 AND started_ms >= $2 AND started_ms < $3{filters} \
             AND (started_ms, inference_id) < ($4, $5) \
             ORDER BY started_ms DESC, inference_id DESC LIMIT ${}",
            params.len()
        );
        let mut tx = self.begin_tenant(tenant).await?;
        let rows = tx
            .rows(
                &sql,
                &params,
                &[
                    Col::Uuid,
                    Col::Int,
                    Col::Text,
                    Col::Text,
                    Col::Text,
                    Col::Text,
                    Col::Text,
                    Col::Text,
                    Col::Int,
                    Col::Int,
                    Col::Int,
                    Col::Int,
                    Col::Int,
                    Col::Int,
                    Col::Text,
                    Col::Int,
                ],
            )
            .await?;
        tx.rollback().await?;
        let mut page: Vec<InferenceRow> = rows
            .into_iter()
            .filter_map(|row| {
                let [
                    id,
                    started,
                    endpoint,
                    requested,
                    model,
                    provider,
                    policy,
                    status,
                    stream,
                    tin,
                    tout,
                    cost,
                    latency,
                    ttft,
                    code,
                    position,
                ] = row.as_slice()
                else {
                    return None;
                };
                let Val::Uuid(id) = id else { return None };
                Some(InferenceRow {
                    inference_id: *id,
                    started_ms: int(started),
                    endpoint: text(endpoint),
                    model_requested: text(requested),
                    model: text(model),
                    provider: text(provider),
                    policy: text(policy),
                    status: text(status),
                    stream: int(stream) != 0,
                    tokens_in: int(tin),
                    tokens_out: int(tout),
                    cost_micros: int(cost),
                    latency_us: int(latency),
                    ttft_us: int(ttft),
                    error_code: text(code),
                    position: int(position),
                })
            })
            .collect();
        let next = if page.len() as i64 > limit {
            page.truncate(usize::try_from(limit).unwrap_or(500));
            page.last().map(|row| (row.started_ms, row.inference_id))
        } else {
            None
        };
        Ok((page, next))
    }
}
