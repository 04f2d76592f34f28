//! Fuzz target `event-decoding`: stored payloads (postcard) and JSON payloads of every event
//! type and schema version, edited (see [`crate::fuzzing`]). Decoding never panics, and what
//! decodes re-encodes to a fixed point: encode(decode(encode(decode(x)))) = encode(decode(x)).

use crate::Event;
use crate::fuzzing::{self, JSON_TOKENS, Mutated};

/// `Type.vN.postcard` or `Type.vN.json`: the event type, the version and the form.
fn parts(name: &str) -> (&str, u16, bool) {
    let mut it = name.splitn(3, '.');
    let event_type = it.next().unwrap_or_default();
    let version = it
        .next()
        .and_then(|v| v.strip_prefix('v')?.parse().ok())
        .unwrap_or(1);
    (event_type, version, it.next() == Some("json"))
}

fn property(name: &str, bytes: &[u8]) {
    let (event_type, version, json) = parts(name);
    let event = if json {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            return;
        };
        match Event::from_json(event_type, version, value) {
            Ok(event) => {
                // The JSON form of what was read reads back as the same event.
                let again = event.to_json().expect("a decoded event has a JSON form");
                let current = event.schema_version();
                let back = Event::from_json(event_type, current, again.clone())
                    .unwrap_or_else(|e| panic!("{again} does not read back: {e}"));
                assert_eq!(
                    back.encode().expect("encodes"),
                    event.encode().expect("encodes")
                );
                event
            }
            Err(_) => return,
        }
    } else {
        match Event::decode(event_type, version, bytes) {
            Ok(event) => event,
            Err(_) => return,
        }
    };
    let first = event.encode().expect("a decoded event encodes");
    let current = event.schema_version();
    let again = Event::decode(event_type, current, &first)
        .unwrap_or_else(|e| panic!("its own encoding does not decode: {e}"));
    assert_eq!(again.encode().expect("encodes"), first);
}

#[test]
fn event_decoding() {
    let target = fuzzing::Target::new("event-decoding");
    // Every seed decodes as it is: the corpus is the catalog's fixtures.
    for (name, bytes) in target.seeds() {
        let (event_type, version, json) = parts(name);
        let decoded = if json {
            serde_json::from_slice(bytes)
                .map_err(|e| e.to_string())
                .and_then(|v| Event::from_json(event_type, version, v).map_err(|e| e.to_string()))
        } else {
            Event::decode(event_type, version, bytes).map_err(|e| e.to_string())
        };
        assert!(decoded.is_ok(), "seed {name}: {decoded:?}");
    }
    bolero::check!()
        .with_type::<Mutated>()
        .for_each(|input| target.run(JSON_TOKENS, input, property));
}
