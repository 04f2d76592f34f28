//! Small text helpers shared by scorers and reports.

use std::borrow::Cow;

use serde_json::Value;

/// A JSON value as text: a string as itself, anything else as compact JSON.
pub(crate) fn value_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// At most `max` characters of `s`, with `…` in place of the rest.
pub(crate) fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…", &s[..end])),
    }
}

/// A short excerpt of a value for a score's detail: one line, at most `max` characters.
pub(crate) fn excerpt(value: &Value, max: usize) -> String {
    let text = value_text(value);
    let one_line: String = truncate(&text, max)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line
}

/// `s` as one Markdown table cell: truncated to `max` characters, `|` escaped, line breaks as
/// `<br>`, HTML neutralised, other control characters as spaces.
pub(crate) fn md_cell(s: &str, max: usize) -> String {
    let s = truncate(s, max);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => out.push_str("<br>"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one terminal table cell: truncated to `max` characters, control characters as spaces.
pub(crate) fn term_cell(s: &str, max: usize) -> String {
    truncate(s, max)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Micro-dollars as a dollar amount with six decimals, e.g. `1234567` → `"1.234567"`.
pub(crate) fn usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Signed micro-dollars as a signed dollar amount, e.g. `-1500` → `"-0.001500"`.
pub(crate) fn usd_signed(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "+" };
    format!("{sign}{}", usd(micros.unsigned_abs()))
}

/// A score-like number with three decimals.
pub(crate) fn fixed3(x: f64) -> String {
    format!("{x:.3}")
}

/// A signed difference with three decimals, `+0.000` for none.
pub(crate) fn signed3(x: f64) -> String {
    if x < 0.0 {
        format!("{x:.3}")
    } else {
        format!("+{x:.3}")
    }
}

/// A fraction as a percentage with one decimal.
pub(crate) fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests: a panic is the failure report"
    )]

    use super::*;

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        assert_eq!(
            md_cell("a|b\r\nc\nd<e>\t", 100),
            "a\\|b<br>c<br>d&lt;e&gt; "
        );
    }

    #[test]
    fn dollars() {
        assert_eq!(usd(0), "0.000000");
        assert_eq!(usd(1_234_567), "1.234567");
        assert_eq!(usd_signed(-1_500), "-0.001500");
        assert_eq!(usd_signed(20), "+0.000020");
    }
}
