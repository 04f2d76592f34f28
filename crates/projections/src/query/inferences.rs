//! The inference log, newest first: filters, and keyset paging on (`started_ms`,
//! `inference_id`).

use serde::Serialize;

use super::{filter, int, text};
use crate::db::ReadDb;
use crate::error::Result;
use crate::model::{Col, Val};

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

impl ReadDb {
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
