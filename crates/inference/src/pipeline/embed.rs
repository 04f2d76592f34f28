//! Embeddings: admitted, limited, billed and logged like a chat answer (no output tokens).

use serde_json::{Value, json};

use super::ticket::Ask;
use super::{Completed, Pipeline};
use crate::admission::Principal;
use crate::error::Error;
use crate::openai::EmbeddingsRequest;
use crate::providers::Usage;

impl Pipeline {
    /// Embeds the request's inputs; the body is OpenAI's embedding `list` (vectors as floats,
    /// or base64 little-endian f32s when asked, as the SDKs do by default).
    pub async fn embed(
        &self,
        correlation_id: Option<String>,
        principal: &Principal,
        request: &EmbeddingsRequest,
    ) -> Result<Completed, Error> {
        let mut inputs = request.inputs()?;
        // The model's own dimensions bound the answer, before anything is reserved or billed.
        let named = self.config.model(&request.model);
        if let Some(model) = named {
            request.dimensions_for(model, inputs.len())?;
        }
        let estimate: u64 = inputs
            .iter()
            .map(|i| (i.chars().count() as u64).div_ceil(4))
            .sum();
        let ask = Ask {
            endpoint: "embeddings",
            model: &request.model,
            stream: false,
            messages: u32::try_from(inputs.len()).unwrap_or(u32::MAX),
            prompt_estimate: estimate,
            max_tokens: None,
            output_reservation: 0,
            chat: None,
            user: request.user.as_deref(),
            tags: request.tags()?,
            id: None,
        };
        let checked = self
            .guard_embeddings(
                correlation_id.as_deref(),
                principal,
                &request.model,
                &mut inputs,
            )
            .await?;
        let mut ticket = self.admit(correlation_id, principal, ask, None).await?;
        if let Some(checked) = checked {
            ticket.guarded(checked);
        }
        let routed = self
            .config
            .model(&ticket.route.model)
            .ok_or(Error::Unavailable)?;
        let inputs_ref = &inputs;
        let (outcome, attempts, served) = self
            .resilience
            .call(
                "embeddings",
                &self.config,
                &self.providers,
                routed,
                |model, provider| async move {
                    // Asked for (at most the model's own), else the model's own, else the
                    // provider's default; a fallback with fewer answers in its own.
                    let own = model.embedding_dimensions;
                    let dimensions = request
                        .dimensions
                        .map_or(own, |d| Some(own.map_or(d, |o| d.min(o))));
                    provider.embed(model, inputs_ref, dimensions).await
                },
            )
            .await;
        ticket.serve(served);
        let embedded = match outcome {
            Ok(embedded) => embedded,
            Err(error) => {
                ticket
                    .finish(self, Err((error.clone(), Usage::default(), attempts)))
                    .await?;
                return Err(Error::Provider(error));
            }
        };
        let usage = Usage {
            prompt_tokens: embedded.prompt_tokens,
            completion_tokens: 0,
        };
        let position = ticket
            .finish(self, Ok((usage, 0, "stop".into(), attempts)))
            .await?;
        let base64 = request.encoding_format.as_deref() == Some("base64");
        let data: Vec<Value> = embedded
            .vectors
            .iter()
            .enumerate()
            .map(|(index, v)| {
                let embedding = if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        bytes
                    ))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        Ok(Completed {
            body: json!({
                "object": "list",
                "data": data,
                "model": ticket.served_model,
                "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
            }),
            position,
            inference_id: ticket.id,
            cost_micros: ticket.cost(usage),
            rate: ticket.rate,
            route: ticket.route.policy.clone(),
            cache: None,
        })
    }
}
