//! The exact response cache (issue 19, item 1): a chat answer kept under a key over the tenant
//! and the normalized request, so that the same request from the same tenant is answered again
//! without calling the model.
//!
//! - **Per tenant.** The tenant's id is hashed into every key: two tenants never share an
//!   entry, whatever they send.
//! - **The key** is BLAKE3 over the request as the model would see it: the stream flag, stream
//!   options, `user`, `metadata`, `store`, `service_tier`, `prompt_cache_key`,
//!   `safety_identifier` and the cache options themselves are left out, so a streamed request
//!   and a whole one share their answer.
//! - **Where.** In this process (`quick_cache`, bounded by bytes), or in Redis when the nodes
//!   share one (`SWITCHYARD_REDIS_URL`): then an answer cached by one node is a hit on every
//!   other, as on one node. A Redis outage is a miss, never an error.
//! - **Per request**, `"cache": {"no-cache": true}` skips the lookup (the fresh answer is still
//!   stored), `{"no-store": true}` keeps the answer out, `{"ttl": seconds}` shortens how long it
//!   is kept; the `Cache-Control` request header's `no-cache` and `no-store` do the same.
//! - **A hit is an inference** like any other, logged with provider `cache` and route policy
//!   `cache`, billed at `hit_price` × the cost of its tokens at the model's price, and answered with
//!   `x-switchyard-cache: hit` (a looked-up miss: `miss`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_events::TenantId;

use crate::config::CacheConfig;
use crate::error::Result;
use crate::metrics::CACHE;
use crate::openai::ChatRequest;
use crate::redis_link::{RedisLink, RedisTls};

/// The semantic cache: questions compared by meaning within the same conversation.
pub mod semantic;

/// What the cache does for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub read: bool,
    pub write: bool,
    pub ttl: Duration,
}

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The model that answered.
    pub model: String,
    pub choices: Vec<Value>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Milliseconds since the epoch after which the entry is not served.
    pub expires_at_ms: u64,
    /// Found by meaning, with this similarity (the semantic cache), not by the exact key.
    #[serde(skip)]
    pub similarity: Option<f32>,
}

impl Entry {
    /// The finish reason of the first choice.
    pub fn finish_reason(&self) -> String {
        self.choices
            .first()
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .unwrap_or("stop")
            .to_owned()
    }
}

type Key = [u8; 32];

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<Key, (Arc<Entry>, u64)> for Weight {
    fn weight(&self, _: &Key, value: &(Arc<Entry>, u64)) -> u64 {
        value.1
    }
}

enum Store {
    Memory(quick_cache::sync::Cache<Key, (Arc<Entry>, u64), Weight>),
    Redis {
        link: RedisLink,
        get: redis::Script,
        set: redis::Script,
    },
}

/// The cache of one node (its entries in this process or in the shared Redis).
pub struct ResponseCache {
    config: CacheConfig,
    store: Store,
    /// The semantic cache's questions, beside the answers.
    semantic: crate::cache::semantic::Index,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("config", &self.config)
            .field(
                "store",
                &match self.store {
                    Store::Memory(_) => "memory",
                    Store::Redis { .. } => "redis",
                },
            )
            .finish()
    }
}

