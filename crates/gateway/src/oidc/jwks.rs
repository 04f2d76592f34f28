//! The identity provider's signing keys (a JWKS), from a URL or a file, cached: read again when
//! they are older than the TTL, and at once when a token names a key id the cache lacks (at most
//! once per [`MIN_REFRESH`], so tokens with made-up key ids cannot make us hammer the IdP). When
//! a refresh fails, the keys already held keep working and the failure is logged.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};

use super::OidcError;

/// Shortest time between two reads of the JWKS that an unknown key id may cause.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum Source {
    Url(String),
    File(PathBuf),
}

#[derive(Debug, Default)]
struct Cached {
    keys: Option<Arc<JwkSet>>,
    /// When the keys were last read successfully.
    fetched: Option<Instant>,
    /// When a read was last tried (successful or not).
    tried: Option<Instant>,
}

/// The cached key set.
#[derive(Debug)]
pub struct Jwks {
    source: Source,
    ttl: Duration,
    /// [`MIN_REFRESH`], shorter in tests.
    pub(crate) min_refresh: Duration,
    http: reqwest::Client,
    cached: RwLock<Cached>,
    /// One refresh at a time; the others wait for it and use its result.
    refreshing: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub fn new(source: Source, ttl: Duration) -> Result<Jwks, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| OidcError::Config(format!("cannot build the JWKS client: {e}")))?;
        Ok(Jwks {
            source,
            ttl,
            min_refresh: MIN_REFRESH,
            http,
            cached: RwLock::new(Cached::default()),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The key a token names (by `kid`; without one, the only signing key of the set).
    pub async fn key(&self, kid: Option<&str>) -> Result<Jwk, OidcError> {
        let (keys, stale) = self.snapshot();
        if let Some(keys) = &keys
            && !stale
            && let Some(key) = find(keys, kid)
        {
            return Ok(key);
        }
        // Stale, empty, or the key is unknown: read the keys again (rate-limited), then look.
        let keys = self.refresh(keys.is_some() && !stale).await?;
        find(&keys, kid).ok_or_else(|| OidcError::UnknownKey(kid.unwrap_or("(none)").to_owned()))
    }

    fn snapshot(&self) -> (Option<Arc<JwkSet>>, bool) {
        let cached = self
            .cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stale = cached.fetched.is_none_or(|at| at.elapsed() >= self.ttl);
        (cached.keys.clone(), stale)
    }

    /// Reads the keys again unless a read was tried within [`MIN_REFRESH`] (and, when
    /// `for_unknown_kid` is false, unless the held keys are fresh); returns the keys to use.
    async fn refresh(&self, for_unknown_kid: bool) -> Result<Arc<JwkSet>, OidcError> {
        let _one = self.refreshing.lock().await;
        {
            let cached = self
                .cached
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let recently = cached
                .tried
                .is_some_and(|at| at.elapsed() < self.min_refresh);
            let fresh = cached.fetched.is_some_and(|at| at.elapsed() < self.ttl);
            if let Some(keys) = &cached.keys
                && (recently || (fresh && !for_unknown_kid))
            {
                return Ok(keys.clone());
            }
            if recently && cached.keys.is_none() {
                return Err(OidcError::KeysUnavailable(
                    "the identity provider's keys could not be read; retry shortly".into(),
                ));
            }
        }
        let read = self.read().await;
        let mut cached = self
            .cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cached.tried = Some(Instant::now());
        match read {
            Ok(keys) => {
                tracing::info!(keys = keys.keys.len(), source = ?self.source, "admin JWKS read");
                let keys = Arc::new(keys);
                cached.keys = Some(keys.clone());
                cached.fetched = Some(Instant::now());
                Ok(keys)
            }
            Err(error) => {
                tracing::warn!(%error, source = ?self.source, "cannot read the admin JWKS; keeping the keys held");
                cached.keys.clone().ok_or(error)
            }
        }
    }

    async fn read(&self) -> Result<JwkSet, OidcError> {
        let bytes = match &self.source {
            Source::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| OidcError::KeysUnavailable(format!("{}: {e}", path.display())))?,
            Source::Url(url) => {
                let response = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| OidcError::KeysUnavailable(format!("{url}: {e}")))?;
                if response
                    .content_length()
                    .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
                {
                    return Err(OidcError::KeysUnavailable(format!(
                        "{url}: the JWKS is larger than {MAX_JWKS_BYTES} bytes"
                    )));
                }
                response
                    .bytes()
                    .await
                    .map_err(|e| OidcError::KeysUnavailable(format!("{url}: {e}")))?
                    .to_vec()
            }
        };
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(OidcError::KeysUnavailable(format!(
                "the JWKS is larger than {MAX_JWKS_BYTES} bytes"
            )));
        }
        parse(&bytes)
    }
}

/// A JWKS document; keys of a kind this build does not know are skipped, not fatal (an IdP may
/// publish encryption keys or new key types beside its signing keys).
pub fn parse(bytes: &[u8]) -> Result<JwkSet, OidcError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| OidcError::KeysUnavailable(format!("not a JWKS document: {e}")))?;
    let keys = raw
        .keys
        .into_iter()
        .filter_map(|key| serde_json::from_value::<Jwk>(key).ok())
        .collect();
    Ok(JwkSet { keys })
}

/// The key with this id, or without an id the only key of the set.
fn find(keys: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(kid) => keys.find(kid).cloned(),
        None if keys.keys.len() == 1 => keys.keys.first().cloned(),
        None => None,
    }
}
