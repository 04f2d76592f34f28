//! The actor runtime: activates an actor on its first command, rebuilds it from its latest
//! snapshot plus the tail of its stream, feeds it commands one at a time through a bounded
//! mailbox, appends what it decides with the expected stream version (reloading and deciding
//! again on a conflict), snapshots it every N events and passivates it when idle.
//!
//! Each live actor is one tokio task that owns its state; the registry maps ids to mailboxes.
//! A task that dies (panic, store failure during activation) closes its mailbox, and the next
//! command starts a fresh one from the log: supervision by rehydration.
//!
//! Across nodes, two live copies of one actor may exist (one per node). The expected version on
//! every append keeps their writes honest, and every decision and every read is fenced too: the
//! actor first catches up to its stream's head (one indexed read of the events after its
//! version), so a no-op, a rejection or a read is never answered from a stale copy. A decision
//! is as current as that read; a write that lands after it makes the append conflict, and the
//! actor folds it and decides again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use switchyard_events::{
    Event, EventStore, ExpectedVersion, GlobalPosition, Metadata, Scope, Snapshot, StreamId,
    StreamVersion, TenantId, codec,
};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

mod metrics; // Prometheus metrics of the runtime

use crate::actor::Actor;
use crate::error::{Error, Result};
use metrics::ActorMetrics;

/// Events read per query while an actor catches up with its stream.
const REHYDRATION_PAGE: usize = 5_000;

/// Tuning of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Commands that may wait for one actor; further senders wait up to `send_timeout`.
    pub mailbox: usize,
    /// How long a sender waits for room in a full mailbox before `Overloaded`.
    pub send_timeout: Duration,
    /// Events between two snapshots of an actor.
    pub snapshot_every: u64,
    /// An actor that received nothing for this long is dropped from memory.
    pub idle_after: Duration,
    /// Decide-and-append attempts per command before giving up on a contended stream.
    pub max_attempts: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            mailbox: 64,
            send_timeout: Duration::from_secs(5),
            snapshot_every: 100,
            idle_after: Duration::from_secs(120),
            max_attempts: 5,
        }
    }
}

/// The runtime's clock (replaceable in tests).
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// What a carried-out command did.
#[derive(Debug, Clone)]
pub struct Applied<S> {
    /// The events appended (none when the command changed nothing).
    pub events: Vec<Event>,
    /// The stream version after the command.
    pub version: StreamVersion,
    /// The global position of the last appended event: a read-your-writes token.
    pub last_position: Option<GlobalPosition>,
    /// The actor's state after the command.
    pub state: S,
}

/// A live actor's mailbox. Messages are boxed: a channel allocates its first block of slots up
/// front, and boxed slots keep an idle actor's mailbox at a few hundred bytes.
type Mailbox<A> = mpsc::Sender<Box<Message<A>>>;

/// A state with the stream version it reflects.
type Versioned<S> = (S, StreamVersion);

enum Message<A: Actor> {
    Command {
        command: A::Command,
        metadata: Metadata,
        reply: oneshot::Sender<Result<Applied<A::State>, A::Rejection>>,
    },
    Read {
        reply: oneshot::Sender<Result<Versioned<A::State>, A::Rejection>>,
    },
}

/// Runs actors of one kind over an event store.
pub struct Runtime<A: Actor> {
    shared: Arc<Shared<A>>,
}

impl<A: Actor> Clone for Runtime<A> {
    fn clone(&self) -> Self {
        Runtime {
            shared: self.shared.clone(),
        }
    }
}

impl<A: Actor> std::fmt::Debug for Runtime<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("kind", &A::KIND)
            .field("live", &self.shared.actors.len())
            .finish()
    }
}

struct Shared<A: Actor> {
    store: Arc<dyn EventStore>,
    actors: DashMap<A::Id, Mailbox<A>>,
    config: RuntimeConfig,
    clock: Clock,
    metrics: ActorMetrics,
}

impl<A: Actor> Runtime<A> {
    /// A runtime over `store` with the system clock.
    pub fn new(store: Arc<dyn EventStore>, config: RuntimeConfig) -> Self {
        Self::with_clock(store, config, Arc::new(OffsetDateTime::now_utc))
    }

    /// A runtime with its own clock.
    pub fn with_clock(store: Arc<dyn EventStore>, config: RuntimeConfig, clock: Clock) -> Self {
        let metrics = metrics::actors(A::KIND);
        Runtime {
            shared: Arc::new(Shared {
                store,
                actors: DashMap::new(),
                config,
                clock,
                metrics,
            }),
        }
    }

