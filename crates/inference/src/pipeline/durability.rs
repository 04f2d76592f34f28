//! When an inference's answer may go out relative to its events reaching the log, chosen by the
//! operator like PostgreSQL's `synchronous_commit`:
//!
//! - [`Durability::Durable`] (the default): the answer waits until the group commit that holds
//!   the inference's events is on disk (fsync). A crash loses no answered inference.
//! - [`Durability::Batched`]: the answer goes out at once and its events are appended in the
//!   background at the end of the current window ([`DEFAULT_WINDOW`], 5 ms, aligned for the
//!   whole process), so that every inference answered in one window reaches the log's writer
//!   at the same moment and shares one commit (at 1,000 req/s, about five per commit instead of
//!   one). A crash (`kill -9`, power loss) loses the inferences whose commit had not finished:
//!   at most [`IN_FLIGHT`] of them, in practice those of the last window and its commit. The budget gate is unaffected (it reserves and settles in memory before the
//!   answer), so it never admits more than the budget; a lost record is spend that is neither
//!   logged nor billed. The answer carries no `x-switchyard-position` (there is none yet).
//!
//! Workflow steps always record durably: their inference id is derived from the run, and a
//! step repeated after a crash must find its inference in the log.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts};
use switchyard_events::{EventStore, ExpectedVersion, NewEvent, StreamId, TenantId};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::record::RecordForm;
use crate::admission::meter::Meter;

/// Most inferences answered but not yet committed, in `batched` mode: a request waits for a
/// place when the log falls this far behind, which bounds both memory and what a crash loses.
pub const IN_FLIGHT: u32 = 1024;

/// How long `batched` mode gathers answered inferences before it appends them, unless the
/// operator says otherwise (`SWITCHYARD_BATCH_WINDOW_MS`).
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(5);

/// The end of the window that `now` falls in. Windows are aligned on one clock for the whole
/// process, so every inference answered in a window wakes at the same instant and their appends
/// reach the writer together.
fn window_end(now: tokio::time::Instant, window: Duration) -> tokio::time::Instant {
    static EPOCH: LazyLock<tokio::time::Instant> = LazyLock::new(tokio::time::Instant::now);
    let epoch = *EPOCH;
    let width = window.as_nanos().max(1);
    let slot = now.saturating_duration_since(epoch).as_nanos() / width + 1;
    let end = epoch + Duration::from_nanos(u64::try_from(slot * width).unwrap_or(u64::MAX));
    // An instant taken before the epoch's first reading would wait longer than one window.
    end.min(now + window.max(Duration::from_nanos(1)))
}

/// How inferences are recorded before their answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    #[default]
    Durable,
    Batched,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Durable => "durable",
            Durability::Batched => "batched",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "durable" => Ok(Durability::Durable),
            "batched" => Ok(Durability::Batched),
            other => Err(format!(
                "unknown durability {other:?}: expected \"durable\" or \"batched\""
            )),
        }
    }
}

