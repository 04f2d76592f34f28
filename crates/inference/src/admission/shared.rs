//! Budgets shared by several nodes in Redis: one atomic check per request, exact across nodes.
//!
//! Each node's [`Meter`](super::meter::Meter) knows the spend the log records, but only its own
//! reservations, so N nodes would each let a tenant spend up to its budget. Here every
//! reservation and settlement is one Lua script in Redis, which checks and moves the tenant's
//! figures atomically for every node:
//!
//! - `…:m:<YYYY-MM>` and `…:d:<YYYY-MM-DD>` hold the period's settled spend (micro-dollars,
//!   tokens) and what requests in flight reserved. A period's figures are seeded from the log
//!   (the caller's meter) the first time a node touches them, then moved only here.
//! - Each reservation is a lease: `…:leases` (a sorted set, score = expiry) and `…:held` (its
//!   amounts and periods). A node that dies mid-request strands its reservation only until the
//!   lease expires; the next script run on that tenant gives it back.
//! - A settlement replaces the reservation by the real cost once per inference id (`…:settled`
//!   remembers ids for a day), so a retried settlement counts once.
//!
//! Keys carry the tenant in a hash tag (`{tenant}`), so a Redis Cluster keeps one tenant's keys
//! in one slot. Redis keeps nothing on disk in some deployments: when a period's figures are
//! gone, they are seeded again from the log; reservations of requests in flight at that moment
//! are forgotten (an overshoot of at most what they reserved, logged as a warning).

use std::time::Duration;

use switchyard_actors::quota::period_of;
use switchyard_actors::tenant::Limits;
use time::OffsetDateTime;
use uuid::Uuid;

use super::below::Account;
use super::meter::{Exhausted, SpendView, day_of};

/// How long a reservation holds without its request settling it (the longest request: a
/// provider's whole timeout with retries, and the stream that follows).
pub const LEASE: Duration = Duration::from_secs(15 * 60);

/// The budgets in the order the script checks them (its answer names one by index).
const BUDGETS: [&str; 4] = [
    "monthly_budget_usd",
    "daily_budget_usd",
    "monthly_token_budget",
    "daily_token_budget",
];

/// Gives back expired leases, seeds the periods, checks every budget set, and reserves.
/// KEYS: month, day, leases, held. ARGV: now_ms, lease_ms, id, micros, tokens, four limits
/// (-1: none), four seeds (month spent, month tokens, day spent, day tokens).
const RESERVE_LUA: &str = r#"
local function expire(leases, held, now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now)) do
    local rec = redis.call('HGET', held, id)
    if rec then
      local m, d, mi, tk = string.match(rec, '^(.-)|(.-)|(%d+)|(%d+)$')
      if m then
        redis.call('HINCRBY', m, 'res', -tonumber(mi)); redis.call('HINCRBY', m, 'rtok', -tonumber(tk))
        redis.call('HINCRBY', d, 'res', -tonumber(mi)); redis.call('HINCRBY', d, 'rtok', -tonumber(tk))
      end
      redis.call('HDEL', held, id)
    end
    redis.call('ZREM', leases, id)
  end
end
local month, day, leases, held = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, lease, id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local micros, tokens = tonumber(ARGV[4]), tonumber(ARGV[5])
expire(leases, held, now)
redis.call('HSETNX', month, 'spent', ARGV[10]); redis.call('HSETNX', month, 'tokens', ARGV[11])
redis.call('HSETNX', day, 'spent', ARGV[12]); redis.call('HSETNX', day, 'tokens', ARGV[13])
redis.call('PEXPIRE', month, 40 * 86400000); redis.call('PEXPIRE', day, 3 * 86400000)
local function num(key, field) return tonumber(redis.call('HGET', key, field) or '0') end
local used = {
  num(month, 'spent') + num(month, 'res'), num(day, 'spent') + num(day, 'res'),
  num(month, 'tokens') + num(month, 'rtok'), num(day, 'tokens') + num(day, 'rtok'),
}
local asked = {micros, micros, tokens, tokens}
for i = 1, 4 do
  local limit = tonumber(ARGV[5 + i])
  if limit >= 0 and used[i] + asked[i] > limit then
    local left = limit - used[i]
    if left < 0 then left = 0 end
    return {0, i, left}
  end
