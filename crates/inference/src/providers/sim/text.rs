//! Text helpers of the schema generator: lengths, patterns and JSON pointers.

/// `text` padded or cut to between `fewest` and `most` characters.
pub fn fit_length(text: String, fewest: u64, most: u64) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let fewest = usize::try_from(fewest).unwrap_or(usize::MAX);
    let most = usize::try_from(most).unwrap_or(usize::MAX);
    while chars.len() < fewest {
        chars.push(if chars.len().is_multiple_of(2) {
            'a'
        } else {
            'b'
        });
    }
    chars.truncate(most.max(fewest));
    chars.into_iter().collect()
}

/// Repetitions with no upper bound (`*`, `+`, `{n,}`) go up to this many more than their least.
const MAX_REPEAT: u32 = 8;

/// A generator of strings that match `pattern`, refused when a match could run past
/// `longest` characters (`(a{1000}){1000}` would be a million).
pub fn pattern_generator(pattern: &str, longest: u64) -> Result<rand_regex::Regex, String> {
    let hir = regex_syntax::Parser::new()
        .parse(&ecma_classes(unanchored(pattern)))
        .map_err(|e| format!("pattern {pattern:?} cannot be generated: {e}"))?;
    let bound = longest_match(&hir);
    if bound > longest.saturating_mul(4) {
        return Err(format!(
            "pattern {pattern:?} matches strings of up to {bound} bytes, more than the simulator generates"
        ));
    }
    rand_regex::Regex::with_hir(hir, MAX_REPEAT)
        .map_err(|e| format!("pattern {pattern:?} cannot be generated: {e}"))
}

/// The most bytes a generated match can have.
fn longest_match(hir: &regex_syntax::hir::Hir) -> u64 {
    use regex_syntax::hir::HirKind;
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 0,
        HirKind::Literal(literal) => literal.0.len() as u64,
        HirKind::Class(_) => 4,
        HirKind::Repetition(repetition) => {
            let most = repetition
                .max
                .unwrap_or(repetition.min.saturating_add(MAX_REPEAT));
            longest_match(&repetition.sub).saturating_mul(u64::from(most))
        }
        HirKind::Capture(capture) => longest_match(&capture.sub),
        HirKind::Concat(parts) => parts.iter().map(longest_match).fold(0, u64::saturating_add),
        HirKind::Alternation(parts) => parts.iter().map(longest_match).max().unwrap_or(0),
    }
}

/// `pattern` without a leading `^` and a trailing `$`: the generator makes a match of the
/// whole, which the anchors allow, and cannot read anchors.
fn unanchored(pattern: &str) -> &str {
    let pattern = pattern.strip_prefix('^').unwrap_or(pattern);
    match pattern.strip_suffix('$') {
        Some(rest) if !rest.ends_with('\\') || rest.ends_with("\\\\") => rest,
        _ => pattern,
    }
}

/// ECMA-262's `\d`, `\w` (and their negations) are ASCII classes, as JSON Schema reads them;
/// a Unicode-aware generator would otherwise draw other scripts' digits and letters.
fn ecma_classes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str("[0-9]"),
            Some('D') => out.push_str("[^0-9]"),
            Some('w') => out.push_str("[A-Za-z0-9_]"),
            Some('W') => out.push_str("[^A-Za-z0-9_]"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A JSON pointer's `%XX` escapes (a `$ref` is a URI fragment) decoded.
pub fn percent_decode(pointer: &str) -> String {
    let bytes = pointer.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = pointer
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
