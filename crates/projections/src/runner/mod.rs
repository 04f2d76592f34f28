//! The projector runtime: one task for the projectors of a process ([`group`]) that holds their
//! leases, tails the log from their checkpoints and commits each batch for all of them, with each
//! checkpoint's compare-and-set, in one transaction; plus rebuilds into shadow tables and
//! dead-letter retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_events::{EventStore, GlobalPosition, RecordedEvent, Scope};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod group;

use crate::db::{DeadLetter, ReadDb, SHADOW};
use crate::error::{Error, Result};
use crate::metrics::METRICS;
use crate::model::merge;
use crate::projectors::{ALL, Projector};

/// How the runners work.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most events per transaction.
    pub batch: usize,
    /// First and largest wait after an error (doubling in between).
    pub backoff: (Duration, Duration),
    /// How often a standby worker tries to take a lease another worker holds.
    pub standby_poll: Duration,
    /// How long a worker waits for more events after the first of a batch, so that at low
    /// rates one transaction carries several inferences instead of one each. A reader waiting
    /// for a position this process has not projected yet ([`Projections::wait_for`]) ends the
    /// wait at once; otherwise the read models trail the log by up to this much more.
    pub linger: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            batch: 1000,
            backoff: (Duration::from_millis(50), Duration::from_secs(5)),
            standby_poll: Duration::from_secs(1),
            linger: Duration::from_millis(100),
        }
    }
}

