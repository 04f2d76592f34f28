//! The envelope: what a writer hands to the store ([`NewEvent`]) and what a reader gets back
//! ([`RecordedEvent`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ids::{EventId, GlobalPosition, StreamId, StreamVersion, TenantId};

/// Largest payload the store accepts, in bytes. Bigger data (documents, model outputs) belongs in
/// a blob store with a reference in the event.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Largest append, in payload bytes over all its events (so one append always fits in one
/// transaction and one database message).
pub const MAX_APPEND_BYTES: usize = 16 * 1024 * 1024;

/// Longest accepted event type name and metadata string, in bytes.
const MAX_NAME_LEN: usize = 128;
const MAX_METADATA_LEN: usize = 512;

/// Where an event came from: the request that caused it and the trace it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The request or conversation the event belongs to (the HTTP `x-request-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The command or event that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// W3C `traceparent` of the span that appended the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// W3C `tracestate` that went with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// Who issued the command that appended the event: set by the admin API (the audit log
    /// reads it), absent for the data plane's own events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

/// The authenticated identity behind an admin command, as the audit log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// The token's `sub` (for the static token: `break-glass`).
    pub subject: String,
    /// The token's `iss` (absent for the static token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The role the command was allowed under (`platform-admin`, `tenant-admin`, ...).
    pub role: String,
    /// How the caller authenticated: `oidc` or `break-glass` (the static admin token).
    pub via: String,
}

impl Actor {
    /// The stored form (a JSON object in the log's `actor` column).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the stored form back.
    pub fn from_json(raw: &str) -> Result<Self> {
        serde_json::from_str(raw).map_err(|e| Error::decode("actor", e))
    }
}

/// An event to append: its identity, its type and schema version, and the encoded payload.
///
/// Build it from a catalog event with [`crate::Event::to_new_event`], or directly when the payload
/// is already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_id: EventId,
    pub event_type: String,
    pub schema_version: u16,
    /// The binary form of the payload (see [`crate::codec`]).
    pub payload: Bytes,
    pub metadata: Metadata,
}

impl NewEvent {
    /// Checks what the store checks before it takes the event.
    pub fn validate(&self) -> Result<()> {
        let name_ok = !self.event_type.is_empty()
            && self.event_type.len() <= MAX_NAME_LEN
            && self
                .event_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !name_ok {
            return Err(Error::InvalidEvent(format!(
                "event type must be 1-{MAX_NAME_LEN} ASCII letters, digits, '_' or '.'"
            )));
        }
        if self.schema_version == 0 {
            return Err(Error::InvalidEvent("schema version starts at 1".into()));
        }
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::InvalidEvent(format!(
                "payload of {} bytes is larger than the limit of {MAX_PAYLOAD_BYTES}",
                self.payload.len()
            )));
        }
        let metadata = &self.metadata;
        let actor = metadata.actor.as_ref();
        for (field, value) in [
            ("correlation_id", metadata.correlation_id.as_ref()),
            ("traceparent", metadata.traceparent.as_ref()),
            ("tracestate", metadata.tracestate.as_ref()),
            ("actor.subject", actor.map(|a| &a.subject)),
            ("actor.issuer", actor.and_then(|a| a.issuer.as_ref())),
            ("actor.role", actor.map(|a| &a.role)),
            ("actor.via", actor.map(|a| &a.via)),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_METADATA_LEN) {
                return Err(Error::InvalidEvent(format!(
                    "{field} is longer than {MAX_METADATA_LEN} bytes"
                )));
            }
            if value
                .as_ref()
                .is_some_and(|v| v.chars().any(char::is_control))
            {
                return Err(Error::InvalidEvent(format!(
                    "{field} contains control characters"
                )));
            }
        }
        Ok(())
    }
}

/// An event as stored: the envelope the store assigned around a [`NewEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub event_id: EventId,
    pub tenant_id: TenantId,
    pub stream_id: StreamId,
    pub stream_version: StreamVersion,
    pub global_position: GlobalPosition,
    pub event_type: String,
    pub schema_version: u16,
    /// When the store committed it (the writer's clock, microsecond precision).
    pub recorded_at: OffsetDateTime,
    pub metadata: Metadata,
    /// The binary form of the payload; decode with [`crate::Event::decode`].
    pub payload: Bytes,
}

/// The state of an actor at a stream version, so that rehydration reads only the tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last stream version folded into the state.
    pub version: StreamVersion,
    /// Version of the state's own encoding, so that an actor can ignore snapshots it no longer
    /// understands and rebuild from the log instead.
    pub schema_version: u16,
    pub payload: Bytes,
}

/// Converts storage microseconds to a timestamp.
pub(crate) fn timestamp_from_micros(micros: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(|e| Error::decode("recorded_at", e))
}

/// The current time in storage microseconds.
pub(crate) fn now_micros() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, payload: usize) -> NewEvent {
        NewEvent {
            event_id: EventId::new(),
            event_type: event_type.into(),
            schema_version: 1,
            payload: Bytes::from(vec![0u8; payload]),
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn validation_rejects_bad_types_and_oversized_payloads() {
        assert!(event("TenantCreated", 10).validate().is_ok());
        assert!(event("", 10).validate().is_err());
        assert!(event("Tenant Created", 10).validate().is_err());
        assert!(event(&"x".repeat(129), 10).validate().is_err());
        assert!(
            event("TenantCreated", MAX_PAYLOAD_BYTES + 1)
                .validate()
                .is_err()
        );
        let mut long_meta = event("TenantCreated", 1);
        long_meta.metadata.correlation_id = Some("c".repeat(513));
        assert!(long_meta.validate().is_err());
        let mut nul = event("TenantCreated", 1);
        nul.metadata.traceparent = Some("00-\u{0}-01".into());
        assert!(nul.validate().is_err());
        let mut newline = event("TenantCreated", 1);
        newline.metadata.correlation_id = Some("a\nb".into());
        assert!(newline.validate().is_err());
        let mut v0 = event("TenantCreated", 1);
        v0.schema_version = 0;
        assert!(v0.validate().is_err());
    }

    #[test]
    fn micros_roundtrip() {
        let now = now_micros();
        let ts = timestamp_from_micros(now).unwrap();
        assert_eq!(
            i64::try_from(ts.unix_timestamp_nanos() / 1000).unwrap(),
            now
        );
    }
}
