//! Signing keys: generated from the OS's randomness, kept in a small JSON file
//! (`{"key_id", "secret_key", "public_key"}`, base64), and public keys as configured.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A signing key with its id.
#[derive(Clone)]
pub struct SecretKey {
    pub key_id: String,
    pub(crate) signing: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    key_id: String,
    secret_key: String,
    public_key: String,
}

impl SecretKey {
    /// A new key from the operating system's randomness.
    pub fn generate(key_id: &str) -> Result<SecretKey> {
        if !crate::valid_key_id(key_id) {
            return Err(Error::Key(format!(
                "key id {key_id:?}: 1-64 letters, digits, `.`, `-` and `_`"
            )));
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Key(format!("no randomness: {e}")))?;
        Ok(SecretKey {
            key_id: key_id.to_owned(),
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// A key from its 32-byte seed (tests, and keys kept elsewhere).
    pub fn from_seed(key_id: &str, seed: [u8; 32]) -> SecretKey {
        SecretKey {
            key_id: key_id.to_owned(),
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The public key, standard base64 (what `[registry.keys.<id>] public_key` takes).
    pub fn public_key(&self) -> String {
        BASE64.encode(self.signing.verifying_key().to_bytes())
    }

    /// The key file's text.
    pub fn to_file(&self) -> String {
        let file = KeyFile {
            key_id: self.key_id.clone(),
            secret_key: BASE64.encode(self.signing.to_bytes()),
            public_key: self.public_key(),
        };
        serde_json::to_string_pretty(&file).unwrap_or_default() + "\n"
    }

    /// Reads a key file; its public key must be the secret key's.
    pub fn from_file(text: &str) -> Result<SecretKey> {
        let file: KeyFile = serde_json::from_str(text).map_err(|e| {
            Error::Key(format!(
                "not a key file ({{key_id, secret_key, public_key}}): {e}"
            ))
        })?;
        if !crate::valid_key_id(&file.key_id) {
            return Err(Error::Key(format!("key id {:?} is not valid", file.key_id)));
        }
        let seed: [u8; 32] = BASE64
            .decode(file.secret_key.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Key("secret_key is not 32 bytes of base64".into()))?;
        let key = SecretKey::from_seed(&file.key_id, seed);
        if key.public_key() != file.public_key.trim() {
            return Err(Error::Key(
                "public_key is not the secret key's: the file was changed".into(),
            ));
        }
        Ok(key)
    }
}

/// A configured public key.
pub(crate) fn public_key(text: &str) -> Result<VerifyingKey> {
    let bytes: [u8; 32] = BASE64
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Key("not 32 bytes of standard base64".into()))?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| Error::Key("not an ed25519 public key".into()))?;
    if key.is_weak() {
        return Err(Error::Key("a weak (small-order) ed25519 key".into()));
    }
    Ok(key)
}
