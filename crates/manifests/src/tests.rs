use serde_json::json;
use time::macros::datetime;

use super::*;

fn key(id: &str, seed: u8) -> SecretKey {
    SecretKey::from_seed(id, [seed; 32])
}

fn tool(version: u32) -> Manifest {
    Manifest {
        kind: Kind::Tool,
        name: "lookup".into(),
        version,
        expires_at: None,
        body: json!({"name": "lookup", "url": "http://127.0.0.1:9/x", "timeout_ms": 500}),
    }
}

fn trust(keys: &[(&SecretKey, Option<&str>, bool)], require: bool) -> Trust {
    let config = TrustConfig {
        require_signatures: require,
        keys: keys
            .iter()
            .map(|(k, until, revoked)| {
                (
                    k.key_id.clone(),
                    TrustedKeyConfig {
                        public_key: k.public_key(),
                        valid_until: until.map(str::to_owned),
                        revoked: *revoked,
                    },
                )
            })
            .collect(),
        manifests: Vec::new(),
    };
    Trust::compile(&config).unwrap()
}

const NOW: OffsetDateTime = datetime!(2026-12-05 12:00 UTC);

fn verify(trust: &Trust, bytes: &[u8], required: bool) -> Result<Verified> {
    trust.verify(&SignedManifest::parse(bytes)?, required, NOW)
}

#[test]
fn a_signed_manifest_verifies_and_its_digest_is_its_content() {
    let k = key("release-2026", 7);
    let bytes = tool(1).sign(&k).unwrap();
    let verified = verify(&trust(&[(&k, None, false)], true), &bytes, true).unwrap();
    assert_eq!(verified.key_id.as_deref(), Some("release-2026"));
    // The same manifest signed again has the same digest (ed25519 is deterministic too).
    assert_eq!(tool(1).sign(&k).unwrap(), bytes);
    let other = SignedManifest::parse(&tool(2).sign(&k).unwrap()).unwrap();
    assert_ne!(other.digest, verified.digest);
    assert!(verified.digest.starts_with("blake3:"));
    // The file is canonical JSON: no whitespace, keys sorted.
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.starts_with("{\"manifest\":{\"body\":"), "{text}");
    let value: Value = serde_json::from_str(text).unwrap();
    assert_eq!(canonical(&value).unwrap(), bytes);
}

#[test]
fn every_single_bit_flip_of_a_signed_file_is_refused() {
    let k = key("k1", 1);
    let t = trust(&[(&k, None, false)], false);
    let mut manifest = tool(3);
    manifest.expires_at = Some("2030-01-01T00:00:00Z".into());
    let bytes = manifest.sign(&k).unwrap();
    assert!(verify(&t, &bytes, false).is_ok());
    for at in 0..bytes.len() {
        for bit in 0..8 {
            let mut tampered = bytes.clone();
            tampered[at] ^= 1 << bit;
            assert!(
                verify(&t, &tampered, false).is_err(),
                "flipping bit {bit} of byte {at} ({:?}) was accepted",
                bytes[at] as char
            );
        }
    }
}

