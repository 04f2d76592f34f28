//! The server's one subscription to the log: every in-memory fold that the request path reads
//! (the key index, the budget meter, the router's bandit state, the billing feed) is a
//! [`Folder`] fed from it, so the log is tailed once per process, whatever the number of folds.
//!
//! A subscription that fails (the store's own retries of transient errors gave up) is taken up
//! again from the last event folded, with backoff; while it is down the [`Follower`] says so
//! (the server's `/readyz` answers 503, the metric `switchyard_log_follower_failures_total`
//! counts the failures), so a node whose folds stopped is taken out of the load balancer
//! instead of answering from a frozen copy of keys, limits and spend.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use switchyard_events::{EventStore, GlobalPosition, RecordedEvent, Scope};

/// Something kept current from the log by the one subscription the server follows.
pub trait Folder: Send + Sync {
    /// Folds one committed event (every event passes; take only what concerns you).
    fn fold(&self, recorded: &RecordedEvent);
}

/// One inference's outcome as its last event records it (the meter and the billing feed fold
/// these): stream `inference-<id>`, `InferenceCompleted` or `InferenceFailed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferenceOutcome {
    pub id: uuid::Uuid,
    pub model: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_micros: u64,
    /// The request, which the outcome carries since v2 (`None` for a v1 event: the stream's
    /// `InferenceRequested` holds it).
    pub request: Option<switchyard_events::InferenceRequested>,
}

impl InferenceOutcome {
    /// The outcome an event records, or `None` for any other event.
    pub fn of(recorded: &RecordedEvent) -> Option<Self> {
        if !matches!(
            recorded.event_type.as_str(),
            "InferenceCompleted" | "InferenceFailed"
        ) {
            return None;
        }
        let id = recorded
            .stream_id
            .as_str()
            .strip_prefix("inference-")?
            .parse()
            .ok()?;
        let (model, tokens_in, tokens_out, cost_micros, request) =
            match switchyard_events::Event::from_recorded(recorded).ok()? {
                switchyard_events::Event::InferenceCompleted(e) => {
                    (e.model, e.tokens_in, e.tokens_out, e.cost_micros, e.request)
                }
                switchyard_events::Event::InferenceFailed(e) => {
                    (e.model, e.tokens_in, e.tokens_out, e.cost_micros, e.request)
                }
                _ => return None,
            };
        Some(InferenceOutcome {
            id,
            model,
            tokens_in,
            tokens_out,
            cost_micros,
            request,
        })
    }
}

/// Where the folds stand: the last position folded, and whether the subscription is up.
#[derive(Debug)]
pub struct Follower {
    position: AtomicU64,
    healthy: AtomicBool,
}

impl Follower {
    /// The position of the last event folded.
    pub fn position(&self) -> GlobalPosition {
        GlobalPosition(self.position.load(Ordering::Acquire))
    }

    /// Whether the subscription is up (false while it is being taken up again).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

#[expect(
    clippy::expect_used,
    reason = "a static metric definition; a bad one fails every test"
)]
static FAILURES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    let counter = prometheus::IntCounter::new(
        "switchyard_log_follower_failures_total",
        "Times the in-memory folds' log subscription failed and was taken up again",
    )
    .expect("valid metric");
    let _ = prometheus::register(Box::new(counter.clone()));
    counter
});

/// Folds the whole log into `folders`, returns once they are caught up to the head it read at
/// the start (so a restarted server knows every key and every settled spend at once), and keeps
/// them current in a background task that takes the subscription up again when it fails.
pub async fn follow(
    store: Arc<dyn EventStore>,
    folders: Vec<Arc<dyn Folder>>,
) -> crate::Result<Arc<Follower>> {
    follow_with(store, folders, Duration::from_millis(100)).await
}

/// [`follow`] with the first wait before a failed subscription is taken up again (doubling
/// up to 5 s).
pub async fn follow_with(
    store: Arc<dyn EventStore>,
    folders: Vec<Arc<dyn Folder>>,
    first_backoff: Duration,
) -> crate::Result<Arc<Follower>> {
    let follower = Arc::new(Follower {
        position: AtomicU64::new(0),
        healthy: AtomicBool::new(true),
    });
    let mut events = store.subscribe_all(Scope::All, GlobalPosition::START);
    let head = store.head().await?;
    while follower.position() < head {
        let Some(event) = events.next().await else {
            break;
        };
        let event = event?;
        for folder in &folders {
            folder.fold(&event);
        }
        follower
            .position
            .store(event.global_position.0, Ordering::Release);
    }
    let state = follower.clone();
    tokio::spawn(async move {
        let mut backoff = first_backoff;
        loop {
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => {
                        for folder in &folders {
                            folder.fold(&event);
                        }
                        state
                            .position
                            .store(event.global_position.0, Ordering::Release);
                        backoff = first_backoff;
                    }
                    Err(error) => {
                        tracing::error!(%error, position = %state.position(), "the in-memory folds' log subscription failed; taking it up again");
                        break;
                    }
                }
            }
            state.healthy.store(false, Ordering::Release);
            FAILURES.inc();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            if store.head().await.is_ok() {
                events = store.subscribe_all(Scope::All, state.position());
                state.healthy.store(true, Ordering::Release);
                tracing::info!(position = %state.position(), "the in-memory folds follow the log again");
            }
        }
    });
    Ok(follower)
}
