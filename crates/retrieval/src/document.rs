//! The document actor (stream `document-<id>`): a document is added once per content (its id
//! comes from the tenant and the content's hash, so the same bytes again are the same
//! document and adding them again changes nothing), then chunked part by part, then indexed
//! (its chunks' vectors) batch by batch, each step at most once and in order, until it is
//! deleted. Any node may run any step: the stream's expected version keeps them honest.

use std::fmt;

use serde::{Deserialize, Serialize};
use switchyard_actors::Actor;
use switchyard_events::{
    DocumentAdded, DocumentChunked, DocumentDeleted, DocumentIndexed, Event, TenantId,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// A document of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DocumentKey {
    pub tenant: TenantId,
    pub id: Uuid,
}

impl fmt::Display for DocumentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)
    }
}

impl DocumentKey {
    /// The document of `tenant` with this content: the same bytes give the same id, another
    /// tenant's the same bytes another id.
    pub fn of(tenant: TenantId, content: &[u8]) -> (DocumentKey, String) {
        let hash = blake3::hash(content);
        let mut hasher = blake3::Hasher::new_derive_key("switchyard document id v1");
        hasher.update(tenant.to_string().as_bytes());
        hasher.update(hash.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        (
            DocumentKey {
                tenant,
                id: uuid::Builder::from_custom_bytes(bytes).into_uuid(),
            },
            format!("blake3:{}", hash.to_hex()),
        )
    }
}

/// A document as its events leave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentState {
    pub added: Option<DocumentAdded>,
    pub deleted: bool,
    /// Parts of chunks recorded, of `parts`.
    pub parts_done: u32,
    pub parts: u32,
    pub chunks: u32,
    /// Chunks with a vector.
    pub vectors: u32,
    pub model: Option<String>,
}

impl DocumentState {
    /// Added and not deleted.
    pub fn live(&self) -> bool {
        self.added.is_some() && !self.deleted
    }

    /// Where ingestion stands: `absent`, `deleted`, `chunking`, `indexing` (vectors being
    /// added), `ready`.
    pub fn status(&self, vectors_expected: bool) -> &'static str {
        if self.added.is_none() {
            "absent"
        } else if self.deleted {
            "deleted"
        } else if self.parts == 0 || self.parts_done < self.parts {
            "chunking"
        } else if vectors_expected && self.vectors < self.chunks {
            "indexing"
        } else {
            "ready"
        }
    }
}

/// What can be done to a document.
#[derive(Debug, Clone)]
pub enum DocumentCommand {
    Add(DocumentAdded),
    Chunk(DocumentChunked),
    Index(DocumentIndexed),
    Delete { reason: String },
}

/// Why a command was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DocumentRefused {
    #[error("no such document")]
    NotFound,
    #[error("{0}")]
    OutOfOrder(String),
}

/// The document actor.
#[derive(Debug, Clone, Copy)]
pub struct Document;

impl Actor for Document {
    const KIND: &'static str = "document";
    const SNAPSHOT_VERSION: u16 = 1;
    type Id = DocumentKey;
    type State = DocumentState;
    type Command = DocumentCommand;
    type Rejection = DocumentRefused;

    fn tenant(id: &DocumentKey) -> TenantId {
        id.tenant
    }

    fn decide(
        state: &DocumentState,
        command: DocumentCommand,
        _now: OffsetDateTime,
    ) -> Result<Vec<Event>, DocumentRefused> {
        let live = || {
            if state.live() {
                Ok(())
            } else {
                Err(DocumentRefused::NotFound)
            }
        };
        Ok(match command {
            DocumentCommand::Add(added) => {
                if state.live() {
                    Vec::new()
                } else {
                    vec![Event::DocumentAdded(added)]
                }
            }
            DocumentCommand::Chunk(chunked) => {
                live()?;
                if chunked.part <= state.parts_done {
                    Vec::new()
                } else if chunked.part != state.parts_done + 1
                    || chunked.part > chunked.parts
                    || (state.parts != 0 && chunked.parts != state.parts)
                {
                    return Err(DocumentRefused::OutOfOrder(format!(
                        "part {} of {} after part {} of {}",
                        chunked.part, chunked.parts, state.parts_done, state.parts
                    )));
                } else {
                    vec![Event::DocumentChunked(chunked)]
                }
            }
            DocumentCommand::Index(indexed) => {
                live()?;
                let len = u32::try_from(indexed.vectors.len()).unwrap_or(u32::MAX);
                if indexed.first < state.vectors {
                    Vec::new()
                } else if indexed.first != state.vectors
                    || indexed.first.saturating_add(len) > state.chunks
                {
                    return Err(DocumentRefused::OutOfOrder(format!(
                        "vectors from chunk {} ({len} of them) after {} of {} chunks",
                        indexed.first, state.vectors, state.chunks
                    )));
                } else {
                    vec![Event::DocumentIndexed(indexed)]
                }
            }
            DocumentCommand::Delete { reason } => {
                live()?;
                vec![Event::DocumentDeleted(DocumentDeleted { reason })]
            }
        })
    }

