//! The semantic cache (issue 19, item 1): a tenant that opts in (setting `semantic_cache`,
//! `{"threshold": 0.92}`) is answered from the cache when its question means the same as one
//! answered before, not only when it is the same bytes.
//!
//! - **What must match exactly**: everything but the last user message (the model, the
//!   parameters, the system prompt and every earlier turn), hashed with the tenant and its
//!   guardrail policy into a *context*. Only the last user message is compared by meaning, so a
//!   paraphrase hits and the same question in another conversation does not.
//! - **By meaning**: the message is embedded by the configured embedding model
//!   (`[cache] semantic_model`, e.g. the local all-MiniLM-L6-v2) and compared by cosine
//!   similarity with the questions kept under the same context; the nearest at or above the
//!   tenant's threshold is a hit, answered from its exact cache entry. A message longer than
//!   [`MAX_QUESTION_CHARS`] is not compared (the model would read only its start).
//! - **Where**: beside the exact cache, in this process or in the shared Redis (a hash per
//!   context, at most [`PER_CONTEXT`] questions, the oldest or a random one evicted), so a
//!   question answered on one node is a hit on every node. Per tenant: the tenant is in every
//!   context.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use switchyard_events::TenantId;

use crate::openai::ChatRequest;
use crate::redis_link::RedisLink;

/// The tenant setting that turns the semantic cache on for a tenant.
pub const SEMANTIC_CACHE_SETTING: &str = "semantic_cache";

/// Questions kept per context.
pub const PER_CONTEXT: usize = 256;

/// The longest last message compared by meaning (about the 256 tokens the local model reads).
pub const MAX_QUESTION_CHARS: usize = 1_000;

/// A tenant's semantic cache: the least similarity that counts as the same question.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticPolicy {
    pub threshold: f32,
}

impl SemanticPolicy {
    /// Parses the setting: `{"threshold": 0.5-1.0}` (0.92 when absent).
    pub fn parse(value: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default = "default_threshold")]
            threshold: f64,
        }
        fn default_threshold() -> f64 {
            0.92
        }
        let shape = || "semantic_cache must be {\"threshold\": 0.5-1.0}".to_owned();
        let object: serde_json::Map<String, Value> =
            serde_json::from_str(value).map_err(|e| format!("{}: {e}", shape()))?;
        let raw: Raw = serde_json::from_value(Value::Object(object))
            .map_err(|e| format!("{}: {e}", shape()))?;
        if !(0.5..=1.0).contains(&raw.threshold) {
            return Err(format!(
                "semantic_cache.threshold must be 0.5-1.0 (cosine similarity), not {}",
                raw.threshold
            ));
        }
        #[expect(clippy::cast_possible_truncation, reason = "0.5-1.0 checked above")]
        Ok(SemanticPolicy {
            threshold: raw.threshold as f32,
        })
    }
}

/// The text of a message's content: a string, or its text parts joined.
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for part in parts {
                out.push_str(part.get("text")?.as_str()?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// The context hash of `request` (everything but its last user message, with the tenant and the
/// guardrail salt) and that message's text; `None` when the request does not end with a user
/// message of plain text no longer than [`MAX_QUESTION_CHARS`].
pub fn context(
    tenant: TenantId,
    request: &ChatRequest,
    salt: Option<&[u8; 32]>,
) -> Option<([u8; 32], String)> {
    let last = request.messages.last()?;
    let message = serde_json::to_value(last).ok()?;
    if message.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let question = text_of(message.get("content")?)?;
    let question = question.trim().to_owned();
    if question.is_empty() || question.chars().count() > MAX_QUESTION_CHARS {
        return None;
    }
    let mut rest = request.clone();
    rest.messages.pop();
    let mut key = crate::cache::key(tenant, &rest, salt);
    // Apart from the exact cache's own keys.
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"switchyard-semantic-v1\0");
    hasher.update(&key);
    key = *hasher.finalize().as_bytes();
    Some((key, question))
}

/// `context` for the embedding model `model`: vectors of two models are never compared, even
/// of the same length (after `[cache] semantic_model` changes, say).
pub fn for_model(context: [u8; 32], model: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&context);
    hasher.update(model.as_bytes());
    *hasher.finalize().as_bytes()
}

/// `vector` scaled to unit length, so that a dot product is the cosine similarity whatever
/// the provider returns; `None` for an empty, zero or non-finite vector.
pub fn normalized(vector: Vec<f32>) -> Option<Arc<[f32]>> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if vector.is_empty() || !norm.is_finite() || norm == 0.0 {
        return None;
    }
    Some(vector.into_iter().map(|x| x / norm).collect())
}

/// One kept question: its answer's exact cache key, its vector, and when it expires.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    key: [u8; 32],
    vector: Arc<[f32]>,
    expires_at_ms: u64,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The kept questions: in this process, or in Redis.
pub(crate) enum Index {
    Memory(quick_cache::sync::Cache<[u8; 32], Arc<Vec<Kept>>>),
    Redis {
        link: RedisLink,
        insert: redis::Script,
        all: redis::Script,
    },
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Index::Memory(_) => "memory",
            Index::Redis { .. } => "redis",
        })
    }
}

