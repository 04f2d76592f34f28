//! A streamed chat answer: the provider is called (with retries and fallbacks) before the
//! answer starts; from then on chunks pass through as they arrive. The inference's events are
//! appended before the final [`Frame::Done`]; a stream cut mid-way ends with an `error` frame,
//! never a clean end.

use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::Pipeline;
use super::cached::{Assembly, CacheStatus, Plan, replay};
use super::guarded::blocked;
use super::ticket::Ticket;
use crate::admission::below::Account;
use crate::admission::{Principal, RateStatus};
use crate::error::Error;
use crate::guard::{Action, StreamGuard};
use crate::openai::ChatRequest;
use crate::providers::{ChunkStream, ProviderError, StreamEvent, Usage};

/// One frame of a streamed answer, in OpenAI's stream format.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A `chat.completion.chunk`, the final usage chunk, or an `{"error": …}` object.
    Data(Value),
    /// The clean end (`[DONE]`): the inference is logged.
    Done,
}

/// An admitted stream: its inference id, the rate-limit status, and its frames. Dropping the
/// receiver (the client went away) ends the inference as `client_disconnected`.
#[derive(Debug)]
pub struct ChatStream {
    pub inference_id: Uuid,
    pub rate: RateStatus,
    /// What routed it (as in [`super::Completed::route`]).
    pub route: String,
    /// Whether the response cache answered it (`None`: not consulted).
    pub cache: Option<CacheStatus>,
    pub frames: mpsc::Receiver<Frame>,
}

impl Pipeline {
    /// Admits a streamed chat request and opens the provider's stream; `slot` (the tenant's
    /// bulkhead place) is held until the stream ends.
    pub async fn stream(
        self: &Arc<Self>,
        correlation_id: Option<String>,
        principal: &Principal,
        request: ChatRequest,
        slot: OwnedSemaphorePermit,
    ) -> Result<ChatStream, Error> {
        let (request, guard) = match self
            .guard_input(correlation_id.as_deref(), principal, &request, "chat")
            .await?
        {
            Some(guarded) => (guarded.request, Some((guarded.guard, guarded.input))),
            None => (request, None),
        };
        let salt = guard.as_ref().map(|(g, _)| *g.fingerprint());
        let (plan, entry) = match self
            .cache_lookup(principal, &request, None, salt.as_ref())
            .await
        {
            Some((plan, entry)) => (Some(plan), entry),
            None => (None, None),
        };
        if let Some(entry) = entry {
            // A hit replays the kept answer through the same relay, settlement and events (it
            // passed the same policy's output rules when it was kept).
            let mut ticket = self
                .admit_cached(correlation_id, principal, &request, &entry)
                .await?;
            if let Some((_, input)) = &guard {
                ticket.guarded(input.clone());
            }
            let relayed = Relayed {
                attempts: 0,
                keep: None,
                guard: None,
            };
            let upstream = replay(&entry);
            return Ok(self.relay(
                ticket,
                request,
                upstream,
                relayed,
                Some(CacheStatus::Hit),
                slot,
            ));
        }
        let mut ticket = self
            .admit_chat(correlation_id, principal, &request, None, None)
            .await?;
        let guard = guard.map(|(guard, input)| {
            ticket.guarded(input);
            StreamGuard::new(guard)
        });
        let routed = self
            .config
            .model(&ticket.route.model)
            .ok_or(Error::Unavailable)?;
        let request_ref = &request;
        let (opened, attempts, served) = self
            .resilience
            .call(
                "chat",
                &self.config,
                &self.providers,
                routed,
                |model, provider| async move { provider.chat_stream(model, request_ref).await },
            )
            .await;
        ticket.serve(served);
        let upstream = match opened {
            Ok(stream) => stream,
            Err(error) => {
                ticket
                    .finish(self, Err((error.clone(), Usage::default(), attempts)))
                    .await?;
                return Err(Error::Provider(error));
            }
        };
        let status = plan.as_ref().map(|_| CacheStatus::Miss);
        let relayed = Relayed {
            attempts,
            keep: plan,
            guard,
        };
        Ok(self.relay(ticket, request, upstream, relayed, status, slot))
    }

