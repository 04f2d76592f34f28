//! Signed registry manifests (issue 18, part 2).
//!
//! A manifest names one registry entry (a tool, a workflow, a fragment or a prompt) at one
//! version, with its definition as JSON in `body`. Its signature is ed25519 over
//! [`DOMAIN`] followed by the manifest's RFC 8785 canonical JSON (JCS): the same bytes whatever
//! tool wrote the JSON, and never valid as a signature over anything else.
//!
//! The file that travels (`switchyard registry sign` writes it, `POST /v1/registry/manifests`
//! takes it) is itself the canonical JSON of `{"manifest": …, "signature": …}`. A reader
//! refuses any other spelling of it, so for one signed manifest exactly one byte string is
//! accepted: a change to any byte is either not JSON, not canonical, a different manifest (the
//! signature fails) or a different signature (it fails too).
//!
//! [`Trust`] is an environment's policy: its trusted public keys (each may end on a date, which
//! is how a key is rotated, or be revoked) and whether signatures are required. Every refusal
//! is its own [`Error`] variant with a stable [`Error::code`].

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod error;
mod keys;
#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use keys::SecretKey;

/// What is signed: these bytes, then the manifest's canonical JSON.
pub const DOMAIN: &[u8] = b"switchyard-manifest-v1\n";
/// The only signature algorithm.
pub const ALGORITHM: &str = "ed25519";
/// The largest signed manifest read.
pub const MAX_BYTES: usize = 1 << 20;

/// The kinds of registry entry a manifest can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Tool,
    Workflow,
    Fragment,
    Prompt,
    /// A model entry of the config (`[[models]]`), loaded from `[registry] manifests`.
    Model,
    /// A provider entry of the config (`[[providers]]`), loaded from `[registry] manifests`.
    Provider,
}

impl Kind {
    /// The name used on the wire and in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Workflow => "workflow",
            Kind::Fragment => "fragment",
            Kind::Prompt => "prompt",
            Kind::Model => "model",
            Kind::Provider => "provider",
        }
    }

    /// Parses a kind's wire name.
    pub fn parse(text: &str) -> Result<Kind> {
        serde_json::from_value(Value::String(text.to_owned())).map_err(|_| {
            Error::Malformed(format!(
                "kind {text:?} is not one of tool, workflow, fragment, prompt, model, provider"
            ))
        })
    }
}

/// One registry entry at one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub kind: Kind,
    /// Lower-case letters, digits, `-` and `_`, at most 64.
    pub name: String,
    /// From 1; a published version never changes.
    pub version: u32,
    /// RFC 3339; after it the manifest is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The entry's definition (a tool definition, a WorkflowSpec, a fragment, a prompt).
    pub body: Value,
}

/// A manifest's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The trusted key's id.
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// The 64-byte signature, standard base64.
    pub value: String,
}

/// A manifest as read: parsed, checked for shape, with the bytes its signature covers.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedManifest {
    pub manifest: Manifest,
    pub signature: Option<Signature>,
    /// `DOMAIN` + the canonical manifest: what the signature is over.
    message: Vec<u8>,
    /// `blake3:` and the hex BLAKE3 of the canonical manifest: the content's identity.
    pub digest: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    manifest: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<Signature>,
}

