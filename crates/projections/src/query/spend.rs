//! Spend below the tenant: a window's inferences grouped by API key, end user or tag (from
//! the `spend` projector's `inference_spend` and `inference_tags`).

use serde::Serialize;

use super::{Window, int, sum, text};
use crate::db::ReadDb;
use crate::error::Result;
use crate::model::{Col, Val};

/// What spend is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendGroup {
    Key,
    User,
    Tag,
}

impl std::str::FromStr for SpendGroup {
    type Err = crate::error::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "key" => Ok(SpendGroup::Key),
            "user" => Ok(SpendGroup::User),
            "tag" => Ok(SpendGroup::Tag),
            other => Err(crate::error::Error::Invalid(format!(
                "spend is grouped by key, user or tag, not {other:?}"
            ))),
        }
    }
}

/// One group's spend. `user` is "" for requests that named no user; an inference with several
/// tags counts once under each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpendRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub requests: i64,
    pub failures: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_micros: i64,
}

impl ReadDb {
    /// `tenant`'s spend in `window`, grouped by `group`, the largest cost first.
    pub async fn spend(
        &self,
        tenant: uuid::Uuid,
        window: Window,
        group: SpendGroup,
    ) -> Result<Vec<SpendRow>> {
        let (column, from) = match group {
            SpendGroup::Key => ("s.key_id", "inference_spend s"),
            SpendGroup::User => ("s.user_id", "inference_spend s"),
            SpendGroup::Tag => (
                "t.tag",
                "inference_tags t JOIN inference_spend s ON s.tenant_id = t.tenant_id \
                 AND s.started_ms = t.started_ms AND s.inference_id = t.inference_id",
            ),
        };
        let table = if group == SpendGroup::Tag { "t" } else { "s" };
        let sql = format!(
            "SELECT {column}, COUNT(*), {}, {}, {}, {} FROM {from} \
             WHERE {table}.tenant_id = $1 AND {table}.started_ms >= $2 AND {table}.started_ms < $3 \
             AND s.status <> 'pending' GROUP BY 1 ORDER BY 6 DESC, 1",
            sum("CASE WHEN s.status = 'failed' THEN 1 ELSE 0 END"),
            sum("s.tokens_in"),
            sum("s.tokens_out"),
            sum("s.cost_micros"),
        );
        let params = [
            Val::Uuid(tenant),
            Val::Int(window.from.saturating_mul(1000)),
            Val::Int(window.to.saturating_mul(1000)),
        ];
        let cols = [Col::Text, Col::Int, Col::Int, Col::Int, Col::Int, Col::Int];
        let mut tx = self.begin_tenant(tenant).await?;
        let rows = tx.rows(&sql, &params, &cols).await?;
        tx.rollback().await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let name = row.first().map(text).unwrap_or_default();
                let n = |i: usize| row.get(i).map(int).unwrap_or(0);
                SpendRow {
                    key_id: (group == SpendGroup::Key).then(|| name.clone()),
                    user: (group == SpendGroup::User).then(|| name.clone()),
                    tag: (group == SpendGroup::Tag).then_some(name),
                    requests: n(1),
                    failures: n(2),
                    tokens_in: n(3),
                    tokens_out: n(4),
                    cost_micros: n(5),
                }
            })
            .collect())
    }
}