struct RecordingMetrics {
    mode: IntGaugeVec,
    form: IntGaugeVec,
    window: prometheus::Gauge,
    pending: IntGauge,
    lost: IntCounter,
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one fails every test"
)]
static METRICS: LazyLock<RecordingMetrics> = LazyLock::new(|| {
    let mode = IntGaugeVec::new(
        Opts::new(
            "switchyard_inference_durability",
            "1 for the durability mode inferences are recorded in (durable, batched)",
        ),
        &["mode"],
    )
    .expect("valid metric");
    let form = IntGaugeVec::new(
        Opts::new(
            "switchyard_inference_record_form",
            "1 for the form inferences are logged in (one: one event each; split: the older three)",
        ),
        &["form"],
    )
    .expect("valid metric");
    let window = prometheus::Gauge::new(
        "switchyard_inference_batch_window_seconds",
        "How long batched mode gathers answered inferences before appending them together",
    )
    .expect("valid metric");
    let pending = IntGauge::new(
        "switchyard_inference_records_pending",
        "Inferences answered in batched mode whose events are not yet committed",
    )
    .expect("valid metric");
    let lost = IntCounter::new(
        "switchyard_inference_records_failed_total",
        "Inferences answered in batched mode whose events the log refused (not billed)",
    )
    .expect("valid metric");
    for collector in [
        Box::new(mode.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(form.clone()),
        Box::new(window.clone()),
        Box::new(pending.clone()),
        Box::new(lost.clone()),
    ] {
        let _ = prometheus::register(collector);
    }
    RecordingMetrics {
        mode,
        form,
        window,
        pending,
        lost,
    }
});

/// The pipeline's recording mode and, in `batched` mode, the appends still in flight.
#[derive(Debug, Clone)]
pub struct Recording {
    mode: Durability,
    form: RecordForm,
    /// `batched` only: how long answered inferences are gathered before they are appended.
    window: Duration,
    in_flight: Arc<Semaphore>,
    /// Inferences answered whose append has not ended, each with what wakes its waiters.
    pending: Arc<dashmap::DashMap<Uuid, Arc<tokio::sync::Notify>>>,
}

impl Default for Recording {
    fn default() -> Self {
        Recording::new(Durability::Durable)
    }
}

impl Recording {
    pub fn new(mode: Durability) -> Recording {
        for m in [Durability::Durable, Durability::Batched] {
            METRICS
                .mode
                .with_label_values(&[m.as_str()])
                .set(i64::from(m == mode));
        }
        let recording = Recording {
            mode,
            form: RecordForm::One,
            window: DEFAULT_WINDOW,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT as usize)),
            pending: Arc::default(),
        };
        recording.publish_form();
        METRICS.window.set(DEFAULT_WINDOW.as_secs_f64());
        recording
    }

    /// The same recording, gathering `batched` inferences for `window` before appending them
    /// (zero: each is appended at once, sharing a commit only with what is waiting then).
    pub fn with_window(mut self, window: Duration) -> Recording {
        self.window = window;
        METRICS.window.set(window.as_secs_f64());
        self
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn mode(&self) -> Durability {
        self.mode
    }

    /// The same recording, logging inferences in `form` (the default is [`RecordForm::One`]).
    pub fn with_form(mut self, form: RecordForm) -> Recording {
        self.form = form;
        self.publish_form();
        self
    }

    pub fn form(&self) -> RecordForm {
        self.form
    }

    fn publish_form(&self) {
        for f in [RecordForm::One, RecordForm::Split] {
            METRICS
                .form
                .with_label_values(&[f.as_str()])
                .set(i64::from(f == self.form));
        }
    }

    /// Appends an answered inference's events in the background (`batched` mode): waits only
    /// for a place among the [`IN_FLIGHT`]. A refused append takes the spend back from the
    /// meter, as the durable path does, since the log (what is billed) will not hold it.
    pub(super) async fn record_later(&self, append: Later) {
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        METRICS.pending.inc();
        self.pending
            .insert(append.id, Arc::new(tokio::sync::Notify::new()));
        let pending = self.pending.clone();
        let gather =
            (!self.window.is_zero()).then(|| window_end(tokio::time::Instant::now(), self.window));
        tokio::spawn(async move {
            // Every inference answered in this window wakes now, together: one commit for all.
            if let Some(end) = gather {
                tokio::time::sleep_until(end).await;
            }
            let Later {
                store,
                tenant,
                stream,
                events,
                meter,
                id,
                cost,
                tokens,
            } = append;
            if let Err(error) = store
                .append(tenant, &stream, ExpectedVersion::NoStream, events)
                .await
            {
                METRICS.lost.inc();
                meter.unsettle(tenant, id, cost, tokens, time::OffsetDateTime::now_utc());
                tracing::error!(%error, inference_id = %id, "cannot log an answered inference (batched durability)");
            }
            METRICS.pending.dec();
            if let Some((_, done)) = pending.remove(&id) {
                done.notify_waiters();
            }
            drop(permit);
        });
    }

    /// Waits (up to `patience`) until inference `id`'s background append has ended, if this
    /// node has one in flight: feedback sent right after a `batched` answer then finds the
    /// inference in the log instead of a 404. Answers whether it waited.
    pub async fn settled(&self, id: Uuid, patience: std::time::Duration) -> bool {
        let Some(done) = self.pending.get(&id).map(|d| d.clone()) else {
            return false;
        };
        let notified = done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.pending.contains_key(&id) {
            let _ = tokio::time::timeout(patience, notified).await;
        }
        true
    }

    /// Waits until every background append has ended (at shutdown, so that a clean stop loses
    /// nothing in `batched` mode either).
    pub async fn drain(&self) {
        if let Ok(all) = self.in_flight.acquire_many(IN_FLIGHT).await {
            drop(all);
        }
    }
}

