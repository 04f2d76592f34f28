//! The server's one tail of the log, fanned out to every feed: events encoded once into a
//! bounded broadcast ring, and each feed's catch-up from the log, its filter and its
//! slow-consumer policy (transport-neutral: the SSE and WebSocket writers format the items).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use serde::Deserialize;
use switchyard_events::{EventStore, GlobalPosition, RecordedEvent, Scope, TenantId};
use tokio::sync::broadcast;

/// Events per catch-up read.
const PAGE: usize = 256;

/// One event, encoded once for every connection.
#[derive(Debug)]
pub struct Frame {
    pub position: u64,
    pub tenant: TenantId,
    pub event_type: String,
    /// The event's JSON form (envelope and data).
    pub json: Bytes,
}

impl Frame {
    fn of(event: &RecordedEvent) -> Frame {
        // The same JSON as the NATS relay publishes.
        let json = switchyard_projections::relay::payload(event);
        Frame {
            position: event.global_position.0,
            tenant: event.tenant_id,
            event_type: event.event_type.clone(),
            json: Bytes::from(json),
        }
    }

    pub(super) fn sse(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.json.len() + self.event_type.len() + 40);
        out.extend_from_slice(
            format!("id: {}\nevent: {}\ndata: ", self.position, self.event_type).as_bytes(),
        );
        out.extend_from_slice(&self.json);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

pub(super) struct Metrics {
    connections: IntGaugeVec,
    buffered: IntGaugeVec,
    dropped: IntCounterVec,
    pub(super) sent: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(collector: T) -> T {
    let _ = prometheus::register(Box::new(collector.clone()));
    collector
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a bad one is a programming error caught by every test"
)]
pub(super) static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    connections: register(
        IntGaugeVec::new(
            Opts::new("switchyard_subscriber_connections", "Open event-feed connections"),
            &["transport"],
        )
        .expect("valid metric"),
    ),
    buffered: register(
        IntGaugeVec::new(
            Opts::new(
                "switchyard_subscriber_buffer_depth",
                "Events waiting in the ring for event-feed connections (sum over connections)",
            ),
            &["transport"],
        )
        .expect("valid metric"),
    ),
    dropped: register(
        IntCounterVec::new(
            Opts::new(
                "switchyard_subscriber_dropped_total",
                "Events a slow event-feed client missed (drop_oldest) or was disconnected for (disconnect)",
            ),
            &["transport", "policy"],
        )
        .expect("valid metric"),
    ),
    sent: register(
        IntCounterVec::new(
            Opts::new("switchyard_subscriber_sent_total", "Events sent to event-feed clients"),
            &["transport"],
        )
        .expect("valid metric"),
    ),
}
});

/// The server's one tail of the log, fanned out to every feed.
#[derive(Debug, Clone)]
pub struct EventHub {
    pub(super) store: Arc<dyn EventStore>,
    ring: broadcast::Sender<Arc<Frame>>,
    heartbeat: Duration,
}

impl EventHub {
    /// Starts the hub at the current head, with a ring of `capacity` events.
    pub async fn start(
        store: Arc<dyn EventStore>,
        capacity: usize,
        heartbeat: Duration,
    ) -> anyhow::Result<EventHub> {
        let (ring, _) = broadcast::channel(capacity.max(16));
        let head = store.head().await?;
        let hub = EventHub {
            store: store.clone(),
            ring: ring.clone(),
            heartbeat,
        };
        tokio::spawn(async move {
            let mut at = head;
            loop {
                let mut events = store.subscribe_all(Scope::All, at);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => {
                            at = event.global_position;
                            // With no feed open, nothing is encoded: a feed that opens later
                            // catches up from the log itself.
                            if ring.receiver_count() > 0 {
                                let _ = ring.send(Arc::new(Frame::of(&event)));
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "event hub: log subscription failed; resubscribing");
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(hub)
    }
}

/// What a client falling behind the ring gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlowPolicy {
    Disconnect,
    DropOldest,
}

impl SlowPolicy {
    fn label(self) -> &'static str {
        match self {
            SlowPolicy::Disconnect => "disconnect",
            SlowPolicy::DropOldest => "drop_oldest",
        }
    }
}

/// Whether the key that opened a feed still may read it: `Some(reason)` once it is revoked or
/// expired, or its tenant suspended.
pub type KeyCheck = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// How often an open feed checks its key (a revoked key's feed ends within this).
const KEY_CHECK: Duration = Duration::from_millis(250);

/// A feed's filter and position.
#[derive(Clone)]
pub struct Feed {
    pub tenant: TenantId,
    pub types: Option<Vec<String>>,
    pub after: u64,
    pub policy: SlowPolicy,
    /// The key that opened the feed, checked while it is open.
    pub key: KeyCheck,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("tenant", &self.tenant)
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl Feed {
    fn wants(&self, event_type: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event_type))
    }
}

/// What a feed produces, transport-neutral: the SSE and WebSocket writers format it.
#[derive(Debug, Clone)]
pub enum Item {
    Event(Arc<Frame>),
    /// The client fell behind and missed `dropped` events after `resume_from`.
    Gap {
        dropped: u64,
        resume_from: u64,
    },
    /// The client fell behind; the feed ends; reconnect from `resume_from`.
    SlowConsumer {
        resume_from: u64,
    },
    /// The key that opened the feed may no longer read it; the feed ends.
    Closed {
        reason: String,
    },
    Heartbeat,
}

struct State {
    hub: EventHub,
    feed: Feed,
    ring: broadcast::Receiver<Arc<Frame>>,
    catching_up: bool,
    page: std::collections::VecDeque<Arc<Frame>>,
    done: bool,
    transport: &'static str,
    reported_depth: i64,
    /// When the last item went out (a heartbeat is due after `hub.heartbeat` of silence).
    last_sent: std::time::Instant,
}

impl Drop for State {
    fn drop(&mut self) {
        METRICS
            .connections
            .with_label_values(&[self.transport])
            .dec();
        METRICS
            .buffered
            .with_label_values(&[self.transport])
            .sub(self.reported_depth);
    }
}

impl State {
    fn report_depth(&mut self) {
        let depth = i64::try_from(self.ring.len()).unwrap_or(i64::MAX);
        METRICS
            .buffered
            .with_label_values(&[self.transport])
            .add(depth - self.reported_depth);
        self.reported_depth = depth;
    }

