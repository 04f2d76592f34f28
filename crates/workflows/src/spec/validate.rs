//! What a typed spec must also satisfy: names, fields per kind, references, no cycles, valid
//! templates; and a run's input against the declared inputs.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use super::{Call, END, Node, NodeKind, SpecError, WorkflowSpec};
use crate::error::{Error, Result};
use crate::template::{check_expression, check_template, check_value};

/// Nodes in one spec at most.
const MAX_NODES: usize = 500;
/// Items in flight in one map at most.
const MAX_CONCURRENCY: u32 = 64;
/// Most chunks a `retrieve` node asks for (as `POST /v1/retrieve`).
const MAX_RETRIEVE_K: u32 = 50;

/// Lower-case ASCII letters, digits, `-` and `_`, starting with a letter; at most 64.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Every problem of a typed spec.
pub(crate) fn check(spec: &WorkflowSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    let error = |errors: &mut Vec<SpecError>, path: String, message: String| {
        errors.push(SpecError::new(path, message));
    };
    if !valid_name(&spec.name) {
        error(
            &mut errors,
            "name".into(),
            "lower-case letters, digits, `-` and `_`, starting with a letter, at most 64".into(),
        );
    }
    if spec.nodes.is_empty() {
        error(
            &mut errors,
            "nodes".into(),
            "a workflow needs at least one node".into(),
        );
    }
    if spec.nodes.len() > MAX_NODES {
        error(
            &mut errors,
            "nodes".into(),
            format!("{} nodes; at most {MAX_NODES}", spec.nodes.len()),
        );
    }
    for (name, param) in &spec.inputs {
        if !valid_name(name) {
            error(
                &mut errors,
                format!("inputs.{name}"),
                "input names are lower-case letters, digits, `-` and `_`".into(),
            );
        }
        if let Some(default) = &param.default
            && !param.kind.admits(default)
        {
            error(
                &mut errors,
                format!("inputs.{name}.default"),
                format!("the default is not of type {:?}", param.kind).to_lowercase(),
            );
        }
    }
    for (name, output) in &spec.outputs {
        if let Err(e) = check_expression(&output.value) {
            error(&mut errors, format!("outputs.{name}.value"), e);
        }
    }
    check_retry(&spec.defaults.retry, "defaults.retry", &mut errors);
    if !(1..=MAX_TIMEOUT_MS).contains(&spec.defaults.timeout_ms) {
        error(
            &mut errors,
            "defaults.timeout_ms".into(),
            format!("between 1 and {MAX_TIMEOUT_MS}"),
        );
    }
    if !(1..=1_000_000).contains(&spec.limits.max_steps) {
        error(
            &mut errors,
            "limits.max_steps".into(),
            "between 1 and 1000000".into(),
        );
    }
    if spec.limits.segment_events < 16 {
        error(
            &mut errors,
            "limits.segment_events".into(),
            "at least 16 events per segment".into(),
        );
    }
    let mut seen = HashSet::new();
    for (i, node) in spec.nodes.iter().enumerate() {
        let path = format!("nodes[{i}]");
        if !valid_name(&node.id) || node.id == END {
            error(
                &mut errors,
                format!("{path}.id"),
                format!(
                    "`{}`: ids are lower-case letters, digits, `-` and `_` (and not `end`)",
                    node.id
                ),
            );
        }
        if !seen.insert(node.id.as_str()) {
            error(
                &mut errors,
                format!("{path}.id"),
                format!("`{}` is used by an earlier node", node.id),
            );
        }
        check_node(node, &path, &mut errors);
    }
    let ids: HashSet<&str> = spec.nodes.iter().map(|n| n.id.as_str()).collect();
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    for (i, node) in spec.nodes.iter().enumerate() {
        let mut targets: Vec<(String, &str)> = Vec::new();
        if let Some(next) = &node.next {
            targets.push((format!("nodes[{i}].next"), next));
        }
        for (c, case) in node.cases.iter().enumerate() {
            targets.push((format!("nodes[{i}].cases[{c}].goto"), &case.goto));
        }
        if let Some(default) = &node.default {
            targets.push((format!("nodes[{i}].default"), default));
        }
        for (path, target) in &targets {
            if *target != END && !ids.contains(target) {
                errors.push(SpecError::new(
                    path.clone(),
                    format!("no node `{target}` (use a node id or `end`)"),
                ));
            }
        }
        let mut out: Vec<&str> = targets.iter().map(|(_, t)| *t).collect();
        let falls_through =
            node.next.is_none() && !(node.kind == NodeKind::Branch && node.default.is_some());
        if falls_through && let Some(following) = spec.nodes.get(i + 1) {
            out.push(following.id.as_str());
        }
        out.retain(|t| *t != END && ids.contains(t));
        edges.insert(node.id.as_str(), out);
    }
    if let Some(cycle) = find_cycle(spec, &edges) {
        let index = spec
            .nodes
            .iter()
            .position(|n| n.id == cycle[0])
            .unwrap_or(0);
        errors.push(SpecError::new(
            format!("nodes[{index}]"),
            format!(
                "the nodes form a cycle: {} (a workflow is acyclic; repeat work with `map`)",
                cycle.join(" → ")
            ),
        ));
    }
    errors
}

