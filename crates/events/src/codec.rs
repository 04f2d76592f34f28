//! The codec: a compact binary form for storage (a version byte, then postcard) and JSON for the
//! outside world (APIs, NATS, fixtures).
//!
//! The binary form carries no field names, so it changes only with a new schema version: an old
//! version's struct stays in the code and an upcaster (a `From` impl into the current struct)
//! brings old payloads forward when they are read. See [`crate::catalog`].

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The first byte of every stored payload: which binary format follows.
pub const BINARY_FORMAT_POSTCARD: u8 = 1;

/// A payload type of the event catalog: its stable name and its schema version.
pub trait EventPayload: Serialize + DeserializeOwned + schemars::JsonSchema {
    /// The name stored with every event of this type. Never change it.
    const EVENT_TYPE: &'static str;
    /// The version of this struct's shape; bump it (and keep the old struct) on any change.
    const SCHEMA_VERSION: u16;
}

/// Encodes a value in the storage form: the format byte, then postcard.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    let mut out = BytesMut::with_capacity(64).writer();
    out.get_mut().put_u8(BINARY_FORMAT_POSTCARD);
    let out = postcard::to_io(value, out).map_err(|e| Error::Encode {
        what: std::any::type_name::<T>().to_owned(),
        reason: e.to_string(),
    })?;
    Ok(out.into_inner().freeze())
}

/// Decodes a value from the storage form. `what` names it in the error.
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&BINARY_FORMAT_POSTCARD, body)) => {
            let (value, rest) =
                postcard::take_from_bytes(body).map_err(|e| Error::decode(what, e))?;
            if rest.is_empty() {
                Ok(value)
            } else {
                Err(Error::decode(
                    what,
                    format!("{} trailing bytes", rest.len()),
                ))
            }
        }
        Some((format, _)) => Err(Error::decode(
            what,
            format!("unknown binary format {format}"),
        )),
        None => Err(Error::decode(what, "empty payload")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        count: u64,
        tags: Vec<String>,
    }

    fn sample() -> Sample {
        Sample {
            name: "a".into(),
            count: 300,
            tags: vec!["x".into()],
        }
    }

    #[test]
    fn roundtrips_with_a_format_byte() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(bytes[0], BINARY_FORMAT_POSTCARD);
        assert_eq!(decode::<Sample>("sample", &bytes).unwrap(), sample());
    }

    #[test]
    fn hostile_bytes_give_errors_not_panics() {
        let good = encode(&sample()).unwrap();
        let mut trailing = good.to_vec();
        trailing.push(0);
        let mut unknown_format = good.to_vec();
        unknown_format[0] = 9;
        let huge_length = [BINARY_FORMAT_POSTCARD, 0xff, 0xff, 0xff, 0xff, 0x0f];
        for bad in [
            &[][..],
            &[BINARY_FORMAT_POSTCARD][..],
            &good[..good.len() - 1],
            &trailing,
            &unknown_format,
            &huge_length,
        ] {
            assert!(
                matches!(decode::<Sample>("sample", bad), Err(Error::Decode { .. })),
                "{bad:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode::<Sample>("sample", &bytes);
        }
    }
}
