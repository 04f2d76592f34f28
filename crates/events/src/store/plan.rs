//! The pure heart of every append: given a batch of append requests and what the store already
//! holds for them, decide which succeed and where each new event goes.
//!
//! All three backends run this same function inside their write transaction, so optimistic
//! concurrency, idempotency and tenant ownership are decided in one place. The expected version is
//! checked *before* any position is handed out, so a losing writer burns no position.

use std::collections::{HashMap, HashSet};

use crate::envelope::{MAX_APPEND_BYTES, NewEvent, Snapshot};
use crate::error::{Error, Result};
use crate::ids::{EventId, GlobalPosition, StreamId, StreamVersion, TenantId};
use crate::store::{AppendResult, ExpectedVersion, StreamMetadata};

/// One append, as a caller asked for it.
#[derive(Debug)]
pub(crate) struct Pending {
    pub tenant: TenantId,
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

impl Pending {
    /// Checks what can be checked without the store: done in the caller's task, so the writer
    /// only sees well-formed requests.
    pub fn new(
        tenant: TenantId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Self> {
        if events.is_empty() {
            return Err(Error::InvalidEvent(
                "an append needs at least one event".into(),
            ));
        }
        let bytes: usize = events.iter().map(|e| e.payload.len()).sum();
        if bytes > MAX_APPEND_BYTES {
            return Err(Error::InvalidEvent(format!(
                "an append of {bytes} payload bytes is larger than the limit of {MAX_APPEND_BYTES}"
            )));
        }
        let mut ids = HashSet::with_capacity(events.len());
        for event in &events {
            event.validate()?;
            if !ids.insert(event.event_id) {
                return Err(Error::InvalidEvent(format!(
                    "event id {} appears twice in one append",
                    event.event_id
                )));
            }
        }
        Ok(Pending {
            tenant,
            stream: stream.clone(),
            expected,
            events,
        })
    }

    /// Payload bytes of the append.
    pub fn bytes(&self) -> usize {
        self.events.iter().map(|e| e.payload.len()).sum()
    }
}

/// Where an already-stored event lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredAt {
    pub tenant: TenantId,
    pub stream: StreamId,
    pub version: StreamVersion,
    pub position: GlobalPosition,
}

/// What the store holds that the batch touches: read inside the write transaction.
#[derive(Debug, Default)]
pub(crate) struct Known {
    /// Current metadata of the batch's streams that exist.
    pub streams: HashMap<StreamId, StreamMetadata>,
    /// Stored events whose ids appear in the batch.
    pub events: HashMap<EventId, StoredAt>,
    /// The position the next new event gets.
    pub next_position: u64,
}

/// A new event row to insert.
#[derive(Debug)]
pub(crate) struct Row<'a> {
    pub event: &'a NewEvent,
    pub tenant: TenantId,
    pub stream: &'a StreamId,
    pub version: StreamVersion,
    pub position: GlobalPosition,
}

/// The decision for a whole batch.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// Rows to insert, in position order.
    pub rows: Vec<Row<'a>>,
    /// Streams whose version changed (or that are new), with their final metadata.
    pub streams: Vec<(&'a StreamId, StreamMetadata)>,
    /// One outcome per request, in request order.
    pub outcomes: Vec<Result<AppendResult>>,
}

impl Plan<'_> {
    /// The position of the last new row, if any.
    pub fn head(&self) -> Option<GlobalPosition> {
        self.rows.last().map(|row| row.position)
    }
}

/// Every event id of the batch (to look up [`Known::events`]).
pub(crate) fn event_ids(batch: &[&Pending]) -> Vec<EventId> {
    batch
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.event_id))
        .collect()
}

/// Every distinct stream of the batch (to look up [`Known::streams`]).
pub(crate) fn stream_ids<'a>(batch: &[&'a Pending]) -> Vec<&'a StreamId> {
    let mut seen = HashSet::new();
    batch
        .iter()
        .map(|p| &p.stream)
        .filter(|s| seen.insert(*s))
        .collect()
}

/// Decides the batch. Requests are taken in order, each seeing the effect of the ones before.
pub(crate) fn plan<'a>(batch: &[&'a Pending], mut known: Known) -> Plan<'a> {
    let mut rows = Vec::new();
    let mut changed: Vec<&'a StreamId> = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        let outcome = plan_one(request, &mut known, &mut rows);
        if matches!(
            outcome,
            Ok(AppendResult {
                deduplicated: false,
                ..
            })
        ) && !changed.contains(&&request.stream)
        {
            changed.push(&request.stream);
        }
        outcomes.push(outcome);
    }
    let streams = changed
        .into_iter()
        .filter_map(|stream| known.streams.get(stream).map(|meta| (stream, *meta)))
        .collect();
    Plan {
        rows,
        streams,
        outcomes,
    }
}