/// The first cycle found (its nodes in order, the first repeated at the end).
fn find_cycle<'a>(
    spec: &'a WorkflowSpec,
    edges: &HashMap<&'a str, Vec<&'a str>>,
) -> Option<Vec<&'a str>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    for start in spec.nodes.iter().map(|n| n.id.as_str()) {
        if marks.contains_key(start) {
            continue;
        }
        // Iterative DFS: (node, index of the next edge to follow).
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::Open);
        while let Some((node, next)) = stack.last_mut() {
            let out = edges.get(*node).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(&target) = out.get(*next) {
                *next += 1;
                match marks.get(target) {
                    Some(Mark::Open) => {
                        let from = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[from..].iter().map(|(n, _)| *n).collect();
                        cycle.push(target);
                        return Some(cycle);
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(target, Mark::Open);
                        stack.push((target, 0));
                    }
                }
            } else {
                marks.insert(*node, Mark::Done);
                stack.pop();
            }
        }
    }
    None
}

/// The fields a node of each kind may set, besides `id`, `kind` and `next`.
fn allowed(kind: NodeKind) -> &'static [&'static str] {
    match kind {
        NodeKind::Llm => &[
            "model",
            "system",
            "prompt",
            "prompt_ref",
            "output",
            "max_tokens",
            "temperature",
            "retry",
            "timeout_ms",
            "compensate",
        ],
        NodeKind::Tool => &["tool", "args", "retry", "timeout_ms", "compensate"],
        NodeKind::Subworkflow => &[
            "workflow",
            "version",
            "input",
            "retry",
            "timeout_ms",
            "compensate",
        ],
        NodeKind::Retrieve => &["query", "k", "mode", "documents", "retry", "timeout_ms"],
        NodeKind::Branch => &["cases", "default"],
        NodeKind::Map => &["over", "node", "concurrency", "compensate"],
        NodeKind::Wait => &["duration_ms", "signal"],
        NodeKind::HumanInput => &["question", "schema", "duration_ms"],
    }
}

/// The fields a node sets (other than `id`, `kind`, `next`).
fn set_fields(node: &Node) -> Vec<&'static str> {
    let mut set = call_fields(&node.as_call());
    for (name, present) in [
        ("cases", !node.cases.is_empty()),
        ("default", node.default.is_some()),
        ("over", node.over.is_some()),
        ("node", node.node.is_some()),
        ("concurrency", node.concurrency.is_some()),
        ("duration_ms", node.duration_ms.is_some()),
        ("signal", node.signal.is_some()),
        ("question", node.question.is_some()),
        ("schema", node.schema.is_some()),
        ("compensate", node.compensate.is_some()),
    ] {
        if present {
            set.push(name);
        }
    }
    set
}