/// RFC 8785 canonical JSON of a value.
pub fn canonical(value: &Value) -> Result<Vec<u8>> {
    serde_json_canonicalizer::to_vec(value).map_err(|e| Error::Malformed(e.to_string()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A key id: letters, digits, `.`, `-` and `_`, at most 64.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn timestamp(text: &str, what: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| Error::Malformed(format!("{what} {text:?} is not an RFC 3339 time: {e}")))
}

impl Manifest {
    /// Checks what a manifest must be whatever its body: name, version, expiry, body shape.
    pub fn check(&self) -> Result<()> {
        if !valid_name(&self.name) {
            return Err(Error::Malformed(format!(
                "name {:?}: 1-64 lower-case letters, digits, - and _",
                self.name
            )));
        }
        if self.version == 0 {
            return Err(Error::Malformed("version starts at 1".into()));
        }
        if let Some(at) = &self.expires_at {
            timestamp(at, "expires_at")?;
        }
        if !self.body.is_object() {
            return Err(Error::Malformed("body must be a JSON object".into()));
        }
        Ok(())
    }

    /// `name@version`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Signs the manifest: the canonical file to publish.
    pub fn sign(&self, key: &SecretKey) -> Result<Vec<u8>> {
        self.check()?;
        let value = serde_json::to_value(self).map_err(|e| Error::Malformed(e.to_string()))?;
        let mut message = DOMAIN.to_vec();
        message.extend(canonical(&value)?);
        let signature = key.signing.sign(&message);
        envelope_bytes(
            value,
            Some(Signature {
                key_id: key.key_id.clone(),
                algorithm: ALGORITHM.into(),
                value: BASE64.encode(signature.to_bytes()),
            }),
        )
    }

    /// The canonical file of the manifest without a signature (accepted only where signatures
    /// are not required).
    pub fn unsigned(&self) -> Result<Vec<u8>> {
        self.check()?;
        let value = serde_json::to_value(self).map_err(|e| Error::Malformed(e.to_string()))?;
        envelope_bytes(value, None)
    }
}

fn envelope_bytes(manifest: Value, signature: Option<Signature>) -> Result<Vec<u8>> {
    let envelope = serde_json::to_value(Envelope {
        manifest,
        signature,
    })
    .map_err(|e| Error::Malformed(e.to_string()))?;
    canonical(&envelope)
}

impl SignedManifest {
    /// Reads a manifest file: at most [`MAX_BYTES`], UTF-8 JSON in its canonical form, of the
    /// right shape. Nothing is verified yet ([`Trust::verify`] does that).
    pub fn parse(bytes: &[u8]) -> Result<SignedManifest> {
        if bytes.len() > MAX_BYTES {
            return Err(Error::Malformed(format!(
                "{} bytes: a manifest is at most {MAX_BYTES}",
                bytes.len()
            )));
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Malformed(format!("not JSON: {e}")))?;
        if canonical(&value)? != bytes {
            return Err(Error::NotCanonical);
        }
        let envelope: Envelope = serde_json::from_value(value).map_err(|e| {
            Error::Malformed(format!(
                "expected {{\"manifest\": {{kind, name, version, body}}, \"signature\"?}}: {e}"
            ))
        })?;
        let manifest: Manifest = serde_json::from_value(envelope.manifest.clone())
            .map_err(|e| Error::Malformed(format!("manifest: {e}")))?;
        manifest.check()?;
        let canonical_manifest = canonical(&envelope.manifest)?;
        let digest = format!("blake3:{}", blake3::hash(&canonical_manifest).to_hex());
        let mut message = DOMAIN.to_vec();
        message.extend(canonical_manifest);
        Ok(SignedManifest {
            manifest,
            signature: envelope.signature,
            message,
            digest,
        })
    }
}

/// An environment's trusted keys and policy as configured (`[registry]` in the config file,
/// per profile).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Refuse unsigned manifests and unsigned registrations for every tenant.
    #[serde(default)]
    pub require_signatures: bool,
    /// Trusted public keys by id.
    #[serde(default)]
    pub keys: BTreeMap<String, TrustedKeyConfig>,
    /// Manifest files of model and provider entries, added to the config's `[[models]]` and
    /// `[[providers]]` once verified (paths as given, relative to the working directory).
    #[serde(default)]
    pub manifests: Vec<String>,
}

/// One trusted key as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyConfig {
    /// The 32-byte ed25519 public key, standard base64.
    pub public_key: String,
    /// RFC 3339: manifests signed by this key are refused after it (a rotated-out key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// A revoked key's manifests are refused from now on.
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Clone)]
struct TrustedKey {
    key: VerifyingKey,
    valid_until: Option<OffsetDateTime>,
    revoked: bool,
}

/// An environment's compiled policy.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    require_signatures: bool,
    keys: BTreeMap<String, TrustedKey>,
}

/// What a verified manifest was signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The key that signed it (`None`: unsigned, where that is allowed).
    pub key_id: Option<String>,
    pub digest: String,
}