fn plan_one<'a>(
    request: &'a Pending,
    known: &mut Known,
    rows: &mut Vec<Row<'a>>,
) -> Result<AppendResult> {
    let stored: Vec<Option<&StoredAt>> = request
        .events
        .iter()
        .map(|e| known.events.get(&e.event_id))
        .collect();
    if stored.iter().any(Option::is_some) {
        return replayed(request, &stored);
    }

    let current = known.streams.get(&request.stream).copied();
    if let Some(meta) = current
        && meta.tenant_id != request.tenant
    {
        return Err(Error::WrongTenant {
            stream: request.stream.clone(),
            tenant: request.tenant,
        });
    }
    let actual = current.map_or(StreamVersion::NONE, |meta| meta.version);
    let admitted = match request.expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual == StreamVersion::NONE,
        ExpectedVersion::Exact(expected) => actual == expected,
    };
    if !admitted {
        return Err(Error::WrongExpectedVersion {
            stream: request.stream.clone(),
            expected: request.expected,
            actual,
        });
    }

    let mut version = actual;
    let mut positions = Vec::with_capacity(request.events.len());
    for event in &request.events {
        version = version.next();
        let position = GlobalPosition(known.next_position);
        known.next_position += 1;
        known.events.insert(
            event.event_id,
            StoredAt {
                tenant: request.tenant,
                stream: request.stream.clone(),
                version,
                position,
            },
        );
        rows.push(Row {
            event,
            tenant: request.tenant,
            stream: &request.stream,
            version,
            position,
        });
        positions.push(position);
    }
    known.streams.insert(
        request.stream.clone(),
        StreamMetadata {
            tenant_id: request.tenant,
            version,
        },
    );
    Ok(AppendResult {
        positions,
        stream_version: version,
        deduplicated: false,
    })
}

/// Some event ids are stored already: this is a retry of an earlier append only if *all* of them
/// are, in this stream, in the same order, one after the other.
fn replayed(request: &Pending, stored: &[Option<&StoredAt>]) -> Result<AppendResult> {
    let mut positions = Vec::with_capacity(stored.len());
    let mut previous: Option<StreamVersion> = None;
    for (event, at) in request.events.iter().zip(stored) {
        let conflict = || Error::IdempotencyConflict {
            stream: request.stream.clone(),
            event_id: event.event_id,
        };
        let at = at.ok_or_else(conflict)?;
        if at.tenant != request.tenant {
            return Err(Error::WrongTenant {
                stream: at.stream.clone(),
                tenant: request.tenant,
            });
        }
        let in_sequence = previous.is_none_or(|prev| at.version == prev.next());
        if at.stream != request.stream || !in_sequence {
            return Err(conflict());
        }
        previous = Some(at.version);
        positions.push(at.position);
    }
    Ok(AppendResult {
        positions,
        stream_version: previous.unwrap_or_default(),
        deduplicated: true,
    })
}

