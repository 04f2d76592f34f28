//! A feature flag's evaluation on the request path (issue 18: < 1 µs): `FlagBook::evaluate`,
//! what the gateway calls per request for a defined flag: the flag's lookup by name, the
//! tenant's switches, then the kill switch, targets (1,000 keys, 1,000 tenants, 20 plans,
//! searched) and the sticky rollout's hash.
//!
//! Run: `cargo bench -p switchyard-benches --bench flags`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_actors::flags::FlagBook;
use switchyard_events::TenantId;
use uuid::Uuid;

fn flags(c: &mut Criterion) {
    let book = FlagBook::default();
    let keys: Vec<Uuid> = (0..1_000).map(|_| Uuid::now_v7()).collect();
    let tenants: Vec<TenantId> = (0..1_000).map(|_| TenantId::new()).collect();
    let plans: Vec<String> = (0..20).map(|i| format!("plan-{i}")).collect();
    let definition = serde_json::json!({
        "rollout_percent": 25, "keys": keys, "tenants": tenants, "plans": plans,
    })
    .to_string();
    book.define("new-router", Some(&definition));
    book.define("killed", Some(r#"{"enabled": false}"#));
    // 10,000 other flags in the book, so the lookup is not a one-entry map.
    for i in 0..10_000 {
        book.define(&format!("flag-{i}"), Some(r#"{"rollout_percent": 50}"#));
    }
    let tenant = TenantId::new();
    let key = Uuid::now_v7();
    let mut group = c.benchmark_group("flag evaluation");
    group.bench_function(
        "rollout (no target matches: every list searched, then the hash)",
        |b| {
            b.iter(|| {
                black_box(book.evaluate(
                    black_box("new-router"),
                    tenant,
                    Some("free"),
                    Some(key),
                    Some("alice"),
                ))
            });
        },
    );
    group.bench_function("a targeted key", |b| {
        b.iter(|| {
            black_box(book.evaluate(
                black_box("new-router"),
                tenant,
                Some("free"),
                Some(keys[500]),
                None,
            ))
        });
    });
    group.bench_function("the kill switch", |b| {
        b.iter(|| black_box(book.evaluate(black_box("killed"), tenant, None, Some(key), None)));
    });
    group.bench_function("an undefined flag (the common case)", |b| {
        b.iter(|| black_box(book.evaluate(black_box("absent"), tenant, None, Some(key), None)));
    });
    group.finish();
}

criterion_group!(benches, flags);
criterion_main!(benches);