    fn apply(state: &mut DocumentState, event: &Event) {
        match event {
            Event::DocumentAdded(added) => {
                *state = DocumentState {
                    added: Some(added.clone()),
                    ..DocumentState::default()
                };
            }
            Event::DocumentChunked(chunked) => {
                state.parts_done = chunked.part;
                state.parts = chunked.parts;
                state.chunks += u32::try_from(chunked.chunks.len()).unwrap_or(u32::MAX);
            }
            Event::DocumentIndexed(indexed) => {
                state.vectors += u32::try_from(indexed.vectors.len()).unwrap_or(u32::MAX);
                state.model = Some(indexed.model.clone());
            }
            Event::DocumentDeleted(_) => state.deleted = true,
            _ => {}
        }
    }
}

/// A document's chunks as the parts of its `DocumentChunked` events, each part's text at most
/// about `max_bytes` (a chunk larger than that is a part alone).
pub fn parts(chunks: Vec<crate::chunk::Chunk>, max_bytes: usize) -> Vec<DocumentChunked> {
    let mut groups: Vec<Vec<switchyard_events::DocumentChunk>> = Vec::new();
    let mut size = 0;
    for chunk in chunks {
        let bytes =
            chunk.text.len() + chunk.heading_path.iter().map(String::len).sum::<usize>() + 64;
        if groups.is_empty() || size + bytes > max_bytes {
            groups.push(Vec::new());
            size = 0;
        }
        size += bytes;
        if let Some(group) = groups.last_mut() {
            group.push(chunk.into());
        }
    }
    let parts = u32::try_from(groups.len()).unwrap_or(u32::MAX);
    groups
        .into_iter()
        .enumerate()
        .map(|(i, chunks)| DocumentChunked {
            part: u32::try_from(i + 1).unwrap_or(u32::MAX),
            parts,
            chunks,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use switchyard_events::DocumentChunk;

    use super::*;

    fn run(state: &mut DocumentState, command: DocumentCommand) -> Result<usize, String> {
        let events = Document::decide(state, command, OffsetDateTime::UNIX_EPOCH)
            .map_err(|e| e.to_string())?;
        for event in &events {
            Document::apply(state, event);
        }
        Ok(events.len())
    }

    fn added() -> DocumentAdded {
        DocumentAdded {
            name: "a.md".into(),
            media_type: "text/markdown".into(),
            bytes: 3,
            content_hash: "blake3:00".into(),
            source: "upload".into(),
            characters: 3,
        }
    }

    fn part(part: u32, parts: u32, n: u32) -> DocumentCommand {
        DocumentCommand::Chunk(DocumentChunked {
            part,
            parts,
            chunks: (0..n)
                .map(|i| DocumentChunk {
                    index: i,
                    text: "t".into(),
                    start: 0,
                    end: 1,
                    heading_path: Vec::new(),
                    tokens: 1,
                })
                .collect(),
        })
    }

    fn vectors(first: u32, n: usize) -> DocumentCommand {
        DocumentCommand::Index(DocumentIndexed {
            model: "m".into(),
            dimensions: 2,
            first,
            vectors: vec![vec![1, 0]; n],
        })
    }

    #[test]
    fn each_step_happens_once_and_in_order() {
        let mut state = DocumentState::default();
        assert!(run(&mut state, part(1, 1, 1)).is_err(), "not added yet");
        assert_eq!(run(&mut state, DocumentCommand::Add(added())), Ok(1));
        assert_eq!(run(&mut state, DocumentCommand::Add(added())), Ok(0));
        assert!(run(&mut state, part(2, 2, 3)).is_err(), "a gap");
        assert_eq!(run(&mut state, part(1, 2, 3)), Ok(1));
        assert_eq!(run(&mut state, part(1, 2, 3)), Ok(0), "again: nothing");
        assert!(run(&mut state, part(2, 3, 3)).is_err(), "parts changed");
        assert_eq!(state.status(true), "chunking");
        assert_eq!(run(&mut state, part(2, 2, 2)), Ok(1));
        assert_eq!(state.chunks, 5);
        assert_eq!(state.status(true), "indexing");
        assert_eq!(state.status(false), "ready");
        assert!(run(&mut state, vectors(1, 2)).is_err(), "a gap");
        assert!(
            run(&mut state, vectors(0, 6)).is_err(),
            "more than the chunks"
        );
        assert_eq!(run(&mut state, vectors(0, 3)), Ok(1));
        assert_eq!(run(&mut state, vectors(0, 3)), Ok(0));
        assert_eq!(run(&mut state, vectors(3, 2)), Ok(1));
        assert_eq!(state.status(true), "ready");
        assert_eq!(
            run(&mut state, DocumentCommand::Delete { reason: "x".into() }),
            Ok(1)
        );
        assert_eq!(state.status(true), "deleted");
        assert!(run(&mut state, DocumentCommand::Delete { reason: "x".into() }).is_err());
        assert!(run(&mut state, vectors(5, 1)).is_err());
        // Added again after deletion: a fresh start.
        assert_eq!(run(&mut state, DocumentCommand::Add(added())), Ok(1));
        assert_eq!((state.chunks, state.status(true)), (0, "chunking"));
    }

    #[test]
    fn ids_come_from_the_tenant_and_the_content() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let (one, hash) = DocumentKey::of(a, b"same bytes");
        assert_eq!(DocumentKey::of(a, b"same bytes").0, one);
        assert_ne!(DocumentKey::of(b, b"same bytes").0.id, one.id);
        assert_ne!(DocumentKey::of(a, b"other bytes").0.id, one.id);
        assert!(hash.starts_with("blake3:"));
    }
}
