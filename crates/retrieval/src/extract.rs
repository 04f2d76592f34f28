//! Text out of what tenants upload: plain text, Markdown, HTML and PDF.
//!
//! The text keeps the document's structure where it has one: Markdown as it is, HTML's
//! headings as `#` lines and its blocks as paragraphs (scripts, styles and other non-text
//! elements dropped), so the chunker sees headings and paragraphs whatever the source. PDF
//! text comes from `pdf-extract`; the server runs [`pdf_text`] in a child process under a time
//! and memory limit, since a hostile PDF can make any extractor allocate or loop.

use scraper::{Html, Node};

use crate::error::{Error, Result};

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Text,
    Markdown,
    Html,
    Pdf,
}

impl Media {
    /// The media type recorded with the document.
    pub fn as_str(self) -> &'static str {
        match self {
            Media::Text => "text/plain",
            Media::Markdown => "text/markdown",
            Media::Html => "text/html",
            Media::Pdf => "application/pdf",
        }
    }

    /// The media type from what the client declared (a `Content-Type`), else the name's
    /// extension, else the bytes (`%PDF-`, `<html`), else plain text.
    pub fn detect(declared: Option<&str>, name: &str, bytes: &[u8]) -> Result<Media> {
        let declared = declared
            .map(|d| {
                d.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|d| !d.is_empty() && d != "application/octet-stream");
        if let Some(declared) = declared {
            return match declared.as_str() {
                "text/plain" => Ok(Media::Text),
                "text/markdown" | "text/x-markdown" => Ok(Media::Markdown),
                "text/html" | "application/xhtml+xml" => Ok(Media::Html),
                "application/pdf" => Ok(Media::Pdf),
                other => Err(Error::Unsupported(format!(
                    "media type {other:?}: text/plain, text/markdown, text/html or application/pdf"
                ))),
            };
        }
        let lower = name.to_ascii_lowercase();
        let extension = lower.rsplit_once('.').map_or("", |(_, e)| e);
        Ok(match extension {
            "md" | "markdown" => Media::Markdown,
            "html" | "htm" => Media::Html,
            "pdf" => Media::Pdf,
            "txt" | "text" => Media::Text,
            _ if bytes.starts_with(b"%PDF-") => Media::Pdf,
            _ if bytes
                .iter()
                .take(512)
                .map(u8::to_ascii_lowercase)
                .collect::<Vec<u8>>()
                .windows(5)
                .any(|w| w == b"<html") =>
            {
                Media::Html
            }
            _ => Media::Text,
        })
    }
}

/// The text of a text, Markdown or HTML document (PDF goes through [`pdf_text`]).
pub fn text(media: Media, bytes: &[u8]) -> Result<String> {
    if bytes.is_empty() {
        return Err(Error::Unsupported("the document is empty (0 bytes)".into()));
    }
    let decoded = decode(bytes)?;
    let text = match media {
        Media::Text | Media::Markdown => decoded,
        Media::Html => html_text(&decoded)?,
        Media::Pdf => {
            return Err(Error::Unsupported(
                "a PDF is read by pdf_text, not as text".into(),
            ));
        }
    };
    clean(text)
}

/// UTF-8 (a BOM dropped), or UTF-16 with its BOM; anything else is refused, not guessed.
fn decode(bytes: &[u8]) -> Result<String> {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return decode(rest);
    }
    let utf16 = |rest: &[u8], little: bool| -> Result<String> {
        if !rest.len().is_multiple_of(2) {
            return Err(Error::Unsupported(
                "UTF-16 text of an odd number of bytes".into(),
            ));
        }
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| {
                if little {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16(&units).map_err(|_| Error::Unsupported("invalid UTF-16 text".into()))
    };
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, true);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, false);
    }
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        Error::Unsupported(format!(
            "the text is not UTF-8 (an invalid byte at offset {}); send UTF-8, or UTF-16 with its byte order mark",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Control characters other than newlines and tabs go (NULs, escapes); a document left with
/// no text is refused.
fn clean(text: String) -> Result<String> {
    let cleaned: String = text
        .replace("\r\n", "\n")
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    if cleaned.trim().is_empty() {
        return Err(Error::Unsupported("the document has no text".into()));
    }
    Ok(cleaned)
}

/// Elements whose content is never text.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "head", "svg", "iframe", "object", "canvas",
];
/// Elements that end a paragraph.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "aside",
    "nav",
    "li",
    "ul",
    "ol",
    "table",
    "tr",
    "blockquote",
    "pre",
    "br",
    "hr",
    "dd",
    "dt",
    "figure",
    "figcaption",
];