/// Keeps a question under its context (evicting one when the context is full) and keeps the
/// context as long as its longest-lived answer (a short TTL never shortens it).
const INSERT: &str = "if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then \
     local victim = redis.call('HRANDFIELD', KEYS[1]); \
     if victim then redis.call('HDEL', KEYS[1], victim) end end; \
     redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); \
     if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then \
     redis.call('PEXPIRE', KEYS[1], ARGV[4]) end; return 1";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

fn redis_key(context: &[u8; 32]) -> String {
    format!("switchyard:semcache:v1:{}", hex(context))
}

/// A kept question as bytes: its expiry (u64 LE), then its vector (f32 LE each).
fn encode(expires_at_ms: u64, vector: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + vector.len() * 4);
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    for x in vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> Option<(u64, Vec<f32>)> {
    if bytes.len() < 8 || !(bytes.len() - 8).is_multiple_of(4) {
        return None;
    }
    let (head, rest) = bytes.split_at(8);
    let expires = u64::from_le_bytes(head.try_into().ok()?);
    let vector = rest
        .chunks_exact(4)
        .map(|c| c.try_into().map(f32::from_le_bytes))
        .collect::<Result<Vec<f32>, _>>()
        .ok()?;
    Some((expires, vector))
}

impl Index {
    pub(crate) fn memory() -> Self {
        Index::Memory(quick_cache::sync::Cache::new(16_384))
    }

    pub(crate) fn redis(link: RedisLink) -> Self {
        Index::Redis {
            link,
            insert: redis::Script::new(INSERT),
            all: redis::Script::new("return redis.call('HGETALL', KEYS[1])"),
        }
    }

