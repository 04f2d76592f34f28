//! One tenant's index: its chunks in a tantivy index in memory (BM25 over the text and the
//! heading path) and their vectors beside them, and the search over both, fused by
//! reciprocal rank. It is a projection of the tenant's document events: [`TenantIndex::apply`]
//! folds them, and a new one folded from the log is the same index.

use std::collections::{BTreeMap, HashMap};

use switchyard_events::Event;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, QueryParser, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TEXT, Value as _};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Reciprocal-rank fusion's constant (Cormack et al.: 60).
const RRF_K: f64 = 60.0;
/// tantivy's indexing arena per tenant (its minimum).
const ARENA_BYTES: usize = 15_000_000;

/// How a query is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// BM25 and vectors, fused by reciprocal rank.
    Hybrid,
    /// BM25 alone.
    Keyword,
    /// Vectors alone.
    Vector,
}

/// A query.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub text: &'a str,
    /// The query's unit vector (needed by `Hybrid` and `Vector`).
    pub vector: Option<&'a [f32]>,
    pub k: usize,
    /// Only these documents.
    pub documents: Option<&'a [Uuid]>,
    pub mode: Mode,
}

/// One chunk found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    pub document_id: Uuid,
    pub document: String,
    pub chunk: u32,
    pub text: String,
    pub start: u64,
    pub end: u64,
    pub heading_path: Vec<String>,
    /// The fused score (reciprocal rank), or the BM25 score or cosine of a single mode.
    pub score: f64,
    /// 1-based rank in each list, where it was found.
    pub keyword_rank: Option<usize>,
    pub vector_rank: Option<usize>,
}

/// A document in the index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub id: Uuid,
    pub name: String,
    pub media_type: String,
    pub bytes: u64,
    pub chunks: u32,
    pub vectors: u32,
}

use crate::vectors::{ChunkId, Vectors};
/// A chunk's fused score and its rank in each list.
type Fused = (f64, Option<usize>, Option<usize>);

#[derive(Debug, Clone)]
struct Stored {
    text: String,
    start: u64,
    end: u64,
    heading_path: Vec<String>,
}

struct Fields {
    key: Field,
    doc: Field,
    text: Field,
    headings: Field,
}

/// One tenant's chunks, keyword index and vectors.
pub struct TenantIndex {
    index: Index,
    writer: IndexWriter,
    reader: IndexReader,
    fields: Fields,
    documents: BTreeMap<Uuid, Listed>,
    chunks: HashMap<(Uuid, u32), Stored>,
    vectors: Vectors,
    dirty: bool,
}

impl std::fmt::Debug for TenantIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantIndex")
            .field("documents", &self.documents.len())
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

fn index_error(e: impl std::fmt::Display) -> Error {
    Error::Index(e.to_string())
}

fn key(document: Uuid, chunk: u32) -> String {
    format!("{document}:{chunk}")
}

impl TenantIndex {
    /// An empty index; its vectors get a graph from [`crate::ANN_MIN_VECTORS`] on.
    pub fn new() -> Result<TenantIndex> {
        TenantIndex::with_graph_from(crate::ANN_MIN_VECTORS)
    }

    /// An empty index whose vectors get a graph once it holds `vectors` of them (tests and
    /// benchmarks compare the graph with the exact scan).
    pub fn with_graph_from(vectors: usize) -> Result<TenantIndex> {
        let mut schema = Schema::builder();
        let fields = Fields {
            key: schema.add_text_field("key", STRING | STORED),
            doc: schema.add_text_field("doc", STRING),
            text: schema.add_text_field("text", TEXT),
            headings: schema.add_text_field("headings", TEXT),
        };
        let index = Index::create_in_ram(schema.build());
        let writer = index
            .writer_with_num_threads(1, ARENA_BYTES)
            .map_err(index_error)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(index_error)?;
        Ok(TenantIndex {
            index,
            writer,
            reader,
            fields,
            documents: BTreeMap::new(),
            chunks: HashMap::new(),
            vectors: Vectors::with_ann_threshold(vectors),
            dirty: false,
        })
    }

