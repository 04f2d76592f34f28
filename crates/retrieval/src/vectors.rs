//! A tenant's vectors: a contiguous matrix of unit vectors (what an exact scan reads), and,
//! past [`ANN_MIN_VECTORS`], an HNSW graph over them (usearch, i8-quantized cosine) whose
//! candidates are re-scored exactly against the matrix.
//!
//! The graph is built and changed in the log's order on the one indexing thread, with one
//! usearch thread context (so one seeded splitmix64 level generator, never chosen by which
//! core or which search came first), so every node that folded the same events holds the same
//! graph and answers the same candidates: approximate, but the same answer on every node of
//! one CPU kind (usearch picks its SIMD distance kernels for the CPU at run time, and
//! different kernels may round differently). The tenant's mutex serialises searches, so one
//! context is enough. Queries that name documents scan those exactly.

use std::collections::HashMap;

use uuid::Uuid;

/// A chunk: its document and index.
pub(crate) type ChunkId = (Uuid, u32);

/// From this many vectors on, a tenant's vectors are searched through the graph.
pub const ANN_MIN_VECTORS: usize = 20_000;
/// Candidates asked of the graph per result wanted, before the exact re-scoring.
const ANN_OVERSAMPLE: usize = 2;
/// The graph's neighbours per node and its search breadths (usearch's M, efConstruction,
/// efSearch).
const CONNECTIVITY: usize = 16;
const EXPANSION_ADD: usize = 64;
const EXPANSION_SEARCH: usize = 256;

/// The HNSW graph and its keys (usearch keys are `u64`; a chunk gets a new one each time its
/// vector is put, so a replaced vector never answers).
struct Ann {
    index: usearch::Index,
    key_of: HashMap<ChunkId, u64>,
    chunk_of: HashMap<u64, ChunkId>,
    next_key: u64,
}

impl std::fmt::Debug for Ann {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ann")
            .field("vectors", &self.key_of.len())
            .finish_non_exhaustive()
    }
}

/// A vector as the graph holds it: scaled so its largest component is ±127 (cosine does not
/// see the scale; usearch's own cast would divide by the L2 norm, leaving a 384-dimension unit
/// vector's components within about ±6 and most of the precision lost).
fn to_i8(vector: &[f32]) -> Vec<i8> {
    let largest = vector.iter().fold(0f32, |m, x| m.max(x.abs()));
    // Zero, or NaN somewhere (`max` skips NaN only when the other side is a number).
    if largest.is_nan() || largest <= 0.0 {
        return vec![0; vector.len()];
    }
    vector
        .iter()
        .map(|x| (x / largest * 127.0).round().clamp(-127.0, 127.0) as i8)
        .collect()
}

fn text(error: impl std::fmt::Display) -> String {
    error.to_string()
}

impl Ann {
    /// The graph over every row of `vectors`, added in row order.
    fn build(vectors: &Vectors) -> Result<Ann, String> {
        let options = usearch::IndexOptions {
            dimensions: vectors.dimensions,
            metric: usearch::MetricKind::Cos,
            quantization: usearch::ScalarKind::I8,
            connectivity: CONNECTIVITY,
            expansion_add: EXPANSION_ADD,
            expansion_search: EXPANSION_SEARCH,
            multi: false,
        };
        let index = usearch::Index::new(&options).map_err(text)?;
        index
            .reserve_capacity_and_threads(vectors.rows.len().next_power_of_two(), 1)
            .map_err(text)?;
        let mut ann = Ann {
            index,
            key_of: HashMap::with_capacity(vectors.rows.len()),
            chunk_of: HashMap::with_capacity(vectors.rows.len()),
            next_key: 0,
        };
        let started = std::time::Instant::now();
        for (row, chunk) in vectors.rows.iter().enumerate() {
            let d = vectors.dimensions;
            ann.put(*chunk, &vectors.matrix[row * d..(row + 1) * d])?;
        }
        tracing::info!(
            vectors = vectors.rows.len(),
            ms = started.elapsed().as_millis() as u64,
            "vector graph built"
        );
        Ok(ann)
    }

    /// Puts a chunk's vector (replacing the one it had).
    fn put(&mut self, chunk: ChunkId, vector: &[f32]) -> Result<(), String> {
        self.take(chunk)?;
        if self.index.size() + 1 > self.index.capacity() {
            self.index
                .reserve_capacity_and_threads((self.index.capacity() * 2).max(1_024), 1)
                .map_err(text)?;
        }
        let key = self.next_key;
        self.next_key += 1;
        self.index.add(key, &to_i8(vector)).map_err(text)?;
        self.key_of.insert(chunk, key);
        self.chunk_of.insert(key, chunk);
        Ok(())
    }

