//! Ingestion and retrieval (issue 18, part 1): documents in, indexed per tenant, retrieved.
//!
//! A document's text is extracted ([`extract`]), cut by its structure ([`chunk`]) and recorded
//! as the events of its [`document`] actor; every node folds those events into a per-tenant
//! [`index`] (BM25 with tantivy, and vectors) held by its [`library`], and answers queries by
//! BM25, by vectors, or both fused by reciprocal rank.

pub mod chunk; // chunking by headings and paragraphs, with overlap and source offsets
pub mod document; // the document actor: added, chunked, indexed, deleted
pub mod error; // the crate's one error type
pub mod extract; // text out of plain text, Markdown, HTML and PDF
pub mod index; // one tenant's BM25 index and vectors, hybrid search by reciprocal rank
pub mod library; // every tenant's index on this node, folded from the log
mod metrics; // Prometheus metrics of indexing and queries
#[cfg(test)]
mod tests;
mod vectors; // a tenant's vector matrix and, past a size, its HNSW graph (usearch)

pub use error::{Error, Result};
pub use index::{Hit, Listed, Mode, Query};
pub use library::Library;
pub use vectors::ANN_MIN_VECTORS;
