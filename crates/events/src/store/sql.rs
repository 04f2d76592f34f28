//! What the two SQL backends share: the column list and the row decoder.

use bytes::Bytes;
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use crate::envelope::{Metadata, RecordedEvent, Snapshot, timestamp_from_micros};
use crate::error::{Error, Result};
use crate::ids::{EventId, GlobalPosition, StreamId, StreamVersion, TenantId};
use crate::store::plan::StoredAt;
use crate::store::{StreamMetadata, from_sql};

/// The columns of `events`, in the order [`decode_event`] reads them.
pub(crate) const EVENT_COLUMNS: &str = "global_position, event_id, tenant_id, stream_id, stream_version, \
     event_type, schema_version, recorded_at_us, correlation_id, causation_id, traceparent, tracestate, payload, actor";

/// Decodes one `events` row selected with [`EVENT_COLUMNS`].
pub(crate) fn decode_event<'r, R>(row: &'r R) -> Result<RecordedEvent>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
    Uuid: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    Option<Uuid>: Decode<'r, R::Database> + Type<R::Database>,
    &'r [u8]: Decode<'r, R::Database> + Type<R::Database>,
{
    let schema_version: i32 = row.try_get(6)?;
    Ok(RecordedEvent {
        global_position: GlobalPosition(from_sql(row.try_get(0)?, "global_position")?),
        event_id: EventId::from_uuid(row.try_get(1)?),
        tenant_id: TenantId::from_uuid(row.try_get(2)?),
        stream_id: StreamId::from_stored(row.try_get(3)?),
        stream_version: StreamVersion(from_sql(row.try_get(4)?, "stream_version")?),
        event_type: row.try_get(5)?,
        schema_version: u16::try_from(schema_version)
            .map_err(|_| Error::decode("schema_version", schema_version))?,
        recorded_at: timestamp_from_micros(row.try_get(7)?)?,
        metadata: Metadata {
            correlation_id: row.try_get(8)?,
            causation_id: row.try_get(9)?,
            traceparent: row.try_get(10)?,
            tracestate: row.try_get(11)?,
            actor: actor(row.try_get(13)?)?,
        },
        payload: Bytes::copy_from_slice(row.try_get::<&[u8], _>(12)?),
    })
}

/// The `actor` column's JSON, decoded.
pub(crate) fn actor(raw: Option<String>) -> Result<Option<crate::envelope::Actor>> {
    raw.as_deref()
        .map(crate::envelope::Actor::from_json)
        .transpose()
}

/// Decodes `event_id, tenant_id, stream_id, stream_version, global_position` (a stored event's
/// identity, for idempotency checks).
pub(crate) fn decode_stored_at<'r, R>(row: &'r R) -> Result<(EventId, StoredAt)>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Uuid: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok((
        EventId::from_uuid(row.try_get(0)?),
        StoredAt {
            tenant: TenantId::from_uuid(row.try_get(1)?),
            stream: StreamId::from_stored(row.try_get(2)?),
            version: StreamVersion(from_sql(row.try_get(3)?, "stream_version")?),
            position: GlobalPosition(from_sql(row.try_get(4)?, "global_position")?),
        },
    ))
}

/// Decodes `tenant_id, version` of a `streams` row, after `skip` leading columns.
pub(crate) fn decode_stream_metadata<'r, R>(row: &'r R, skip: usize) -> Result<StreamMetadata>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Uuid: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(StreamMetadata {
        tenant_id: TenantId::from_uuid(row.try_get(skip)?),
        version: StreamVersion(from_sql(row.try_get(skip + 1)?, "version")?),
    })
}

/// Decodes `version, schema_version, payload` of a `snapshots` row.
pub(crate) fn decode_snapshot<'r, R>(row: &'r R) -> Result<Snapshot>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
    &'r [u8]: Decode<'r, R::Database> + Type<R::Database>,
{
    let schema_version: i32 = row.try_get(1)?;
    Ok(Snapshot {
        version: StreamVersion(from_sql(row.try_get(0)?, "snapshot version")?),
        schema_version: u16::try_from(schema_version)
            .map_err(|_| Error::decode("snapshot schema_version", schema_version))?,
        payload: Bytes::copy_from_slice(row.try_get::<&[u8], _>(2)?),
    })
}

/// 64-bit FNV-1a: a stable hash for PostgreSQL's lock keys and channel names (the same on every
/// node and build).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