#[test]
fn every_byte_removed_inserted_or_replaced_is_refused() {
    let k = key("k1", 1);
    let t = trust(&[(&k, None, false)], false);
    let bytes = tool(1).sign(&k).unwrap();
    for at in 0..bytes.len() {
        let mut removed = bytes.clone();
        removed.remove(at);
        assert!(verify(&t, &removed, false).is_err(), "removing byte {at}");
        for extra in [b' ', b'\n', b'0', b'"'] {
            let mut inserted = bytes.clone();
            inserted.insert(at, extra);
            assert!(verify(&t, &inserted, false).is_err(), "inserting at {at}");
        }
        let mut replaced = bytes.clone();
        replaced[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
        assert!(verify(&t, &replaced, false).is_err(), "replacing byte {at}");
    }
    let mut trailing = bytes;
    trailing.push(b'\n');
    // serde_json reads trailing whitespace, so this parses and is refused as not canonical.
    assert_eq!(verify(&t, &trailing, false), Err(Error::NotCanonical));
}

#[test]
fn each_refusal_says_which() {
    let old = key("old", 1);
    let new = key("new", 2);
    let revoked = key("gone", 3);
    let stranger = key("stranger", 4);
    let t = trust(
        &[
            (&old, Some("2026-12-31T00:00:00Z"), false),
            (&new, None, false),
            (&revoked, None, true),
        ],
        false,
    );
    let unsigned = tool(1).unsigned().unwrap();
    assert_eq!(verify(&t, &unsigned, true), Err(Error::Unsigned));
    let required = trust(&[(&new, None, false)], true);
    assert_eq!(verify(&required, &unsigned, false), Err(Error::Unsigned));
    assert_eq!(verify(&t, &unsigned, false).unwrap().key_id, None);
    assert_eq!(
        verify(&t, &tool(1).sign(&stranger).unwrap(), false),
        Err(Error::UnknownKey("stranger".into()))
    );
    assert_eq!(
        verify(&t, &tool(1).sign(&revoked).unwrap(), false),
        Err(Error::RevokedKey("gone".into()))
    );
    // Rotation: the old key is good until its date, the new one after it.
    let by_old = SignedManifest::parse(&tool(1).sign(&old).unwrap()).unwrap();
    assert!(t.verify(&by_old, true, NOW).is_ok());
    assert_eq!(
        t.verify(&by_old, true, datetime!(2027-01-01 00:00 UTC)),
        Err(Error::ExpiredKey {
            key: "old".into(),
            at: "2026-12-31T00:00:00Z".into()
        })
    );
    let by_new = SignedManifest::parse(&tool(1).sign(&new).unwrap()).unwrap();
    assert!(
        t.verify(&by_new, true, datetime!(2027-01-01 00:00 UTC))
            .is_ok()
    );
    // A key that claims another's id.
    let impostor = SecretKey::from_seed("new", [9; 32]);
    assert_eq!(
        verify(&t, &tool(1).sign(&impostor).unwrap(), false),
        Err(Error::BadSignature)
    );
    // The manifest's own expiry.
    let mut expiring = tool(1);
    expiring.expires_at = Some("2026-12-01T00:00:00Z".into());
    assert_eq!(
        verify(&t, &expiring.sign(&new).unwrap(), false),
        Err(Error::Expired("2026-12-01T00:00:00Z".into()))
    );
    assert_eq!(
        verify(&t, &expiring.unsigned().unwrap(), false),
        Err(Error::Expired("2026-12-01T00:00:00Z".into()))
    );
    // Another algorithm's name.
    let text = String::from_utf8(tool(1).sign(&new).unwrap()).unwrap();
    let other = text.replace("\"algorithm\":\"ed25519\"", "\"algorithm\":\"rsa\"");
    assert_eq!(
        verify(&t, other.as_bytes(), false),
        Err(Error::Algorithm("rsa".into()))
    );
    // A signature moved from another manifest.
    let one: Value = serde_json::from_slice(&tool(1).sign(&new).unwrap()).unwrap();
    let mut two: Value = serde_json::from_slice(&tool(2).sign(&new).unwrap()).unwrap();
    two["signature"] = one["signature"].clone();
    assert_eq!(
        verify(&t, &canonical(&two).unwrap(), false),
        Err(Error::BadSignature)
    );
    // Codes are distinct.
    let codes: std::collections::BTreeSet<&str> = [
        Error::Malformed(String::new()),
        Error::NotCanonical,
        Error::Unsigned,
        Error::Algorithm(String::new()),
        Error::UnknownKey(String::new()),
        Error::RevokedKey(String::new()),
        Error::ExpiredKey {
            key: String::new(),
            at: String::new(),
        },
        Error::BadSignature,
        Error::Expired(String::new()),
        Error::Key(String::new()),
    ]
    .iter()
    .map(Error::code)
    .collect();
    assert_eq!(codes.len(), 10);
}

#[test]
fn hostile_files_are_refused_with_the_reason() {
    let k = key("k", 5);
    let t = trust(&[(&k, None, false)], false);
    let signed: Value = serde_json::from_slice(&tool(1).sign(&k).unwrap()).unwrap();
    let pretty = serde_json::to_vec_pretty(&signed).unwrap();
    assert_eq!(verify(&t, &pretty, false), Err(Error::NotCanonical));
    for (bytes, expect) in [
        (b"".to_vec(), "not JSON"),
        (b"\xff\xfe".to_vec(), "not JSON"),
        (b"[]".to_vec(), "expected"),
        (b"{\"manifest\":{}}".to_vec(), "manifest:"),
        (vec![b' '; MAX_BYTES + 1], "at most"),
    ] {
        let error = verify(&t, &bytes, false).unwrap_err();
        assert!(error.to_string().contains(expect), "{error}");
        assert_eq!(error.code(), "invalid_manifest");
    }
    // Duplicate keys: JSON keeps the last, the canonical form differs, the file is refused.
    let text = String::from_utf8(tool(1).sign(&k).unwrap()).unwrap();
    let doubled = text.replacen("{\"manifest\":{", "{\"manifest\":{\"kind\":\"prompt\",", 1);
    assert!(verify(&t, doubled.as_bytes(), false).is_err());
    let extra = text.replacen("{\"manifest\":", "{\"extra\":1,\"manifest\":", 1);
    assert!(
        verify(&t, extra.as_bytes(), false)
            .unwrap_err()
            .to_string()
            .contains("unknown field")
    );
    for (change, expect) in [
        (json!({"name": "Bad Name"}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"version": 0}), "version starts at 1"),
        (json!({"version": -1}), "manifest:"),
        (json!({"expires_at": "tomorrow"}), "RFC 3339"),
        (json!({"body": "text"}), "body must be a JSON object"),
        (json!({"kind": "plugin"}), "manifest:"),
    ] {
        let mut manifest = serde_json::to_value(tool(1)).unwrap();
        for (field, value) in change.as_object().unwrap() {
            manifest[field] = value.clone();
        }
        let bytes = canonical(&json!({"manifest": manifest})).unwrap();
        let error = verify(&t, &bytes, false).unwrap_err();
        assert!(error.to_string().contains(expect), "{change}: {error}");
    }
}