/// The running projectors of this process.
#[derive(Debug)]
pub struct Projections {
    db: ReadDb,
    positions: HashMap<&'static str, watch::Receiver<u64>>,
    /// The highest position a reader of this process waits for: the workers stop lingering
    /// while it is ahead of them.
    demand: watch::Sender<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Projections {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Projections {
    /// Starts every projector (and a lag sampler) on `store` into `db`.
    pub fn start(store: Arc<dyn EventStore>, db: ReadDb, config: RunnerConfig) -> Projections {
        Projections::start_some(store, db, config, &ALL)
    }

    /// Starts the given projectors.
    pub fn start_some(
        store: Arc<dyn EventStore>,
        db: ReadDb,
        config: RunnerConfig,
        projectors: &[&'static Projector],
    ) -> Projections {
        let mut positions = HashMap::new();
        let mut senders = HashMap::new();
        let mut tasks = Vec::new();
        let demand = watch::channel(0).0;
        for projector in projectors {
            let (tx, rx) = watch::channel(0);
            positions.insert(projector.name, rx);
            senders.insert(projector.name, tx);
        }
        if !projectors.is_empty() {
            let group = group::Group {
                store: store.clone(),
                db: db.clone(),
                projectors: projectors.to_vec(),
                config,
                positions: senders,
                demand: demand.subscribe(),
            };
            let span = tracing::info_span!("projectors");
            tasks.push(tokio::spawn(tracing::Instrument::instrument(
                group.run(),
                span,
            )));
        }
        let sampled: Vec<_> = positions.iter().map(|(n, rx)| (*n, rx.clone())).collect();
        tasks.push(tokio::spawn(sample_lag(store, sampled)));
        Projections {
            db,
            positions,
            demand,
            tasks,
        }
    }

    pub fn db(&self) -> &ReadDb {
        &self.db
    }

    /// The committed position of a projector as this process's worker last saw it (0 if it is
    /// not running here, or while another node holds its lease).
    pub fn position(&self, projector: &str) -> u64 {
        self.positions.get(projector).map_or(0, |rx| *rx.borrow())
    }

    /// The committed position of a projector, whichever node commits it: the greater of this
    /// process's worker and the checkpoint in the database (one indexed read).
    pub async fn committed(&self, projector: &str) -> u64 {
        let here = self.position(projector);
        // A read-only query (`checkpoint` would create the row: a write).
        match self.db.checkpoints().await {
            Ok(all) => all
                .iter()
                .filter(|(name, _, _)| name == projector)
                .fold(here, |at, (_, there, _)| at.max(*there)),
            Err(error) => {
                tracing::warn!(%error, projector, "cannot read a checkpoint");
                here
            }
        }
    }

    /// A receiver of a projector's committed position (for benchmarks and watchers).
    pub fn watch(&self, projector: &str) -> Option<watch::Receiver<u64>> {
        self.positions.get(projector).cloned()
    }

    /// Waits until `projector` has committed `position` (read-your-writes), at most `timeout`,
    /// on any node: this process's worker wakes the wait at once when it commits; a checkpoint
    /// committed by another node's worker (which holds the lease) is read from the database,
    /// polled from 2 ms doubling to 50 ms. Returns the committed position when it returns (≥
    /// `position` unless it timed out).
    pub async fn wait_for(&self, projector: &str, position: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        // This process's workers commit what they hold now instead of lingering.
        self.demand.send_if_modified(|wanted| {
            let more = position > *wanted;
            *wanted = (*wanted).max(position);
            more
        });
        let mut local = self.positions.get(projector).cloned();
        let mut pause = Duration::from_millis(2);
        loop {
            let committed = self.committed(projector).await;
            if committed >= position {
                return committed;
            }
            let now = Instant::now();
            if now >= deadline {
                return committed;
            }
            let wait = pause.min(deadline - now);
            match &mut local {
                Some(rx) => {
                    let _ = tokio::time::timeout(wait, rx.changed()).await;
                }
                None => tokio::time::sleep(wait).await,
            }
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

async fn sample_lag(
    store: Arc<dyn EventStore>,
    positions: Vec<(&'static str, watch::Receiver<u64>)>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Ok(head) = store.head().await else {
            continue;
        };
        for (name, rx) in &positions {
            let lag = head.0.saturating_sub(*rx.borrow());
            METRICS
                .lag_events
                .with_label_values(&[*name])
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
            if lag == 0 {
                METRICS.lag_seconds.with_label_values(&[*name]).set(0.0);
            }
        }
    }
}

/// Applies `batch` (the events right after checkpoint `from`) and returns the new checkpoint.
/// A batch that the database refuses is retried one event at a time, and an event it still
/// refuses is dead-lettered, so one poison event cannot stop the projector.
pub async fn project(
    db: &ReadDb,
    projector: &Projector,
    from: u64,
    batch: &[RecordedEvent],
) -> Result<u64> {
    let Some(last) = batch.last() else {
        return Ok(from);
    };
    let to = last.global_position.0;
    let started = Instant::now();
    let (ops, dead) = ops_of(projector, batch);
    let outcome = db
        .apply(projector, Some((from, to)), "", &merge(ops), &dead)
        .await;
    match outcome {
        Ok(()) => {}
        Err(error) if error.is_data_error() => {
            tracing::warn!(projector = projector.name, %error, "batch refused; applying its events one by one");
            db.forget_partitions();
            let mut at = from;
            for event in batch {
                at = project_one(db, projector, at, event).await?;
            }
        }
        Err(error) => return Err(error),
    }
    observe(projector, batch, to, dead.len(), started);
    Ok(to)
}

async fn project_one(
    db: &ReadDb,
    projector: &Projector,
    from: u64,
    event: &RecordedEvent,
) -> Result<u64> {
    let to = event.global_position.0;
    let (ops, mut dead) = ops_of(projector, std::slice::from_ref(event));
    let mut last_error = None;
    for _ in 0..2 {
        match db.apply(projector, Some((from, to)), "", &ops, &dead).await {
            Ok(()) => return Ok(to),
            Err(error) if error.is_data_error() => {
                db.forget_partitions();
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    let error = last_error.map(|e| e.to_string()).unwrap_or_default();
    tracing::error!(projector = projector.name, position = to, event_type = %event.event_type, %error, "poison event: dead-lettered");
    dead.push(dead_letter(event, error));
    db.apply(projector, Some((from, to)), "", &[], &dead)
        .await?;
    Ok(to)
}

fn ops_of(
    projector: &Projector,
    batch: &[RecordedEvent],
) -> (Vec<crate::model::Op>, Vec<DeadLetter>) {
    let mut ops = Vec::new();
    let mut dead = Vec::new();
    for event in batch {
        match projector.ops(event) {
            Ok(mut more) => ops.append(&mut more),
            Err(error) => {
                tracing::error!(projector = projector.name, position = event.global_position.0, event_type = %event.event_type, %error, "undecodable event: dead-lettered");
                dead.push(dead_letter(event, error));
            }
        }
    }
    (ops, dead)
}

fn dead_letter(event: &RecordedEvent, error: String) -> DeadLetter {
    DeadLetter {
        position: event.global_position.0,
        event_id: *event.event_id.as_uuid(),
        event_type: event.event_type.clone(),
        stream_id: event.stream_id.as_str().to_owned(),
        tenant_id: *event.tenant_id.as_uuid(),
        error,
    }
}

fn observe(projector: &Projector, batch: &[RecordedEvent], to: u64, dead: usize, started: Instant) {
    let name = projector.name;
    METRICS
        .batch_seconds
        .with_label_values(&[name])
        .observe(started.elapsed().as_secs_f64());
    METRICS
        .events
        .with_label_values(&[name])
        .inc_by(batch.len() as u64);
    METRICS
        .position
        .with_label_values(&[name])
        .set(i64::try_from(to).unwrap_or(i64::MAX));
    if dead > 0 {
        METRICS
            .dead_letters
            .with_label_values(&[name])
            .inc_by(dead as u64);
    }
    let now = OffsetDateTime::now_utc();
    let delays = METRICS.delay_seconds.with_label_values(&[name]);
    for event in batch {
        delays.observe((now - event.recorded_at).as_seconds_f64().max(0.0));
    }
    if let Some(last) = batch.last() {
        METRICS
            .lag_seconds
            .with_label_values(&[name])
            .set((now - last.recorded_at).as_seconds_f64().max(0.0));
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rebuilt {
    pub projector: String,
    pub events: u64,
    pub position: u64,
    pub dead_letters: usize,
    pub seconds: f64,
}

/// Rebuilds a projector from the start of the log into shadow tables and swaps them in. The live
/// projector (in this or another process) keeps running meanwhile; the swap happens only once
/// the shadow has caught up with its checkpoint, and moves the checkpoint to the shadow's
/// position, so the result equals the incremental one and rows no event produces are gone.
pub async fn rebuild(
    store: &dyn EventStore,
    db: &ReadDb,
    projector: &Projector,
    batch: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Rebuilt> {
    let started = Instant::now();
    db.create_shadow(projector).await?;
    let mut at = 0_u64;
    let mut events = 0_u64;
    let mut dead_total = 0;
    loop {
        let head = store.head().await?.0;
        loop {
            let page = store
                .read_all(Scope::All, GlobalPosition(at), batch)
                .await?;
            let Some(last) = page.last() else { break };
            let (ops, dead) = ops_of(projector, &page);
            db.apply(projector, None, SHADOW, &merge(ops), &dead)
                .await?;
            dead_total += dead.len();
            events += page.len() as u64;
            at = last.global_position.0;
            progress(at, head.max(at));
        }
        if db.swap_shadow(projector, at).await? {
            break;
        }
        // The live projector is ahead of the shadow: catch up and try again.
    }
    tracing::info!(
        projector = projector.name,
        events,
        position = at,
        "rebuild swapped in"
    );
    Ok(Rebuilt {
        projector: projector.name.into(),
        events,
        position: at,
        dead_letters: dead_total,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Applies a dead-lettered event again (after a fix) and marks it resolved, in one
/// transaction. Returns false if there is no such unresolved entry.
pub async fn retry_dead_letter(store: &dyn EventStore, db: &ReadDb, id: i64) -> Result<bool> {
    let Some(entry) = db.dead_letter(id).await? else {
        return Ok(false);
    };
    if entry.resolved_at_us.is_some() {
        return Ok(false);
    }
    let projector = crate::projectors::by_name(&entry.projector)
        .ok_or_else(|| Error::Invalid(format!("unknown projector {}", entry.projector)))?;
    let position = u64::try_from(entry.position).unwrap_or(0);
    let event = event_at(store, position)
        .await?
        .ok_or_else(|| Error::Invalid(format!("event at position {position} is not in the log")))?;
    let ops = projector.ops(&event).map_err(Error::Invalid)?;
    db.resolve_dead_letter(projector, id, &merge(ops)).await
}

/// The event at a global position, if the log has one there.
pub async fn event_at(store: &dyn EventStore, position: u64) -> Result<Option<RecordedEvent>> {
    let events = store
        .read_all(Scope::All, GlobalPosition(position.saturating_sub(1)), 1)
        .await?;
    Ok(events
        .into_iter()
        .find(|event| event.global_position.0 == position))
}