fn call_fields(call: &Call) -> Vec<&'static str> {
    [
        ("model", call.model.is_some()),
        ("system", call.system.is_some()),
        ("prompt", call.prompt.is_some()),
        ("prompt_ref", call.prompt_ref.is_some()),
        ("output", call.output.is_some()),
        ("max_tokens", call.max_tokens.is_some()),
        ("temperature", call.temperature.is_some()),
        ("tool", call.tool.is_some()),
        ("args", call.args.is_some()),
        ("workflow", call.workflow.is_some()),
        ("version", call.version.is_some()),
        ("input", call.input.is_some()),
        ("query", call.query.is_some()),
        ("k", call.k.is_some()),
        ("mode", call.mode.is_some()),
        ("documents", call.documents.is_some()),
        ("retry", call.retry.is_some()),
        ("timeout_ms", call.timeout_ms.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect()
}

fn check_node(node: &Node, path: &str, errors: &mut Vec<SpecError>) {
    let kind = node.kind;
    for field in set_fields(node) {
        if !allowed(kind).contains(&field) {
            errors.push(SpecError::new(
                format!("{path}.{field}"),
                format!("`{field}` does not apply to a `{}` node", kind.as_str()),
            ));
        }
    }
    if kind.is_call() {
        check_call(&node.as_call(), path, errors);
    }
    match kind {
        NodeKind::Branch => {
            if node.cases.is_empty() {
                errors.push(SpecError::new(
                    format!("{path}.cases"),
                    "a branch needs at least one case",
                ));
            }
            for (c, case) in node.cases.iter().enumerate() {
                if let Err(e) = check_expression(&case.when) {
                    errors.push(SpecError::new(format!("{path}.cases[{c}].when"), e));
                }
            }
        }
        NodeKind::Map => {
            match &node.over {
                None => errors.push(SpecError::new(
                    format!("{path}.over"),
                    "a map needs `over`: an expression giving the list",
                )),
                Some(over) => {
                    if let Err(e) = check_expression(over) {
                        errors.push(SpecError::new(format!("{path}.over"), e));
                    }
                }
            }
            match &node.node {
                None => errors.push(SpecError::new(
                    format!("{path}.node"),
                    "a map needs `node`: the call to run per item",
                )),
                Some(call) => check_call(call, &format!("{path}.node"), errors),
            }
            if let Some(c) = node.concurrency
                && !(1..=MAX_CONCURRENCY).contains(&c)
            {
                errors.push(SpecError::new(
                    format!("{path}.concurrency"),
                    format!("between 1 and {MAX_CONCURRENCY}"),
                ));
            }
        }
        NodeKind::Wait => {
            if node.duration_ms.is_none() && node.signal.is_none() {
                errors.push(SpecError::new(
                    path,
                    "a wait needs `duration_ms` (a timer), `signal`, or both (a signal with a timeout)",
                ));
            }
            if let Some(signal) = &node.signal
                && !valid_name(signal)
            {
                errors.push(SpecError::new(
                    format!("{path}.signal"),
                    "signal names are lower-case letters, digits, `-` and `_`",
                ));
            }
        }
        NodeKind::HumanInput => {
            if let Some(schema) = &node.schema
                && let Err(e) = jsonschema::validator_for(schema)
            {
                errors.push(SpecError::new(
                    format!("{path}.schema"),
                    format!("not a valid JSON Schema: {e}"),
                ));
            }
            if let Some(question) = &node.question
                && let Err(e) = check_template(question)
            {
                errors.push(SpecError::new(format!("{path}.question"), e));
            }
        }
        NodeKind::Llm | NodeKind::Tool | NodeKind::Subworkflow | NodeKind::Retrieve => {}
    }
    if let Some(compensate) = &node.compensate {
        check_call(compensate, &format!("{path}.compensate"), errors);
    }
}

/// A call: the fields its kind needs, no others, and valid templates.
fn check_call(call: &Call, path: &str, errors: &mut Vec<SpecError>) {
    let kind = call.kind;
    if !kind.is_call() {
        errors.push(SpecError::new(
            format!("{path}.kind"),
            format!(
                "`{}` cannot be called here; use `llm`, `tool`, `subworkflow` or `retrieve`",
                kind.as_str()
            ),
        ));
        return;
    }
    for field in call_fields(call) {
        if !allowed(kind).contains(&field) {
            errors.push(SpecError::new(
                format!("{path}.{field}"),
                format!("`{field}` does not apply to a `{}` call", kind.as_str()),
            ));
        }
    }
    let mut template = |field: &str, source: &Option<String>| {
        if let Some(source) = source
            && let Err(e) = check_template(source)
        {
            errors.push(SpecError::new(format!("{path}.{field}"), e));
        }
    };
    template("prompt", &call.prompt);
    template("system", &call.system);
    template("query", &call.query);
    if let Some(k) = call.k
        && !(1..=MAX_RETRIEVE_K).contains(&k)
    {
        errors.push(SpecError::new(
            format!("{path}.k"),
            format!("between 1 and {MAX_RETRIEVE_K}"),
        ));
    }
    if let Some(reference) = &call.prompt_ref
        && let Err(e) = switchyard_manifests::parse_reference(reference)
    {
        errors.push(SpecError::new(format!("{path}.prompt_ref"), e.to_string()));
    }
    let required = match kind {
        NodeKind::Llm => (
            "prompt` or `prompt_ref",
            call.prompt.is_some() || call.prompt_ref.is_some(),
        ),
        NodeKind::Tool => ("tool", call.tool.is_some()),
        NodeKind::Retrieve => ("query", call.query.is_some()),
        _ => ("workflow", call.workflow.is_some()),
    };
    if !required.1 {
        errors.push(SpecError::new(
            path,
            format!("a `{}` call needs `{}`", kind.as_str(), required.0),
        ));
    }
    for (field, value) in [
        ("args", &call.args),
        ("input", &call.input),
        ("documents", &call.documents),
    ] {
        if let Some(value) = value
            && let Err(e) = check_value(value)
        {
            errors.push(SpecError::new(format!("{path}.{field}"), e));
        }
    }
    if let Some(retry) = &call.retry {
        check_retry(retry, &format!("{path}.retry"), errors);
    }
    if let Some(timeout) = call.timeout_ms
        && !(1..=MAX_TIMEOUT_MS).contains(&timeout)
    {
        errors.push(SpecError::new(
            format!("{path}.timeout_ms"),
            format!("between 1 and {MAX_TIMEOUT_MS}"),
        ));
    }
}

/// The longest a step attempt may take (a day).
const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// The longest backoff between two attempts (an hour).
const MAX_BACKOFF_MS: u64 = 3_600_000;

fn check_retry(retry: &super::Retry, path: &str, errors: &mut Vec<SpecError>) {
    if !(1..=100).contains(&retry.max_attempts) {
        errors.push(SpecError::new(
            format!("{path}.max_attempts"),
            "between 1 and 100",
        ));
    }
    for (field, value) in [
        ("backoff_ms", retry.backoff_ms),
        ("max_backoff_ms", retry.max_backoff_ms),
    ] {
        if value > MAX_BACKOFF_MS {
            errors.push(SpecError::new(
                format!("{path}.{field}"),
                format!("at most {MAX_BACKOFF_MS} (an hour)"),
            ));
        }
    }
}

/// A run's input checked against the declared inputs, with defaults filled in. Undeclared
/// fields are refused when inputs are declared.
pub fn validate_input(spec: &WorkflowSpec, input: &Value) -> Result<Value> {
    let bad = |message: String| Error::Schema {
        what: "the run's input".into(),
        message,
    };
    if spec.inputs.is_empty() {
        return Ok(input.clone());
    }
    let given: Map<String, Value> = match input {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => return Err(bad("the input must be an object".into())),
    };
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    let mut problems = Vec::new();
    for name in given.keys() {
        if !spec.inputs.contains_key(name) {
            problems.push(format!("`{name}` is not a declared input"));
        }
    }
    for (name, param) in &spec.inputs {
        match given.get(name).or(param.default.as_ref()) {
            Some(value) if param.kind.admits(value) => {
                out.insert(name.clone(), value.clone());
            }
            Some(_) => problems.push(format!(
                "`{name}` must be of type {}",
                format!("{:?}", param.kind).to_lowercase()
            )),
            None if param.required != Some(false) => {
                problems.push(format!("`{name}` is required"));
            }
            None => {}
        }
    }
    if problems.is_empty() {
        Ok(Value::Object(out.into_iter().collect()))
    } else {
        Err(bad(problems.join("; ")))
    }
}