/// The checks of `save_snapshot` that every backend makes before writing: the stream exists,
/// belongs to `tenant`, and has the events the snapshot claims to cover.
pub(crate) fn check_snapshot(
    tenant: TenantId,
    stream: &StreamId,
    snapshot: &Snapshot,
    current: Option<StreamMetadata>,
) -> Result<()> {
    let actual = match current {
        Some(meta) if meta.tenant_id != tenant => {
            return Err(Error::WrongTenant {
                stream: stream.clone(),
                tenant,
            });
        }
        Some(meta) => meta.version,
        None => StreamVersion::NONE,
    };
    if snapshot.version == StreamVersion::NONE {
        return Err(Error::InvalidEvent(
            "a snapshot covers at least one event".into(),
        ));
    }
    if snapshot.version > actual {
        return Err(Error::SnapshotAhead {
            stream: stream.clone(),
            version: snapshot.version,
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::envelope::Metadata;

    fn new_event() -> NewEvent {
        NewEvent {
            event_id: EventId::new(),
            event_type: "Test".into(),
            schema_version: 1,
            payload: Bytes::from_static(b"\x01"),
            metadata: Metadata::default(),
        }
    }

    fn pending(tenant: TenantId, stream: &str, expected: ExpectedVersion, n: usize) -> Pending {
        let stream = StreamId::parse(stream).unwrap();
        Pending::new(
            tenant,
            &stream,
            expected,
            (0..n).map(|_| new_event()).collect(),
        )
        .unwrap()
    }

    fn known(next_position: u64) -> Known {
        Known {
            next_position,
            ..Known::default()
        }
    }

    #[test]
    fn requests_in_one_batch_see_each_other() {
        let t = TenantId::new();
        let a = pending(t, "s-1", ExpectedVersion::NoStream, 2);
        let b = pending(t, "s-1", ExpectedVersion::Exact(StreamVersion(2)), 1);
        let c = pending(t, "s-1", ExpectedVersion::Exact(StreamVersion(2)), 1);
        let plan = plan(&[&a, &b, &c], known(10));
        assert_eq!(
            plan.outcomes[0].as_ref().unwrap().positions,
            vec![GlobalPosition(10), GlobalPosition(11)]
        );
        assert_eq!(
            plan.outcomes[1].as_ref().unwrap().stream_version,
            StreamVersion(3)
        );
        assert!(plan.outcomes[2].as_ref().unwrap_err().is_conflict());
        assert_eq!(plan.rows.len(), 3);
        assert_eq!(plan.streams.len(), 1);
        assert_eq!(plan.streams[0].1.version, StreamVersion(3));
    }

    #[test]
    fn a_loser_burns_no_position() {
        let t = TenantId::new();
        let loser = pending(t, "s-1", ExpectedVersion::Exact(StreamVersion(5)), 1);
        let winner = pending(t, "s-2", ExpectedVersion::NoStream, 1);
        let plan = plan(&[&loser, &winner], known(1));
        assert!(plan.outcomes[0].is_err());
        assert_eq!(
            plan.outcomes[1].as_ref().unwrap().positions,
            vec![GlobalPosition(1)]
        );
    }

    #[test]
    fn a_retry_in_the_same_batch_is_deduplicated() {
        let t = TenantId::new();
        let first = pending(t, "s-1", ExpectedVersion::NoStream, 2);
        let retry = Pending {
            events: first.events.clone(),
            ..pending(t, "s-1", ExpectedVersion::NoStream, 1)
        };
        let plan = plan(&[&first, &retry], known(1));
        let original = plan.outcomes[0].as_ref().unwrap();
        let replay = plan.outcomes[1].as_ref().unwrap();
        assert!(replay.deduplicated);
        assert_eq!(replay.positions, original.positions);
        assert_eq!(plan.rows.len(), 2);
    }

    #[test]
    fn partial_overlap_or_another_stream_is_a_conflict() {
        let t = TenantId::new();
        let first = pending(t, "s-1", ExpectedVersion::Any, 2);
        let mut partial = pending(t, "s-1", ExpectedVersion::Any, 2);
        partial.events[0] = first.events[0].clone();
        let mut elsewhere = pending(t, "s-2", ExpectedVersion::Any, 1);
        elsewhere.events[0] = first.events[1].clone();
        let mut reordered = pending(t, "s-1", ExpectedVersion::Any, 2);
        reordered.events = vec![first.events[1].clone(), first.events[0].clone()];
        let plan = plan(&[&first, &partial, &elsewhere, &reordered], known(1));
        for outcome in &plan.outcomes[1..] {
            assert!(
                matches!(outcome, Err(Error::IdempotencyConflict { .. })),
                "{outcome:?}"
            );
        }
        assert_eq!(plan.rows.len(), 2);
    }

    #[test]
    fn another_tenant_cannot_replay_someone_elses_append() {
        let owner = pending(TenantId::new(), "s-1", ExpectedVersion::Any, 2);
        let replay = Pending {
            tenant: TenantId::new(),
            events: owner.events.clone(),
            ..pending(TenantId::new(), "s-1", ExpectedVersion::Any, 1)
        };
        let plan = plan(&[&owner, &replay], known(1));
        assert!(
            matches!(plan.outcomes[1], Err(Error::WrongTenant { .. })),
            "{:?}",
            plan.outcomes[1]
        );
    }

    #[test]
    fn oversized_appends_are_refused() {
        let t = TenantId::new();
        let stream = StreamId::parse("s-1").unwrap();
        let events: Vec<NewEvent> = (0..17)
            .map(|_| NewEvent {
                payload: Bytes::from(vec![0u8; crate::MAX_PAYLOAD_BYTES]),
                ..new_event()
            })
            .collect();
        assert!(matches!(
            Pending::new(t, &stream, ExpectedVersion::Any, events),
            Err(Error::InvalidEvent(_))
        ));
    }

    #[test]
    fn a_stream_keeps_its_tenant() {
        let first = pending(TenantId::new(), "s-1", ExpectedVersion::Any, 1);
        let other = pending(TenantId::new(), "s-1", ExpectedVersion::Any, 1);
        let plan = plan(&[&first, &other], known(1));
        assert!(matches!(plan.outcomes[1], Err(Error::WrongTenant { .. })));
    }

    #[test]
    fn malformed_requests_are_refused_before_the_writer() {
        let t = TenantId::new();
        let stream = StreamId::parse("s-1").unwrap();
        assert!(Pending::new(t, &stream, ExpectedVersion::Any, vec![]).is_err());
        let e = new_event();
        assert!(Pending::new(t, &stream, ExpectedVersion::Any, vec![e.clone(), e]).is_err());
    }
}