    /// Carries out `command` on the actor `id` (activating it if needed).
    pub async fn send(
        &self,
        id: &A::Id,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Applied<A::State>, A::Rejection> {
        let span = tracing::debug_span!(
            "actor command",
            otel.name = %format_args!("{} command", A::KIND),
            switchyard.actor = A::KIND,
        );
        let command = async {
            let (reply, answer) = oneshot::channel();
            self.deliver(
                id,
                Box::new(Message::Command {
                    command,
                    metadata,
                    reply,
                }),
            )
            .await?;
            let outcome = answer.await.map_err(|_| Error::Stopped)?;
            self.shared.metrics.observe_command(&outcome);
            outcome
        };
        tracing::Instrument::instrument(command, span).await
    }

    /// The actor's current state and version (activating it if needed).
    pub async fn read(&self, id: &A::Id) -> Result<Versioned<A::State>, A::Rejection> {
        let (reply, answer) = oneshot::channel();
        self.deliver(id, Box::new(Message::Read { reply })).await?;
        answer.await.map_err(|_| Error::Stopped)?
    }

    /// Actors of this kind in memory now.
    pub fn live(&self) -> usize {
        self.shared.actors.len()
    }

    async fn deliver(&self, id: &A::Id, mut message: Box<Message<A>>) -> Result<(), A::Rejection> {
        // A mailbox can close between lookup and send (the actor passivated or crashed); then
        // the message comes back and goes to a fresh activation.
        for _ in 0..3 {
            let mailbox = self.mailbox(id);
            let depth = mailbox.max_capacity() - mailbox.capacity();
            self.shared.metrics.mailbox_depth.observe(depth as f64);
            match tokio::time::timeout(self.shared.config.send_timeout, mailbox.send(message)).await
            {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(mpsc::error::SendError(returned))) => {
                    self.shared
                        .actors
                        .remove_if(id, |_, current| current.same_channel(&mailbox));
                    message = returned;
                }
                Err(_elapsed) => return Err(Error::Overloaded),
            }
        }
        Err(Error::Stopped)
    }

    fn mailbox(&self, id: &A::Id) -> Mailbox<A> {
        if let Some(mailbox) = self.shared.actors.get(id)
            && !mailbox.is_closed()
        {
            return mailbox.clone();
        }
        let mut entry = self
            .shared
            .actors
            .entry(id.clone())
            .or_insert_with(|| self.activate(id));
        if entry.is_closed() {
            *entry = self.activate(id);
        }
        entry.clone()
    }

    fn activate(&self, id: &A::Id) -> Mailbox<A> {
        let (mailbox, inbox) = mpsc::channel(self.shared.config.mailbox);
        self.shared.metrics.activations.inc();
        tokio::spawn(run(self.shared.clone(), id.clone(), inbox));
        mailbox
    }
}

/// One live actor: its state and where it stands in its stream.
struct Cell<A: Actor> {
    tenant: TenantId,
    stream: StreamId,
    state: A::State,
    version: StreamVersion,
    since_snapshot: u64,
}

async fn run<A: Actor>(
    shared: Arc<Shared<A>>,
    id: A::Id,
    mut inbox: mpsc::Receiver<Box<Message<A>>>,
) {
    let started = Instant::now();
    let mut cell = match Cell::<A>::rehydrate(shared.store.as_ref(), &id).await {
        Ok(cell) => cell,
        Err(error) => {
            tracing::error!(kind = A::KIND, %id, %error, "actor activation failed");
            inbox.close();
            while let Some(message) = inbox.recv().await {
                fail(*message, &error);
            }
            return;
        }
    };
    shared
        .metrics
        .rehydration_seconds
        .observe(started.elapsed().as_secs_f64());
    shared.metrics.live.inc();
    tracing::debug!(kind = A::KIND, %id, version = %cell.version, "actor activated");
    loop {
        let message = tokio::select! {
            message = inbox.recv() => message,
            () = tokio::time::sleep(shared.config.idle_after) => None,
        };
        let Some(message) = message else { break };
        cell.handle(&shared, message).await;
    }
    // Passivate: refuse new messages, finish the ones already accepted, leave the registry.
    inbox.close();
    while let Some(message) = inbox.recv().await {
        cell.handle(&shared, message).await;
    }
    shared
        .actors
        .remove_if(&id, |_, mailbox| mailbox.is_closed());
    shared.metrics.live.dec();
    tracing::debug!(kind = A::KIND, %id, "actor passivated");
}

