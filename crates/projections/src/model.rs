//! The read models' tables and the writes projectors ask for.
//!
//! A projector never writes SQL: it turns an event into [`Op`]s on logical [`Table`]s, and the
//! backend ([`crate::db::ReadDb`]) renders them for SQLite or PostgreSQL, to the live tables or
//! to a rebuild's shadow tables. One set of projector code therefore fills both backends, and a
//! rebuild runs exactly the code the incremental projector runs.

use std::collections::HashMap;

/// A column's type. Integers are `BIGINT NOT NULL DEFAULT 0`, text `TEXT NOT NULL DEFAULT ''`;
/// a uuid is `UUID` in PostgreSQL and canonical text in SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Int,
    Text,
    Uuid,
}

/// A read-model table.
#[derive(Debug, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Col)],
    /// The primary key (also the upsert's conflict target).
    pub key: &'static [&'static str],
    /// Rows carry the stream version of the last event applied to them; an upsert never goes
    /// back to an older version, so replaying an event is harmless.
    pub versioned: bool,
    /// In PostgreSQL the table is range-partitioned by month on this integer column, which holds
    /// a unix time in units of `1/units_per_second` seconds. Retention drops whole partitions.
    pub partition: Option<(&'static str, i64)>,
    /// Secondary indexes (column lists).
    pub indexes: &'static [&'static [&'static str]],
}

impl Table {
    /// Whether `column` exists.
    pub fn has(&self, column: &str) -> bool {
        self.columns.iter().any(|(name, _)| *name == column)
            || (self.versioned && column == "version")
    }

    pub fn col(&self, column: &str) -> Option<Col> {
        if self.versioned && column == "version" {
            return Some(Col::Int);
        }
        self.columns
            .iter()
            .find(|(name, _)| *name == column)
            .map(|(_, col)| *col)
    }
}

pub const USAGE_HOURLY: Table = Table {
    name: "usage_hourly",
    columns: &[
        ("tenant_id", Col::Uuid),
        ("hour", Col::Int),
        ("model", Col::Text),
        ("requests", Col::Int),
        ("failures", Col::Int),
        ("tokens_in", Col::Int),
        ("tokens_out", Col::Int),
        ("cost_micros", Col::Int),
    ],
    key: &["tenant_id", "hour", "model"],
    versioned: false,
    partition: Some(("hour", 1)),
    indexes: &[],
};

pub const LATENCY_HIST: Table = Table {
    name: "latency_hist",
    columns: &[
        ("tenant_id", Col::Uuid),
        ("hour", Col::Int),
        ("model", Col::Text),
        ("bucket", Col::Int),
        ("count", Col::Int),
        ("sum_us", Col::Int),
    ],
    key: &["tenant_id", "hour", "model", "bucket"],
    versioned: false,
    partition: None,
    indexes: &[],
};

pub const ROUTER_STATS: Table = Table {
    name: "router_stats",
    columns: &[
        ("tenant_id", Col::Uuid),
        ("hour", Col::Int),
        ("policy", Col::Text),
        ("model", Col::Text),
        ("decisions", Col::Int),
        ("rewards", Col::Int),
        ("reward_sum_milli", Col::Int),
        ("reward_cost_micros", Col::Int),
    ],
    key: &["tenant_id", "hour", "policy", "model"],
    versioned: false,
    partition: None,
    indexes: &[],
};

pub const INFERENCE_LOG: Table = Table {
    name: "inference_log",
    columns: &[
        ("tenant_id", Col::Uuid),
        ("started_ms", Col::Int),
        ("inference_id", Col::Uuid),
        ("endpoint", Col::Text),
        ("model_requested", Col::Text),
        ("key_id", Col::Text),
        ("stream", Col::Int),
        ("model", Col::Text),
        ("provider", Col::Text),
        ("policy", Col::Text),
        ("status", Col::Text),
        ("tokens_in", Col::Int),
        ("tokens_out", Col::Int),
        ("cost_micros", Col::Int),
        ("latency_us", Col::Int),
        ("ttft_us", Col::Int),
        ("error_code", Col::Text),
        ("position", Col::Int),
    ],
    key: &["tenant_id", "started_ms", "inference_id"],
    versioned: true,
    partition: Some(("started_ms", 1000)),
    indexes: &[
        &["tenant_id", "model", "started_ms"],
        &["tenant_id", "status", "started_ms"],
    ],
};

/// Each inference's attribution below the tenant (its key and end user) with its outcome:
/// what spend is grouped by.
pub const INFERENCE_SPEND: Table = Table {
    name: "inference_spend",
    columns: &[
        ("tenant_id", Col::Uuid),
        ("started_ms", Col::Int),
        ("inference_id", Col::Uuid),
        ("key_id", Col::Text),
        ("user_id", Col::Text),
        ("status", Col::Text),
        ("tokens_in", Col::Int),
        ("tokens_out", Col::Int),
        ("cost_micros", Col::Int),
    ],
    key: &["tenant_id", "started_ms", "inference_id"],
    versioned: true,
    partition: Some(("started_ms", 1000)),
    indexes: &[
        &["tenant_id", "key_id", "started_ms"],
        &["tenant_id", "user_id", "started_ms"],
    ],
};

/// Each tag of each inference (a row per tag).
pub const INFERENCE_TAGS: Table = Table {
    name: "inference_tags",
    columns: &[
        ("tenant_id", Col::Uuid),
        ("started_ms", Col::Int),
        ("inference_id", Col::Uuid),
        ("tag", Col::Text),
    ],
    key: &["tenant_id", "started_ms", "inference_id", "tag"],
    versioned: false,
    partition: Some(("started_ms", 1000)),
    indexes: &[&["tenant_id", "tag", "started_ms"]],
};

pub const BILLING_USAGE: Table = Table {
    name: "billing_usage",
    columns: &[
        ("tenant_id", Col::Uuid),
        ("period", Col::Text),
        ("model", Col::Text),
        ("requests", Col::Int),
        ("tokens_in", Col::Int),
        ("tokens_out", Col::Int),
        ("tool_calls", Col::Int),
        ("cost_micros", Col::Int),
    ],
    key: &["tenant_id", "period", "model"],
    versioned: false,
    partition: None,
    indexes: &[],
};

pub const INVOICES: Table = Table {
    name: "invoices",
    columns: &[
        ("tenant_id", Col::Uuid),
        ("period", Col::Text),
        ("total_micros", Col::Int),
        ("status", Col::Text),
        ("finalized_at_us", Col::Int),
        ("paid_at_us", Col::Int),
    ],
    key: &["tenant_id", "period"],
    versioned: true,
    partition: None,
    indexes: &[],
};

pub const LEDGER: Table = Table {
    name: "ledger",
    columns: &[
        ("tenant_id", Col::Uuid),
        ("position", Col::Int),
        ("kind", Col::Text),
        ("period", Col::Text),
        ("model", Col::Text),
        ("amount_micros", Col::Int),
        ("at_us", Col::Int),
    ],
    key: &["tenant_id", "position"],
    versioned: false,
    partition: None,
    indexes: &[],
};

/// One row per workflow run (all its segments): where it is, what it cost, how long it took.
/// Versioned by global position, which keeps growing across a run's segments.
pub const WORKFLOW_RUNS: Table = Table {
    name: "workflow_runs",
    columns: &[
        ("tenant_id", Col::Uuid),
        ("run_id", Col::Uuid),
        ("workflow", Col::Text),
        ("workflow_version", Col::Int),
        ("status", Col::Text),
        ("started_ms", Col::Int),
        ("ended_ms", Col::Int),
        ("steps", Col::Int),
        ("failed_steps", Col::Int),
        ("cost_micros", Col::Int),
        ("segment", Col::Int),
        ("parent_run", Col::Text),
        ("replay_of", Col::Text),
        ("error", Col::Text),
    ],
    key: &["tenant_id", "run_id"],
    versioned: true,
    partition: None,
    indexes: &[
        &["tenant_id", "started_ms"],
        &["tenant_id", "workflow", "started_ms"],
    ],
};

pub const TENANTS: Table = Table {
    name: "tenants",
    columns: &[
        ("tenant_id", Col::Uuid),
        ("name", Col::Text),
        ("plan", Col::Text),
        ("status", Col::Text),
        ("created_at_us", Col::Int),
    ],
    key: &["tenant_id"],
    versioned: true,
    partition: None,
    indexes: &[],
};

pub const API_KEYS: Table = Table {
    name: "api_keys",
    columns: &[
        ("tenant_id", Col::Uuid),
        ("key_id", Col::Uuid),
        ("name", Col::Text),
        ("prefix", Col::Text),
        ("scopes", Col::Text),
        ("created_at_us", Col::Int),
        ("expires_at_unix", Col::Int),
        ("revoked_at_us", Col::Int),
    ],
    key: &["tenant_id", "key_id"],
    versioned: true,
    partition: None,
    indexes: &[],
};

/// The audit log: one row per admin command's event, with who issued it (the event's
/// `metadata.actor`) and the request it came from.
pub const ADMIN_AUDIT: Table = Table {
    name: "admin_audit",
    columns: &[
        ("position", Col::Int),
        ("tenant_id", Col::Uuid),
        ("recorded_us", Col::Int),
        ("stream", Col::Text),
        ("event_type", Col::Text),
        ("subject", Col::Text),
        ("issuer", Col::Text),
        ("role", Col::Text),
        ("via", Col::Text),
        ("request_id", Col::Text),
    ],
    key: &["position"],
    versioned: false,
    partition: None,
    indexes: &[&["tenant_id", "position"], &["subject", "position"]],
};

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Val {
    Int(i64),
    Text(String),
    Uuid(uuid::Uuid),
}

impl From<i64> for Val {
    fn from(value: i64) -> Self {
        Val::Int(value)
    }
}

impl From<u64> for Val {
    fn from(value: u64) -> Self {
        Val::Int(sat(value))
    }
}

impl From<&str> for Val {
    fn from(value: &str) -> Self {
        Val::Text(value.to_owned())
    }
}

impl From<String> for Val {
    fn from(value: String) -> Self {
        Val::Text(value)
    }
}

impl From<uuid::Uuid> for Val {
    fn from(value: uuid::Uuid) -> Self {
        Val::Uuid(value)
    }
}

/// A `u64` from an event as a SQL `BIGINT`, saturating (a hostile or corrupt count cannot wrap
/// into a negative total).
pub fn sat(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One write: insert the row if its key is new, otherwise add `add` to the stored counters and
/// overwrite `set`; with a `version`, only when the stored version is older. An `Op` with
/// neither `add` nor `set` is an insert that ignores an existing row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub table: &'static Table,
    pub key: Vec<(&'static str, Val)>,
    pub add: Vec<(&'static str, i64)>,
    pub set: Vec<(&'static str, Val)>,
    pub version: Option<i64>,
}

impl Op {
    pub fn upsert(table: &'static Table, key: Vec<(&'static str, Val)>) -> Op {
        Op {
            table,
            key,
            add: Vec::new(),
            set: Vec::new(),
            version: None,
        }
    }

    /// Adds `amount` to `column` (twice on one op: the sum, saturating).
    pub fn add(mut self, column: &'static str, amount: i64) -> Op {
        match self.add.iter_mut().find(|(c, _)| *c == column) {
            Some((_, sum)) => *sum = sum.saturating_add(amount),
            None => self.add.push((column, amount)),
        }
        self
    }

    /// Sets `column` to `value` (twice on one op: the last value; one op is one statement, in
    /// which a column may appear once).
    pub fn set(mut self, column: &'static str, value: impl Into<Val>) -> Op {
        let value = value.into();
        match self.set.iter_mut().find(|(c, _)| *c == column) {
            Some((_, old)) => *old = value,
            None => self.set.push((column, value)),
        }
        self
    }

    pub fn version(mut self, version: u64) -> Op {
        self.version = Some(sat(version));
        self
    }

    /// The shape of the statement (table, columns), for merging and statement caching.
    fn shape_key(&self) -> RowKey {
        (self.table.name, self.key.clone())
    }
}

/// A row's identity: its table and key values.
type RowKey = (&'static str, Vec<(&'static str, Val)>);

/// Folds the ops of a batch so each row is written once: counters are summed, `set` values
/// overwritten in event order, the version is the newest. Equivalent to applying them one by one
/// because within one transaction nothing else writes these rows (the checkpoint's
/// compare-and-set makes the batch all-or-nothing).
pub fn merge(ops: Vec<Op>) -> Vec<Op> {
    let mut order: Vec<Op> = Vec::with_capacity(ops.len());
    let mut index: HashMap<RowKey, usize> = HashMap::new();
    for op in ops {
        let shape = op.shape_key();
        match index.get(&shape) {
            Some(&at) => {
                let merged = &mut order[at];
                for (column, amount) in op.add {
                    match merged.add.iter_mut().find(|(c, _)| *c == column) {
                        Some((_, total)) => *total = total.saturating_add(amount),
                        None => merged.add.push((column, amount)),
                    }
                }
                for (column, value) in op.set {
                    match merged.set.iter_mut().find(|(c, _)| *c == column) {
                        Some((_, stored)) => *stored = value,
                        None => merged.set.push((column, value)),
                    }
                }
                merged.version = match (merged.version, op.version) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
            None => {
                index.insert(shape, order.len());
                order.push(op);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_named_twice_on_one_op_appears_once() {
        let op = Op::upsert(&USAGE_HOURLY, vec![("tenant_id", Val::Int(1))])
            .set("model", "routed")
            .add("requests", 1)
            .set("model", "served")
            .add("requests", i64::MAX);
        assert_eq!(op.set, vec![("model", Val::from("served"))]);
        assert_eq!(op.add, vec![("requests", i64::MAX)]);
    }

    #[test]
    fn merge_sums_counters_and_keeps_the_last_set_and_newest_version() {
        let key = || vec![("tenant_id", Val::Int(1)), ("period", Val::from("2026-11"))];
        let ops = vec![
            Op::upsert(&INVOICES, key())
                .set("status", "finalized")
                .version(3),
            Op::upsert(&BILLING_USAGE, key()).add("requests", 1),
            Op::upsert(&INVOICES, key())
                .set("status", "paid")
                .version(4),
            Op::upsert(&BILLING_USAGE, key())
                .add("requests", 2)
                .add("cost_micros", 5),
        ];
        let merged = merge(ops);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].set, vec![("status", Val::from("paid"))]);
        assert_eq!(merged[0].version, Some(4));
        assert_eq!(merged[1].add, vec![("requests", 3), ("cost_micros", 5)]);
    }

    #[test]
    fn counters_saturate_instead_of_wrapping() {
        assert_eq!(sat(u64::MAX), i64::MAX);
        let ops = vec![
            Op::upsert(&USAGE_HOURLY, vec![]).add("tokens_in", i64::MAX),
            Op::upsert(&USAGE_HOURLY, vec![]).add("tokens_in", 7),
        ];
        assert_eq!(merge(ops)[0].add, vec![("tokens_in", i64::MAX)]);
    }
}
