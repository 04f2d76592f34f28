//! Usage totals, latency percentiles and router decisions and rewards of a tenant in a time
//! window, from the hourly rollups.

use serde::Serialize;

use super::{Group, Window, filter, int, sum, text};
use crate::db::ReadDb;
use crate::error::Result;
use crate::model::{Col, Val};
use crate::projectors::bucket_upper_us;

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
}
