//! `modgraph`: the module-layer check of `scripts/check-deps.sh`.
//!
//! For each crate root given, it reads the module tree from the source files, resolves every
//! import and path inside the crate to the module it names, and fails when
//!
//! - two sibling modules (each standing for its subtree) import each other, directly or through
//!   other siblings: a cycle across folders, such as the plumbing in `http/` importing a surface
//!   in `api/` that imports it; or
//! - a source file is longer than `--max-lines` (600), unless it is a test file (`tests.rs`, or
//!   under `tests/`) or its first comment says why it must be one piece.
//!
//! Usage: `modgraph [--max-lines N] <crate root>...` (e.g. `crates/gateway/src/main.rs`).

mod cycles;
mod refs;
mod tree;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

/// What one crate root breaks.
#[derive(Debug, Default)]
struct Findings {
    cycles: Vec<cycles::Cycle>,
    oversized: Vec<(PathBuf, usize)>,
}

fn check(root: &Path, max_lines: usize) -> anyhow::Result<Findings> {
    let modules = tree::load(root)?;
    let references = refs::collect(&modules);
    let mut seen = BTreeSet::new();
    let oversized = modules
        .iter()
        .filter(|m| m.lines > max_lines && seen.insert(m.file.clone()))
        .filter(|m| !exempt(&m.file, &m.preamble))
        .map(|m| (m.file.clone(), m.lines))
        .collect();
    Ok(Findings {
        cycles: cycles::find(&references),
        oversized,
    })
}

/// Test files, and files whose first comment says why they are one piece.
fn exempt(file: &Path, preamble: &str) -> bool {
    file.file_name().is_some_and(|n| n == "tests.rs")
        || file.components().any(|c| c.as_os_str() == "tests")
        || preamble.to_lowercase().contains("one piece")
}

fn run(args: &[String]) -> anyhow::Result<bool> {
    let mut max_lines = 600;
    let mut roots = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--max-lines" => {
                max_lines = args
                    .next()
                    .context("--max-lines needs a number")?
                    .parse()
                    .context("--max-lines needs a number")?;
            }
            flag if flag.starts_with('-') => bail!("unknown flag {flag}"),
            root => roots.push(PathBuf::from(root)),
        }
    }
    if roots.is_empty() {
        bail!("usage: modgraph [--max-lines N] <crate root>...");
    }
    let mut clean = true;
    for root in &roots {
        let findings = check(root, max_lines)?;
        for cycle in &findings.cycles {
            clean = false;
            let folder = if cycle.parent.is_empty() {
                "the crate root".to_owned()
            } else {
                cycle.parent.join("::")
            };
            eprintln!(
                "module cycle in {} ({folder}): {} import each other",
                root.display(),
                cycle.members.join(", ")
            );
            for witness in &cycle.witnesses {
                eprintln!("    {witness}");
            }
        }
        for (file, lines) in &findings.oversized {
            clean = false;
            eprintln!(
                "{} has {lines} lines (over {max_lines}); split it, or say in its first comment why it must be one piece",
                file.display()
            );
        }
    }
    Ok(clean)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => {
            eprintln!("module layers: ok");
            ExitCode::SUCCESS
        }
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("modgraph: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests;
