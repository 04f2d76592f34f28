//! Ops rendered as SQL: one `INSERT … ON CONFLICT` statement per op, or few multi-row
//! statements per batch (ops of one shape together, under the backend's parameter limit).

use crate::error::{Error, Result};
use crate::model::{Op, Val};

/// Most parameters in one statement. PostgreSQL allows 65,535. SQLite allows 32,766, but the
/// driver looks each parameter's name up with `sqlite3_bind_parameter_name`, a linear scan of
/// the statement's named and numbered parameters, so binding n numbered parameters costs
/// O(n²): a profile of a rebuild spent 89% there with 30,000 per statement. SQLite statements
/// are now written with anonymous `?` ([`Placeholders`]), which that scan skips; the bound of a
/// few hundred stays, as it still saves most round trips.
pub(super) fn max_params(postgres: bool) -> usize {
    if postgres { 30_000 } else { 400 }
}

/// How a rendered statement writes its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placeholders {
    /// `$1, $2, …` (PostgreSQL).
    Numbered,
    /// `?, ?, …`, bound in order (SQLite): the driver asks SQLite each parameter's name, and an
    /// anonymous one has none to look up, where a numbered one costs a scan of every name (the
    /// flame graphs of issue 14 had `sqlite3_bind_parameter_name` at 4.6% of the CPU at
    /// saturation).
    Anonymous,
}

impl Placeholders {
    pub(crate) fn of(postgres: bool) -> Self {
        if postgres {
            Placeholders::Numbered
        } else {
            Placeholders::Anonymous
        }
    }

    /// Parameter `i` (from 1).
    fn nth(self, i: usize) -> String {
        match self {
            Placeholders::Numbered => format!("${i}"),
            Placeholders::Anonymous => "?".to_owned(),
        }
    }
}

/// Renders a batch's (merged) ops as few statements: ops of the same shape (table and columns)
/// become one multi-row `INSERT … VALUES (…), (…) ON CONFLICT …`, so a batch costs a round trip
/// per table rather than per row. The ops must not repeat a key (PostgreSQL refuses to update a
/// row twice in one statement): [`crate::model::merge`] guarantees it.
pub(crate) fn render_batch(
    ops: &[Op],
    suffix: &str,
    max_params: usize,
    placeholders: Placeholders,
) -> Result<Vec<(String, Vec<Val>)>> {
    type Shape = (
        &'static str,
        Vec<&'static str>,
        Vec<&'static str>,
        Vec<&'static str>,
        bool,
    );
    let mut groups: Vec<(Shape, Vec<&Op>)> = Vec::new();
    for op in ops {
        let shape: Shape = (
            op.table.name,
            op.key.iter().map(|(c, _)| *c).collect(),
            op.add.iter().map(|(c, _)| *c).collect(),
            op.set.iter().map(|(c, _)| *c).collect(),
            op.version.is_some(),
        );
        match groups.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, members)) => members.push(op),
            None => groups.push((shape, vec![op])),
        }
    }
    let mut out = Vec::new();
    for (_, members) in groups {
        let Some(first) = members.first() else {
            continue;
        };
        let (single, _) = render(first, suffix, placeholders)?;
        let width = first.key.len()
            + first.add.len()
            + first.set.len()
            + usize::from(first.version.is_some());
        let rows_per_statement = (max_params / width.max(1)).max(1);
        let (head, tail) = single
            .split_once(" VALUES (")
            .and_then(|(head, rest)| {
                rest.split_once(") ON CONFLICT")
                    .map(|(_, tail)| (head.to_owned(), tail.to_owned()))
            })
            .ok_or_else(|| Error::Invalid(format!("unexpected statement {single}")))?;
        for chunk in members.chunks(rows_per_statement) {
            let mut params = Vec::with_capacity(chunk.len() * width);
            let mut rows = Vec::with_capacity(chunk.len());
            for op in chunk {
                let (_, values) = render(op, suffix, placeholders)?;
                let start = params.len();
                rows.push(format!(
                    "({})",
                    (start + 1..=start + values.len())
                        .map(|i| placeholders.nth(i))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                params.extend(values);
            }
            out.push((
                format!("{head} VALUES {} ON CONFLICT{tail}", rows.join(", ")),
                params,
            ));
        }
    }
    Ok(out)
}

/// Renders an op as one `INSERT … ON CONFLICT` statement on `table{suffix}`.
pub(crate) fn render(
    op: &Op,
    suffix: &str,
    placeholders: Placeholders,
) -> Result<(String, Vec<Val>)> {
    let table = op.table;
    let physical = format!("{}{suffix}", table.name);
    let mut columns: Vec<&str> = Vec::new();
    let mut params: Vec<Val> = Vec::new();
    for (column, value) in &op.key {
        columns.push(column);
        params.push(value.clone());
    }
    for (column, amount) in &op.add {
        columns.push(column);
        params.push(Val::Int(*amount));
    }
    for (column, value) in &op.set {
        columns.push(column);
        params.push(value.clone());
    }
    if let Some(version) = op.version {
        columns.push("version");
        params.push(Val::Int(version));
    }
    for column in &columns {
        if !table.has(column) {
            return Err(Error::Invalid(format!(
                "table {} has no column {column}",
                table.name
            )));
        }
    }
    let marks: Vec<String> = (1..=params.len()).map(|i| placeholders.nth(i)).collect();
    let mut updates: Vec<String> = Vec::new();
    for (column, _) in &op.add {
        updates.push(format!(
            "{column} = {physical}.{column} + excluded.{column}"
        ));
    }
    for (column, _) in &op.set {
        updates.push(format!("{column} = excluded.{column}"));
    }
    if op.version.is_some() {
        updates.push("version = excluded.version".into());
    }
    let conflict = if updates.is_empty() {
        "DO NOTHING".to_owned()
    } else if op.version.is_some() {
        format!(
            "DO UPDATE SET {} WHERE {physical}.version < excluded.version",
            updates.join(", ")
        )
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    Ok((
        format!(
            "INSERT INTO {physical} ({}) VALUES ({}) ON CONFLICT ({}) {conflict}",
            columns.join(", "),
            marks.join(", "),
            table.key.join(", ")
        ),
        params,
    ))
}
