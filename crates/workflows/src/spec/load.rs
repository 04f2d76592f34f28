//! Text → [`WorkflowSpec`]: parsing under limits, fragments, overlays, typing, validation.
//!
//! Merge order, later wins: a fragment a node `use`s ← the node's own fields ← the overlay of
//! the environment ← the overlay of the tenant. Objects merge key by key (`null` removes a key);
//! anything else is replaced whole. In an overlay, `nodes` is a map from node id to a patch of
//! that node.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::locate::{Locations, join};
use super::validate::check;
use super::{Node, SpecError, WorkflowSpec};
use crate::error::{Error, Result};

/// The largest spec (or fragment) text accepted.
pub const MAX_SPEC_BYTES: usize = 1 << 20;
/// The deepest nesting accepted.
const MAX_DEPTH: usize = 32;

/// Registered fragments: reusable node definitions, by name and version.
pub trait Fragments {
    /// The node definition of fragment `name` at `version` (the newest when `None`), with the
    /// version found.
    fn fragment(&self, name: &str, version: Option<u32>) -> Option<(u32, Value)>;
}

impl Fragments for BTreeMap<String, Vec<Value>> {
    fn fragment(&self, name: &str, version: Option<u32>) -> Option<(u32, Value)> {
        let versions = self.get(name)?;
        let index = match version {
            Some(v) => usize::try_from(v).ok()?.checked_sub(1)?,
            None => versions.len().checked_sub(1)?,
        };
        let found = versions.get(index)?;
        Some((u32::try_from(index + 1).ok()?, found.clone()))
    }
}

/// What a spec is loaded for.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// The environment whose overlay applies.
    pub env: Option<&'a str>,
    /// The tenant's id and name: an overlay under either applies (id first, then name).
    pub tenant: &'a [&'a str],
}

/// Parses a YAML or JSON document into a JSON value, under limits on size, depth, aliases and
/// nodes; a key twice in one mapping is refused.
pub fn parse_document(text: &str) -> std::result::Result<Value, Vec<SpecError>> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(vec![SpecError::new(
            "",
            format!(
                "the document is {} bytes; at most {MAX_SPEC_BYTES} are accepted",
                text.len()
            ),
        )]);
    }
    // A JSON document is checked as JSON first (its syntax errors are JSON's), then parsed like
    // YAML (JSON is YAML flow style), so both get the same limits and both refuse a key twice.
    let json = text.trim_start().starts_with('{');
    let kind = if json { "JSON" } else { "YAML" };
    if json && let Err(e) = serde_json::from_str::<Value>(text) {
        return Err(vec![SpecError {
            path: String::new(),
            line: Some(e.line() as u64),
            column: Some(e.column() as u64),
            message: format!("invalid JSON: {e}"),
        }]);
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_aliases: 256,
            max_anchors: 256,
            max_events: 200_000,
            max_nodes: 100_000,
            max_total_scalar_bytes: MAX_SPEC_BYTES,
            max_documents: 1,
            max_reader_input_bytes: Some(MAX_SPEC_BYTES),
        },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
    };
    let value = serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| {
        let at = e.location();
        let message = first_line(&e.to_string()).to_owned();
        // serde-saphyr's advice names its own options; keep what the user can act on.
        let message = match message.find(" (set ").or_else(|| message.find("; set ")) {
            Some(cut) => message[..cut].to_owned(),
            None => message,
        };
        vec![SpecError {
            path: String::new(),
            line: at.map(|l| l.line()),
            column: at.map(|l| l.column()),
            message: format!("invalid {kind}: {message}"),
        }]
    })?;
    if depth(&value) > MAX_DEPTH {
        return Err(vec![SpecError::new(
            "",
            format!("nested deeper than {MAX_DEPTH} levels"),
        )]);
    }
    Ok(value)
}

