//! Unit tests of rendering ops as SQL and of monthly partitions.

use super::SHADOW;
use super::partitions::{month_partition, partition_end};
use super::render::{Placeholders, render, render_batch};
use crate::error::Error;
use crate::model::{INFERENCE_LOG, Op, USAGE_HOURLY, Val};

#[test]
fn renders_a_guarded_upsert() {
    let op = Op::upsert(&INFERENCE_LOG, vec![("tenant_id", Val::Int(1))])
        .set("status", "completed")
        .version(3);
    let (sql, params) = render(&op, "", Placeholders::Numbered).unwrap_or_default();
    assert_eq!(
        sql,
        "INSERT INTO inference_log (tenant_id, status, version) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id, started_ms, inference_id) DO UPDATE SET status = excluded.status, \
         version = excluded.version WHERE inference_log.version < excluded.version"
    );
    assert_eq!(params.len(), 3);
}

#[test]
fn batches_ops_of_one_shape_into_one_statement() {
    let row = |n: i64| {
        Op::upsert(
            &USAGE_HOURLY,
            vec![
                ("tenant_id", Val::Int(n)),
                ("hour", Val::Int(0)),
                ("model", Val::from("m")),
            ],
        )
        .add("requests", 1)
    };
    let other = Op::upsert(&INFERENCE_LOG, vec![("tenant_id", Val::Int(1))])
        .set("status", "failed")
        .version(2);
    let ops = [row(1), other, row(2), row(3)];
    let statements = render_batch(&ops, "", 400, Placeholders::Numbered).unwrap_or_default();
    assert_eq!(statements.len(), 2);
    assert!(
        statements[0]
            .0
            .contains("VALUES ($1, $2, $3, $4), ($5, $6, $7, $8), ($9, $10, $11, $12) ON CONFLICT"),
        "{}",
        statements[0].0
    );
    assert_eq!(statements[0].1.len(), 12);
    assert!(
        statements[1]
            .0
            .ends_with("WHERE inference_log.version < excluded.version")
    );
}

#[test]
fn splits_a_shape_into_statements_under_the_parameter_limit() {
    let rows: Vec<Op> = (0..5)
        .map(|n| {
            Op::upsert(
                &USAGE_HOURLY,
                vec![
                    ("tenant_id", Val::Int(n)),
                    ("hour", Val::Int(0)),
                    ("model", Val::from("m")),
                ],
            )
            .add("requests", 1)
        })
        .collect();
    let statements = render_batch(&rows, "", 8, Placeholders::Anonymous).unwrap_or_default();
    assert_eq!(
        statements.iter().map(|(_, p)| p.len()).collect::<Vec<_>>(),
        [8, 8, 4]
    );
    // SQLite's statements name no parameter: they are bound in order.
    assert!(
        statements[0]
            .0
            .contains("VALUES (?, ?, ?, ?), (?, ?, ?, ?) ON CONFLICT"),
        "{}",
        statements[0].0
    );
    assert!(!statements[0].0.contains('$'));
}

#[test]
fn refuses_an_unknown_column() {
    let op = Op::upsert(&USAGE_HOURLY, vec![]).add("tokens; DROP TABLE x", 1);
    assert!(matches!(
        render(&op, "", Placeholders::Anonymous),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn monthly_partitions_cover_their_value() {
    for value in [0_i64, 1_764_460_800, 1_767_225_599, 1_767_225_600, -5] {
        let (name, from, to) = month_partition("usage_hourly", "", value, 1);
        assert!(
            from <= value && value < to,
            "{name}: {from} <= {value} < {to}"
        );
        assert_eq!(partition_end(&name, 1), Some(to));
    }
    let (name, _, _) = month_partition("inference_log", SHADOW, 1_764_460_800_000, 1000);
    assert_eq!(name, "inference_log__rebuild_p202511");
}
