//! Stored data is forever: every event type and schema version in the catalog has a committed
//! JSON Schema, a JSON fixture and a fixture of its stored (binary) form under `schemas/events/`.
//! This test proves that each fixture still decodes, that the binary and JSON fixtures agree, and
//! that the committed schemas match the Rust types. Run with `SWITCHYARD_UPDATE_SCHEMAS=1` to
//! write the schema files (and any missing fixture) after adding a type or a version.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use switchyard_events::{Event, codec};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/events")
}

fn updating() -> bool {
    std::env::var_os("SWITCHYARD_UPDATE_SCHEMAS").is_some()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let text = text.trim();
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn every_stored_event_kind_has_a_schema_and_fixtures_that_still_decode() {
    let dir = dir();
    for &(event_type, version) in Event::KINDS {
        let name = format!("{event_type}.v{version}");
        let schema_path = dir.join(format!("{name}.schema.json"));
        let schema =
            serde_json::to_string_pretty(&Event::json_schema(event_type, version).unwrap())
                .unwrap()
                + "\n";
        if updating() {
            std::fs::write(&schema_path, &schema).unwrap();
        }
        let committed = std::fs::read_to_string(&schema_path).unwrap_or_else(|_| {
            panic!(
                "{} is missing (SWITCHYARD_UPDATE_SCHEMAS=1 writes it)",
                schema_path.display()
            )
        });
        assert_eq!(
            committed, schema,
            "{name}: the committed schema differs from the Rust type"
        );

        let json_path = dir.join("fixtures").join(format!("{name}.json"));
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&json_path)
                .unwrap_or_else(|_| panic!("fixture {} is missing", json_path.display())),
        )
        .unwrap();
        let from_json = Event::from_json(event_type, version, json).expect("JSON fixture decodes");

        let bin_path = dir.join("fixtures").join(format!("{name}.postcard.hex"));
        if updating() && !bin_path.exists() && version == from_json.schema_version() {
            std::fs::write(&bin_path, hex(&from_json.encode().unwrap()) + "\n").unwrap();
        }
        let stored = unhex(
            &std::fs::read_to_string(&bin_path)
                .unwrap_or_else(|_| panic!("fixture {} is missing", bin_path.display())),
        );
        assert_eq!(stored[0], codec::BINARY_FORMAT_POSTCARD);
        let from_binary =
            Event::decode(event_type, version, &stored).expect("stored fixture decodes");
        assert_eq!(
            from_binary, from_json,
            "{name}: binary and JSON fixtures disagree"
        );
        assert_eq!(from_binary.event_type(), event_type);
    }
}

#[test]
fn no_schema_or_fixture_is_left_without_an_event_kind() {
    let kinds: BTreeSet<String> = Event::KINDS
        .iter()
        .map(|(t, v)| format!("{t}.v{v}"))
        .collect();
    for (folder, suffixes) in [
        (dir(), &[".schema.json"][..]),
        (dir().join("fixtures"), &[".json", ".postcard.hex"][..]),
    ] {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                continue;
            }
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let kind = suffixes
                .iter()
                .find_map(|s| file.strip_suffix(s))
                .unwrap_or(&file);
            assert!(
                kinds.contains(kind),
                "{} belongs to no event kind of the catalog",
                path.display()
            );
        }
    }
}
