//! Identifiers of the log, as newtypes so that a position is never passed where a version is
//! expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered (UUIDv7) id.
            #[allow(clippy::new_without_default, reason = "a new id is not a default value")]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            /// Wraps an existing UUID (read from storage or from a client).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }
            /// The UUID inside.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A tenant: every stream, event and read-model row belongs to exactly one.
    TenantId
);
uuid_id!(
    /// An event's identity (UUIDv7). Appending the same ids again is a no-op.
    EventId
);

impl TenantId {
    /// The platform itself, for events that belong to no customer (provider health, config).
    pub const SYSTEM: TenantId = TenantId(Uuid::nil());
}

/// Position of an event inside its stream: the first event is version 1, and a stream's version
/// is the version of its last event (0 when the stream has none).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct StreamVersion(pub u64);

impl StreamVersion {
    /// The version of a stream with no events.
    pub const NONE: StreamVersion = StreamVersion(0);

    /// The version after this one.
    pub const fn next(self) -> StreamVersion {
        StreamVersion(self.0 + 1)
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Position of an event in the one global order of the log. Positions only grow; readers keep
/// the last position they processed and ask for what comes after it. 0 is "before the first".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct GlobalPosition(pub u64);

impl GlobalPosition {
    /// Before the first event: reading after it reads the whole log.
    pub const START: GlobalPosition = GlobalPosition(0);
}

impl fmt::Display for GlobalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The name of a stream: `category-id`, e.g. `tenant-0190…` or `inference-0190…`.
///
/// The category (lower-case ASCII letters, digits and `_`, starting with a letter) names the
/// kind of actor that owns the stream and becomes part of NATS subjects, so the whole name is
/// restricted to ASCII letters, digits and `_ . : -`, at most [`StreamId::MAX_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    /// Longest accepted stream name, in bytes.
    pub const MAX_LEN: usize = 200;

    /// Parses and validates a stream name.
    pub fn parse(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        match Self::check(&name) {
            Ok(()) => Ok(Self(name)),
            Err(reason) => Err(Error::InvalidStreamName {
                name: truncate(&name),
                reason,
            }),
        }
    }

    /// Builds `category-id` from a category and any displayable id.
    pub fn of(category: &str, id: impl fmt::Display) -> Result<Self> {
        Self::parse(format!("{category}-{id}"))
    }

    fn check(name: &str) -> std::result::Result<(), &'static str> {
        if name.is_empty() {
            return Err("empty");
        }
        if name.len() > Self::MAX_LEN {
            return Err("longer than 200 bytes");
        }
        let Some((category, id)) = name.split_once('-') else {
            return Err("missing '-' between category and id");
        };
        let mut category_chars = category.chars();
        if !category_chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase())
        {
            return Err("category must start with a lower-case ASCII letter");
        }
        if !category_chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err("category may hold only lower-case ASCII letters, digits and '_'");
        }
        if id.is_empty() {
            return Err("empty id after the category");
        }
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
        {
            return Err("id may hold only ASCII letters, digits and '_', '.', ':', '-'");
        }
        Ok(())
    }

    /// A name read back from the store, which validated it on the way in.
    pub(crate) fn from_stored(name: String) -> Self {
        Self(name)
    }

    /// The part before the first `-`: the kind of stream.
    pub fn category(&self) -> &str {
        self.0
            .split_once('-')
            .map_or(self.0.as_str(), |(category, _)| category)
    }

    /// The whole name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn truncate(name: &str) -> String {
    name.chars().take(64).collect()
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for StreamId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        StreamId::parse(name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_category_dash_id() {
        let stream = StreamId::parse("inference-0190abcd-ef").unwrap();
        assert_eq!(stream.category(), "inference");
        assert_eq!(StreamId::of("tenant", 42).unwrap().as_str(), "tenant-42");
    }

    #[test]
    fn hostile_stream_names_are_rejected() {
        let long = format!("a-{}", "x".repeat(300));
        for bad in [
            "",
            "-x",
            "noid",
            "tenant-",
            "Tenant-1",
            "1tenant-x",
            "ten ant-1",
            "tenant-a b",
            "tenant-\u{0}",
            "tenant-ü",
            "tenant-a/b",
            "tenant-*",
            "tenant->",
            "tenant-a\nb",
            &long,
        ] {
            assert!(
                matches!(StreamId::parse(bad), Err(Error::InvalidStreamName { .. })),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn stream_names_are_validated_when_deserialized() {
        assert!(serde_json::from_str::<StreamId>("\"tenant-1\"").is_ok());
        assert!(serde_json::from_str::<StreamId>("\"no spaces-1 2\"").is_err());
    }

    #[test]
    fn new_ids_are_time_ordered() {
        let a = EventId::new();
        let b = EventId::new();
        assert!(a < b);
        assert_eq!(a.as_uuid().get_version_num(), 7);
    }
}
