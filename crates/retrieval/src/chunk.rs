//! Chunking by structure: a document's text is cut at its headings (a chunk never spans two
//! sections) and between paragraphs, into chunks of about `target_tokens`, each starting
//! `overlap_tokens` before the end of the one before it in the same section. A paragraph
//! longer than the target is cut between words. Every chunk keeps its byte range in the text
//! and the headings it sits under.

use crate::error::{Error, Result};

/// How a document is cut.
#[derive(Debug, Clone, Copy)]
pub struct ChunkOptions {
    /// About this many tokens per chunk (estimated: a token per 4 characters).
    pub target_tokens: usize,
    /// How far a chunk reaches back into the one before it in the same section.
    pub overlap_tokens: usize,
    /// More chunks than this: the document is refused.
    pub max_chunks: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            target_tokens: 200,
            overlap_tokens: 30,
            max_chunks: 50_000,
        }
    }
}

/// One chunk: `text` is `source[start..end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub index: u32,
    pub text: String,
    pub start: usize,
    pub end: usize,
    pub heading_path: Vec<String>,
    pub tokens: u32,
}

/// Estimated tokens of a text.
pub fn tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// A byte range of the text that is never cut further (a paragraph, or a window of one).
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
}

/// Cuts `text` into chunks.
pub fn chunk(text: &str, options: ChunkOptions) -> Result<Vec<Chunk>> {
    if options.target_tokens == 0 || options.overlap_tokens >= options.target_tokens {
        return Err(Error::Unsupported(
            "chunking: the target must be above zero and above the overlap".into(),
        ));
    }
    let mut chunks = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut section: Vec<Unit> = Vec::new();
    let mut paragraph: Option<Unit> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let (start, end) = (offset, offset + line.trim_end().len());
        offset += line.len();
        let trimmed = line.trim();
        if let Some((level, title)) = heading(trimmed) {
            section.extend(paragraph.take());
            emit(text, &section, &path, options, &mut chunks)?;
            section.clear();
            path.truncate(level - 1);
            path.push(title.to_owned());
        } else if trimmed.is_empty() {
            section.extend(paragraph.take());
        } else {
            let begin = start + (line.len() - line.trim_start().len());
            match &mut paragraph {
                Some(unit) => unit.end = end,
                None => paragraph = Some(Unit { start: begin, end }),
            }
        }
    }
    section.extend(paragraph.take());
    emit(text, &section, &path, options, &mut chunks)?;
    Ok(chunks)
}

/// A heading line longer than this is a paragraph (every chunk under a heading carries it).
const MAX_HEADING_BYTES: usize = 512;

/// A Markdown heading: its level (1-6) and title.
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|b| *b == b'#').count();
    let title = line.get(level..)?;
    if (1..=6).contains(&level)
        && title.starts_with(' ')
        && !title.trim().is_empty()
        && title.len() <= MAX_HEADING_BYTES
    {
        Some((level, title.trim().trim_end_matches('#').trim()))
    } else {
        None
    }
}

/// Paragraphs longer than the target, cut between words into windows of the target (a word
/// longer than a window is cut between characters).
fn windows(text: &str, unit: Unit, target: usize) -> Vec<Unit> {
    let body = &text[unit.start..unit.end];
    if tokens(body) <= target {
        return vec![unit];
    }
    let limit = target * 4;
    let mut out = Vec::new();
    // The window being filled: its start, end and characters.
    let mut current: Option<(usize, usize, usize)> = None;
    for word in body.split_whitespace() {
        let start = unit.start + (word.as_ptr() as usize - body.as_ptr() as usize);
        let end = start + word.len();
        let chars = word.chars().count();
        if chars > limit {
            if let Some((s, e, _)) = current.take() {
                out.push(Unit { start: s, end: e });
            }
            let mut piece = start;
            for (n, (i, _)) in word.char_indices().enumerate() {
                if n > 0 && n % limit == 0 {
                    out.push(Unit {
                        start: piece,
                        end: start + i,
                    });
                    piece = start + i;
                }
            }
            out.push(Unit { start: piece, end });
            continue;
        }
        current = Some(match current {
            None => (start, end, chars),
            Some((s, e, c)) => {
                let joined = c + text[e..start].chars().count() + chars;
                if joined > limit {
                    out.push(Unit { start: s, end: e });
                    (start, end, chars)
                } else {
                    (s, end, joined)
                }
            }
        });
    }
    if let Some((s, e, _)) = current {
        out.push(Unit { start: s, end: e });
    }
    out
}

/// Where a chunk that overlaps the text before `end` by about `overlap` tokens starts: at a
/// word, not before `floor`.
fn overlap_start(text: &str, floor: usize, end: usize, overlap: usize) -> usize {
    if overlap == 0 {
        return end;
    }
    let want = overlap * 4;
    let mut start = end;
    for (i, c) in text[floor..end].char_indices().rev() {
        let at = floor + i;
        if end - at > want {
            break;
        }
        if c.is_whitespace() {
            start = at + c.len_utf8();
        }
    }
    start
}

