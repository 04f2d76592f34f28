//! Rate limits (requests and tokens per minute) with GCRA, the generic cell rate algorithm.
//!
//! GCRA keeps one number per limited key, the theoretical arrival time (TAT): a request of cost
//! `c` is allowed when `TAT + c·T − burst·T ≤ now` (`T` = the interval between two units at the
//! sustained rate), and then moves the TAT to `max(TAT, now) + c·T`. It is a token bucket without
//! a refill timer, exact at any rate, and one compare-and-set in Redis. The math is one pure
//! function here, [`gcra`], used by the in-process limiter; the Redis backend runs the same
//! steps in a Lua script so several nodes share exact limits.

use std::time::Duration;

use dashmap::DashMap;

/// A limit: `per_minute` units sustained, with bursts of up to `burst` units at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub per_minute: u64,
    pub burst: u64,
}

impl Limit {
    /// A per-minute limit whose burst is the whole minute's allowance (the usual reading of
    /// "N per minute").
    pub fn per_minute(per_minute: u64) -> Self {
        Limit {
            per_minute,
            burst: per_minute,
        }
    }

    fn interval_nanos(&self) -> u128 {
        60_000_000_000u128 / u128::from(self.per_minute.max(1))
    }
}

/// The answer for one request, with what the `x-ratelimit-*` headers show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// Units that could still be taken now.
    pub remaining: u64,
    /// When the limit is fully available again.
    pub reset_after: Duration,
    /// When a refused request could first succeed (zero when allowed).
    pub retry_after: Duration,
}

/// One GCRA step: the decision and the new TAT (unchanged when refused). Times are nanoseconds
/// on any monotonic clock.
pub fn gcra(tat: Option<u128>, now: u128, limit: Limit, cost: u64) -> (Decision, u128) {
    let interval = limit.interval_nanos();
    let tolerance = interval * u128::from(limit.burst.max(1));
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + interval * u128::from(cost);
    let allow_at = new_tat.saturating_sub(tolerance);
    let remaining_after = |tat: u128| -> u64 {
        let used = tat.saturating_sub(now);
        u64::try_from(tolerance.saturating_sub(used) / interval).unwrap_or(u64::MAX)
    };
    if cost <= limit.burst && allow_at <= now {
        let decision = Decision {
            allowed: true,
            limit: limit.per_minute,
            remaining: remaining_after(new_tat),
            reset_after: nanos(new_tat - now),
            retry_after: Duration::ZERO,
        };
        (decision, new_tat)
    } else {
        let retry_after = if cost > limit.burst {
            Duration::from_secs(60)
        } else {
            nanos(allow_at - now)
        };
        let decision = Decision {
            allowed: false,
            limit: limit.per_minute,
            remaining: remaining_after(tat),
            reset_after: nanos(tat - now),
            retry_after,
        };
        (decision, tat)
    }
}

/// Takes `cost` units whatever the limit says (usage learnt after the fact, such as the tokens
/// of an answer): the TAT moves on, so the next requests wait for it. Returns the new TAT.
pub fn gcra_charge(tat: Option<u128>, now: u128, limit: Limit, cost: u64) -> u128 {
    tat.unwrap_or(now).max(now) + limit.interval_nanos() * u128::from(cost)
}