fn first_line(text: &str) -> &str {
    // (serde-saphyr's first line is the message; the rest is context.)
    text.lines().next().unwrap_or(text)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Loads a fragment document: `{fragment: <name>, node: {<a partial node>}}`. Returns the
/// name and the node.
pub fn load_fragment(text: &str) -> Result<(String, Value)> {
    let value = parse_document(text).map_err(Error::Spec)?;
    let at = Locations::of(text);
    let located = |e: SpecError| locate(&at, e);
    let Value::Object(mut map) = value else {
        return Err(Error::Spec(vec![located(SpecError::new(
            "",
            "a fragment is an object with `fragment` and `node`",
        ))]));
    };
    let mut errors = Vec::new();
    for key in map.keys() {
        if !matches!(key.as_str(), "fragment" | "node" | "description") {
            errors.push(located(SpecError::new(
                key.as_str(),
                "unknown field; a fragment has `fragment`, `description` and `node`",
            )));
        }
    }
    let name = match map.remove("fragment") {
        Some(Value::String(name)) if super::validate::valid_name(&name) => Some(name),
        _ => {
            errors.push(located(SpecError::new(
                "fragment",
                "needs a name of lower-case letters, digits, `-` and `_`",
            )));
            None
        }
    };
    let node = match map.remove("node") {
        Some(Value::Object(node)) => {
            if node.contains_key("use") {
                errors.push(located(SpecError::new(
                    "node.use",
                    "a fragment cannot use another fragment",
                )));
            }
            // Its fields must be a node's (the id and kind come from the node that uses it).
            let mut probe = node.clone();
            probe.remove("use");
            probe.insert("id".into(), Value::String("fragment".into()));
            probe
                .entry("kind")
                .or_insert_with(|| Value::String("llm".into()));
            if let Err(e) = serde_json::from_value::<Node>(Value::Object(probe)) {
                errors.push(located(type_error("node", &e)));
            }
            Some(Value::Object(node))
        }
        _ => {
            errors.push(located(SpecError::new(
                "node",
                "needs an object: the node's fields",
            )));
            None
        }
    };
    match (name, node, errors.is_empty()) {
        (Some(name), Some(node), true) => Ok((name, node)),
        _ => Err(Error::Spec(errors)),
    }
}

/// Loads, merges, types and validates a spec. Every problem found is returned, each with its
/// field path and line.
pub fn load(
    text: &str,
    options: LoadOptions<'_>,
    fragments: &dyn Fragments,
) -> Result<WorkflowSpec> {
    let value = parse_document(text).map_err(Error::Spec)?;
    // The line index is built only when there is something to place.
    let located = |errors: Vec<SpecError>| -> Error {
        let at = Locations::of(text);
        Error::Spec(errors.into_iter().map(|e| locate(&at, e)).collect())
    };
    let value = resolve(value, options, fragments).map_err(located)?;
    let spec = typed(value).map_err(located)?;
    let errors = check(&spec);
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(located(errors))
    }
}

fn locate(at: &Locations, mut error: SpecError) -> SpecError {
    if error.line.is_none()
        && let Some((line, column)) = at.find(&error.path)
    {
        error.line = Some(line);
        error.column = Some(column);
    }
    error
}

