//! Answers from the response cache ([`crate::cache`]): the lookup before admission, a hit
//! answered whole or replayed as a stream through the same settlement and events as any
//! inference (provider and route policy `cache`, billed at the configured share), and a miss's
//! answer kept for the next request — a streamed one put back together from its chunks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_events::{GuardrailChecked, TenantId};
use uuid::Uuid;

use super::ticket::Ticket;
use super::{Completed, Pipeline};
use crate::admission::Principal;
use crate::cache::{self, Entry, ResponseCache};
use crate::error::Error;
use crate::metrics::CACHE;
use crate::openai::ChatRequest;
use crate::providers::{ChunkStream, StreamEvent, Usage};

/// The longest a semantic lookup waits for the question's embedding before it counts as a
/// miss (a remote embedding model that hangs holds no request up for its whole timeout).
const SEMANTIC_EMBED_TIMEOUT: Duration = Duration::from_secs(1);

/// What the cache does for one request.
#[derive(Clone)]
pub(super) struct Plan {
    cache: Arc<ResponseCache>,
    key: [u8; 32],
    read: bool,
    write: bool,
    ttl: Duration,
    /// The semantic cache's context and the question's vector, to keep with the answer.
    semantic: Option<([u8; 32], Arc<[f32]>)>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("read", &self.read)
            .field("write", &self.write)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Keeps a miss's answer (unless the request said `no-store`).
    pub async fn keep(&self, model: &str, choices: Vec<Value>, usage: Usage) {
        if !self.write {
            return;
        }
        let entry = Entry {
            model: model.to_owned(),
            choices,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            expires_at_ms: 0,
            similarity: None,
        };
        self.cache.put(&self.key, entry, self.ttl).await;
        if let Some((context, vector)) = &self.semantic {
            self.cache
                .semantic()
                .insert(context, self.key, vector.clone(), self.ttl, cache::now_ms())
                .await;
        }
    }
}

/// A request's cache outcome, answered as `x-switchyard-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
        }
    }
}

impl Pipeline {
    /// The cache's plan for `request`, and the entry it finds: `None` when the cache is off, or
    /// for a workflow step's inference (its id is chosen, and it is answered from the log).
    pub(super) async fn cache_lookup(
        &self,
        principal: &Principal,
        request: &ChatRequest,
        inference_id: Option<Uuid>,
        salt: Option<&[u8; 32]>,
    ) -> Option<(Plan, Option<Arc<Entry>>)> {
        let cache = self.cache.as_ref()?;
        if inference_id.is_some() {
            return None;
        }
        let tenant = principal.tenant;
        let control = cache.control(request);
        let mut plan = Plan {
            cache: cache.clone(),
            key: cache::key(tenant, request, salt),
            read: control.read,
            write: control.write,
            ttl: control.ttl,
            semantic: None,
        };
        let entry = if plan.read {
            let span = tracing::debug_span!("cache_lookup");
            tracing::Instrument::instrument(cache.get(&plan.key), span)
                .await
                // An entry of a model no longer served, or no longer allowed to the tenant, is
                // not answered.
                .filter(|e| {
                    self.config.model(&e.model).is_some()
                        && self
                            .accounts
                            .allowed_models(tenant)
                            .is_none_or(|allowed| allowed.contains(&e.model))
                })
        } else {
            None
        };
        if entry.is_some() || !(plan.read || plan.write) {
            return Some((plan, entry));
        }
        // The semantic cache, where the flag that gates it is defined and off: exact only.
        if self.accounts.semantic_cache(tenant).is_some()
            && crate::admission::flag(
                self.accounts.as_ref(),
                crate::admission::SEMANTIC_CACHE_FLAG,
                principal,
                request.user.as_deref(),
            )
            .is_some_and(|decision| !decision.on)
        {
            return Some((plan, entry));
        }
        let span = tracing::debug_span!("semantic_cache_lookup");
        let semantic = tracing::Instrument::instrument(
            self.semantic_lookup(tenant, request, salt, plan.read),
            span,
        )
        .await;
        let entry = match semantic {
            Some((found, hit)) => {
                plan.semantic = Some(found);
                hit
            }
            None => None,
        };
        Some((plan, entry))
    }