fn fail<A: Actor>(message: Message<A>, error: &Error<A::Rejection>) {
    let unavailable = || Error::Store(switchyard_events::Error::Unavailable(error.to_string()));
    match message {
        Message::Command { reply, .. } => {
            let _ = reply.send(Err(unavailable()));
        }
        Message::Read { reply } => {
            let _ = reply.send(Err(unavailable()));
        }
    }
}

impl<A: Actor> Cell<A> {
    async fn rehydrate(store: &dyn EventStore, id: &A::Id) -> Result<Self, A::Rejection> {
        let stream = StreamId::of(A::KIND, id)?;
        let mut cell = Cell {
            tenant: A::tenant(id),
            stream,
            state: A::State::default(),
            version: StreamVersion::NONE,
            since_snapshot: 0,
        };
        if let Some(snapshot) = store.load_snapshot(Scope::All, &cell.stream).await?
            && snapshot.schema_version == A::SNAPSHOT_VERSION
        {
            match codec::decode::<A::State>(A::KIND, &snapshot.payload) {
                Ok(state) => {
                    cell.state = state;
                    cell.version = snapshot.version;
                }
                Err(error) => {
                    tracing::warn!(kind = A::KIND, %id, %error, "ignoring an unreadable snapshot")
                }
            }
        }
        cell.catch_up(store).await?;
        Ok(cell)
    }

    /// Folds every event after the cell's version.
    async fn catch_up(&mut self, store: &dyn EventStore) -> Result<(), A::Rejection> {
        loop {
            let page = store
                .read_stream(Scope::All, &self.stream, self.version, REHYDRATION_PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            let last = last.stream_version;
            for recorded in &page {
                A::apply(&mut self.state, &Event::from_recorded(recorded)?);
                self.since_snapshot += 1;
            }
            self.version = last;
        }
    }

    async fn handle(&mut self, shared: &Shared<A>, message: Box<Message<A>>) {
        match *message {
            Message::Command {
                command,
                metadata,
                reply,
            } => {
                let outcome = self.command(shared, command, metadata).await;
                let _ = reply.send(outcome);
            }
            Message::Read { reply } => {
                // Another node may have written since: answer from the stream's head.
                let outcome = self
                    .catch_up(shared.store.as_ref())
                    .await
                    .map(|()| (self.state.clone(), self.version));
                let _ = reply.send(outcome);
            }
        }
    }

    async fn command(
        &mut self,
        shared: &Shared<A>,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Applied<A::State>, A::Rejection> {
        let store = shared.store.as_ref();
        // Decide on the stream's head, not on this copy: another node may have written since.
        self.catch_up(store).await?;
        for _attempt in 0..shared.config.max_attempts {
            let events = A::decide(&self.state, command.clone(), (shared.clock)())
                .map_err(Error::Rejected)?;
            if events.is_empty() {
                return Ok(Applied {
                    events,
                    version: self.version,
                    last_position: None,
                    state: self.state.clone(),
                });
            }
            let new_events = events
                .iter()
                .map(|e| e.to_new_event(metadata.clone()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let expected = if self.version == StreamVersion::NONE {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(self.version)
            };
            match store
                .append(self.tenant, &self.stream, expected, new_events)
                .await
            {
                Ok(appended) => {
                    for event in &events {
                        A::apply(&mut self.state, event);
                    }
                    self.version = appended.stream_version;
                    self.since_snapshot += events.len() as u64;
                    self.snapshot_if_due(shared).await;
                    return Ok(Applied {
                        events,
                        version: self.version,
                        last_position: Some(appended.last_position()),
                        state: self.state.clone(),
                    });
                }
                Err(error) if error.is_conflict() => {
                    // Another writer (another node, or a copy of this actor) got there first:
                    // learn what it wrote and decide again.
                    shared.metrics.conflicts.inc();
                    self.catch_up(store).await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Contended {
            attempts: shared.config.max_attempts,
        })
    }

    async fn snapshot_if_due(&mut self, shared: &Shared<A>) {
        if self.since_snapshot < shared.config.snapshot_every {
            return;
        }
        let saved = match codec::encode(&self.state) {
            Ok(payload) => {
                let snapshot = Snapshot {
                    version: self.version,
                    schema_version: A::SNAPSHOT_VERSION,
                    payload,
                };
                shared
                    .store
                    .save_snapshot(self.tenant, &self.stream, snapshot)
                    .await
            }
            Err(error) => Err(error),
        };
        match saved {
            Ok(()) => self.since_snapshot = 0,
            // A snapshot is only a cache: the actor goes on, and tries again at the next event.
            Err(error) => {
                tracing::warn!(kind = A::KIND, stream = %self.stream, %error, "snapshot failed")
            }
        }
    }
}