    /// Takes a chunk's vector out, if it has one.
    fn take(&mut self, chunk: ChunkId) -> Result<(), String> {
        if let Some(key) = self.key_of.remove(&chunk) {
            self.chunk_of.remove(&key);
            self.index.remove(key).map_err(text)?;
        }
        Ok(())
    }

    /// About `count` chunks near `query`.
    fn candidates(&self, query: &[f32], count: usize) -> Result<Vec<ChunkId>, String> {
        let found = self.index.search(&to_i8(query), count).map_err(text)?;
        Ok(found
            .keys
            .iter()
            .filter_map(|key| self.chunk_of.get(key).copied())
            .collect())
    }
}

/// The tenant's vectors, one row per chunk, contiguous (what a scan reads), all of one
/// dimension (the first vector's; others are not kept); past `ann_min` rows, also an HNSW
/// graph over them.
#[derive(Debug)]
pub(crate) struct Vectors {
    dimensions: usize,
    matrix: Vec<f32>,
    rows: Vec<ChunkId>,
    row_of: HashMap<ChunkId, usize>,
    ann: Option<Ann>,
    ann_min: usize,
    /// The graph failed (memory, a vector of another length): scan exactly rather than
    /// rebuild it on every insert, until the vectors are all gone.
    ann_failed: bool,
}

impl Vectors {
    /// Empty; the graph is built once `ann_min` vectors are held.
    pub(crate) fn with_ann_threshold(ann_min: usize) -> Vectors {
        Vectors {
            dimensions: 0,
            matrix: Vec::new(),
            rows: Vec::new(),
            row_of: HashMap::new(),
            ann: None,
            ann_min: ann_min.max(1),
            ann_failed: false,
        }
    }

    /// Whether the graph is built (searches without a document filter use it).
    pub(crate) fn approximate(&self) -> bool {
        self.ann.is_some()
    }

    pub(crate) fn insert(&mut self, chunk: ChunkId, vector: Vec<f32>) -> bool {
        if self.rows.is_empty() {
            self.dimensions = vector.len();
        }
        if vector.len() != self.dimensions || vector.is_empty() {
            return false;
        }
        match self.row_of.get(&chunk) {
            Some(row) => {
                let at = row * self.dimensions;
                self.matrix[at..at + self.dimensions].copy_from_slice(&vector);
            }
            None => {
                self.row_of.insert(chunk, self.rows.len());
                self.rows.push(chunk);
                self.matrix.extend_from_slice(&vector);
            }
        }
        let outcome = match &mut self.ann {
            Some(ann) => ann.put(chunk, &vector),
            None if self.rows.len() >= self.ann_min && !self.ann_failed => {
                Ann::build(self).map(|ann| {
                    self.ann = Some(ann);
                })
            }
            None => Ok(()),
        };
        if let Err(error) = outcome {
            // The exact scan answers (slower, never wrong) from now on.
            tracing::warn!(%error, vectors = self.rows.len(), "the vector graph failed; scanning exactly");
            self.ann = None;
            self.ann_failed = true;
        }
        true
    }

    /// Removes a document's rows (the last row moves into each hole).
    pub(crate) fn remove_document(&mut self, document: Uuid) {
        let mut row = 0;
        while row < self.rows.len() {
            if self.rows[row].0 != document {
                row += 1;
                continue;
            }
            let last = self.rows.len() - 1;
            let removed = self.rows.swap_remove(row);
            self.row_of.remove(&removed);
            if let Some(ann) = &mut self.ann
                && let Err(error) = ann.take(removed)
            {
                tracing::warn!(%error, "the vector graph failed; scanning exactly");
                self.ann = None;
                self.ann_failed = true;
            }
            let d = self.dimensions;
            if row != last {
                self.matrix.copy_within(last * d..(last + 1) * d, row * d);
                self.row_of.insert(self.rows[row], row);
            }
            self.matrix.truncate(last * d);
        }
        if self.rows.is_empty() {
            // Nothing left: the next vectors may be of another model, and get a new graph.
            self.ann = None;
            self.ann_failed = false;
        }
    }