end
redis.call('HINCRBY', month, 'res', micros); redis.call('HINCRBY', month, 'rtok', tokens)
redis.call('HINCRBY', day, 'res', micros); redis.call('HINCRBY', day, 'rtok', tokens)
local rec = redis.call('HGET', held, id)
if rec then
  local m, d, mi, tk = string.match(rec, '^(.-)|(.-)|(%d+)|(%d+)$')
  if m == month and d == day then
    micros = micros + tonumber(mi); tokens = tokens + tonumber(tk)
  end
end
redis.call('HSET', held, id, month .. '|' .. day .. '|' .. micros .. '|' .. tokens)
redis.call('ZADD', leases, now + lease, id)
redis.call('PEXPIRE', leases, lease * 2); redis.call('PEXPIRE', held, lease * 2)
return {1, 0, 0}
"#;

/// Replaces a reservation by the real cost, once per id. KEYS: month, day, leases, held,
/// settled. ARGV: id, cost, tokens, four seeds, sign (1 settle, -1 take back).
const SETTLE_LUA: &str = r#"
local month, day, leases, held, settled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, cost, tokens, sign = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[8])
local rec = redis.call('HGET', held, id)
if rec then
  local m, d, mi, tk = string.match(rec, '^(.-)|(.-)|(%d+)|(%d+)$')
  if m then
    redis.call('HINCRBY', m, 'res', -tonumber(mi)); redis.call('HINCRBY', m, 'rtok', -tonumber(tk))
    redis.call('HINCRBY', d, 'res', -tonumber(mi)); redis.call('HINCRBY', d, 'rtok', -tonumber(tk))
  end
  redis.call('HDEL', held, id)
  redis.call('ZREM', leases, id)
end
if sign > 0 then
  if redis.call('HSETNX', settled, id, '1') == 0 then return 0 end
else
  if redis.call('HDEL', settled, id) == 0 then return 0 end
end
redis.call('PEXPIRE', settled, 86400000)
redis.call('HSETNX', month, 'spent', ARGV[4]); redis.call('HSETNX', month, 'tokens', ARGV[5])
redis.call('HSETNX', day, 'spent', ARGV[6]); redis.call('HSETNX', day, 'tokens', ARGV[7])
redis.call('HINCRBY', month, 'spent', sign * cost); redis.call('HINCRBY', month, 'tokens', sign * tokens)
redis.call('HINCRBY', day, 'spent', sign * cost); redis.call('HINCRBY', day, 'tokens', sign * tokens)
redis.call('PEXPIRE', month, 40 * 86400000); redis.call('PEXPIRE', day, 3 * 86400000)
return 1
"#;

/// The tenant's budgets in Redis, shared by every node that points at it.
#[derive(Clone)]
pub struct SharedBudgets {
    connection: crate::redis_link::RedisLink,
    reserve: std::sync::Arc<redis::Script>,
    settle: std::sync::Arc<redis::Script>,
}

impl std::fmt::Debug for SharedBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBudgets").finish_non_exhaustive()
    }
}

/// The keys of one tenant's figures at `now`.
struct Keys {
    month: String,
    day: String,
    leases: String,
    held: String,
    settled: String,
}

impl Keys {
    fn of(account: &Account, now: OffsetDateTime) -> Self {
        let base = format!(
            "switchyard:budget:{{{}}}{}",
            account.tenant,
            account.redis_suffix()
        );
        Keys {
            month: format!("{base}:m:{}", period_of(now)),
            day: format!("{base}:d:{}", day_of(now)),
            leases: format!("{base}:leases"),
            held: format!("{base}:held"),
            settled: format!("{base}:settled"),
        }
    }
}