const GET: &str = "return redis.call('GET', KEYS[1])";
const SET: &str = "return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])";

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ResponseCache {
    /// A cache in this process.
    pub fn memory(config: CacheConfig) -> Self {
        let items = usize::try_from(config.max_bytes / 4_096)
            .unwrap_or(1 << 16)
            .max(16);
        let store = Store::Memory(quick_cache::sync::Cache::with_weighter(
            items,
            config.max_bytes,
            Weight,
        ));
        ResponseCache {
            config,
            store,
            semantic: crate::cache::semantic::Index::memory(),
        }
    }

    /// A cache in the Redis every node shares.
    pub async fn redis(config: CacheConfig, url: &str, tls: &RedisTls) -> Result<Self> {
        let link = RedisLink::connect(url, tls).await?;
        Ok(ResponseCache {
            config,
            semantic: crate::cache::semantic::Index::redis(link.clone()),
            store: Store::Redis {
                link,
                get: redis::Script::new(GET),
                set: redis::Script::new(SET),
            },
        })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The semantic cache's questions.
    pub(crate) fn semantic(&self) -> &crate::cache::semantic::Index {
        &self.semantic
    }

    /// What the cache does for `request` (its `cache` option; the HTTP layer folds the
    /// `Cache-Control` header into it).
    pub fn control(&self, request: &ChatRequest) -> Control {
        let options = request.cache.clone().unwrap_or_default();
        let ttl = options
            .ttl
            .map_or(self.config.ttl_seconds, |t| t.min(self.config.ttl_seconds));
        Control {
            read: !options.no_cache,
            write: !options.no_store && ttl > 0,
            ttl: Duration::from_secs(ttl),
        }
    }

    /// The entry kept for `key`, if one is and it has not expired.
    pub async fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        let entry = match &self.store {
            Store::Memory(cache) => cache.get(key).map(|(entry, _)| entry),
            Store::Redis { link, get, .. } => {
                let invocation = get.key(redis_key(key));
                match link.invoke::<Option<Vec<u8>>>(&invocation).await {
                    Ok(Some(bytes)) => match serde_json::from_slice::<Entry>(&bytes) {
                        Ok(entry) => Some(Arc::new(entry)),
                        Err(error) => {
                            tracing::warn!(%error, "a cache entry in Redis does not decode; ignored");
                            CACHE.lookups.with_label_values(&["error"]).inc();
                            return None;
                        }
                    },
                    Ok(None) => None,
                    Err(error) => {
                        tracing::warn!(%error, "cache lookup in Redis failed; answered as a miss");
                        CACHE.lookups.with_label_values(&["error"]).inc();
                        return None;
                    }
                }
            }
        };
        let result = match &entry {
            Some(e) if e.expires_at_ms <= now_ms() => {
                if let Store::Memory(cache) = &self.store {
                    cache.remove(key);
                }
                CACHE.lookups.with_label_values(&["expired"]).inc();
                return None;
            }
            Some(_) => "hit",
            None => "miss",
        };
        CACHE.lookups.with_label_values(&[result]).inc();
        entry
    }

    /// Keeps `entry` under `key` for `ttl` (an answer larger than `max_entry_bytes` is not
    /// kept).
    pub async fn put(&self, key: &Key, mut entry: Entry, ttl: Duration) {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        entry.expires_at_ms = now_ms().saturating_add(ttl_ms);
        let Ok(bytes) = serde_json::to_vec(&entry) else {
            return;
        };
        if bytes.len() > self.config.max_entry_bytes {
            CACHE.stores.with_label_values(&["too_large"]).inc();
            return;
        }
        match &self.store {
            Store::Memory(cache) => {
                cache.insert(*key, (Arc::new(entry), bytes.len() as u64 + 64));
            }
            Store::Redis { link, set, .. } => {
                let mut invocation = set.key(redis_key(key));
                invocation.arg(bytes).arg(ttl_ms);
                if let Err(error) = link.invoke::<redis::Value>(&invocation).await {
                    tracing::warn!(%error, "cache store in Redis failed; the answer is not cached");
                    CACHE.stores.with_label_values(&["error"]).inc();
                    return;
                }
            }
        }
        CACHE.stores.with_label_values(&["stored"]).inc();
    }
}

fn redis_key(key: &Key) -> String {
    let hex: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("switchyard:cache:v1:{hex}")
}

