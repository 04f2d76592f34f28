//! An inference already in the log: a workflow step carried out again (after a crash, or by the
//! node that took over its run) asks with the same inference id, and is answered without a
//! second charge.

use serde_json::{Value, json};
use switchyard_events::{Event, Scope, StreamId, StreamVersion, TenantId};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Completed, Pipeline};
use crate::admission::RateStatus;
use crate::error::Error;
use crate::openai::ChatRequest;
use crate::providers::{Completion, ProviderError};

/// What the log holds of one inference.
#[derive(Debug, Clone)]
pub(super) struct Recorded {
    /// The global position of its last event.
    pub position: u64,
    /// The model that answered (or failed last).
    pub model: String,
    /// Tokens in and out and the cost, or the failure's message.
    pub outcome: Result<(u64, u64, u64), String>,
}

impl Pipeline {
    /// The recorded outcome of inference `id` of `tenant`, if its events are in the log.
    pub(super) async fn recorded(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<Recorded>, Error> {
        let stream = StreamId::of("inference", id).map_err(|_| Error::Unavailable)?;
        let events = self
            .store
            .read_stream(Scope::Tenant(tenant), &stream, StreamVersion::NONE, 8)
            .await
            .map_err(|_| Error::Unavailable)?;
        let Some(last) = events.last() else {
            return Ok(None);
        };
        let outcome = match Event::from_recorded(last) {
            Ok(Event::InferenceCompleted(e)) => {
                (e.model, Ok((e.tokens_in, e.tokens_out, e.cost_micros)))
            }
            Ok(Event::InferenceFailed(e)) => (e.model, Err(format!("{}: {}", e.code, e.message))),
            _ => return Ok(None),
        };
        Ok(Some(Recorded {
            position: last.global_position.0,
            model: outcome.0,
            outcome: outcome.1,
        }))
    }

    /// Answers a chat request whose inference is recorded: the recorded model is asked again for
    /// the text (the first answer's text is not kept), with no admission, no charge and no new
    /// events; tokens, cost and position are the recorded ones. A recorded failure is answered
    /// as a retryable failure (the workflow's next attempt is a new inference).
    pub(super) async fn answer_again(
        &self,
        id: Uuid,
        request: &ChatRequest,
        recorded: Recorded,
    ) -> Result<Completed, Error> {
        let (tokens_in, tokens_out, cost) = match recorded.outcome {
            Ok(figures) => figures,
            Err(message) => {
                return Err(Error::Provider(ProviderError::retryable(
                    "recorded_failure",
                    format!("the recorded inference {id} failed: {message}"),
                )));
            }
        };
        let model = self
            .config
            .model(&recorded.model)
            .ok_or_else(|| Error::ModelNotFound(recorded.model.clone()))?;
        let (outcome, _, served) = self
            .resilience
            .call(
                "chat",
                &self.config,
                &self.providers,
                model,
                |model, provider| async move { provider.chat(model, request).await },
            )
            .await;
        let Completion { choices, .. } = outcome.map_err(Error::Provider)?;
        tracing::info!(inference_id = %id, model = %served.name, "a recorded inference answered again, not billed");
        Ok(Completed {
            body: json!({
                "id": format!("chatcmpl-{id}"),
                "object": "chat.completion",
                "created": OffsetDateTime::now_utc().unix_timestamp(),
                "model": recorded.model,
                "choices": choices,
                "usage": {
                    "prompt_tokens": tokens_in,
                    "completion_tokens": tokens_out,
                    "total_tokens": tokens_in + tokens_out,
                },
                "system_fingerprint": Value::Null,
            }),
            position: recorded.position,
            inference_id: id,
            cost_micros: cost,
            rate: RateStatus::default(),
            route: String::new(),
            cache: None,
        })
    }
}
