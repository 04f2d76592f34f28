//! What every crate's fuzz targets share: a seed corpus read from `fuzz/corpus/<target>/`, and
//! an input made by editing one seed with a generated list of byte edits and dictionary tokens.
//!
//! A target is a `#[test]` named `fuzz::<target>` in its crate:
//!
//! ```ignore
//! let target = fuzzing::Target::new("event-decoding");
//! bolero::check!()
//!     .with_type::<Mutated>()
//!     .for_each(|input| target.run(DICTIONARY, input, |seed_name, bytes| property(bytes)));
//! ```
//!
//! Under `cargo test` bolero's random engine runs 1,000 inputs (`BOLERO_RANDOM_ITERATIONS`), or
//! for `BOLERO_RANDOM_TEST_TIME_MS` (what CI's fuzz step sets); `cargo bolero test fuzz::<target>`
//! runs the same target under libFuzzer, coverage-guided. Random bytes alone rarely get past a
//! parser's first byte; edits of well-formed seeds reach the code behind it, which is why
//! inputs are built this way.

use std::path::{Path, PathBuf};

/// One edit of a seed's bytes. Positions and lengths wrap around the input's length.
#[derive(Debug, Clone, bolero::TypeGenerator)]
pub enum Edit {
    /// Flip one bit.
    Flip { at: u16, bit: u8 },
    /// Insert one byte.
    Insert { at: u16, byte: u8 },
    /// Remove up to `len` bytes.
    Remove { at: u16, len: u8 },
    /// Insert a dictionary token.
    Token { at: u16, token: u8 },
    /// Replace up to `len` bytes with a dictionary token.
    Replace { at: u16, len: u8, token: u8 },
    /// Copy a span of the input to another place.
    Duplicate { from: u16, len: u8, at: u16 },
    /// Cut the input short.
    Truncate { at: u16 },
}

/// A fuzz input: which seed, and the edits made to it.
#[derive(Debug, Clone, bolero::TypeGenerator)]
pub struct Mutated {
    pub seed: u16,
    #[generator(bolero::produce::<Vec<Edit>>().with().len(0usize..=12))]
    pub edits: Vec<Edit>,
}

/// Tokens worth inserting into any JSON or YAML text.
pub const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "-1",
    "0",
    "1e999",
    "-0.0",
    "18446744073709551616",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\\",
    "\n",
    "\t",
    " ",
    "[[[[[[[[",
    "{\"a\":",
    "\"\"",
    "NaN",
    "\u{202e}",
    "\u{feff}",
    "\u{10ffff}",
];

/// The directory of a target's seed corpus, `fuzz/corpus/<target>` at the workspace root.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Every file of a target's seed corpus, in name order (named by file, for failure reports).
///
/// # Panics
/// When the directory is missing or empty: a target with no seeds tests nothing.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the seed corpus {} cannot be read: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let bytes = std::fs::read(&path).ok()?;
            Some((path.file_name()?.to_string_lossy().into_owned(), bytes))
        })
        .collect();
    seeds.sort();
    assert!(
        !seeds.is_empty(),
        "the seed corpus {} is empty",
        dir.display()
    );
    seeds
}

fn wrap(at: u16, len: usize) -> usize {
    usize::from(at) % (len + 1)
}

/// The seed's bytes with the edits made, in order.
pub fn apply(seed: &[u8], edits: &[Edit], dictionary: &[&str]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    let token = |t: u8| -> &[u8] {
        match dictionary.get(usize::from(t) % dictionary.len().max(1)) {
            Some(token) => token.as_bytes(),
            None => b"",
        }
    };
    for edit in edits {
        let len = bytes.len();
        match *edit {
            Edit::Flip { at, bit } => {
                if len > 0 {
                    let i = usize::from(at) % len;
                    bytes[i] ^= 1 << (bit % 8);
                }
            }
            Edit::Insert { at, byte } => bytes.insert(wrap(at, len), byte),
            Edit::Remove { at, len: n } => {
                let from = wrap(at, len);
                let to = (from + usize::from(n)).min(len);
                bytes.drain(from..to);
            }
            Edit::Token { at, token: t } => {
                let at = wrap(at, len);
                bytes.splice(at..at, token(t).iter().copied());
            }
            Edit::Replace {
                at,
                len: n,
                token: t,
            } => {
                let from = wrap(at, len);
                let to = (from + usize::from(n)).min(len);
                bytes.splice(from..to, token(t).iter().copied());
            }
            Edit::Duplicate { from, len: n, at } => {
                let from = wrap(from, len);
                let to = (from + usize::from(n)).min(len);
                let span = bytes[from..to].to_vec();
                let at = wrap(at, len);
                bytes.splice(at..at, span);
            }
            Edit::Truncate { at } => bytes.truncate(wrap(at, len)),
        }
    }
    bytes
}

/// One fuzz target: its seeds, and a count of the inputs it ran, printed when it ends.
#[derive(Debug)]
pub struct Target {
    name: &'static str,
    seeds: Vec<(String, Vec<u8>)>,
    started: std::time::Instant,
    inputs: std::sync::atomic::AtomicU64,
}

impl Target {
    /// The target `name`, with its seed corpus (see [`corpus`]).
    pub fn new(name: &'static str) -> Target {
        Target {
            name,
            seeds: corpus(name),
            started: std::time::Instant::now(),
            inputs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counts an input run without [`Target::run`] (a target that generates its inputs whole).
    pub fn tally(&self) {
        self.inputs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The seeds, each with its file name.
    pub fn seeds(&self) -> &[(String, Vec<u8>)] {
        &self.seeds
    }

    /// Builds the input from the seeds and runs `property` on it with the seed's name. When
    /// the property panics, the panic is raised again with the input (the seed's name and the
    /// bytes, lossily as text), so that a failure can become a regression seed.
    pub fn run(&self, dictionary: &[&str], input: &Mutated, property: impl FnOnce(&str, &[u8])) {
        self.inputs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some((name, seed)) = self
            .seeds
            .get(usize::from(input.seed) % self.seeds.len().max(1))
        else {
            return;
        };
        let bytes = apply(seed, &input.edits, dictionary);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| property(name, &bytes)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(a panic without a message)");
            panic!(
                "{message}\nthe input, from seed {name} ({} bytes): {:?}",
                bytes.len(),
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        eprintln!(
            "fuzz target {}: {} inputs from {} seeds in {:.1} s",
            self.name,
            self.inputs.load(std::sync::atomic::Ordering::Relaxed),
            self.seeds.len(),
            self.started.elapsed().as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_wrap_around_and_never_panic() {
        let edits = [
            Edit::Remove { at: 3, len: 200 },
            Edit::Token { at: 999, token: 7 },
            Edit::Duplicate {
                from: 1,
                len: 9,
                at: 0,
            },
            Edit::Flip { at: 5, bit: 9 },
            Edit::Replace {
                at: 0,
                len: 1,
                token: 0,
            },
            Edit::Truncate { at: 4 },
            Edit::Insert {
                at: 60000,
                byte: b'!',
            },
        ];
        let out = apply(b"abcdef", &edits, &["null", "{"]);
        // "abc", "abc{", "bc{abc{", "bc{aba{", "nullc{aba{", "null", "!null".
        assert_eq!(String::from_utf8_lossy(&out), "!null");
        assert_eq!(apply(b"", &edits, &[]), b"!");
    }
}
