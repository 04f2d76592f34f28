//! The tenant's guardrails around an inference: the prompt checked (and redacted) before it is
//! routed, the answer checked before the client sees it, an answer that breaks the output
//! schema asked for again. A prompt blocked before admission is still an inference in the log
//! (`GuardrailChecked`, then `InferenceFailed` with `content_blocked`, no route and no cost; see
//! [`super::record`]); an answer blocked after the model is billed for the tokens it took, as a
//! failure.

use std::sync::Arc;

use serde_json::{Value, json};
use switchyard_events::{
    Event, ExpectedVersion, GuardrailChecked, InferenceFailed, InferenceRequested, Metadata,
    StreamId,
};
use uuid::Uuid;

use super::Pipeline;
use super::record::inference_record;
use super::ticket::Ticket;
use crate::admission::Principal;
use crate::error::Error;
use crate::guard::{Action, Guard, Stage, Verdict};
use crate::openai::{ChatRequest, Message, Role};
use crate::providers::{Completion, ProviderError, Usage};

/// A request that passed the tenant's input rules.
pub(super) struct Guarded {
    pub guard: Arc<Guard>,
    /// The request as the provider sees it (redacted).
    pub request: ChatRequest,
    /// The input stage's decision, for the inference's events.
    pub input: GuardrailChecked,
}

/// The failure a blocked answer is logged with.
pub(super) fn blocked(message: &str) -> ProviderError {
    ProviderError::fatal("content_blocked", 400, message)
}

impl Pipeline {
    /// Runs the tenant's input rules on `request` (`None`: the tenant has no guardrails). A
    /// blocked prompt is logged and refused with [`Error::ContentBlocked`].
    pub(super) async fn guard_input(
        &self,
        correlation_id: Option<&str>,
        principal: &Principal,
        request: &ChatRequest,
        endpoint: &'static str,
    ) -> Result<Option<Guarded>, Error> {
        let Some(guard) = self.accounts.guardrails(principal.tenant) else {
            return Ok(None);
        };
        let mut checked = request.clone();
        let verdict = guard.check_input(&mut checked);
        if let (Some(rule), Some(message)) = (verdict.blocked_by(), verdict.block_message()) {
            let rule = rule.to_owned();
            let requested = InferenceRequested {
                endpoint: endpoint.to_owned(),
                model_requested: checked.model.clone(),
                key_id: principal.key_id,
                stream: checked.stream,
                messages: u32::try_from(checked.messages.len()).unwrap_or(u32::MAX),
                prompt_tokens_estimate: checked.estimate_prompt_tokens(),
                max_tokens: checked.output_cap(),
                user: checked.user.clone(),
                tags: checked.tags(),
            };
            self.record_blocked(correlation_id, principal, requested, &verdict, &message)
                .await?;
            return Err(Error::ContentBlocked { rule, message });
        }
        Ok(Some(Guarded {
            guard,
            request: checked,
            input: verdict.event(),
        }))
    }

    /// Runs the tenant's input rules on embeddings `inputs` (redacted in place); the input
    /// stage's decision, or `None` when the tenant has no guardrails. A block is logged and
    /// refused.
    pub(super) async fn guard_embeddings(
        &self,
        correlation_id: Option<&str>,
        principal: &Principal,
        model: &str,
        inputs: &mut [String],
    ) -> Result<Option<GuardrailChecked>, Error> {
        let Some(guard) = self.accounts.guardrails(principal.tenant) else {
            return Ok(None);
        };
        let verdict = guard.check_texts(inputs);
        if let (Some(rule), Some(message)) = (verdict.blocked_by(), verdict.block_message()) {
            let rule = rule.to_owned();
            let chars: usize = inputs.iter().map(|i| i.chars().count()).sum();
            let requested = InferenceRequested {
                endpoint: "embeddings".to_owned(),
                model_requested: model.to_owned(),
                key_id: principal.key_id,
                stream: false,
                messages: u32::try_from(inputs.len()).unwrap_or(u32::MAX),
                prompt_tokens_estimate: (chars as u64).div_ceil(4),
                max_tokens: None,
                user: None,
                tags: Vec::new(),
            };
            self.record_blocked(correlation_id, principal, requested, &verdict, &message)
                .await?;
            return Err(Error::ContentBlocked { rule, message });
        }
        Ok(Some(verdict.event()))
    }

