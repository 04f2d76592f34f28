//! The one error type of the manifests crate: every way a manifest or a key is refused.

/// Why a manifest or a key was refused. [`Error::code`] is the stable name the HTTP API
/// answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not JSON, the wrong shape, a bad name, version or time.
    #[error("invalid manifest: {0}")]
    Malformed(String),
    /// Valid JSON, but not the canonical bytes that signing wrote.
    #[error(
        "the manifest is not in its canonical form (RFC 8785 JSON: no whitespace, keys sorted): \
         it was changed after it was written; sign it again with `switchyard registry sign`"
    )]
    NotCanonical,
    /// No signature where one is required.
    #[error("the manifest is not signed, and signatures are required here")]
    Unsigned,
    /// A signature by another algorithm.
    #[error("signature algorithm {0:?} is not supported (ed25519 only)")]
    Algorithm(String),
    /// Signed by a key this environment does not trust.
    #[error("the manifest is signed by key {0:?}, which is not a trusted key here")]
    UnknownKey(String),
    /// Signed by a revoked key.
    #[error("the manifest is signed by key {0:?}, which was revoked")]
    RevokedKey(String),
    /// Signed by a key whose validity ended (a rotated-out key).
    #[error("the manifest is signed by key {key:?}, which was valid until {at}")]
    ExpiredKey { key: String, at: String },
    /// The signature does not match: the manifest or the signature was changed.
    #[error(
        "the signature does not match the manifest: it was changed after signing, or signed by another key"
    )]
    BadSignature,
    /// The manifest's own `expires_at` has passed.
    #[error("the manifest expired at {0}")]
    Expired(String),
    /// A key file or configured key that cannot be used.
    #[error("key: {0}")]
    Key(String),
}

impl Error {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "invalid_manifest",
            Error::NotCanonical => "not_canonical",
            Error::Unsigned => "unsigned_manifest",
            Error::Algorithm(_) => "unsupported_algorithm",
            Error::UnknownKey(_) => "unknown_key",
            Error::RevokedKey(_) => "revoked_key",
            Error::ExpiredKey { .. } => "expired_key",
            Error::BadSignature => "bad_signature",
            Error::Expired(_) => "expired_manifest",
            Error::Key(_) => "invalid_key",
        }
    }

    /// Whether the manifest itself is unreadable (400) rather than refused by the policy (403).
    pub fn is_malformed(&self) -> bool {
        matches!(self, Error::Malformed(_) | Error::NotCanonical)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