    /// The `depth` rows closest to `query` (cosine of unit vectors), best first: from the
    /// graph's candidates re-scored exactly when it is built and the query names no documents,
    /// else by an exact scan.
    pub(crate) fn nearest(
        &self,
        query: &[f32],
        documents: Option<&[Uuid]>,
        depth: usize,
    ) -> Vec<(ChunkId, f64)> {
        if query.len() != self.dimensions || self.rows.is_empty() {
            return Vec::new();
        }
        if let (Some(ann), None) = (&self.ann, documents) {
            match ann.candidates(query, depth * ANN_OVERSAMPLE) {
                Ok(candidates) => return self.rescore(query, candidates, depth),
                Err(error) => tracing::warn!(%error, "the vector graph failed a search; scanning"),
            }
        }
        self.scan(query, documents, depth)
    }

    /// Candidates scored exactly against the matrix, the best `depth` of them, best first.
    fn rescore(
        &self,
        query: &[f32],
        candidates: Vec<ChunkId>,
        depth: usize,
    ) -> Vec<(ChunkId, f64)> {
        let d = self.dimensions;
        let mut scored: Vec<(ChunkId, f64)> = candidates
            .into_iter()
            .filter_map(|chunk| {
                let row = *self.row_of.get(&chunk)?;
                Some((
                    chunk,
                    f64::from(dot(&self.matrix[row * d..(row + 1) * d], query)),
                ))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(depth);
        scored
    }

    /// Every row (of `documents`, if given) scored: the best `depth`, best first.
    fn scan(&self, query: &[f32], documents: Option<&[Uuid]>, depth: usize) -> Vec<(ChunkId, f64)> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        #[derive(PartialEq)]
        struct Scored(f32, ChunkId);
        impl Eq for Scored {}
        impl PartialOrd for Scored {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for Scored {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                // Higher score first; on a tie the smaller chunk id ranks higher.
                self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
            }
        }
        let mut best: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(depth + 1);
        for (row, vector) in self.matrix.chunks_exact(self.dimensions).enumerate() {
            let chunk = self.rows[row];
            if documents.is_some_and(|ids| !ids.contains(&chunk.0)) {
                continue;
            }
            let score = dot(vector, query);
            if best.len() < depth {
                best.push(Reverse(Scored(score, chunk)));
            } else if best
                .peek()
                .is_some_and(|worst| Scored(score, chunk) > worst.0)
            {
                best.pop();
                best.push(Reverse(Scored(score, chunk)));
            }
        }
        let mut out: Vec<(ChunkId, f64)> = best
            .into_iter()
            .map(|Reverse(Scored(score, chunk))| (chunk, f64::from(score)))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

/// A dot product the compiler vectorizes (eight lanes at a time).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-random unit vector (BLAKE3 of the seed as the source).
    fn unit(seed: u64, dimensions: usize) -> Vec<f32> {
        let mut reader = blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof();
        let mut bytes = vec![0u8; dimensions * 2];
        reader.fill(&mut bytes);
        let v: Vec<f32> = bytes
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0)
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.into_iter().map(|x| x / norm).collect()
    }

    const DIMENSIONS: usize = 48;

    /// 3,000 vectors in 30 documents, the graph built at 1,000 (so both the build and later
    /// puts are exercised).
    fn filled(graph_from: usize) -> (Vectors, Vec<Uuid>) {
        let documents: Vec<Uuid> = (0..30u128).map(Uuid::from_u128).collect();
        let mut vectors = Vectors::with_ann_threshold(graph_from);
        for i in 0..3_000u64 {
            let chunk = (documents[(i % 30) as usize], (i / 30) as u32);
            assert!(vectors.insert(chunk, unit(i, DIMENSIONS)));
        }
        (vectors, documents)
    }

    #[test]
    fn the_graph_finds_what_the_scan_finds_and_every_node_builds_the_same_graph() {
        let (graph, documents) = filled(1_000);
        let (other, _) = filled(1_000);
        let (exact, _) = filled(usize::MAX);
        assert!(graph.approximate() && !exact.approximate());
        let (mut found, mut wanted) = (0, 0);
        for q in 0..100 {
            let query = unit(1_000_000 + q, DIMENSIONS);
            let approximate = graph.nearest(&query, None, 10);
            let truth = exact.nearest(&query, None, 10);
            // Built from the same events in the same order: the same answer, to the bit.
            assert_eq!(approximate, other.nearest(&query, None, 10));
            wanted += truth.len();
            found += truth.iter().filter(|t| approximate.contains(t)).count();
            // Scores are exact (re-scored on the matrix), best first.
            assert!(approximate.windows(2).all(|w| w[0].1 >= w[1].1));
        }
        let recall = found as f64 / wanted as f64;
        assert!(recall >= 0.95, "recall@10 of the graph: {recall}");

        // A chunk's own vector finds it first.
        let chunk = (documents[7], 42);
        let own = unit(42 * 30 + 7, DIMENSIONS);
        assert_eq!(graph.nearest(&own, None, 5)[0].0, chunk);
        // A filter scans the named documents exactly.
        let filter = [documents[3], documents[4]];
        let query = unit(77, DIMENSIONS);
        assert_eq!(
            graph.nearest(&query, Some(&filter), 10),
            exact.nearest(&query, Some(&filter), 10)
        );
    }

    /// Searches between inserts (on one node, not the other) do not change the graph that the
    /// inserts build.
    #[test]
    fn searches_between_inserts_leave_the_graph_as_the_log_makes_it() {
        let documents: Vec<Uuid> = (0..30u128).map(Uuid::from_u128).collect();
        let mut busy = Vectors::with_ann_threshold(500);
        let mut quiet = Vectors::with_ann_threshold(500);
        for i in 0..2_000u64 {
            let chunk = (documents[(i % 30) as usize], (i / 30) as u32);
            assert!(busy.insert(chunk, unit(i, DIMENSIONS)));
            assert!(quiet.insert(chunk, unit(i, DIMENSIONS)));
            if i >= 500 && i % 7 == 0 {
                for q in 0..3 {
                    busy.nearest(&unit(7_000_000 + i * 3 + q, DIMENSIONS), None, 10);
                }
            }
        }
        for q in 0..100 {
            let query = unit(8_000_000 + q, DIMENSIONS);
            assert_eq!(
                busy.nearest(&query, None, 10),
                quiet.nearest(&query, None, 10)
            );
        }
    }

    #[test]
    fn a_graph_that_failed_is_not_rebuilt_per_insert_and_starts_again_when_emptied() {
        let document = Uuid::from_u128(1);
        let mut vectors = Vectors::with_ann_threshold(10);
        for i in 0..20u32 {
            assert!(vectors.insert((document, i), unit(u64::from(i), DIMENSIONS)));
        }
        assert!(vectors.approximate());
        // A failure (here: the graph's key bookkeeping says a vector is there, usearch says
        // the index cannot take another of a wrong length) drops it for good.
        if let Some(ann) = &mut vectors.ann {
            assert!(ann.put((document, 99), &[1.0; 3]).is_err());
        }
        vectors.ann = None;
        vectors.ann_failed = true;
        assert!(vectors.insert((document, 20), unit(20, DIMENSIONS)));
        assert!(!vectors.approximate(), "not rebuilt on the next insert");
        assert_eq!(
            vectors.nearest(&unit(20, DIMENSIONS), None, 1)[0].0,
            (document, 20)
        );
        vectors.remove_document(document);
        for i in 0..12u32 {
            assert!(vectors.insert((Uuid::from_u128(2), i), unit(u64::from(i), DIMENSIONS)));
        }
        assert!(vectors.approximate(), "emptied, then a graph again");
    }

    #[test]
    fn deleted_and_replaced_vectors_never_answer_from_the_graph() {
        let (mut graph, documents) = filled(1_000);
        for document in documents.iter().step_by(2) {
            graph.remove_document(*document);
        }
        // A chunk's vector replaced: the old one no longer finds it.
        let chunk = (documents[1], 5);
        let old = unit(5 * 30 + 1, DIMENSIONS);
        let new = unit(9_999_999, DIMENSIONS);
        assert!(graph.insert(chunk, new.clone()));
        assert!(graph.approximate());
        assert_eq!(graph.nearest(&new, None, 1)[0].0, chunk);
        assert!(
            graph
                .nearest(&old, None, 20)
                .iter()
                .all(|(c, _)| *c != chunk)
        );
        for q in 0..50 {
            let hits = graph.nearest(&unit(5_000_000 + q, DIMENSIONS), None, 20);
            assert_eq!(hits.len(), 20);
            assert!(
                hits.iter().all(|((document, _), _)| documents
                    .iter()
                    .position(|d| d == document)
                    .unwrap()
                    % 2
                    == 1),
                "a deleted document's chunk answered"
            );
        }
    }
}