#[test]
fn trust_reports_every_bad_key_at_once() {
    let good = key("good", 1);
    let mut config = TrustConfig::default();
    config.keys.insert(
        "good".into(),
        TrustedKeyConfig {
            public_key: good.public_key(),
            ..Default::default()
        },
    );
    for (id, public, until) in [
        ("short", "AAAA", None),
        ("date", good.public_key().as_str(), Some("next week")),
        ("bad id!", good.public_key().as_str(), None),
        ("weak", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", None),
    ] {
        config.keys.insert(
            id.into(),
            TrustedKeyConfig {
                public_key: public.into(),
                valid_until: until.map(str::to_owned),
                revoked: false,
            },
        );
    }
    let problems = Trust::compile(&config).unwrap_err();
    assert_eq!(problems.len(), 4, "{problems:?}");
    for word in ["short", "date", "bad id!", "weak"] {
        assert!(problems.iter().any(|p| p.contains(word)), "{problems:?}");
    }
}

#[test]
fn key_files_round_trip_and_a_changed_one_is_refused() {
    let k = SecretKey::generate("release-2026").unwrap();
    let file = k.to_file();
    let back = SecretKey::from_file(&file).unwrap();
    assert_eq!(back.public_key(), k.public_key());
    assert_ne!(
        SecretKey::generate("x").unwrap().public_key(),
        k.public_key()
    );
    let other = SecretKey::generate("other").unwrap().public_key();
    let swapped = file.replace(&k.public_key(), &other);
    assert!(SecretKey::from_file(&swapped).is_err());
    assert!(SecretKey::from_file("{}").is_err());
    assert!(SecretKey::generate("no spaces").is_err());
    // The key's Debug never prints the secret.
    assert!(!format!("{k:?}").contains(&file[40..60]));
}

#[test]
fn references_are_name_at_version() {
    assert_eq!(
        parse_reference("summarize@2").unwrap(),
        ("summarize".into(), Some(2))
    );
    assert_eq!(
        parse_reference("summarize").unwrap(),
        ("summarize".into(), None)
    );
    for bad in [
        "", "@1", "x@", "x@0", "x@-1", "x@1.5", "X@1", "a b@1", "x@1@2",
    ] {
        assert!(parse_reference(bad).is_err(), "{bad}");
    }
}