/// An answered inference's append, to run after its answer.
pub(super) struct Later {
    pub store: Arc<dyn EventStore>,
    pub tenant: TenantId,
    pub stream: StreamId,
    pub events: Vec<NewEvent>,
    pub meter: Arc<Meter>,
    pub id: Uuid,
    pub cost: u64,
    pub tokens: u64,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchyard_events::{Event, MemoryStore, Metadata, TenantCreated};

    use super::*;

    #[test]
    fn a_window_ends_after_now_within_its_width_and_is_shared_by_its_instants() {
        let window = Duration::from_millis(5);
        // The first call reads the epoch windows are aligned on.
        let _ = window_end(tokio::time::Instant::now(), window);
        let now = tokio::time::Instant::now();
        let end = window_end(now, window);
        assert!(end > now && end - now <= window, "{:?}", end - now);
        // Every instant before the end, from its window's start on, ends at the same moment.
        let start = end - window;
        for offset in [0, 1, 2_500, 4_999] {
            let at = start + Duration::from_micros(offset);
            assert_eq!(window_end(at, window), end, "{offset} µs into the window");
        }
        assert_eq!(window_end(end, window), end + window);
        // A zero width does not divide by zero.
        assert!(window_end(now, Duration::ZERO) > now);
        // An instant before the epoch waits one window at most.
        let early = now - Duration::from_secs(1);
        assert!(window_end(early, window) <= early + window);
    }

    /// Appends gathered in a window are written when it ends, and a drain waits for them.
    #[tokio::test]
    async fn gathered_appends_are_written_and_a_drain_waits_for_them() {
        for window in [Duration::ZERO, Duration::from_millis(20)] {
            let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
            let recording = Recording::new(Durability::Batched).with_window(window);
            let tenant = TenantId::new();
            let mut ids = Vec::new();
            for _ in 0..3 {
                let id = Uuid::now_v7();
                let event = Event::TenantCreated(TenantCreated {
                    name: "t".into(),
                    plan: "free".into(),
                })
                .to_new_event(Metadata::default())
                .unwrap();
                recording
                    .record_later(Later {
                        store: store.clone(),
                        tenant,
                        stream: StreamId::of("inference", id).unwrap(),
                        events: vec![event],
                        meter: Arc::new(Meter::default()),
                        id,
                        cost: 0,
                        tokens: 0,
                    })
                    .await;
                ids.push(id);
            }
            recording.drain().await;
            assert_eq!(store.head().await.unwrap().0, 3, "{window:?}");
            for id in ids {
                assert!(!recording.settled(id, Duration::ZERO).await, "{window:?}");
            }
        }
    }

    #[test]
    fn durability_parses_its_two_names_and_refuses_others() {
        assert_eq!("durable".parse(), Ok(Durability::Durable));
        assert_eq!("batched".parse(), Ok(Durability::Batched));
        for bad in ["", "Durable", "async", "batched "] {
            let error = bad.parse::<Durability>().unwrap_err();
            assert!(error.contains("\"durable\" or \"batched\""), "{error}");
        }
        assert_eq!(Durability::default(), Durability::Durable);
    }
}
