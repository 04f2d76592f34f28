//! Actor runtime figures against the spec's targets (section 4):
//! - rehydration of a 100k-event actor (target < 100 ms), on the embedded store;
//! - activation from a snapshot, p50 and p99 (target p99 < 1 ms);
//! - memory of idle tenant actors: RSS growth for 100k live tenants (target < 1 GiB, and an
//!   idle actor < 4 KiB).
//!
//! Run: `cargo bench -p switchyard-benches --bench actors`. Criterion measures the first two;
//! the percentiles and the memory figure are printed as `figure:` lines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_actors::tenant::{Tenant, TenantCommand};
use switchyard_actors::{Runtime, RuntimeConfig};
use switchyard_events::{
    Event, EventStore, ExpectedVersion, Metadata, SqliteStore, StreamId, TenantCreated,
    TenantFlagSet, TenantId,
};
use tokio::runtime::Runtime as Tokio;

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn tokio() -> Tokio {
    ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build())
}

/// A store whose writer task lives on `rt` (it must outlive the benchmark's use of the store).
fn store(rt: &Tokio) -> Arc<dyn EventStore> {
    let dir = ok(tempfile::tempdir()).keep();
    Arc::new(ok(rt.block_on(SqliteStore::open(dir.join("actors.db")))))
}

/// Writes a tenant stream of `events` events straight to the log (1 creation + flag toggles
/// over 150 flags, so the state stays small while the stream is long).
async fn long_tenant(store: &dyn EventStore, events: usize) -> TenantId {
    let tenant = TenantId::new();
    let stream = ok(StreamId::of("tenant", tenant));
    let created = Event::TenantCreated(TenantCreated {
        name: "Acme".into(),
        plan: "pro".into(),
    });
    ok(store
        .append(
            tenant,
            &stream,
            ExpectedVersion::NoStream,
            vec![ok(created.to_new_event(Metadata::default()))],
        )
        .await);
    let mut written = 1;
    while written < events {
        let batch: Vec<_> = (written..(written + 1000).min(events))
            .map(|i| {
                let flag = Event::TenantFlagSet(TenantFlagSet {
                    flag: format!("flag{}", i % 150),
                    enabled: i % 2 == 0,
                });
                ok(flag.to_new_event(Metadata::default()))
            })
            .collect();
        written += batch.len();
        ok(store
            .append(tenant, &stream, ExpectedVersion::Any, batch)
            .await);
    }
    tenant
}

fn no_snapshots() -> RuntimeConfig {
    RuntimeConfig {
        snapshot_every: u64::MAX,
        ..RuntimeConfig::default()
    }
}

fn rehydration(c: &mut Criterion) {
    let rt = tokio();
    let store = store(&rt);
    let tenant = rt.block_on(long_tenant(store.as_ref(), 100_000));
    let mut group = c.benchmark_group("actor_rehydration");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("tenant_100k_events_no_snapshot", |b| {
        b.to_async(&rt).iter(|| async {
            let runtime = Runtime::<Tenant>::new(store.clone(), no_snapshots());
            let (_, version) = ok(runtime.read(&tenant).await);
            assert_eq!(version.0, 100_000);
        });
    });
    group.finish();
}

fn activation_from_snapshot(c: &mut Criterion) {
    let rt = tokio();
    let store = store(&rt);
    // 200 tenants of 120 events each, snapshotted at 100 by the runtime, so activation reads a
    // snapshot plus a 20-event tail.
    let config = RuntimeConfig {
        snapshot_every: 100,
        ..RuntimeConfig::default()
    };
    let tenants: Vec<TenantId> = rt.block_on(async {
        let writer = Runtime::<Tenant>::new(store.clone(), config.clone());
        let mut tenants = Vec::new();
        for _ in 0..200 {
            let tenant = TenantId::new();
            ok(writer
                .send(
                    &tenant,
                    TenantCommand::Create {
                        name: "Acme".into(),
                        plan: "pro".into(),
                    },
                    Metadata::default(),
                )
                .await);
            for i in 0..119 {
                let command = TenantCommand::SetFlag {
                    flag: format!("f{}", i % 40),
                    enabled: i % 3 == 0,
                };
                ok(writer.send(&tenant, command, Metadata::default()).await);
            }
            tenants.push(tenant);
        }
        tenants
    });
    // Percentiles over every activation (criterion reports means and medians only).
    let mut samples = Vec::new();
    rt.block_on(async {
        for round in 0..10 {
            let runtime = Runtime::<Tenant>::new(store.clone(), config.clone());
            for tenant in &tenants {
                let started = Instant::now();
                ok(runtime.read(tenant).await);
                if round > 0 {
                    samples.push(started.elapsed());
                }
            }
        }
    });
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    eprintln!(
        "figure: activation from snapshot (+20-event tail), {} activations: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        pick(0.50),
        pick(0.99),
        samples[samples.len() - 1]
    );
    let mut group = c.benchmark_group("actor_activation");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let mut next = 0;
    group.bench_function("from_snapshot_plus_20_events", |b| {
        b.to_async(&rt).iter(|| {
            let runtime = Runtime::<Tenant>::new(store.clone(), config.clone());
            next = (next + 1) % tenants.len();
            let tenant = tenants[next];
            async move {
                ok(runtime.read(&tenant).await);
            }
        });
    });
    group.finish();
}

fn rss_bytes() -> u64 {
    let statm = ok(std::fs::read_to_string("/proc/self/statm"));
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn idle_memory(_c: &mut Criterion) {
    const TENANTS: usize = 100_000;
    let rt = tokio();
    let store = store(&rt);
    let runtime = Runtime::<Tenant>::new(
        store.clone(),
        RuntimeConfig {
            idle_after: Duration::from_secs(3600),
            ..RuntimeConfig::default()
        },
    );
    // Create the tenants through a second runtime that lets its actors go at once, so the
    // measured runtime starts empty.
    let ids: Vec<TenantId> = (0..TENANTS).map(|_| TenantId::new()).collect();
    rt.block_on(async {
        let creator = Runtime::<Tenant>::new(
            store.clone(),
            RuntimeConfig {
                idle_after: Duration::from_millis(1),
                ..RuntimeConfig::default()
            },
        );
        for chunk in ids.chunks(256) {
            let tasks: Vec<_> = chunk
                .iter()
                .map(|&tenant| {
                    let creator = creator.clone();
                    tokio::spawn(async move {
                        ok(creator
                            .send(
                                &tenant,
                                TenantCommand::Create {
                                    name: "Acme".into(),
                                    plan: "pro".into(),
                                },
                                Metadata::default(),
                            )
                            .await);
                    })
                })
                .collect();
            for task in tasks {
                ok(task.await);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let before = rss_bytes();
    rt.block_on(async {
        for chunk in ids.chunks(256) {
            let tasks: Vec<_> = chunk
                .iter()
                .map(|&tenant| {
                    let runtime = runtime.clone();
                    tokio::spawn(async move { ok(runtime.read(&tenant).await) })
                })
                .collect();
            for task in tasks {
                ok(task.await);
            }
        }
    });
    let after = rss_bytes();
    assert_eq!(runtime.live(), TENANTS);
    let grown = after.saturating_sub(before);
    eprintln!(
        "figure: {TENANTS} idle tenant actors live: RSS grew {:.1} MiB, {:.0} bytes per actor",
        grown as f64 / 1_048_576.0,
        grown as f64 / TENANTS as f64
    );
}

criterion_group!(benches, rehydration, activation_from_snapshot, idle_memory);
criterion_main!(benches);
