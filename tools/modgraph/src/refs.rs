//! What each module refers to inside its crate: every `use` tree and every path in its code
//! that starts with `crate`, `super`, `self` or the name of one of its child modules, resolved
//! to the deepest module it names.

use std::collections::BTreeSet;

use syn::visit::Visit;

use crate::tree::Module;

/// One import of one module by another, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub from: Vec<String>,
    pub to: Vec<String>,
    /// `file:line` and the path as written.
    pub at: String,
}

/// Every reference between distinct modules.
pub fn collect(modules: &[Module]) -> Vec<Reference> {
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    let mut references = Vec::new();
    for module in modules {
        let mut visitor = Paths::default();
        for item in &module.items {
            visitor.visit_item(item);
        }
        for (segments, line) in visitor.found {
            let Some(absolute) = absolute(&module.path, &segments, &known) else {
                continue;
            };
            let Some(to) = deepest_module(&absolute, &known) else {
                continue;
            };
            if to != module.path {
                references.push(Reference {
                    from: module.path.clone(),
                    to,
                    at: format!("{}:{line}: {}", module.file.display(), segments.join("::")),
                });
            }
        }
    }
    references
}

/// The path from the crate root, or `None` for a path outside the crate.
fn absolute(
    here: &[String],
    segments: &[String],
    known: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let first = segments.first()?;
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => {
            let mut base = here.to_vec();
            let mut rest = segments;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            return Some(base);
        }
        // A relative path through a child module (`ops::healthz` in `api`).
        name => {
            let mut child = here.to_vec();
            child.push(name.to_owned());
            if !known.contains(&child) {
                return None;
            }
            return Some(here.iter().chain(segments).cloned().collect());
        }
    };
    base.extend(segments[1..].iter().cloned());
    Some(base)
}

/// The deepest known module that `path` starts with.
fn deepest_module(path: &[String], known: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| known.contains(prefix))
}

/// Collects paths of `use` trees and of expressions, types and patterns, with their lines.
#[derive(Default)]
struct Paths {
    found: Vec<(Vec<String>, usize)>,
}

impl Paths {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, line: usize) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree, line);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                let mut full = prefix.clone();
                if name.ident != "self" {
                    full.push(name.ident.to_string());
                }
                self.found.push((full, line));
            }
            syn::UseTree::Rename(rename) => {
                let mut full = prefix.clone();
                if rename.ident != "self" {
                    full.push(rename.ident.to_string());
                }
                self.found.push((full, line));
            }
            syn::UseTree::Glob(_) => self.found.push((prefix.clone(), line)),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree, line);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let line = item.use_token.span.start().line;
        self.use_tree(&mut Vec::new(), &item.tree, line);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() > 1 {
            let line = path
                .segments
                .first()
                .map_or(0, |s| s.ident.span().start().line);
            self.found.push((
                path.segments.iter().map(|s| s.ident.to_string()).collect(),
                line,
            ));
        }
        syn::visit::visit_path(self, path);
    }

    // Macro bodies are token streams; paths inside them are not seen (a known blind spot,
    // the same as rustc's own unused-import lint has before expansion).
    fn visit_macro(&mut self, _: &'ast syn::Macro) {}
}
