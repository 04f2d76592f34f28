//! The connection to Redis that the shared rate limits and budgets use, bounded in time.
//!
//! Redis is consulted on every request, so an outage must not hold requests up: each call has
//! [`CALL_TIMEOUT`], the connection manager tries once to reconnect with short timeouts, and
//! after a failure Redis is not asked again for [`COOL_OFF`] (calls fail at once, and the caller
//! falls back: rate limits let the request through, budgets use this node's meter). The manager
//! reconnects by itself once Redis is back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::FromRedisValue;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::{Error, Result};

/// The longest one call to Redis may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// How long Redis is left alone after a failed call.
pub const COOL_OFF: Duration = Duration::from_secs(1);

/// TLS material for a `rediss://` URL beyond the system's trust store: a private CA, and a
/// client certificate for servers that ask for one (`tls-auth-clients yes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// PEM root certificate(s) to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key (both or neither).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl RedisTls {
    fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }

    /// The client for `url` with this material; a plain URL with TLS material is a mistake
    /// (the material would be silently unused), and so is half a client key pair.
    fn client(&self, url: &str) -> Result<redis::Client> {
        if !self.is_set() {
            return Ok(redis::Client::open(url)?);
        }
        if !url.starts_with("rediss://") {
            return Err(Error::Config(
                "Redis TLS files are set but the Redis URL is not rediss://".into(),
            ));
        }
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
        };
        let client_tls = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "a Redis client certificate needs its key, and a key its certificate".into(),
                ));
            }
        };
        let root_cert = self.ca_file.as_ref().map(read).transpose()?;
        Ok(redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )?)
    }
}

/// A connection manager with a time bound on each call and a cool-off after a failure.
#[derive(Clone)]
pub struct RedisLink {
    connection: ConnectionManager,
    state: std::sync::Arc<Health>,
}

struct Health {
    epoch: Instant,
    /// Milliseconds since `epoch` before which Redis is not asked (0: ask).
    down_until_ms: AtomicU64,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink").finish_non_exhaustive()
    }
}

impl RedisLink {
    /// Connects; fails when Redis cannot be reached now (a server starts only with its Redis).
    /// A `rediss://` URL is TLS, verified against the system's roots or `tls.ca_file`.
    pub async fn connect(url: &str, tls: &RedisTls) -> Result<Self> {
        let client = tls.client(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let connection = client.get_connection_manager_with_config(config).await?;
        Ok(RedisLink {
            connection,
            state: std::sync::Arc::new(Health {
                epoch: Instant::now(),
                down_until_ms: AtomicU64::new(0),
            }),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.state.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `invocation` within [`CALL_TIMEOUT`], unless Redis failed less than [`COOL_OFF`] ago.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        if self.now_ms() < self.state.down_until_ms.load(Ordering::Relaxed) {
            return Err(Error::RedisDown("failed less than a second ago"));
        }
        let mut connection = self.connection.clone();
        let outcome =
            tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async::<T>(&mut connection)).await;
        let failed = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => Error::Redis(error),
            Err(_) => Error::RedisDown("no answer in time"),
        };
        let until = self.now_ms() + u64::try_from(COOL_OFF.as_millis()).unwrap_or(1_000);
        self.state.down_until_ms.store(until, Ordering::Relaxed);
        Err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_need_a_rediss_url_and_whole_key_pairs() {
        let ca = RedisTls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..RedisTls::default()
        };
        let plain = ca.client("redis://127.0.0.1:6379").unwrap_err();
        assert!(plain.to_string().contains("not rediss://"), "{plain}");
        let unreadable = ca.client("rediss://127.0.0.1:6379").unwrap_err();
        assert!(
            unreadable.to_string().contains("/nonexistent/ca.pem"),
            "{unreadable}"
        );
        let half = RedisTls {
            client_cert: Some("/nonexistent/client.pem".into()),
            ..RedisTls::default()
        };
        let half = half.client("rediss://127.0.0.1:6379").unwrap_err();
        assert!(half.to_string().contains("needs its key"), "{half}");
        // Nothing set: the URL alone decides, plain or TLS.
        RedisTls::default()
            .client("redis://127.0.0.1:6379")
            .unwrap();
    }
}
