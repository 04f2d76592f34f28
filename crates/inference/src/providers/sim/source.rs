//! Where a simulated answer's choices come from: a stream of bytes drawn from a hash of the
//! request (so the same request gets the same answer), and the prompt's own words and numbers
//! (so that an argument or a field reads like the prompt asked for it).

use blake3::OutputReader;

use crate::config::ModelConfig;
use crate::openai::{ChatRequest, Role};

/// Words that say nothing about what a prompt wants; they are not used as arguments.
const STOP_WORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "can", "could", "do", "does", "for",
    "from", "give", "how", "i", "in", "into", "is", "it", "me", "my", "of", "on", "or", "please",
    "tell", "that", "the", "this", "to", "use", "what", "when", "where", "which", "who", "why",
    "with", "would", "you", "your",
];

/// Deterministic choices for one answer of one model to one request.
pub struct Source {
    reader: OutputReader,
    words: Vec<String>,
    next_word: usize,
    numbers: Vec<f64>,
    next_number: usize,
}

impl Source {
    /// Choices for answer `index` of `model` to `request`, salted by `purpose` so that two uses
    /// (a schema's value, a tool decision) draw independently.
    pub fn new(model: &ModelConfig, request: &ChatRequest, index: u32, purpose: &str) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(purpose.as_bytes());
        hasher.update(&[0]);
        hasher.update(model.name.as_bytes());
        for message in &request.messages {
            hasher.update(message.text().as_bytes());
            hasher.update(&[0]);
        }
        hasher.update(&index.to_le_bytes());
        let prompt = last_user_text(request);
        Source {
            reader: hasher.finalize_xof(),
            words: content_words(&prompt),
            next_word: 0,
            numbers: numbers(&prompt),
            next_number: 0,
        }
    }

    /// Choices from `seed` alone, with no prompt to borrow from (tests).
    #[cfg(test)]
    pub fn from_seed(seed: u64) -> Self {
        Source {
            reader: blake3::Hasher::new()
                .update(&seed.to_le_bytes())
                .finalize_xof(),
            words: Vec::new(),
            next_word: 0,
            numbers: Vec::new(),
            next_number: 0,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.reader.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    /// A draw in `0..n` (`n` ≥ 1).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A draw in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// The prompt's next content word, or one of the simulator's own words when it has none
    /// left.
    pub fn word(&mut self) -> String {
        if let Some(word) = self.words.get(self.next_word) {
            self.next_word += 1;
            return word.clone();
        }
        let own = super::WORDS;
        own[usize::try_from(self.below(own.len() as u64)).unwrap_or(0)].to_owned()
    }

    /// The prompt's next number that `fits`, if any is left.
    pub fn number(&mut self, fits: impl Fn(f64) -> bool) -> Option<f64> {
        while let Some(&n) = self.numbers.get(self.next_number) {
            self.next_number += 1;
            if fits(n) {
                return Some(n);
            }
        }
        None
    }

    /// A seed for a generator that wants its own random engine.
    pub fn seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.reader.fill(&mut seed);
        seed
    }
}

/// The text of the conversation's last user message.
pub fn last_user_text(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.text())
        .unwrap_or_default()
}

/// The lower-cased words of `text` that carry meaning (no stop words, no numbers).
pub fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '-' && c != '\'')
        .map(|w| {
            w.trim_matches(|c: char| c == '-' || c == '\'')
                .to_lowercase()
        })
        .filter(|w| {
            !w.is_empty()
                && !STOP_WORDS.contains(&w.as_str())
                && !w
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        })
        .collect()
}

/// The numbers written in `text`, in order.
fn numbers(text: &str) -> Vec<f64> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .filter_map(|t| t.trim_end_matches('.').parse::<f64>().ok())
        .filter(|n| n.is_finite())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_gives_words_and_numbers_in_order() {
        assert_eq!(
            content_words("What is the weather in Paris, please?"),
            ["weather", "paris"]
        );
        assert_eq!(numbers("multiply 3 by -4.5, then 10."), [3.0, -4.5, 10.0]);
        assert!(numbers("no digits - here").is_empty());
    }
}
