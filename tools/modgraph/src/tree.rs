//! A crate's module tree, read from its source files the way rustc finds them: `mod x;` is
//! `x.rs` or `x/mod.rs` beside (or under) the declaring file, `#[path]` overrides it, and an
//! inline `mod x { … }` is a module of its own. Modules behind `#[cfg(test)]` are left out:
//! tests may import anything.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// One module: its path from the crate root (empty for the root), the file that holds it, and
/// its items (without those of child modules, which are modules of their own).
pub struct Module {
    pub path: Vec<String>,
    pub file: PathBuf,
    pub items: Vec<syn::Item>,
    /// Lines of the file (0 for an inline module, which is counted in its file).
    pub lines: usize,
    /// The file's first comment block (`//!` lines), for the size rule's exemption.
    pub preamble: String,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("path", &self.path)
            .field("file", &self.file)
            .field("items", &self.items.len())
            .finish_non_exhaustive()
    }
}

/// Reads every module reachable from the crate root file.
pub fn load(root: &Path) -> anyhow::Result<Vec<Module>> {
    let mut modules = Vec::new();
    load_file(root, Vec::new(), true, &mut modules)?;
    Ok(modules)
}

fn load_file(
    file: &Path,
    path: Vec<String>,
    owns_dir: bool,
    out: &mut Vec<Module>,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let parsed =
        syn::parse_file(&text).with_context(|| format!("cannot parse {}", file.display()))?;
    let preamble = text
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    // Where `mod x;` of this file looks: beside it for lib.rs, main.rs and mod.rs, else in a
    // folder named after it.
    let dir = match (file.parent(), owns_dir) {
        (Some(parent), true) => parent.to_path_buf(),
        (Some(parent), false) => parent.join(file.file_stem().unwrap_or_default()),
        (None, _) => bail!("{} has no parent folder", file.display()),
    };
    add(
        file,
        &dir,
        path,
        parsed.items,
        text.lines().count(),
        preamble,
        out,
    )
}

fn add(
    file: &Path,
    dir: &Path,
    path: Vec<String>,
    items: Vec<syn::Item>,
    lines: usize,
    preamble: String,
    out: &mut Vec<Module>,
) -> anyhow::Result<()> {
    let mut own = Vec::with_capacity(items.len());
    let mut children = Vec::new();
    for item in items {
        match item {
            syn::Item::Mod(module) if is_test_only(&module.attrs) => {}
            syn::Item::Mod(module) => children.push(module),
            other => own.push(other),
        }
    }
    out.push(Module {
        path: path.clone(),
        file: file.to_path_buf(),
        items: own,
        lines,
        preamble,
    });
    for module in children {
        let name = module.ident.to_string();
        let mut child = path.clone();
        child.push(name.clone());
        match module.content {
            Some((_, items)) => add(file, &dir.join(&name), child, items, 0, String::new(), out)?,
            None => {
                let (found, owns_dir) = match path_attribute(&module.attrs) {
                    Some(explicit) => {
                        let owns = explicit.ends_with("mod.rs");
                        (dir.join(explicit), owns)
                    }
                    None => {
                        let flat = dir.join(format!("{name}.rs"));
                        if flat.exists() {
                            (flat, false)
                        } else {
                            (dir.join(&name).join("mod.rs"), true)
                        }
                    }
                };
                load_file(&found, child, owns_dir, out)?;
            }
        }
    }
    Ok(())
}

/// `#[cfg(test)]` (alone: `cfg(any(test, …))` still builds outside tests).
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

fn path_attribute(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| {
        let syn::Meta::NameValue(meta) = &attr.meta else {
            return None;
        };
        if !meta.path.is_ident("path") {
            return None;
        }
        match &meta.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(value),
                ..
            }) => Some(value.value()),
            _ => None,
        }
    })
}