fn emit(
    text: &str,
    section: &[Unit],
    path: &[String],
    options: ChunkOptions,
    chunks: &mut Vec<Chunk>,
) -> Result<()> {
    let units: Vec<Unit> = section
        .iter()
        .flat_map(|u| windows(text, *u, options.target_tokens))
        .collect();
    let mut i = 0;
    let mut carried: Option<usize> = None;
    while i < units.len() {
        let start = carried.unwrap_or(units[i].start);
        let mut end = units[i].end;
        let mut j = i + 1;
        while j < units.len() && tokens(&text[start..units[j].end]) <= options.target_tokens {
            end = units[j].end;
            j += 1;
        }
        let body = &text[start..end];
        if chunks.len() >= options.max_chunks {
            return Err(Error::TooLarge(format!(
                "more than {} chunks",
                options.max_chunks
            )));
        }
        chunks.push(Chunk {
            index: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
            text: body.to_owned(),
            start,
            end,
            heading_path: path.to_vec(),
            tokens: u32::try_from(tokens(body)).unwrap_or(u32::MAX),
        });
        carried = (j < units.len())
            .then(|| overlap_start(text, units[j - 1].start, end, options.overlap_tokens))
            .filter(|s| *s < end && *s > start);
        i = j;
    }
    Ok(())
}

impl From<Chunk> for switchyard_events::DocumentChunk {
    fn from(chunk: Chunk) -> Self {
        switchyard_events::DocumentChunk {
            index: chunk.index,
            text: chunk.text,
            start: chunk.start as u64,
            end: chunk.end as u64,
            heading_path: chunk.heading_path,
            tokens: chunk.tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(target: usize, overlap: usize) -> ChunkOptions {
        ChunkOptions {
            target_tokens: target,
            overlap_tokens: overlap,
            max_chunks: 1_000,
        }
    }

    #[test]
    fn chunks_follow_headings_and_paragraphs_and_keep_their_place() {
        let text = "# Handbook\n\nWelcome to the company.\n\n## Refunds\n\nRefunds are issued within 14 days.\nAsk support.\n\n## Travel\n\nBook trains, not planes.\n";
        let chunks = chunk(text, options(200, 10)).unwrap();
        assert_eq!(chunks.len(), 3, "{chunks:#?}");
        assert_eq!(chunks[0].heading_path, ["Handbook"]);
        assert_eq!(chunks[1].heading_path, ["Handbook", "Refunds"]);
        assert_eq!(
            chunks[1].text,
            "Refunds are issued within 14 days.\nAsk support."
        );
        assert_eq!(chunks[2].heading_path, ["Handbook", "Travel"]);
        for c in &chunks {
            assert_eq!(&text[c.start..c.end], c.text);
        }
        // A deeper heading then a shallower one pops the path.
        let chunks = chunk("# A\n## B\n### C\nx\n## D\ny\n", options(200, 10)).unwrap();
        assert_eq!(chunks[1].heading_path, ["A", "D"]);
        assert_eq!(chunks[0].heading_path, ["A", "B", "C"]);
    }

    #[test]
    fn long_sections_are_cut_near_the_target_with_overlap() {
        let paragraph = (0..60)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let text = format!("{paragraph}\n\n{paragraph}\n\n{paragraph}\n");
        let chunks = chunk(&text, options(100, 10)).unwrap();
        assert!(chunks.len() >= 3, "{}", chunks.len());
        for pair in chunks.windows(2) {
            assert!(pair[1].start < pair[0].end, "overlap: {pair:?}");
            assert!(pair[1].start > pair[0].start);
        }
        for c in &chunks {
            assert!(c.tokens as usize <= 100 + 10, "{}", c.tokens);
            assert_eq!(&text[c.start..c.end], c.text);
            assert!(!c.text.starts_with(' ') && !c.text.ends_with(' '));
        }
        // Every word is in some chunk.
        for i in 0..60 {
            assert!(
                chunks.iter().any(|c| c.text.contains(&format!("word{i} "))
                    || c.text.ends_with(&format!("word{i}")))
            );
        }
    }

    #[test]
    fn runs_of_spaces_and_long_headings_are_cut_safely() {
        let text = format!(
            "{}   yyyy.  Next  sentence   here.\n    indented continuation\n\n# {}\n\nbody\n",
            "x".repeat(800),
            "h".repeat(2_000)
        );
        for target in [10, 50, 200] {
            let chunks = chunk(&text, options(target, target / 5)).unwrap();
            for c in &chunks {
                assert_eq!(&text[c.start..c.end], c.text);
                assert!(c.heading_path.iter().all(|h| h.len() <= MAX_HEADING_BYTES));
            }
            assert!(chunks.iter().any(|c| c.text.contains("yyyy")));
        }
        let spaced = "word  ".repeat(2_000);
        let chunks = chunk(&spaced, options(20, 4)).unwrap();
        assert!(chunks.len() > 50);
        for c in &chunks {
            assert_eq!(&spaced[c.start..c.end], c.text);
        }
    }

    #[test]
    fn one_huge_word_and_unicode_are_cut_safely() {
        let text = format!(
            "{}\n\nÅngström ünïcödé 日本語のテキスト {}",
            "x".repeat(5_000),
            "é".repeat(900)
        );
        let chunks = chunk(&text, options(50, 5)).unwrap();
        assert!(chunks.len() > 20);
        for c in &chunks {
            assert_eq!(&text[c.start..c.end], c.text);
        }
        assert!(chunk("a", options(10, 10)).is_err());
        let many = "pp\n\n".repeat(2_000);
        assert!(matches!(
            chunk(&many, options(1, 0)),
            Err(Error::TooLarge(_))
        ));
    }
}
