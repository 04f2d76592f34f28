//! When an inference's answer may go out relative to its events reaching the log, chosen by the
//! operator like PostgreSQL's `synchronous_commit`:
//!
//! - [`Durability::Durable`] (the default): the answer waits until the group commit that holds
//!   the inference's events is on disk (fsync). A crash loses no answered inference.
//! - [`Durability::Batched`]: the answer goes out at once and its events join the next group
//!   commit in the background. A crash (`kill -9`, power loss) loses the inferences whose commit
//!   had not finished: at most [`IN_FLIGHT`] of them, in practice the few of the last commit
//!   window. The budget gate is unaffected (it reserves and settles in memory before the
//!   answer), so it never admits more than the budget; a lost record is spend that is neither
//!   logged nor billed. The answer carries no `x-switchyard-position` (there is none yet).
//!
//! Workflow steps always record durably: their inference id is derived from the run, and a
//! step repeated after a crash must find its inference in the log.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::LazyLock;

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts};
use switchyard_events::{EventStore, ExpectedVersion, NewEvent, StreamId, TenantId};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::record::RecordForm;
use crate::admission::meter::Meter;

/// Most inferences answered but not yet committed, in `batched` mode: a request waits for a
/// place when the log falls this far behind, which bounds both memory and what a crash loses.
pub const IN_FLIGHT: u32 = 1024;

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
        Box::new(pending.clone()),
        Box::new(lost.clone()),
    ] {
        let _ = prometheus::register(collector);
    }
    RecordingMetrics {
        mode,
        form,
        pending,
        lost,
    }
});

/// The pipeline's recording mode and, in `batched` mode, the appends still in flight.
#[derive(Debug, Clone)]
pub struct Recording {
    mode: Durability,
    form: RecordForm,
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
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT as usize)),
            pending: Arc::default(),
        };
        recording.publish_form();
        recording
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
        tokio::spawn(async move {
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
    use super::Durability;

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