/// Deepest element nesting taken (browsers' parsers stop near here too); html5ever's tree
/// building slows quadratically with depth, so deeper documents are refused before parsing.
const MAX_HTML_DEPTH: usize = 512;
/// Elements with no content or whose end tag may be left out: they do not nest.
const NOT_NESTING: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "rb", "rt",
    "rp", "colgroup", "thead", "tbody", "tfoot", "caption",
];

/// How deep the document's elements nest, at most (counting to `MAX_HTML_DEPTH + 1`): a
/// tokenizer of tags only, so it is linear in the input.
fn html_depth(source: &str) -> usize {
    let bytes = source.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() && deepest <= MAX_HTML_DEPTH {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &source[i + 1..];
        if rest.starts_with("!--") {
            i += rest.find("-->").map_or(bytes.len(), |end| end + 4);
            continue;
        }
        let closing = rest.starts_with('/');
        let name: String = rest
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let end = rest.find('>').map_or(rest.len(), |e| e);
        let self_closing = rest[..end].ends_with('/');
        if !name.is_empty() && !NOT_NESTING.contains(&name.as_str()) && !self_closing {
            if closing {
                depth = depth.saturating_sub(1);
            } else {
                depth += 1;
                deepest = deepest.max(depth);
            }
        }
        i += 1 + end;
    }
    deepest
}

fn html_text(source: &str) -> Result<String> {
    if html_depth(source) > MAX_HTML_DEPTH {
        return Err(Error::Unsupported(format!(
            "the HTML nests elements deeper than {MAX_HTML_DEPTH}"
        )));
    }
    let document = Html::parse_document(source);
    let mut out = String::new();
    // Depth-first with an explicit stack: a document nested 100,000 levels deep costs memory in
    // proportion, never the thread's stack.
    enum Step<'a> {
        Enter(ego_tree::NodeRef<'a, Node>),
        Leave { block: bool },
    }
    let mut stack = vec![Step::Enter(document.tree.root())];
    while let Some(step) = stack.pop() {
        let node = match step {
            Step::Leave { block } => {
                if block {
                    out.push_str("\n\n");
                }
                continue;
            }
            Step::Enter(node) => node,
        };
        match node.value() {
            Node::Text(text) => {
                let words: Vec<&str> = text.split_whitespace().collect();
                if !words.is_empty() {
                    if !out.is_empty() && !out.ends_with(['\n', ' ']) {
                        out.push(' ');
                    }
                    out.push_str(&words.join(" "));
                }
                continue;
            }
            Node::Element(element) => {
                let name = element.name();
                if SKIPPED.contains(&name) {
                    continue;
                }
                let heading = match name.as_bytes() {
                    [b'h', level @ b'1'..=b'6'] => Some(usize::from(level - b'0')),
                    _ => None,
                };
                let block = heading.is_some() || BLOCKS.contains(&name);
                if block {
                    out.push_str("\n\n");
                }
                if let Some(level) = heading {
                    out.push_str(&"#".repeat(level));
                    out.push(' ');
                }
                stack.push(Step::Leave { block });
            }
            _ => {}
        }
        let children: Vec<_> = node.children().collect();
        stack.extend(children.into_iter().rev().map(Step::Enter));
    }
    Ok(out)
}