    async fn next(&mut self) -> Option<Item> {
        let item = self.next_item().await;
        self.last_sent = std::time::Instant::now();
        item
    }

    async fn next_item(&mut self) -> Option<Item> {
        if self.done {
            return None;
        }
        loop {
            if let Some(reason) = (self.feed.key)() {
                self.done = true;
                return Some(Item::Closed { reason });
            }
            if let Some(frame) = self.page.pop_front() {
                self.feed.after = frame.position;
                if self.feed.wants(&frame.event_type) {
                    return Some(Item::Event(frame));
                }
                continue;
            }
            if self.catching_up {
                let page = self
                    .hub
                    .store
                    .read_all(
                        Scope::Tenant(self.feed.tenant),
                        GlobalPosition(self.feed.after),
                        PAGE,
                    )
                    .await;
                match page {
                    Ok(page) if page.is_empty() => self.catching_up = false,
                    Ok(page) => self
                        .page
                        .extend(page.iter().map(|e| Arc::new(Frame::of(e)))),
                    Err(error) => {
                        tracing::warn!(%error, "event feed: catch-up read failed; closing");
                        self.done = true;
                        return Some(Item::SlowConsumer {
                            resume_from: self.feed.after,
                        });
                    }
                }
                continue;
            }
            // Wake at least every KEY_CHECK, so a revoked key's feed ends at once.
            let received = tokio::time::timeout(KEY_CHECK, self.ring.recv()).await;
            self.report_depth();
            match received {
                Err(_) if self.last_sent.elapsed() >= self.hub.heartbeat => {
                    return Some(Item::Heartbeat);
                }
                Err(_) => {}
                Ok(Ok(frame)) => {
                    if frame.tenant != self.feed.tenant || frame.position <= self.feed.after {
                        continue;
                    }
                    self.feed.after = frame.position;
                    if self.feed.wants(&frame.event_type) {
                        return Some(Item::Event(frame));
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(missed))) => {
                    METRICS
                        .dropped
                        .with_label_values(&[self.transport, self.feed.policy.label()])
                        .inc_by(missed);
                    return Some(match self.feed.policy {
                        SlowPolicy::Disconnect => {
                            self.done = true;
                            Item::SlowConsumer {
                                resume_from: self.feed.after,
                            }
                        }
                        SlowPolicy::DropOldest => Item::Gap {
                            dropped: missed,
                            resume_from: self.feed.after,
                        },
                    });
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    self.done = true;
                    return Some(Item::SlowConsumer {
                        resume_from: self.feed.after,
                    });
                }
            }
        }
    }
}

/// The items of a feed, produced only as fast as they are pulled.
pub fn items(
    hub: &EventHub,
    feed: Feed,
    transport: &'static str,
) -> impl futures_util::Stream<Item = Item> + use<> {
    METRICS.connections.with_label_values(&[transport]).inc();
    let state = State {
        ring: hub.ring.subscribe(),
        hub: hub.clone(),
        catching_up: true,
        feed,
        page: std::collections::VecDeque::new(),
        done: false,
        transport,
        reported_depth: 0,
        last_sent: std::time::Instant::now(),
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    })
}