/// The cache key of `request` for `tenant` (see the module docs for what is left out).
/// `salt` is the tenant's guardrail policy's fingerprint: an answer kept under one policy is
/// not served under another.
pub fn key(tenant: TenantId, request: &ChatRequest, salt: Option<&[u8; 32]>) -> Key {
    let mut normal = request.clone();
    normal.stream = false;
    normal.stream_options = None;
    normal.user = None;
    normal.metadata = None;
    normal.store = None;
    normal.service_tier = None;
    normal.prompt_cache_key = None;
    normal.safety_identifier = None;
    normal.cache = None;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"switchyard-cache-v1\0");
    hasher.update(tenant.to_string().as_bytes());
    hasher.update(&[0]);
    if let Some(salt) = salt {
        hasher.update(b"guardrails\0");
        hasher.update(salt);
    }
    // serde_json writes a struct's fields in their order and a Value's maps sorted: the same
    // request is the same bytes.
    if let Ok(bytes) = serde_json::to_vec(&normal) {
        hasher.update(&bytes);
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    fn hello() -> Value {
        json!({"model": "sim-small", "messages": [{"role": "user", "content": "hello"}]})
    }

    #[test]
    fn the_key_is_the_tenant_and_what_the_model_sees() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let base = key(a, &request(hello()), None);
        assert_eq!(base, key(a, &request(hello()), None));
        assert_ne!(base, key(b, &request(hello()), None), "per tenant");
        assert_ne!(
            base,
            key(a, &request(hello()), Some(&[7; 32])),
            "per guardrail policy"
        );
        for unseen in [
            json!({"stream": true, "stream_options": {"include_usage": true}}),
            json!({"user": "u1", "metadata": {"k": "v"}, "store": true}),
            json!({"cache": {"no-store": true, "ttl": 5}}),
        ] {
            let mut body = hello();
            body.as_object_mut()
                .unwrap()
                .extend(unseen.as_object().unwrap().clone());
            assert_eq!(base, key(a, &request(body.clone()), None), "{unseen}");
        }
        for seen in [
            json!({"temperature": 0.1}),
            json!({"max_tokens": 5}),
            json!({"n": 2}),
            json!({"model": "sim-large"}),
            json!({"messages": [{"role": "user", "content": "hello!"}]}),
        ] {
            let mut body = hello();
            body.as_object_mut()
                .unwrap()
                .extend(seen.as_object().unwrap().clone());
            assert_ne!(base, key(a, &request(body.clone()), None), "{seen}");
        }
    }

    fn entry(text: &str) -> Entry {
        Entry {
            model: "sim-small".into(),
            choices: vec![json!({"index": 0, "message": {"role": "assistant", "content": text}})],
            prompt_tokens: 3,
            completion_tokens: 4,
            expires_at_ms: 0,
            similarity: None,
        }
    }

    #[tokio::test]
    async fn entries_expire_and_large_ones_are_not_kept() {
        let cache = ResponseCache::memory(CacheConfig {
            enabled: true,
            max_entry_bytes: 512,
            ..CacheConfig::default()
        });
        let k = key(TenantId::new(), &request(hello()), None);
        assert!(cache.get(&k).await.is_none());
        cache.put(&k, entry("hi"), Duration::from_millis(50)).await;
        assert_eq!(cache.get(&k).await.unwrap().choices, entry("hi").choices);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cache.get(&k).await.is_none(), "expired");
        cache
            .put(&k, entry(&"x".repeat(600)), Duration::from_secs(60))
            .await;
        assert!(cache.get(&k).await.is_none(), "too large to keep");
    }

    #[test]
    fn a_request_shortens_the_ttl_and_opts_out() {
        let cache = ResponseCache::memory(CacheConfig {
            enabled: true,
            ttl_seconds: 60,
            ..CacheConfig::default()
        });
        let plain = cache.control(&request(hello()));
        assert_eq!(
            (plain.read, plain.write, plain.ttl.as_secs()),
            (true, true, 60)
        );
        let mut body = hello();
        body["cache"] = json!({"ttl": 600, "no-cache": true});
        let longer = cache.control(&request(body));
        assert_eq!(
            (longer.read, longer.write, longer.ttl.as_secs()),
            (false, true, 60)
        );
        let mut body = hello();
        body["cache"] = json!({"ttl": 0});
        assert!(
            !cache.control(&request(body)).write,
            "a ttl of 0 keeps nothing"
        );
        assert!(
            CacheConfig {
                hit_price: 1.5,
                ..CacheConfig::default()
            }
            .validate()
            .is_err()
        );
    }
}
