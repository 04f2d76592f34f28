//! Where each field of a YAML (or JSON) document is: field path → line and column.
//!
//! Built from the parser's events (no alias is expanded, so it is linear in the text), after the
//! document has already been parsed under a budget. Paths are written `nodes[2].next`.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser};

/// Field path → (line, column), both 1-based.
#[derive(Debug, Default, Clone)]
pub(crate) struct Locations {
    at: HashMap<String, (u64, u64)>,
}

/// Paths longer than this are not indexed (an error there is placed at its nearest indexed
/// parent), so hostile keys and deep nesting cannot make the index large.
const MAX_PATH: usize = 2_048;
/// Entries indexed at most, and their paths' bytes in all.
const MAX_ENTRIES: usize = 100_000;
const MAX_PATH_BYTES: usize = 4 << 20;

enum Frame {
    /// A mapping: its path (`None` when not indexed), the key whose value comes next.
    Map {
        path: Option<String>,
        key: Option<String>,
    },
    /// A sequence: its path (`None` when not indexed), the index of the next item.
    Seq { path: Option<String>, next: usize },
}

/// `parent.key`, when the parent is indexed and the result is not too long.
fn child(parent: Option<&String>, key: &str) -> Option<String> {
    let parent = parent?;
    (parent.len() + key.len() < MAX_PATH).then(|| join(parent, key))
}

impl Locations {
    /// Indexes `text`; on a syntax error, whatever was indexed before it.
    pub(crate) fn of(text: &str) -> Self {
        let mut at = HashMap::new();
        let mut bytes = 0_usize;
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let line = u64::try_from(span.start.line()).unwrap_or(0);
            let column = u64::try_from(span.start.col()).unwrap_or(0) + 1;
            let mut record = |path: &Option<String>| {
                if let Some(path) = path
                    && at.len() < MAX_ENTRIES
                    && bytes + path.len() <= MAX_PATH_BYTES
                {
                    bytes += path.len();
                    at.entry(path.clone()).or_insert((line, column));
                }
            };
            // The path of the node this event starts (a scalar, or a collection).
            let node_path = |stack: &mut Vec<Frame>| -> Option<String> {
                match stack.last_mut() {
                    None => Some(String::new()),
                    Some(Frame::Map { path, key }) => {
                        key.take().and_then(|k| child(path.as_ref(), &k))
                    }
                    Some(Frame::Seq { path, next }) => {
                        let index = *next;
                        *next += 1;
                        path.as_ref()
                            .filter(|p| p.len() < MAX_PATH)
                            .map(|p| format!("{p}[{index}]"))
                    }
                }
            };
            match event {
                Event::Scalar(value, ..) => {
                    // A scalar in key position is a key: remember it and where it is.
                    if let Some(Frame::Map { path, key }) = stack.last_mut()
                        && key.is_none()
                    {
                        let full = child(path.as_ref(), &value);
                        *key = Some(value.into_owned());
                        record(&full);
                        continue;
                    }
                    let path = node_path(&mut stack);
                    record(&path);
                }
                Event::Alias(_) => {
                    node_path(&mut stack);
                }
                Event::MappingStart(..) => {
                    let path = node_path(&mut stack);
                    record(&path);
                    stack.push(Frame::Map { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = node_path(&mut stack);
                    record(&path);
                    stack.push(Frame::Seq { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        Locations { at }
    }

    /// The line and column of `path`, or of its nearest parent that was indexed.
    pub(crate) fn find(&self, path: &str) -> Option<(u64, u64)> {
        let mut path = path;
        loop {
            if let Some(&found) = self.at.get(path) {
                return Some(found);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

/// `parent.key` (or `key` at the root).
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn finds_keys_items_and_parents() {
        let text = "name: x\nnodes:\n  - id: a\n    kind: llm\n  - id: b\n    next: end\n";
        let at = Locations::of(text);
        assert_eq!(at.find("name").unwrap().0, 1);
        assert_eq!(at.find("nodes[0].kind").unwrap().0, 4);
        assert_eq!(at.find("nodes[1].next").unwrap().0, 6);
        // Not in the text: the nearest parent.
        assert_eq!(at.find("nodes[1].prompt").unwrap().0, 5);
        let json = "{\n \"name\": \"x\",\n \"nodes\": [\n  {\"id\": \"a\"}\n ]\n}";
        let at = Locations::of(json);
        assert_eq!(at.find("nodes[0].id").unwrap().0, 4);
    }
}
