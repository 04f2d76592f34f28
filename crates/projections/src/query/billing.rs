//! Billed usage per period and model, and the tenant's invoices.

use serde::Serialize;

use super::{int, text};
use crate::db::ReadDb;
use crate::error::Result;
use crate::model::{Col, Val};

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

impl ReadDb {
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
}