    /// The semantic cache for a tenant that opted in: the question's context and vector (to
    /// keep with a fresh answer), and the answer of the nearest question above the tenant's
    /// threshold when `read`. `None` when it does not apply or the embedding failed (a miss).
    async fn semantic_lookup(
        &self,
        tenant: TenantId,
        request: &ChatRequest,
        salt: Option<&[u8; 32]>,
        read: bool,
    ) -> Option<(([u8; 32], Arc<[f32]>), Option<Arc<Entry>>)> {
        let cache = self.cache.as_ref()?;
        let policy = self.accounts.semantic_cache(tenant)?;
        let model = self
            .config
            .model(cache.config().semantic_model.as_deref()?)?;
        let (context, question) = crate::cache::semantic::context(tenant, request, salt)?;
        let context = crate::cache::semantic::for_model(context, &model.name);
        let provider = self.providers.get(&model.provider)?;
        // A lookup slower than this is a miss: the cache must never hold a request up for long.
        let embedded = tokio::time::timeout(
            SEMANTIC_EMBED_TIMEOUT,
            provider.embed(model, &[question], None),
        )
        .await
        .unwrap_or_else(|_| {
            Err(crate::providers::ProviderError::timeout(
                "the question was not embedded within the semantic lookup's time",
            ))
        });
        let vector = match embedded {
            Ok(mut embedded) => crate::cache::semantic::normalized(embedded.vectors.pop()?)?,
            Err(error) => {
                tracing::warn!(%error, model = %model.name, "the semantic cache cannot embed the question; a miss");
                CACHE.lookups.with_label_values(&["semantic_error"]).inc();
                return None;
            }
        };
        let mut hit = None;
        if read
            && let Some((key, similarity)) = cache
                .semantic()
                .nearest(&context, &vector, policy.threshold, cache::now_ms())
                .await
            && let Some(entry) = cache.get(&key).await
        {
            let mut found = (*entry).clone();
            found.similarity = Some(similarity);
            hit = Some(Arc::new(found)).filter(|e| {
                self.config.model(&e.model).is_some()
                    && self
                        .accounts
                        .allowed_models(tenant)
                        .is_none_or(|allowed| allowed.contains(&e.model))
            });
        }
        let outcome = if hit.is_some() {
            "semantic_hit"
        } else {
            "semantic_miss"
        };
        CACHE.lookups.with_label_values(&[outcome]).inc();
        tracing::debug!(%tenant, outcome, "semantic cache");
        Some(((context, vector), hit))
    }

    /// Admits a request answered from `entry`: limits and budget as for the model that first
    /// answered it, then the ticket marked as the cache's.
    pub(super) async fn admit_cached(
        &self,
        correlation_id: Option<String>,
        principal: &Principal,
        request: &ChatRequest,
        entry: &Entry,
    ) -> Result<Ticket, Error> {
        let mut asked = request.clone();
        asked.model.clone_from(&entry.model);
        let mut ticket = self
            .admit_chat(correlation_id, principal, &asked, None, None)
            .await?;
        let model = self.config.model(&entry.model).ok_or(Error::Unavailable)?;
        let share = self.cache.as_ref().map_or(0.0, |c| c.config().hit_price);
        let policy = if entry.similarity.is_some() {
            "semantic_cache"
        } else {
            "cache"
        };
        ticket.serve_from_cache(model, share, &request.model, policy);
        Ok(ticket)
    }
}

impl Pipeline {
    /// A whole answer from `entry`: admitted, settled and logged as the cache's inference.
    pub(super) async fn answer_cached(
        &self,
        correlation_id: Option<String>,
        principal: &Principal,
        request: &ChatRequest,
        entry: &Entry,
        input: Option<&GuardrailChecked>,
    ) -> Result<Completed, Error> {
        let mut ticket = self
            .admit_cached(correlation_id, principal, request, entry)
            .await?;
        if let Some(input) = input {
            ticket.guarded(input.clone());
        }
        let usage = Usage {
            prompt_tokens: entry.prompt_tokens,
            completion_tokens: entry.completion_tokens,
        };
        let ttft = ticket.elapsed_us();
        let position = ticket
            .finish(self, Ok((usage, ttft, entry.finish_reason(), 0)))
            .await?;
        Ok(Completed {
            body: super::chat_body(
                ticket.id,
                &ticket.served_model,
                entry.choices.clone(),
                usage,
            ),
            position,
            inference_id: ticket.id,
            cost_micros: ticket.cost(usage),
            rate: ticket.rate,
            route: ticket.route.policy.clone(),
            cache: Some(CacheStatus::Hit),
        })
    }
}