    /// Logs a prompt the guardrails blocked: an inference that cost nothing and failed.
    async fn record_blocked(
        &self,
        correlation_id: Option<&str>,
        principal: &Principal,
        requested: InferenceRequested,
        verdict: &Verdict,
        message: &str,
    ) -> Result<(), Error> {
        let id = Uuid::now_v7();
        let failed = Event::InferenceFailed(InferenceFailed {
            model: String::new(),
            provider: String::new(),
            code: "content_blocked".into(),
            message: message.to_owned(),
            tokens_in: 0,
            tokens_out: 0,
            cost_micros: 0,
            latency_us: 0,
            attempts: 0,
            request: None,
            route: None,
        });
        let metadata = Metadata {
            correlation_id: correlation_id.map(str::to_owned),
            traceparent: switchyard_events::trace::current(),
            ..Metadata::default()
        };
        // No route: the prompt never reached one.
        let encoded = inference_record(
            self.recording.form(),
            &requested,
            None,
            &[verdict.event()],
            failed,
            &metadata,
        )
        .map_err(|_| Error::Unavailable)?;
        let stream = StreamId::of("inference", id).map_err(|_| Error::Unavailable)?;
        self.store
            .append(
                principal.tenant,
                &stream,
                ExpectedVersion::NoStream,
                encoded,
            )
            .await
            .map_err(|error| {
                tracing::error!(%error, inference_id = %id, "cannot log a blocked prompt");
                Error::Unavailable
            })?;
        tracing::info!(
            inference_id = %id,
            tenant = %principal.tenant,
            rule = verdict.blocked_by().unwrap_or_default(),
            "guardrails blocked a prompt"
        );
        Ok(())
    }

    /// The output rules of a whole answer: the output schema (asking again up to the policy's
    /// retries), then PII and topics on every choice. Returns the checked choices with the
    /// usage and attempts of every call; a block is logged (billed for what the calls took) and
    /// refused.
    pub(super) async fn guard_output(
        &self,
        guarded: &Guarded,
        ticket: &mut Ticket,
        completion: Completion,
        mut attempts: u32,
    ) -> Result<(Completion, u32), Error> {
        let Completion {
            mut choices,
            mut usage,
        } = completion;
        let guard = &guarded.guard;
        let mut verdict = Verdict::new(Stage::Output);
        let mut tries = 0;
        while let Err(problem) = guard.check_schema(&choices) {
            if tries >= guard.schema_retries() {
                verdict.hit("output_schema", Action::Block, 1);
                break;
            }
            tries += 1;
            verdict.hit("output_schema", Action::Retry, 1);
            let again = ask_again(&guarded.request, &choices, &problem);
            let again = &again;
            let model = self
                .config
                .model(&ticket.served_model)
                .ok_or(Error::Unavailable)?;
            let (outcome, more, _) = self
                .resilience
                .call(
                    "chat",
                    &self.config,
                    &self.providers,
                    model,
                    |model, provider| async move { provider.chat(model, again).await },
                )
                .await;
            attempts += more;
            match outcome {
                Ok(answer) => {
                    usage = add(usage, answer.usage);
                    choices = answer.choices;
                }
                Err(error) => {
                    ticket.guarded(verdict.event());
                    ticket
                        .finish(self, Err((error.clone(), usage, attempts)))
                        .await?;
                    return Err(Error::Provider(error));
                }
            }
        }
        if verdict.blocked_by().is_none() {
            for hit in guard.check_output(&mut choices).hits {
                verdict.hit(&hit.rule, hit.action, hit.count);
            }
        }
        ticket.guarded(verdict.event());
        if let (Some(rule), Some(message)) = (verdict.blocked_by(), verdict.block_message()) {
            let rule = rule.to_owned();
            ticket
                .finish(self, Err((blocked(&message), usage, attempts)))
                .await?;
            return Err(Error::ContentBlocked { rule, message });
        }
        Ok((Completion { choices, usage }, attempts))
    }
}

fn add(a: Usage, b: Usage) -> Usage {
    Usage {
        prompt_tokens: a.prompt_tokens + b.prompt_tokens,
        completion_tokens: a.completion_tokens + b.completion_tokens,
    }
}

/// The request again, with the answer that broke the schema and what was wrong with it.
fn ask_again(request: &ChatRequest, choices: &[Value], problem: &str) -> ChatRequest {
    let answer = choices
        .first()
        .and_then(|c| c.pointer("/message/content"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut again = request.clone();
    again.n = None;
    for (role, content) in [
        (Role::Assistant, answer.to_owned()),
        (
            Role::User,
            format!(
                "That answer cannot be used: {problem}. Answer again with only a JSON value that fits the required schema."
            ),
        ),
    ] {
        again.messages.push(Message {
            role,
            content: Some(json!(content)),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            function_call: None,
            refusal: None,
        });
    }
    again
}