/// Fragments, then the environment's overlay, then the tenant's.
fn resolve(
    value: Value,
    options: LoadOptions<'_>,
    fragments: &dyn Fragments,
) -> std::result::Result<Value, Vec<SpecError>> {
    let Value::Object(mut doc) = value else {
        return Err(vec![SpecError::new(
            "",
            "a workflow spec is an object (`name`, `nodes`, ...)",
        )]);
    };
    let mut errors = Vec::new();
    if let Some(Value::Array(nodes)) = doc.get_mut("nodes") {
        for (i, node) in nodes.iter_mut().enumerate() {
            let path = format!("nodes[{i}]");
            if let Err(e) = use_fragment(node, &path, fragments) {
                errors.push(e);
            }
        }
    }
    let overlays = doc.remove("overlays");
    if let Some(overlays) = &overlays {
        if !overlays.is_object() {
            errors.push(SpecError::new(
                "overlays",
                "an object with `env` and/or `tenant`",
            ));
        }
        if let Some(map) = overlays.as_object() {
            for (key, value) in map {
                if key != "env" && key != "tenant" {
                    errors.push(SpecError::new(
                        join("overlays", key),
                        "unknown overlay kind; use `env` or `tenant`",
                    ));
                } else if !value.is_object() {
                    errors.push(SpecError::new(
                        join("overlays", key),
                        "a map from a name to a patch of the spec",
                    ));
                }
            }
        }
    }
    let chosen = [
        options.env.map(|env| ("env", env)),
        options
            .tenant
            .iter()
            .find(|t| {
                overlays
                    .as_ref()
                    .and_then(|o| o.get("tenant")?.get(**t))
                    .is_some()
            })
            .map(|t| ("tenant", *t)),
    ];
    for (kind, key) in chosen.into_iter().flatten() {
        let Some(patch) = overlays.as_ref().and_then(|o| o.get(kind)?.get(key)) else {
            continue;
        };
        let path = format!("overlays.{kind}.{key}");
        apply_overlay(&mut doc, patch, &path, &mut errors);
    }
    if errors.is_empty() {
        Ok(Value::Object(doc))
    } else {
        Err(errors)
    }
}

/// Replaces `use: name@version` by the fragment's fields under the node's own.
fn use_fragment(
    node: &mut Value,
    path: &str,
    fragments: &dyn Fragments,
) -> std::result::Result<(), SpecError> {
    let Some(map) = node.as_object_mut() else {
        return Ok(());
    };
    let Some(reference) = map.remove("use") else {
        return Ok(());
    };
    let field = format!("{path}.use");
    let Value::String(reference) = reference else {
        return Err(SpecError::new(
            field,
            "`use` names a fragment: `name` or `name@version`",
        ));
    };
    let (name, version) = match reference.split_once('@') {
        None => (reference.as_str(), None),
        Some((name, version)) => match version.parse::<u32>() {
            Ok(v) => (name, Some(v)),
            Err(_) => {
                return Err(SpecError::new(
                    field,
                    format!("`{reference}`: the version after `@` must be a number"),
                ));
            }
        },
    };
    let Some((_, fragment)) = fragments.fragment(name, version) else {
        return Err(SpecError::new(
            field,
            format!("no fragment `{reference}` is registered"),
        ));
    };
    let own = std::mem::take(map);
    let mut merged = fragment;
    merge(&mut merged, &Value::Object(own));
    *node = merged;
    Ok(())
}

fn apply_overlay(
    doc: &mut Map<String, Value>,
    patch: &Value,
    path: &str,
    errors: &mut Vec<SpecError>,
) {
    let Some(patch) = patch.as_object() else {
        errors.push(SpecError::new(path, "an overlay is an object"));
        return;
    };
    for (key, value) in patch {
        if key == "nodes" {
            let Some(by_id) = value.as_object() else {
                errors.push(SpecError::new(
                    format!("{path}.nodes"),
                    "in an overlay, `nodes` maps node ids to patches",
                ));
                continue;
            };
            for (id, node_patch) in by_id {
                let target = doc
                    .get_mut("nodes")
                    .and_then(Value::as_array_mut)
                    .and_then(|nodes| {
                        nodes
                            .iter_mut()
                            .find(|n| n.get("id").and_then(Value::as_str) == Some(id))
                    });
                match target {
                    Some(_) if !node_patch.is_object() => errors.push(SpecError::new(
                        format!("{path}.nodes.{id}"),
                        "a node's patch is an object (an overlay cannot remove a node)",
                    )),
                    Some(node) => merge(node, node_patch),
                    None => errors.push(SpecError::new(
                        format!("{path}.nodes.{id}"),
                        format!("the spec has no node `{id}`"),
                    )),
                }
            }
        } else {
            let slot = doc.entry(key.clone()).or_insert(Value::Null);
            merge(slot, value);
        }
    }
}

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes, the rest replaces.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// The typed spec, or where it does not fit the types (node by node, for precise paths).
fn typed(value: Value) -> std::result::Result<WorkflowSpec, Vec<SpecError>> {
    match serde_json::from_value::<WorkflowSpec>(value.clone()) {
        Ok(spec) => Ok(spec),
        Err(whole) => {
            let mut errors = Vec::new();
            let mut rest = value;
            if let Some(Value::Array(nodes)) = rest.get("nodes") {
                for (i, node) in nodes.iter().enumerate() {
                    if let Err(e) = serde_json::from_value::<Node>(node.clone()) {
                        errors.push(type_error(&format!("nodes[{i}]"), &e));
                    }
                }
            }
            if let Some(map) = rest.as_object_mut()
                && map.get("nodes").is_some_and(Value::is_array)
            {
                map.insert("nodes".into(), Value::Array(Vec::new()));
            }
            errors.extend(top_level_errors(&rest));
            if errors.is_empty() {
                errors.push(type_error("", &whole));
            }
            Err(errors)
        }
    }
}