/// `entry` as the chunks of a stream: each choice's role, its content and tool calls whole,
/// its finish; then the usage.
pub(super) fn replay(entry: &Entry) -> ChunkStream {
    let mut events = Vec::new();
    for (at, choice) in entry.choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(at));
        let message = choice.get("message").cloned().unwrap_or(Value::Null);
        let mut deltas = vec![json!({"role": "assistant", "content": ""})];
        if let Some(content) = message.get("content").and_then(Value::as_str)
            && !content.is_empty()
        {
            deltas.push(json!({"content": content}));
        }
        for (k, call) in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let mut call = call.clone();
            call["index"] = json!(k);
            deltas.push(json!({"tool_calls": [call]}));
        }
        for delta in deltas {
            events.push(StreamEvent::Choices(vec![
                json!({"index": index, "delta": delta, "finish_reason": null}),
            ]));
        }
        events.push(StreamEvent::Choices(vec![json!({
            "index": index, "delta": {}, "finish_reason": choice.get("finish_reason").cloned().unwrap_or(json!("stop")),
        })]));
    }
    events.push(StreamEvent::Usage(Usage {
        prompt_tokens: entry.prompt_tokens,
        completion_tokens: entry.completion_tokens,
    }));
    Box::pin(futures_util::stream::iter(events.into_iter().map(Ok)))
}

/// A streamed answer put back together, choice by choice, as the whole answer's `choices`.
#[derive(Debug, Default)]
pub(super) struct Assembly {
    choices: BTreeMap<u64, Assembled>,
}

#[derive(Debug, Default)]
struct Assembled {
    content: String,
    tool_calls: BTreeMap<u64, Value>,
    finish_reason: Option<Value>,
}

impl Assembly {
    /// Takes in one chunk's choices.
    pub fn add(&mut self, choices: &[Value]) {
        for choice in choices {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let slot = self.choices.entry(index).or_default();
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(piece) = delta.get("content").and_then(Value::as_str) {
                slot.content.push_str(piece);
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let at = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let kept = slot.tool_calls.entry(at).or_insert_with(|| {
                    json!({"id": call.get("id"), "type": "function",
                           "function": {"name": call.pointer("/function/name"), "arguments": ""}})
                });
                if let Some(piece) = call.pointer("/function/arguments").and_then(Value::as_str) {
                    let whole = format!(
                        "{}{piece}",
                        kept.pointer("/function/arguments")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                    );
                    kept["function"]["arguments"] = json!(whole);
                }
            }
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                slot.finish_reason = Some(reason.clone());
            }
        }
    }

    /// The whole answer's `choices`.
    pub fn choices(self) -> Vec<Value> {
        self.choices
            .into_iter()
            .map(|(index, slot)| {
                let mut message = json!({"role": "assistant", "content": slot.content});
                if !slot.tool_calls.is_empty() {
                    if slot.content.is_empty() {
                        message["content"] = Value::Null;
                    }
                    message["tool_calls"] = Value::Array(slot.tool_calls.into_values().collect());
                }
                json!({"index": index, "message": message,
                       "finish_reason": slot.finish_reason.unwrap_or(json!("stop")), "logprobs": null})
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// A kept answer replayed as a stream and put back together is the answer it was: text,
    /// tool calls, finish reasons and usage, for every choice.
    #[tokio::test]
    async fn a_replayed_stream_assembles_to_the_kept_answer() {
        let choices = vec![
            json!({"index": 0, "message": {"role": "assistant", "content": "two words"},
                   "finish_reason": "length", "logprobs": null}),
            json!({"index": 1, "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
                   "finish_reason": "tool_calls", "logprobs": null}),
        ];
        let entry = Entry {
            model: "m".into(),
            choices: choices.clone(),
            prompt_tokens: 7,
            completion_tokens: 9,
            expires_at_ms: 0,
            similarity: None,
        };
        let mut assembly = Assembly::default();
        let mut usage = None;
        let mut events = replay(&entry);
        while let Some(event) = events.next().await {
            match event.unwrap() {
                StreamEvent::Choices(c) => assembly.add(&c),
                StreamEvent::Usage(u) => usage = Some(u),
            }
        }
        assert_eq!(assembly.choices(), choices);
        assert_eq!(
            usage,
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 9
            })
        );
    }
}