fn limit(value: Option<u64>) -> i64 {
    value.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn seeds(seed: &SpendView) -> [u64; 4] {
    [
        seed.spent_micros,
        seed.tokens,
        seed.day_spent_micros,
        seed.day_tokens,
    ]
}

impl SharedBudgets {
    /// Connects (the connection reconnects by itself after Redis restarts).
    pub async fn connect(url: &str, tls: &crate::redis_link::RedisTls) -> crate::Result<Self> {
        Ok(SharedBudgets {
            connection: crate::redis_link::RedisLink::connect(url, tls).await?,
            reserve: std::sync::Arc::new(redis::Script::new(RESERVE_LUA)),
            settle: std::sync::Arc::new(redis::Script::new(SETTLE_LUA)),
        })
    }

    /// Reserves `micros` and `tokens` for inference `id` (adding to what it holds already, for
    /// a stream that outgrows its reservation) within every budget of `limits` that is set.
    /// `seed` is the log's figures for the period, used when Redis has none yet.
    #[allow(
        clippy::too_many_arguments,
        reason = "the request's amounts, its limits and the log's figures"
    )]
    pub async fn reserve(
        &self,
        account: impl Into<Account>,
        id: Uuid,
        limits: &Limits,
        micros: u64,
        tokens: u64,
        seed: &SpendView,
        now: OffsetDateTime,
    ) -> crate::Result<Result<(), Exhausted>> {
        let keys = Keys::of(&account.into(), now);
        let now_ms = now.unix_timestamp_nanos() / 1_000_000;
        let mut invocation = self.reserve.prepare_invoke();
        invocation
            .key(&keys.month)
            .key(&keys.day)
            .key(&keys.leases)
            .key(&keys.held)
            .arg(i64::try_from(now_ms).unwrap_or(i64::MAX))
            .arg(u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX))
            .arg(id.to_string())
            .arg(micros)
            .arg(tokens)
            .arg(limit(limits.monthly_budget_micros))
            .arg(limit(limits.daily_budget_micros))
            .arg(limit(limits.monthly_token_budget))
            .arg(limit(limits.daily_token_budget));
        for value in seeds(seed) {
            invocation.arg(value);
        }
        let (ok, which, left): (i64, usize, i64) = self.connection.invoke(&invocation).await?;
        if ok == 1 {
            return Ok(Ok(()));
        }
        Ok(Err(Exhausted {
            budget: BUDGETS
                .get(which.saturating_sub(1))
                .copied()
                .unwrap_or(BUDGETS[0]),
            left: u64::try_from(left).unwrap_or(0),
        }))
    }

    /// Replaces inference `id`'s reservation by its real cost (`take_back`: undoes a settlement
    /// whose event could not be written). Counted once per id whatever the retries.
    #[allow(
        clippy::too_many_arguments,
        reason = "the inference, its real figures and the log's"
    )]
    pub async fn settle(
        &self,
        account: impl Into<Account>,
        id: Uuid,
        cost: u64,
        tokens: u64,
        seed: &SpendView,
        now: OffsetDateTime,
        take_back: bool,
    ) -> crate::Result<()> {
        let keys = Keys::of(&account.into(), now);
        let mut invocation = self.settle.prepare_invoke();
        invocation
            .key(&keys.month)
            .key(&keys.day)
            .key(&keys.leases)
            .key(&keys.held)
            .key(&keys.settled)
            .arg(id.to_string())
            .arg(cost)
            .arg(tokens);
        for value in seeds(seed) {
            invocation.arg(value);
        }
        invocation.arg(if take_back { -1 } else { 1 });
        let _: i64 = self.connection.invoke(&invocation).await?;
        Ok(())
    }
}