/// Type errors outside `nodes`, field by field (and entry by entry in `inputs` and
/// `outputs`), so each points at its own line.
fn top_level_errors(rest: &Value) -> Vec<SpecError> {
    let Some(map) = rest.as_object() else {
        return match serde_json::from_value::<WorkflowSpec>(rest.clone()) {
            Err(e) => vec![type_error("", &e)],
            Ok(_) => Vec::new(),
        };
    };
    let mut errors = Vec::new();
    let base = || {
        let mut probe = Map::new();
        probe.insert("name".into(), Value::String("probe".into()));
        probe.insert("nodes".into(), Value::Array(Vec::new()));
        probe
    };
    for key in ["name", "nodes"] {
        if !map.contains_key(key) {
            errors.push(SpecError::new("", format!("missing field `{key}`")));
        }
    }
    for (key, value) in map {
        let mut probe = base();
        probe.insert(key.clone(), value.clone());
        let Err(e) = serde_json::from_value::<WorkflowSpec>(Value::Object(probe)) else {
            continue;
        };
        let entries = match key.as_str() {
            "inputs" => value.as_object().map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        serde_json::from_value::<super::Param>(v.clone())
                            .err()
                            .map(|e| entry_error(&format!("inputs.{k}"), &e))
                    })
                    .collect::<Vec<_>>()
            }),
            "outputs" => value.as_object().map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        serde_json::from_value::<super::OutputField>(v.clone())
                            .err()
                            .map(|e| entry_error(&format!("outputs.{k}"), &e))
                    })
                    .collect::<Vec<_>>()
            }),
            _ => None,
        };
        match entries {
            Some(found) if !found.is_empty() => errors.extend(found),
            _ => {
                let mut error = type_error("", &e);
                if error.path.is_empty() {
                    error.path.clone_from(key);
                }
                errors.push(error);
            }
        }
    }
    errors
}

/// An error in an entry of `inputs` or `outputs`: an unknown variant there is its `type`.
fn entry_error(path: &str, error: &serde_json::Error) -> SpecError {
    let mut found = type_error(path, error);
    if found.path == path && found.message.contains("unknown variant") {
        found.path = join(path, "type");
    }
    found
}

/// A serde error as a spec error, pointing at the field it names when it names one.
fn type_error(path: &str, error: &serde_json::Error) -> SpecError {
    let message = error.to_string();
    let named = ["unknown field `", "missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| {
            let start = message.find(prefix)? + prefix.len();
            let end = message[start..].find('`')? + start;
            Some(&message[start..end])
        });
    let field = match named {
        Some(name) if !message.starts_with("missing") => join(path, name),
        _ if message.contains("unknown variant") && message.contains("`human_input`") => {
            join(path, "kind")
        }
        _ => path.to_owned(),
    };
    SpecError::new(field, message)
}