impl Trust {
    /// Compiles the configured keys; every problem at once.
    pub fn compile(config: &TrustConfig) -> std::result::Result<Trust, Vec<String>> {
        let mut problems = Vec::new();
        let mut keys = BTreeMap::new();
        for (id, key) in &config.keys {
            let at = format!("registry.keys.{id}");
            if !valid_key_id(id) {
                problems.push(format!(
                    "{at}: a key id is 1-64 letters, digits, `.`, `-` and `_`"
                ));
                continue;
            }
            let public = match keys::public_key(&key.public_key) {
                Ok(public) => public,
                Err(e) => {
                    problems.push(format!("{at}.public_key: {e}"));
                    continue;
                }
            };
            let valid_until = match key
                .valid_until
                .as_deref()
                .map(|t| timestamp(t, "valid_until"))
            {
                Some(Err(e)) => {
                    problems.push(format!("{at}.valid_until: {e}"));
                    continue;
                }
                Some(Ok(t)) => Some(t),
                None => None,
            };
            keys.insert(
                id.clone(),
                TrustedKey {
                    key: public,
                    valid_until,
                    revoked: key.revoked,
                },
            );
        }
        if problems.is_empty() {
            Ok(Trust {
                require_signatures: config.require_signatures,
                keys,
            })
        } else {
            Err(problems)
        }
    }

    /// Whether this environment requires signatures.
    pub fn requires_signatures(&self) -> bool {
        self.require_signatures
    }

    /// Verifies a manifest at `now`; `required` adds a tenant's own requirement to the
    /// environment's. A bad signature is refused whether or not signatures are required.
    pub fn verify(
        &self,
        signed: &SignedManifest,
        required: bool,
        now: OffsetDateTime,
    ) -> Result<Verified> {
        let Some(signature) = &signed.signature else {
            if required || self.require_signatures {
                return Err(Error::Unsigned);
            }
            check_expiry(&signed.manifest, now)?;
            return Ok(Verified {
                key_id: None,
                digest: signed.digest.clone(),
            });
        };
        if signature.algorithm != ALGORITHM {
            return Err(Error::Algorithm(signature.algorithm.clone()));
        }
        let trusted = self
            .keys
            .get(&signature.key_id)
            .ok_or_else(|| Error::UnknownKey(signature.key_id.clone()))?;
        if trusted.revoked {
            return Err(Error::RevokedKey(signature.key_id.clone()));
        }
        if let Some(until) = trusted.valid_until
            && now > until
        {
            return Err(Error::ExpiredKey {
                key: signature.key_id.clone(),
                at: until.format(&Rfc3339).unwrap_or_default(),
            });
        }
        let bytes = BASE64
            .decode(&signature.value)
            .map_err(|_| Error::BadSignature)?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| Error::BadSignature)?;
        trusted
            .key
            .verify_strict(
                &signed.message,
                &ed25519_dalek::Signature::from_bytes(&bytes),
            )
            .map_err(|_| Error::BadSignature)?;
        check_expiry(&signed.manifest, now)?;
        Ok(Verified {
            key_id: Some(signature.key_id.clone()),
            digest: signed.digest.clone(),
        })
    }
}

fn check_expiry(manifest: &Manifest, now: OffsetDateTime) -> Result<()> {
    if let Some(at) = &manifest.expires_at
        && now > timestamp(at, "expires_at")?
    {
        return Err(Error::Expired(at.clone()));
    }
    Ok(())
}

impl Trust {
    /// Reads and verifies a manifest file of one of `kinds` at `now`: its manifest and signer.
    pub fn load_file(
        &self,
        path: &std::path::Path,
        kinds: &[Kind],
        now: OffsetDateTime,
    ) -> Result<(Manifest, Verified)> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Malformed(format!("cannot read {}: {e}", path.display())))?;
        let signed = SignedManifest::parse(&bytes)?;
        if !kinds.contains(&signed.manifest.kind) {
            let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            return Err(Error::Malformed(format!(
                "a {} manifest where {} is expected",
                signed.manifest.kind.as_str(),
                kinds.join(" or ")
            )));
        }
        let verified = self.verify(&signed, false, now)?;
        Ok((signed.manifest, verified))
    }
}

/// A `name@version` reference (`name` alone: the newest version).
pub fn parse_reference(text: &str) -> Result<(String, Option<u32>)> {
    let (name, version) = match text.split_once('@') {
        Some((name, version)) => {
            let version: u32 = version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                Error::Malformed(format!(
                    "{text:?}: the version after `@` is a number from 1"
                ))
            })?;
            (name, Some(version))
        }
        None => (text, None),
    };
    if !valid_name(name) {
        return Err(Error::Malformed(format!(
            "{text:?}: expected name@version (a name of lower-case letters, digits, - and _)"
        )));
    }
    Ok((name.to_owned(), version))
}
