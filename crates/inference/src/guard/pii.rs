//! PII detectors: each finds its spans in a text, checked beyond the pattern where a check
//! exists (Luhn for card numbers, ISO 13616 mod-97 for IBANs, the address parser for IPs), so
//! that a run of digits is not taken for a card or an order number for an IBAN.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

/// A kind of personal data the guard finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Phone,
    Card,
    Iban,
    Ip,
    /// Names from the policy's list and patterns.
    Name,
}

impl PiiKind {
    /// Every kind found by a built-in detector (names need a list).
    pub const BUILT_IN: [PiiKind; 5] = [
        PiiKind::Card,
        PiiKind::Iban,
        PiiKind::Email,
        PiiKind::Ip,
        PiiKind::Phone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::Iban => "iban",
            PiiKind::Ip => "ip",
            PiiKind::Name => "name",
        }
    }

    /// What replaces a redacted span.
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[REDACTED:EMAIL]",
            PiiKind::Phone => "[REDACTED:PHONE]",
            PiiKind::Card => "[REDACTED:CARD]",
            PiiKind::Iban => "[REDACTED:IBAN]",
            PiiKind::Ip => "[REDACTED:IP]",
            PiiKind::Name => "[REDACTED:NAME]",
        }
    }
}

fn regex(pattern: &str) -> Regex {
    #[allow(
        clippy::expect_used,
        reason = "a constant pattern, covered by the tests"
    )]
    Regex::new(pattern).expect("a valid built-in pattern")
}

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,24}\b"));
/// 13–19 digits, in groups separated by single spaces or dashes.
static CARD: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d(?:[ -]?\d){12,18}\b"));
/// Country code, check digits, then 11–30 letters or digits, grouped by spaces or not.
static IBAN: LazyLock<Regex> = LazyLock::new(|| regex(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| regex(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"));
static IPV6: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?:%[0-9a-z]+)?"));
/// International (`+` and a country code) or North American (`(555) 123-4567`) numbers.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}\b)|(?:(?:\(\d{3}\)|\b\d{3})[ .-]?\d{3}[ .-]\d{4}\b)",
    )
});

/// The spans of `kind` in `text`, in order and not overlapping.
pub fn find(kind: PiiKind, text: &str) -> Vec<Range<usize>> {
    match kind {
        PiiKind::Email => EMAIL.find_iter(text).map(|m| m.range()).collect(),
        PiiKind::Card => CARD
            .find_iter(text)
            .filter(|m| luhn(m.as_str()))
            .map(|m| m.range())
            .collect(),
        PiiKind::Iban => IBAN
            .find_iter(text)
            .filter_map(|m| iban_prefix(m.as_str()).map(|len| m.start()..m.start() + len))
            .collect(),
        PiiKind::Ip => {
            let mut spans: Vec<Range<usize>> = IPV4
                .find_iter(text)
                .filter(|m| m.as_str().parse::<Ipv4Addr>().is_ok())
                .map(|m| m.range())
                .collect();
            spans.extend(
                IPV6.find_iter(text)
                    .filter(|m| {
                        let address = m.as_str().split('%').next().unwrap_or_default();
                        address.matches(':').count() >= 2 && address.parse::<Ipv6Addr>().is_ok()
                    })
                    .map(|m| m.range()),
            );
            spans.sort_by_key(|r| r.start);
            spans
        }
        PiiKind::Phone => PHONE
            .find_iter(text)
            .filter(|m| {
                let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
                (8..=15).contains(&digits)
            })
            .map(|m| m.range())
            .collect(),
        PiiKind::Name => Vec::new(),
    }
}

/// The Luhn check of a card number's digits (separators ignored).
pub fn luhn(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) || digits.iter().all(|d| *d == 0) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The length of the longest prefix of `candidate` that is a valid IBAN (ISO 13616: 15–34
/// characters, mod 97 = 1), trying shorter ones at group boundaries: a following word in
/// capitals can be taken by the pattern.
fn iban_prefix(candidate: &str) -> Option<usize> {
    let mut end = candidate.len();
    loop {
        if iban_valid(&candidate[..end]) {
            return Some(end);
        }
        end = candidate[..end].rfind(' ')?;
    }
}

/// Whether `candidate` (spaces allowed) passes the IBAN check.
pub fn iban_valid(candidate: &str) -> bool {
    let compact: Vec<u8> = candidate.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for &byte in tail.iter().chain(head) {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            b'A'..=b'Z' => u32::from(byte - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}
