//! `[retrieval]`: how documents are ingested and retrieved (see the `switchyard-retrieval`
//! crate and the gateway's `/v1/documents` and `/v1/retrieve`).

use serde::{Deserialize, Serialize};

/// `[retrieval]` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalConfig {
    /// The model that embeds chunks and queries (a configured model with embeddings, e.g. the
    /// local `all-minilm-l6-v2`). Unset: keyword (BM25) retrieval only.
    #[serde(default)]
    pub embedding_model: Option<String>,
    /// The largest document taken (bytes); a larger upload is refused with 413 before it is
    /// read whole.
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: u64,
    /// About this many tokens per chunk.
    #[serde(default = "default_chunk_tokens")]
    pub chunk_tokens: u32,
    /// How far a chunk reaches back into the one before it (tokens).
    #[serde(default = "default_overlap_tokens")]
    pub overlap_tokens: u32,
    /// The longest a PDF's text extraction may run (it runs in a child process).
    #[serde(default = "default_pdf_timeout_ms")]
    pub pdf_timeout_ms: u64,
    /// The most memory a PDF's text extraction may take (MiB of address space).
    #[serde(default = "default_pdf_memory_mb")]
    pub pdf_memory_mb: u64,
    /// The longest a document fetched from a URL may take to arrive, redirects included.
    #[serde(default = "default_fetch_timeout_ms")]
    pub fetch_timeout_ms: u64,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig {
            embedding_model: None,
            max_document_bytes: default_max_document_bytes(),
            chunk_tokens: default_chunk_tokens(),
            overlap_tokens: default_overlap_tokens(),
            pdf_timeout_ms: default_pdf_timeout_ms(),
            pdf_memory_mb: default_pdf_memory_mb(),
            fetch_timeout_ms: default_fetch_timeout_ms(),
        }
    }
}

impl RetrievalConfig {
    /// Checks the numbers.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_document_bytes == 0 || self.max_document_bytes > 1 << 30 {
            return Err("retrieval.max_document_bytes must be 1 byte to 1 GiB".into());
        }
        if self.chunk_tokens < 16 || self.chunk_tokens > 8_192 {
            return Err("retrieval.chunk_tokens must be 16-8192".into());
        }
        if self.overlap_tokens >= self.chunk_tokens {
            return Err("retrieval.overlap_tokens must be below chunk_tokens".into());
        }
        if self.pdf_timeout_ms == 0 || self.pdf_timeout_ms > 600_000 {
            return Err("retrieval.pdf_timeout_ms must be 1-600000".into());
        }
        if self.pdf_memory_mb < 64 || self.pdf_memory_mb > 65_536 {
            return Err("retrieval.pdf_memory_mb must be 64-65536".into());
        }
        if self.fetch_timeout_ms == 0 || self.fetch_timeout_ms > 600_000 {
            return Err("retrieval.fetch_timeout_ms must be 1-600000".into());
        }
        Ok(())
    }
}

fn default_max_document_bytes() -> u64 {
    32 << 20
}

fn default_chunk_tokens() -> u32 {
    200
}

fn default_overlap_tokens() -> u32 {
    30
}

fn default_pdf_timeout_ms() -> u64 {
    10_000
}

fn default_pdf_memory_mb() -> u64 {
    1_024
}

fn default_fetch_timeout_ms() -> u64 {
    30_000
}