    /// The kept question under `context` nearest to `vector` at or above `threshold`: its
    /// answer's exact key and the similarity. A Redis failure is a miss.
    pub(crate) async fn nearest(
        &self,
        context: &[u8; 32],
        vector: &[f32],
        threshold: f32,
        now_ms: u64,
    ) -> Option<([u8; 32], f32)> {
        let candidates: Vec<([u8; 32], f32)> = match self {
            Index::Memory(cache) => cache
                .get(context)?
                .iter()
                .filter(|k| k.expires_at_ms > now_ms && k.vector.len() == vector.len())
                .map(|k| (k.key, dot(&k.vector, vector)))
                .collect(),
            Index::Redis { link, all, .. } => {
                let invocation = all.key(redis_key(context));
                let fields: Vec<(Vec<u8>, Vec<u8>)> = match link.invoke(&invocation).await {
                    Ok(fields) => fields,
                    Err(error) => {
                        tracing::warn!(%error, "semantic cache lookup in Redis failed; a miss");
                        return None;
                    }
                };
                fields
                    .iter()
                    .filter_map(|(field, value)| {
                        let key = unhex(field)?;
                        let (expires, kept) = decode(value)?;
                        (expires > now_ms && kept.len() == vector.len())
                            .then(|| (key, dot(&kept, vector)))
                    })
                    .collect()
            }
        };
        candidates
            .into_iter()
            .filter(|(_, similarity)| *similarity >= threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Keeps `vector` under `context`, pointing to the answer kept under `key` for `ttl`.
    pub(crate) async fn insert(
        &self,
        context: &[u8; 32],
        key: [u8; 32],
        vector: Arc<[f32]>,
        ttl: Duration,
        now_ms: u64,
    ) {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        match self {
            Index::Memory(cache) => {
                let mut kept: Vec<Kept> = cache
                    .get(context)
                    .map(|k| {
                        k.iter()
                            .filter(|e| e.expires_at_ms > now_ms && e.key != key)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                if kept.len() >= PER_CONTEXT {
                    kept.remove(0);
                }
                kept.push(Kept {
                    key,
                    vector,
                    expires_at_ms,
                });
                cache.insert(*context, Arc::new(kept));
            }
            Index::Redis { link, insert, .. } => {
                let mut invocation = insert.key(redis_key(context));
                invocation
                    .arg(hex(&key))
                    .arg(encode(expires_at_ms, &vector))
                    .arg(PER_CONTEXT)
                    .arg(ttl_ms);
                if let Err(error) = link.invoke::<redis::Value>(&invocation).await {
                    tracing::warn!(%error, "semantic cache store in Redis failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_context_is_everything_but_the_last_question() {
        let tenant = TenantId::new();
        let ask = |system: &str, question: Value| {
            request(json!({"model": "sim-small", "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question}]}))
        };
        let (a, qa) = context(
            tenant,
            &ask("be brief", json!("How do I reset my password?")),
            None,
        )
        .unwrap_or_else(|| panic!("a context"));
        let (b, qb) = context(
            tenant,
            &ask("be brief", json!("I forgot my password")),
            None,
        )
        .unwrap_or_else(|| panic!("a context"));
        assert_eq!(a, b, "only the question differs");
        assert_ne!(qa, qb);
        let other_system = context(tenant, &ask("be verbose", json!("x")), None).map(|c| c.0);
        assert_ne!(Some(a), other_system);
        let other_tenant =
            context(TenantId::new(), &ask("be brief", json!("x")), None).map(|c| c.0);
        assert_ne!(Some(a), other_tenant);
        assert_ne!(
            Some(a),
            context(tenant, &ask("be brief", json!("x")), Some(&[1; 32])).map(|c| c.0)
        );
        // Text parts are read; anything else, an assistant turn last, or a long question: none.
        let parts = json!([{"type": "text", "text": "How do "}, {"type": "text", "text": "I?"}]);
        assert_eq!(
            context(tenant, &ask("s", parts), None)
                .map(|c| c.1)
                .as_deref(),
            Some("How do I?")
        );
        let image = json!([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]);
        assert!(context(tenant, &ask("s", image), None).is_none());
        assert!(context(tenant, &ask("s", json!("x".repeat(1_001))), None).is_none());
        assert!(context(tenant, &ask("s", json!("  ")), None).is_none());
        let answered = request(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}));
        assert!(context(tenant, &answered, None).is_none());
    }

    #[test]
    fn the_setting_is_a_threshold_in_range() {
        assert_eq!(SemanticPolicy::parse("{}").map(|p| p.threshold), Ok(0.92));
        assert_eq!(
            SemanticPolicy::parse(r#"{"threshold": 0.8}"#).map(|p| p.threshold),
            Ok(0.8)
        );
        for bad in [
            r#"{"threshold": 0.2}"#,
            r#"{"threshold": 1.5}"#,
            r#"{"threshold": "high"}"#,
            r#"{"x": 1}"#,
            "[]",
            "",
        ] {
            assert!(SemanticPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_nearest_question_above_the_threshold_is_found_and_expired_ones_are_not() {
        let index = Index::memory();
        let context = [7u8; 32];
        let unit = |x: f32, y: f32| -> Arc<[f32]> {
            let n = (x * x + y * y).sqrt();
            Arc::from(vec![x / n, y / n])
        };
        index
            .insert(
                &context,
                [1; 32],
                unit(1.0, 0.0),
                Duration::from_secs(60),
                1_000,
            )
            .await;
        index
            .insert(
                &context,
                [2; 32],
                unit(1.0, 1.0),
                Duration::from_secs(60),
                1_000,
            )
            .await;
        index
            .insert(
                &context,
                [3; 32],
                unit(0.0, 1.0),
                Duration::from_millis(10),
                1_000,
            )
            .await;
        let query = unit(1.0, 0.1);
        let (key, similarity) = index
            .nearest(&context, &query, 0.9, 2_000)
            .await
            .unwrap_or_else(|| panic!("a hit"));
        assert_eq!(key, [1; 32]);
        assert!(similarity > 0.99);
        assert!(
            index
                .nearest(&context, &query, 0.999_99, 2_000)
                .await
                .is_none()
        );
        assert!(
            index.nearest(&[8; 32], &query, 0.5, 2_000).await.is_none(),
            "another context"
        );
        let up = unit(0.0, 1.0);
        assert_eq!(
            index.nearest(&context, &up, 0.9, 1_005).await.map(|h| h.0),
            Some([3; 32])
        );
        assert!(
            index.nearest(&context, &up, 0.9, 2_000).await.is_none(),
            "expired"
        );
        // A full context evicts its oldest question.
        for i in 0..PER_CONTEXT {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64 + 100).to_le_bytes());
            index
                .insert(
                    &context,
                    key,
                    unit(-1.0, 0.0),
                    Duration::from_secs(60),
                    1_000,
                )
                .await;
        }
        assert!(
            index.nearest(&context, &query, 0.9, 2_000).await.is_none(),
            "evicted"
        );
    }

    #[test]
    fn kept_questions_round_trip_through_bytes_and_bad_bytes_are_refused() {
        let bytes = encode(42, &[0.5, -0.25]);
        assert_eq!(decode(&bytes), Some((42, vec![0.5, -0.25])));
        assert_eq!(decode(&bytes[..9]), None);
        assert_eq!(decode(&[]), None);
        assert_eq!(unhex(hex(&[9u8; 32]).as_bytes()), Some([9u8; 32]));
        assert_eq!(unhex(b"zz"), None);
    }

    #[test]
    fn vectors_are_compared_as_unit_vectors_of_one_model() {
        let v = normalized(vec![3.0, 4.0]).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert!(
            (dot(&v, &v) - 1.0).abs() < 1e-6,
            "a unit vector is as similar as it gets"
        );
        for bad in [
            vec![],
            vec![0.0, 0.0],
            vec![f32::NAN, 1.0],
            vec![f32::INFINITY],
        ] {
            assert!(normalized(bad).is_none());
        }
        let context = [7; 32];
        assert_ne!(for_model(context, "a"), for_model(context, "b"));
        assert_eq!(for_model(context, "a"), for_model(context, "a"));
    }
}