    /// Starts relaying `upstream`'s chunks on a task of its own.
    fn relay(
        self: &Arc<Self>,
        ticket: Ticket,
        request: ChatRequest,
        upstream: ChunkStream,
        relayed: Relayed,
        cache: Option<CacheStatus>,
        slot: OwnedSemaphorePermit,
    ) -> ChatStream {
        let (sender, frames) = mpsc::channel::<Frame>(64);
        let answer = ChatStream {
            inference_id: ticket.id,
            rate: ticket.rate,
            route: ticket.route.policy.clone(),
            cache,
            frames,
        };
        let pipeline = self.clone();
        tokio::spawn(async move {
            let _slot = slot; // the tenant's bulkhead slot, held until the stream ends
            pass_through(&pipeline, ticket, &request, relayed, upstream, sender).await;
        });
        answer
    }
}

/// What a relay knows beside the ticket: the provider calls it took, where a miss's answer is
/// kept, and the tenant's output rules.
struct Relayed {
    attempts: u32,
    keep: Option<Plan>,
    guard: Option<StreamGuard>,
}

/// Relays the provider's chunks, extends the budget reservation as the answer grows, then logs
/// the inference and sends the last frames.
async fn pass_through(
    pipeline: &Pipeline,
    mut ticket: Ticket,
    request: &ChatRequest,
    relayed: Relayed,
    mut upstream: ChunkStream,
    sender: mpsc::Sender<Frame>,
) {
    let Relayed {
        attempts,
        keep,
        mut guard,
    } = relayed;
    let capture = pipeline.accounts.capture(ticket.tenant);
    let mut assembly = (keep.is_some() || capture.is_some()).then(Assembly::default);
    let prompt = request.estimate_prompt_tokens();
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    let id = ticket.id;
    let chunk_id = format!("chatcmpl-{id}");
    let created = OffsetDateTime::now_utc().unix_timestamp();
    let served = ticket.served_model.clone();
    let chunk = |choices: Value, usage: Value| {
        json!({"id": chunk_id, "object": "chat.completion.chunk", "created": created,
               "model": served, "choices": choices, "usage": usage})
    };
    let mut usage: Option<Usage> = None;
    let mut pieces = 0u64;
    let mut ttft_us = None;
    let mut finish_reason = String::from("stop");
    let mut failure: Option<ProviderError> = None;
    while let Some(item) = upstream.next().await {
        match item {
            Ok(StreamEvent::Choices(mut choices)) => {
                ttft_us.get_or_insert_with(|| ticket.elapsed_us());
                for choice in &choices {
                    if choice
                        .pointer("/delta/content")
                        .and_then(Value::as_str)
                        .is_some_and(|c| !c.is_empty())
                    {
                        pieces += 1;
                    }
                    if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                        reason.clone_into(&mut finish_reason);
                    }
                }
                // An answer longer than its reservation extends it, or is cut when the budget
                // cannot cover more (the tokens sent so far are billed).
                if pieces > ticket.reserved_output
                    && let Err(exhausted) = extend(pipeline, &mut ticket).await
                {
                    failure = Some(exhausted);
                    break;
                }
                if let Some(guard) = &mut guard
                    && guard.filter(&mut choices).is_err()
                {
                    failure = Some(block(guard));
                    break;
                }
                if let Some(assembly) = &mut assembly {
                    assembly.add(&choices);
                }
                let out = chunk(Value::Array(choices), Value::Null);
                if sender.send(Frame::Data(out)).await.is_err() {
                    failure = Some(ProviderError::fatal(
                        "client_disconnected",
                        499,
                        "the client went away mid-stream",
                    ));
                    break;
                }
            }
            Ok(StreamEvent::Usage(counted)) => usage = Some(counted),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    if let Some(guard) = &mut guard {
        if failure.is_none() {
            // What is still held goes out (redacted) now; then the whole answer's schema.
            match guard.flush() {
                Ok(rest) if !rest.is_empty() => {
                    if let Some(assembly) = &mut assembly {
                        assembly.add(&rest);
                    }
                    let _ = sender
                        .send(Frame::Data(chunk(Value::Array(rest), Value::Null)))
                        .await;
                }
                Ok(_) => {}
                Err(_) => failure = Some(block(guard)),
            }
        }
        if failure.is_none() && guard.check_schema().is_err() {
            guard.verdict.hit("output_schema", Action::Block, 1);
            failure = Some(block(guard));
        }
        ticket.guarded(guard.verdict.event());
    }
    // A stream without a usage count (cut, or a provider that sends none) is billed for the
    // prompt estimate and the pieces delivered.
    let usage = usage.unwrap_or(Usage {
        prompt_tokens: prompt,
        completion_tokens: pieces,
    });
    let ttft = ttft_us.unwrap_or(0);
    let logged = match &failure {
        None => {
            ticket
                .finish(pipeline, Ok((usage, ttft, finish_reason, attempts)))
                .await
        }
        Some(error) => {
            ticket
                .finish(pipeline, Err((error.clone(), usage, attempts)))
                .await
        }
    };
    match (failure, logged) {
        (None, Ok(_)) => {
            if let Some(assembly) = assembly {
                let choices = assembly.choices();
                if let Some(policy) = capture {
                    crate::capture::spawn(
                        pipeline.store.clone(),
                        policy,
                        crate::capture::Captured {
                            tenant: ticket.tenant,
                            inference_id: id,
                            request,
                            model: &ticket.served_model,
                            choices: choices.clone(),
                            usage,
                        },
                    );
                }
                if let Some(plan) = &keep {
                    plan.keep(&ticket.served_model, choices, usage).await;
                }
            }
            if include_usage {
                let last = chunk(
                    json!([]),
                    json!({
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                    }),
                );
                let _ = sender.send(Frame::Data(last)).await;
            }
            let _ = sender.send(Frame::Done).await;
        }
        (Some(error), _) => {
            let event = json!({"error": {"code": error.code, "message": error.message, "inference_id": id}});
            let _ = sender.send(Frame::Data(event)).await;
        }
        (None, Err(error)) => {
            let event = json!({"error": {"code": error.code(), "message": error.to_string(), "inference_id": id}});
            let _ = sender.send(Frame::Data(event)).await;
        }
    }
}

/// The failure of a stream its output rules blocked.
fn block(guard: &StreamGuard) -> ProviderError {
    blocked(
        &guard
            .verdict
            .block_message()
            .unwrap_or_else(|| "the tenant's guardrails blocked this answer".into()),
    )
}

/// Extends a stream's reservation by as much again (at least 16 tokens), where it was taken,
/// or refuses when the budget cannot cover it.
async fn extend(pipeline: &Pipeline, ticket: &mut Ticket) -> Result<(), ProviderError> {
    let extra = ticket.reserved_output.max(16);
    let micros = ticket.price.cost(0, 0, extra);
    let limits = pipeline.accounts.tenant_limits(ticket.tenant);
    let tenant = Account::from(ticket.tenant);
    let reserved = match pipeline
        .reserve_budget(
            &tenant,
            ticket.id,
            &limits,
            micros,
            extra,
            Some(ticket.gate),
        )
        .await
    {
        Ok(_) => {
            let below = ticket.below_limits();
            match pipeline
                .reserve_below(ticket.id, &below, micros, extra, ticket.gate)
                .await
            {
                Ok(()) => Ok(()),
                Err((account, exhausted)) => {
                    pipeline
                        .release_budget(&[tenant], ticket.id, micros, extra, ticket.gate)
                        .await;
                    Err(format!("the {}'s {}", account.label(), exhausted.budget))
                }
            }
        }
        Err(exhausted) => Err(format!("the tenant's {}", exhausted.budget)),
    };
    match reserved {
        Ok(()) => {
            ticket.reserved_output += extra;
            ticket.reserved += micros;
            ticket.reserved_tokens += extra;
            Ok(())
        }
        Err(which) => Err(ProviderError::fatal(
            "budget_exhausted",
            402,
            format!("{which} ran out mid-stream"),
        )),
    }
}