/// The text of a PDF (in the process that calls it: the server runs this in a child process
/// with limits). A PDF with no text layer (a scan) is refused.
pub fn pdf_text(bytes: &[u8]) -> Result<String> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(Error::Unsupported("not a PDF (no %PDF- header)".into()));
    }
    let text = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes))
        .map_err(|_| Error::Unsupported("the PDF could not be read".into()))?
        .map_err(|e| Error::Unsupported(format!("the PDF could not be read: {e}")))?;
    clean(text).map_err(|_| Error::Unsupported("the PDF has no text layer".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-page PDF whose text layer says `text`.
    pub(crate) fn pdf(text: &str) -> Vec<u8> {
        use lopdf::content::{Content, Operation};
        use lopdf::{Document, Object, Stream, dictionary};
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        let font_id = doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier",
        });
        let resources_id = doc.add_object(dictionary! {
            "Font" => dictionary! { "F1" => font_id },
        });
        let content = Content {
            operations: vec![
                Operation::new("BT", vec![]),
                Operation::new("Tf", vec!["F1".into(), 12.into()]),
                Operation::new("Td", vec![72.into(), 700.into()]),
                Operation::new("Tj", vec![Object::string_literal(text)]),
                Operation::new("ET", vec![]),
            ],
        };
        let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
        });
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
                "Resources" => resources_id, "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
            }),
        );
        let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        doc.trailer.set("Root", catalog_id);
        let mut bytes = Vec::new();
        doc.save_to(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn media_types_are_declared_named_or_sniffed() {
        let detect = |declared, name, bytes: &[u8]| Media::detect(declared, name, bytes).unwrap();
        assert_eq!(
            detect(Some("text/markdown; charset=utf-8"), "x", b"a"),
            Media::Markdown
        );
        assert_eq!(detect(None, "notes.MD", b"a"), Media::Markdown);
        assert_eq!(detect(None, "page.htm", b"a"), Media::Html);
        assert_eq!(
            detect(Some("application/octet-stream"), "x", b"%PDF-1.7"),
            Media::Pdf
        );
        assert_eq!(detect(None, "x", b"<!doctype html><HTML>"), Media::Html);
        assert_eq!(detect(None, "x", b"plain words"), Media::Text);
        assert!(Media::detect(Some("image/png"), "x.png", b"\x89PNG").is_err());
    }

    #[test]
    fn html_keeps_headings_and_paragraphs_and_drops_scripts() {
        let html = br#"<html><head><title>t</title><style>p{color:red}</style></head>
            <body><h1>Guide</h1><script>alert('x'); var secret = 1;</script>
            <p>First   paragraph.</p><noscript>enable js</noscript><h2>Part <b>two</b></h2>
            <p>Second<br>line</p><img src=x onerror=alert(1)></body></html>"#;
        let text = text(Media::Html, html).unwrap();
        assert!(text.contains("# Guide"), "{text}");
        assert!(text.contains("## Part two"), "{text}");
        assert!(text.contains("First paragraph."));
        for hidden in ["alert", "secret", "color:red", "enable js"] {
            assert!(!text.contains(hidden), "{hidden} in {text}");
        }
        let chunks = crate::chunk::chunk(&text, crate::chunk::ChunkOptions::default()).unwrap();
        assert_eq!(chunks.last().unwrap().heading_path, ["Guide", "Part two"]);
        // Nesting deeper than browsers take is refused before parsing (quickly); within the
        // limit it is read without recursion, on a small stack.
        let deep = format!(
            "{}deep text{}",
            "<div>".repeat(100_000),
            "</div>".repeat(100_000)
        );
        let started = std::time::Instant::now();
        let refused = super::text(Media::Html, deep.as_bytes()).unwrap_err();
        assert!(refused.to_string().contains("deeper than 512"), "{refused}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let nested = format!("{}inner text{}", "<div>".repeat(500), "</div>".repeat(500));
        let text = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || super::text(Media::Html, nested.as_bytes()))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(text.contains("inner text"));
        // Unclosed paragraphs and list items, as real pages have, are not nesting.
        let flat = "<ul>".to_owned() + &"<li><p>item".repeat(5_000) + "</ul>";
        assert!(
            super::text(Media::Html, flat.as_bytes())
                .unwrap()
                .contains("item")
        );
    }

    #[test]
    fn encodings_empty_and_binary_documents() {
        assert!(
            text(Media::Text, b"")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            text(Media::Text, b"caf\xe9")
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
        assert!(
            text(Media::Text, b"  \n\t ")
                .unwrap_err()
                .to_string()
                .contains("no text")
        );
        assert!(text(Media::Text, b"\x00\x01\x02").is_err());
        assert_eq!(
            text(Media::Text, b"\xEF\xBB\xBFhello\r\nworld").unwrap(),
            "hello\nworld"
        );
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("hé".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(text(Media::Text, &utf16).unwrap(), "hé");
        assert!(text(Media::Text, &[0xFF, 0xFE, 0x41]).is_err());
        assert_eq!(text(Media::Markdown, b"a\x00b\x1bc").unwrap(), "abc");
    }

    #[test]
    fn pdf_text_layers_are_read_and_garbage_is_refused() {
        let bytes = pdf("Refunds are issued within 14 days");
        let text = pdf_text(&bytes).unwrap();
        assert!(
            text.contains("Refunds are issued within 14 days"),
            "{text:?}"
        );
        assert!(pdf_text(b"not a pdf").is_err());
        assert!(pdf_text(b"%PDF-1.7\n garbage \x00\x01").is_err());
        let truncated = &bytes[..bytes.len() / 2];
        assert!(pdf_text(truncated).is_err());
    }
}