    /// Folds one event of document `id` (call [`TenantIndex::commit`] after a batch).
    pub fn apply(&mut self, id: Uuid, event: &Event) -> Result<()> {
        match event {
            Event::DocumentAdded(added) => {
                self.remove(id);
                self.documents.insert(
                    id,
                    Listed {
                        id,
                        name: added.name.clone(),
                        media_type: added.media_type.clone(),
                        bytes: added.bytes,
                        chunks: 0,
                        vectors: 0,
                    },
                );
            }
            Event::DocumentChunked(chunked) => {
                let Some(listed) = self.documents.get_mut(&id) else {
                    return Ok(());
                };
                for chunk in &chunked.chunks {
                    self.writer
                        .add_document(doc!(
                            self.fields.key => key(id, chunk.index),
                            self.fields.doc => id.to_string(),
                            self.fields.text => chunk.text.as_str(),
                            self.fields.headings => chunk.heading_path.join(" / "),
                        ))
                        .map_err(index_error)?;
                    self.chunks.insert(
                        (id, chunk.index),
                        Stored {
                            text: chunk.text.clone(),
                            start: chunk.start,
                            end: chunk.end,
                            heading_path: chunk.heading_path.clone(),
                        },
                    );
                    listed.chunks += 1;
                }
                self.dirty = true;
            }
            Event::DocumentIndexed(indexed) => {
                let Some(listed) = self.documents.get_mut(&id) else {
                    return Ok(());
                };
                for (offset, quantized) in indexed.vectors.iter().enumerate() {
                    let chunk = indexed
                        .first
                        .saturating_add(u32::try_from(offset).unwrap_or(u32::MAX));
                    if self.chunks.contains_key(&(id, chunk))
                        && self.vectors.insert((id, chunk), dequantize(quantized))
                    {
                        listed.vectors += 1;
                    }
                }
            }
            Event::DocumentDeleted(_) => self.remove(id),
            _ => {}
        }
        Ok(())
    }

    fn remove(&mut self, id: Uuid) {
        if self.documents.remove(&id).is_some() {
            self.chunks.retain(|(document, _), _| *document != id);
            self.vectors.remove_document(id);
            self.writer
                .delete_term(Term::from_field_text(self.fields.doc, &id.to_string()));
            self.dirty = true;
        }
    }

    /// Makes what was applied searchable.
    pub fn commit(&mut self) -> Result<()> {
        if self.dirty {
            self.writer.commit().map_err(index_error)?;
            self.reader.reload().map_err(index_error)?;
            self.dirty = false;
        }
        Ok(())
    }

    /// The documents, by id.
    pub fn documents(&self) -> Vec<Listed> {
        self.documents.values().cloned().collect()
    }

