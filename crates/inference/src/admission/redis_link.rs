//! The connection to Redis that the shared rate limits and budgets use, bounded in time.
//!
//! Redis is consulted on every request, so an outage must not hold requests up: each call has
//! [`CALL_TIMEOUT`], the connection manager tries once to reconnect with short timeouts, and
//! after a failure Redis is not asked again for [`COOL_OFF`] (calls fail at once, and the caller
//! falls back: rate limits let the request through, budgets use this node's meter). The manager
//! reconnects by itself once Redis is back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::FromRedisValue;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::{Error, Result};

/// The longest one call to Redis may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// How long Redis is left alone after a failed call.
pub const COOL_OFF: Duration = Duration::from_secs(1);

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
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
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