/// Gives back `units` taken earlier (a reservation larger than the usage): the TAT moves back,
/// never before `now` (a limit holds no more than its burst). Returns the new TAT.
pub fn gcra_refund(tat: Option<u128>, now: u128, limit: Limit, units: u64) -> u128 {
    tat.unwrap_or(now)
        .saturating_sub(limit.interval_nanos() * u128::from(units))
        .max(now)
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// Limits kept in this process (the default; one node).
#[derive(Debug, Default)]
pub struct LocalLimiter {
    tats: DashMap<String, u128>,
}

impl LocalLimiter {
    /// Takes `cost` units of `key`'s `limit` at `now` (nanoseconds), if it may.
    pub fn check(&self, key: &str, limit: Limit, cost: u64, now: u128) -> Decision {
        let mut entry = self.tats.entry(key.to_owned()).or_insert(now);
        let (decision, new_tat) = gcra(Some(*entry), now, limit, cost);
        *entry = new_tat;
        decision
    }
}

impl LocalLimiter {
    /// Charges `cost` units of `key` at `now` without refusing (see [`gcra_charge`]).
    pub fn charge(&self, key: &str, limit: Limit, cost: u64, now: u128) {
        let mut entry = self.tats.entry(key.to_owned()).or_insert(now);
        *entry = gcra_charge(Some(*entry), now, limit, cost);
    }

    /// Gives back `units` of `key` at `now` (see [`gcra_refund`]).
    pub fn refund(&self, key: &str, limit: Limit, units: u64, now: u128) {
        let mut entry = self.tats.entry(key.to_owned()).or_insert(now);
        *entry = gcra_refund(Some(*entry), now, limit, units);
    }
}

/// GCRA in Redis, the same steps as [`gcra`] in microseconds, on Redis's own clock (`TIME`), so
/// every node shares one exact limit and no node's clock matters. Returns
/// `{allowed, remaining, reset_after_us, retry_after_us}`.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local force = ARGV[4] == '1'
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - tolerance
local function remaining(at)
  local left = math.floor((tolerance - (at - now)) / interval)
  if left < 0 then return 0 end
  return left
end
if ARGV[4] == '2' then
  local back = tat - interval * cost
  if back < now then back = now end
  redis.call('SET', KEYS[1], string.format('%.0f', back), 'PX', math.ceil((back - now) / 1000) + 1000)
  return {1, remaining(back), back - now, 0}
end
if force or (cost <= burst and allow_at <= now) then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
  return {1, remaining(new_tat), new_tat - now, 0}
end
local retry = allow_at - now
if cost > burst then retry = 60000000 end
return {0, remaining(tat), tat - now, retry}
"#;

/// Limits shared by several nodes in Redis (`SWITCHYARD_REDIS_URL`).
#[derive(Clone)]
pub struct RedisLimiter {
    connection: crate::redis_link::RedisLink,
    script: std::sync::Arc<redis::Script>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter").finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Connects (the connection reconnects by itself after Redis restarts).
    pub async fn connect(url: &str) -> crate::Result<Self> {
        Self::connect_with(url, &crate::redis_link::RedisTls::default()).await
    }

    /// Connects with TLS material for a `rediss://` URL.
    pub async fn connect_with(url: &str, tls: &crate::redis_link::RedisTls) -> crate::Result<Self> {
        Ok(RedisLimiter {
            connection: crate::redis_link::RedisLink::connect(url, tls).await?,
            script: std::sync::Arc::new(redis::Script::new(GCRA_LUA)),
        })
    }

    /// Takes `cost` units of `key`'s `limit`, if it may.
    pub async fn check(&self, key: &str, limit: Limit, cost: u64) -> crate::Result<Decision> {
        self.run(key, limit, cost, "0").await
    }

    /// Charges `cost` units without refusing (usage learnt after the fact).
    pub async fn charge(&self, key: &str, limit: Limit, cost: u64) -> crate::Result<()> {
        self.run(key, limit, cost, "1").await.map(|_| ())
    }

    /// Gives back `units` taken earlier.
    pub async fn refund(&self, key: &str, limit: Limit, units: u64) -> crate::Result<()> {
        self.run(key, limit, units, "2").await.map(|_| ())
    }

    /// `mode`: "0" check, "1" charge whatever the limit says, "2" give back.
    async fn run(&self, key: &str, limit: Limit, cost: u64, mode: &str) -> crate::Result<Decision> {
        let interval_us = u64::try_from(limit.interval_nanos() / 1_000)
            .unwrap_or(u64::MAX)
            .max(1);
        let mut invocation = self.script.key(format!("switchyard:ratelimit:{key}"));
        invocation
            .arg(interval_us)
            .arg(limit.burst.max(1))
            .arg(cost)
            .arg(mode);
        let (allowed, remaining, reset_us, retry_us): (i64, i64, i64, i64) =
            self.connection.invoke(&invocation).await?;
        let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        Ok(Decision {
            allowed: allowed == 1,
            limit: limit.per_minute,
            remaining: u64::try_from(remaining).unwrap_or(0),
            reset_after: micros(reset_us),
            retry_after: micros(retry_us),
        })
    }
}

fn degraded(what: &str) {
    crate::metrics::INFERENCE
        .degraded
        .with_label_values(&[what])
        .inc();
}

/// Where limit state lives: this process (default) or Redis (several nodes).
#[derive(Debug)]
pub enum Limiter {
    Local {
        limiter: LocalLimiter,
        started: std::time::Instant,
    },
    Redis(RedisLimiter),
}

impl Limiter {
    pub fn local() -> Self {
        Limiter::Local {
            limiter: LocalLimiter::default(),
            started: std::time::Instant::now(),
        }
    }

    /// Takes `cost` units of `key`'s `limit`. When Redis cannot be reached the request is let
    /// through (and logged): an outage of the limiter must not become an outage of the API.
    pub async fn check(&self, key: &str, limit: Limit, cost: u64) -> Decision {
        match self {
            Limiter::Local { limiter, started } => {
                limiter.check(key, limit, cost, started.elapsed().as_nanos())
            }
            Limiter::Redis(redis) => match redis.check(key, limit, cost).await {
                Ok(decision) => decision,
                Err(error) => {
                    degraded("rate_limit_check");
                    tracing::warn!(%error, "rate limiter unavailable; letting the request through");
                    Decision {
                        allowed: true,
                        limit: limit.per_minute,
                        remaining: limit.burst,
                        reset_after: Duration::ZERO,
                        retry_after: Duration::ZERO,
                    }
                }
            },
        }
    }
}

impl Limiter {
    /// Squares a reservation of `reserved` units of `key`'s `limit` with the `used` ones, known
    /// only once the answer is written: the excess is charged, what was not used given back.
    pub async fn settle(&self, key: &str, limit: Limit, reserved: u64, used: u64) {
        if used > reserved {
            self.charge(key, limit, used - reserved).await;
        } else if used < reserved {
            let units = reserved - used;
            match self {
                Limiter::Local { limiter, started } => {
                    limiter.refund(key, limit, units, started.elapsed().as_nanos());
                }
                Limiter::Redis(redis) => {
                    if let Err(error) = redis.refund(key, limit, units).await {
                        degraded("rate_limit_refund");
                        tracing::warn!(%error, "rate limiter unavailable; a token refund was lost");
                    }
                }
            }
        }
    }

    /// Charges `cost` units of `key`'s `limit` without refusing: the tokens of an answer, known
    /// only once it is written. A Redis outage loses the charge (logged), as in `check`.
    pub async fn charge(&self, key: &str, limit: Limit, cost: u64) {
        match self {
            Limiter::Local { limiter, started } => {
                limiter.charge(key, limit, cost, started.elapsed().as_nanos());
            }
            Limiter::Redis(redis) => {
                if let Err(error) = redis.charge(key, limit, cost).await {
                    degraded("rate_limit_charge");
                    tracing::warn!(%error, "rate limiter unavailable; a token charge was lost");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECOND: u128 = 1_000_000_000;

    #[test]
    fn a_minute_allowance_is_spent_then_refilled_at_the_sustained_rate() {
        let limiter = LocalLimiter::default();
        let limit = Limit::per_minute(60); // one a second, bursts of 60
        let t0 = 1_000 * SECOND;
        for i in 0..60 {
            let d = limiter.check("t", limit, 1, t0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 59 - i);
        }
        let refused = limiter.check("t", limit, 1, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert!(!limiter.check("t", limit, 1, t0 + SECOND / 2).allowed);
        assert!(limiter.check("t", limit, 1, t0 + SECOND).allowed);
        assert!(!limiter.check("t", limit, 1, t0 + SECOND).allowed);
        // Keys are independent.
        assert!(limiter.check("other", limit, 1, t0).allowed);
    }

    #[test]
    fn weighted_costs_count_tokens_and_a_cost_above_the_burst_never_passes() {
        let limiter = LocalLimiter::default();
        let limit = Limit::per_minute(1_000);
        let t0 = 5 * SECOND;
        assert!(limiter.check("t", limit, 600, t0).allowed);
        let refused = limiter.check("t", limit, 600, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 400);
        assert!(limiter.check("t", limit, 400, t0).allowed);
        let too_big = limiter.check("u", limit, 1_001, t0);
        assert!(!too_big.allowed);
        assert_eq!(too_big.retry_after, Duration::from_secs(60));
    }

    #[test]
    fn tokens_charged_after_the_fact_make_the_next_requests_wait() {
        let limiter = LocalLimiter::default();
        let limit = Limit::per_minute(600); // ten a second
        let t0 = 7 * SECOND;
        assert!(limiter.check("t", limit, 100, t0).allowed);
        // The answer used 900 more: over the burst, still charged.
        limiter.charge("t", limit, 900, t0);
        let refused = limiter.check("t", limit, 1, t0);
        assert!(!refused.allowed);
        // 400 units over: 40 seconds until one fits again.
        assert_eq!(refused.retry_after, Duration::from_millis(40_100));
        assert!(limiter.check("t", limit, 1, t0 + 41 * SECOND).allowed);
    }

    fn redis_url() -> String {
        std::env::var("SWITCHYARD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// Two nodes sharing Redis share one exact limit (against the real Redis; fails, never skips,
    /// when it is not running: `scripts/services.sh` starts it).
    #[tokio::test]
    async fn nodes_sharing_redis_share_one_exact_limit() {
        let first = RedisLimiter::connect(&redis_url())
            .await
            .expect("Redis is required (scripts/services.sh)");
        let second = RedisLimiter::connect(&redis_url()).await.unwrap();
        let key = format!("test-{}", uuid::Uuid::now_v7());
        let limit = Limit::per_minute(10);
        let mut allowed = 0;
        for i in 0..20 {
            let node = if i % 2 == 0 { &first } else { &second };
            let decision = node.check(&key, limit, 1).await.unwrap();
            if decision.allowed {
                allowed += 1;
            } else {
                assert!(
                    decision.retry_after > Duration::ZERO
                        && decision.retry_after <= Duration::from_secs(6)
                );
                assert_eq!(decision.remaining, 0);
            }
        }
        assert_eq!(
            allowed, 10,
            "the two nodes together admitted {allowed} of a limit of 10"
        );
        let too_big = first.check(&format!("{key}-big"), limit, 11).await.unwrap();
        assert!(!too_big.allowed);
        let limiter = Limiter::Redis(first);
        assert!(!limiter.check(&key, limit, 1).await.allowed);
        // A charge always lands, and pushes the next request further out.
        let charged = format!("{key}-charged");
        limiter.charge(&charged, limit, 30).await;
        let after = limiter.check(&charged, limit, 1).await;
        assert!(!after.allowed);
        assert!(
            after.retry_after > Duration::from_secs(100),
            "{:?}",
            after.retry_after
        );
    }

    #[test]
    fn a_refund_gives_units_back_but_never_more_than_the_burst() {
        let limit = Limit::per_minute(60); // one unit a second, burst 60
        let now = 100 * SECOND;
        let (taken, tat) = gcra(None, now, limit, 60);
        assert!(taken.allowed);
        assert!(
            !gcra(Some(tat), now, limit, 1).0.allowed,
            "the bucket is empty"
        );
        let back = gcra_refund(Some(tat), now, limit, 20);
        let (again, _) = gcra(Some(back), now, limit, 20);
        assert!(again.allowed, "what was given back can be taken again");
        assert!(!gcra(Some(back), now, limit, 21).0.allowed);
        // A refund larger than what was taken leaves a full bucket, not more.
        let full = gcra_refund(Some(tat), now, limit, 1_000);
        assert_eq!(full, now);
        assert!(!gcra(Some(full), now, limit, 61).0.allowed);
    }

    proptest! {
        /// Over any window, no more than burst + rate × window units are ever allowed.
        #[test]
        fn never_more_than_burst_plus_the_sustained_rate(
            per_minute in 1u64..5_000,
            steps in proptest::collection::vec((0u128..3 * SECOND, 1u64..50), 1..300),
        ) {
            let limit = Limit::per_minute(per_minute);
            let limiter = LocalLimiter::default();
            let start = 10 * SECOND;
            let mut now = start;
            let mut allowed: u128 = 0;
            for (advance, cost) in steps {
                now += advance;
                if limiter.check("k", limit, cost, now).allowed {
                    allowed += u128::from(cost);
                }
            }
            let window = now - start;
            let bound = u128::from(limit.burst) + window * u128::from(per_minute) / (60 * SECOND) + 1;
            prop_assert!(allowed <= bound, "allowed {allowed} > bound {bound}");
        }
    }
}