    /// Chunks held (with and without vectors).
    /// Whether vector searches without a document filter go through the graph.
    pub fn approximate(&self) -> bool {
        self.vectors.approximate()
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// The `k` best chunks for the query.
    pub fn search(&self, query: &Query<'_>) -> Result<Vec<Hit>> {
        if query.k == 0 {
            return Ok(Vec::new());
        }
        let depth = (query.k * 4).max(50);
        let keyword = match query.mode {
            Mode::Vector => Vec::new(),
            _ => self.keyword(query, depth)?,
        };
        let vector = match (query.mode, query.vector) {
            (Mode::Keyword, _) => Vec::new(),
            (_, Some(v)) => self.vectors.nearest(v, query.documents, depth),
            (_, None) => {
                return Err(Error::Query(
                    "this mode needs the query's embedding, and no embedding model is configured for retrieval".into(),
                ));
            }
        };
        let mut fused: HashMap<ChunkId, Fused> = HashMap::new();
        let single = query.mode != Mode::Hybrid;
        for (rank, (chunk, score)) in keyword.iter().enumerate() {
            let entry = fused.entry(*chunk).or_insert((0.0, None, None));
            entry.0 += if single {
                *score
            } else {
                1.0 / (RRF_K + rank as f64 + 1.0)
            };
            entry.1 = Some(rank + 1);
        }
        for (rank, (chunk, score)) in vector.iter().enumerate() {
            let entry = fused.entry(*chunk).or_insert((0.0, None, None));
            entry.0 += if single {
                *score
            } else {
                1.0 / (RRF_K + rank as f64 + 1.0)
            };
            entry.2 = Some(rank + 1);
        }
        let mut ranked: Vec<_> = fused.into_iter().collect();
        // Ties break on the chunk's identity, so every node answers the same order.
        ranked.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.0.cmp(&b.0)));
        Ok(ranked
            .into_iter()
            .take(query.k)
            .filter_map(|((document, chunk), (score, keyword_rank, vector_rank))| {
                let stored = self.chunks.get(&(document, chunk))?;
                Some(Hit {
                    document_id: document,
                    document: self.documents.get(&document)?.name.clone(),
                    chunk,
                    text: stored.text.clone(),
                    start: stored.start,
                    end: stored.end,
                    heading_path: stored.heading_path.clone(),
                    score,
                    keyword_rank,
                    vector_rank,
                })
            })
            .collect())
    }

    fn keyword(&self, query: &Query<'_>, depth: usize) -> Result<Vec<((Uuid, u32), f64)>> {
        let parser =
            QueryParser::for_index(&self.index, vec![self.fields.text, self.fields.headings]);
        // Lenient: a tenant's words are words, never query syntax errors.
        let (parsed, _) = parser.parse_query_lenient(query.text);
        let parsed = match query.documents {
            Some(ids) => {
                let any: Vec<_> = ids
                    .iter()
                    .map(|id| {
                        let term = Term::from_field_text(self.fields.doc, &id.to_string());
                        let query: Box<dyn tantivy::query::Query> =
                            Box::new(TermQuery::new(term, IndexRecordOption::Basic));
                        (Occur::Should, query)
                    })
                    .collect();
                Box::new(BooleanQuery::new(vec![
                    (Occur::Must, parsed),
                    (Occur::Must, Box::new(BooleanQuery::new(any))),
                ]))
            }
            None => parsed,
        };
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&parsed, &TopDocs::with_limit(depth))
            .map_err(index_error)?;
        let mut found = Vec::with_capacity(top.len());
        for (score, address) in top {
            let stored: TantivyDocument = searcher.doc(address).map_err(index_error)?;
            let Some(text) = stored.get_first(self.fields.key).and_then(|v| v.as_str()) else {
                continue;
            };
            let Some((document, chunk)) = text.split_once(':') else {
                continue;
            };
            if let (Ok(document), Ok(chunk)) = (document.parse::<Uuid>(), chunk.parse::<u32>())
                && self.chunks.contains_key(&(document, chunk))
            {
                found.push(((document, chunk), f64::from(score)));
            }
        }
        found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(found)
    }
}

/// A unit vector as the log keeps it: each component ×32767, rounded.
pub fn quantize(vector: &[f32]) -> Vec<i16> {
    let norm = vector
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    vector
        .iter()
        .map(|x| {
            let scaled = (x / norm * 32767.0).round().clamp(-32767.0, 32767.0);
            #[expect(clippy::cast_possible_truncation, reason = "clamped to i16's range")]
            let q = scaled as i16;
            q
        })
        .collect()
}

/// A stored vector back as a unit vector.
pub fn dequantize(vector: &[i16]) -> Vec<f32> {
    let raw: Vec<f32> = vector.iter().map(|x| f32::from(*x) / 32767.0).collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    raw.into_iter().map(|x| x / norm).collect()
}
