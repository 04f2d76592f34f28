//! Tenant-scoped analytics queries over the read models. Every answer comes from the rollups or
//! the inference log's indexes, never from the raw events; in PostgreSQL every query runs under
//! row-level security as the analytics role (see [`ReadDb::begin_tenant`]).
//!
//! [`ReadDb::begin_tenant`]: crate::db::ReadDb::begin_tenant

/// The audit log of admin commands.
mod audit;
/// Billed usage and invoices.
mod billing;
/// One page of the inference log, with its filters and keyset paging.
mod inferences;
/// Spend grouped by key, user or tag.
mod spend;
/// Usage totals, latency percentiles and router statistics from the hourly rollups.
mod usage;
/// Workflow runs per workflow.
mod workflows;

use crate::error::{Error, Result};
use crate::model::Val;

pub use audit::{AuditActor, AuditQuery, AuditRow, MAX_AUDIT_PAGE};
pub use billing::{BillingRow, InvoiceRow};
pub use inferences::{InferenceQuery, InferenceRow};
pub use spend::{SpendGroup, SpendRow};
pub use usage::{LatencyRow, RouterRow, UsageRow};
pub use workflows::WorkflowSummary;

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
