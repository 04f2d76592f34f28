#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]
//! The WorkflowSpec loader: valid specs load (YAML and JSON alike); hostile, malformed and
//! oversized documents are refused with every problem's field path, line and a useful message;
//! run inputs are checked against the declared inputs; fragments and overlays merge in order;
//! the committed JSON Schema matches the Rust types and admits the examples under
//! `examples/workflows/`. Run with `SWITCHYARD_UPDATE_SCHEMAS=1` to rewrite
//! `schemas/workflow.schema.json` after changing the spec's types.
//!

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use switchyard_workflows::Error;
use switchyard_workflows::spec::{
    LoadOptions, MAX_SPEC_BYTES, SpecError, WorkflowSpec, load, load_fragment, parse_document,
    validate_input,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Registered fragments: name → versions (version n at index n - 1).
type Registry = BTreeMap<String, Vec<Value>>;

/// The tenant every test loads for: its id and its name.
const TENANT: &[&str] = &["t-7f3a", "acme"];

/// Loading in production for the test tenant.
fn prod() -> LoadOptions<'static> {
    LoadOptions {
        env: Some("prod"),
        tenant: TENANT,
    }
}

fn no_fragments() -> Registry {
    Registry::new()
}

/// `text` without its first line when that is empty, and without the indentation common to its
/// lines, so that specs can be written indented in the test; line 1 is the first written line.
fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Loads a spec (written indented, see [`dedent`]) that must be valid.
fn valid(text: &str) -> WorkflowSpec {
    load(&dedent(text), prod(), &no_fragments())
        .unwrap_or_else(|e| panic!("the spec should load: {e}"))
}

/// The problems of a spec text (taken as it is) that must be refused.
fn refused_raw(text: &str, options: LoadOptions<'_>, fragments: &Registry) -> Vec<SpecError> {
    match load(text, options, fragments) {
        Err(Error::Spec(errors)) => {
            assert!(!errors.is_empty(), "a refusal names at least one problem");
            errors
        }
        Err(other) => panic!("expected Error::Spec, got another error: {other}"),
        Ok(spec) => panic!("expected the spec to be refused; it loaded: {spec:?}"),
    }
}

/// The problems of a spec (written indented) that must be refused.
fn refused(text: &str) -> Vec<SpecError> {
    refused_raw(&dedent(text), prod(), &no_fragments())
}

/// The error at `path`, which must exist, be on `line` and say `needle`.
#[track_caller]
fn expect<'a>(
    errors: &'a [SpecError],
    path: &str,
    line: Option<u64>,
    needle: &str,
) -> &'a SpecError {
    let found = errors
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no error at `{path}`; errors: {errors:#?}"));
    assert_eq!(found.line, line, "the line of `{path}`: {found:#?}");
    assert!(
        found.message.contains(needle),
        "the message at `{path}` should say {needle:?}: {found:#?}"
    );
    found
}

/// The only error, which must be at `path`, on `line`, and say `needle`.
#[track_caller]
fn expect_only<'a>(
    errors: &'a [SpecError],
    path: &str,
    line: Option<u64>,
    needle: &str,
) -> &'a SpecError {
    assert_eq!(errors.len(), 1, "exactly one problem expected: {errors:#?}");
    expect(errors, path, line, needle)
}

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ---------------------------------------------------------------------------------------------
// 1. A valid spec, in YAML and in JSON

const THREE_STEPS_YAML: &str = r#"
    # classify → lookup → reply
    name: support-triage
    description: Three steps.
    inputs:
      ticket:
        type: string
      customer_id:
        type: string
    outputs:
      reply:
        value: steps.reply.output
        type: string
    defaults:
      model: sim-small
      timeout_ms: 30000
    nodes:
      - id: classify
        kind: llm
        output: json
        prompt: "Classify: {{ input.ticket }}"
      - id: lookup
        kind: tool
        tool: lookup
        args:
          customer_id: "{{ input.customer_id }}"
          category: "{{ steps.classify.output.category }}"
      - id: reply
        kind: llm
        model: sim-large
        prompt: "Answer {{ steps.lookup.output.name }}: {{ steps.classify.output.draft }}"
"#;

const THREE_STEPS_JSON: &str = r#"
    {
      "name": "support-triage",
      "description": "Three steps.",
      "inputs": {"ticket": {"type": "string"}, "customer_id": {"type": "string"}},
      "outputs": {"reply": {"value": "steps.reply.output", "type": "string"}},
      "defaults": {"model": "sim-small", "timeout_ms": 30000},
      "nodes": [
        {"id": "classify", "kind": "llm", "output": "json", "prompt": "Classify: {{ input.ticket }}"},
        {
          "id": "lookup",
          "kind": "tool",
          "tool": "lookup",
          "args": {
            "customer_id": "{{ input.customer_id }}",
            "category": "{{ steps.classify.output.category }}"
          }
        },
        {
          "id": "reply",
          "kind": "llm",
          "model": "sim-large",
          "prompt": "Answer {{ steps.lookup.output.name }}: {{ steps.classify.output.draft }}"
        }
      ]
    }
"#;

#[test]
fn a_three_step_spec_loads_from_yaml_and_from_json_alike() {
    let spec = valid(THREE_STEPS_YAML);
    assert_eq!(spec.name, "support-triage");
    let ids: Vec<&str> = spec.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["classify", "lookup", "reply"]);
    let kinds: Vec<&str> = spec.nodes.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(kinds, ["llm", "tool", "llm"]);
    assert_eq!(spec.successor("classify"), Some("lookup"));
    assert_eq!(spec.successor("lookup"), Some("reply"));
    assert_eq!(spec.successor("reply"), None, "the last node ends the run");
    assert_eq!(spec.defaults.model, "sim-small");
    assert_eq!(spec.defaults.timeout_ms, 30_000);
    assert_eq!(
        spec.defaults.retry.max_attempts, 3,
        "unset defaults keep theirs"
    );
    assert_eq!(
        spec.nodes[0].model, None,
        "an llm node without a model uses the default"
    );
    assert_eq!(spec.nodes[2].model.as_deref(), Some("sim-large"));
    assert_eq!(spec.nodes[1].tool.as_deref(), Some("lookup"));
    assert_eq!(
        spec.nodes[1].args,
        Some(json!({
            "customer_id": "{{ input.customer_id }}",
            "category": "{{ steps.classify.output.category }}"
        }))
    );
    assert!(spec.inputs.contains_key("ticket") && spec.inputs.contains_key("customer_id"));
    assert_eq!(spec.outputs["reply"].value, "steps.reply.output");

    let from_json = load(&dedent(THREE_STEPS_JSON), prod(), &no_fragments())
        .unwrap_or_else(|e| panic!("the JSON spec should load: {e}"));
    assert_eq!(from_json, spec, "the JSON form loads to the same spec");

    // A loaded spec serialises to a document that loads to itself.
    let text = serde_json::to_string_pretty(&spec).unwrap();
    assert_eq!(load(&text, prod(), &no_fragments()).unwrap(), spec);
}

// ---------------------------------------------------------------------------------------------
// 2. Hostile and malformed specs

#[test]
fn a_cycle_through_next_is_refused_at_its_first_node() {
    let errors = refused(
        r#"
        name: cyc
        nodes:
          - id: a
            kind: llm
            prompt: hi
            next: b
          - id: b
            kind: llm
            prompt: hi
            next: a
        "#,
    );
    expect_only(&errors, "nodes[0]", Some(3), "cycle: a → b → a");
}

#[test]
fn a_cycle_through_a_branch_goto_is_refused() {
    let errors = refused(
        r#"
        name: cyc
        nodes:
          - id: a
            kind: llm
            prompt: hi
          - id: b
            kind: branch
            cases:
              - when: steps.a.output == "again"
                goto: a
            default: end
        "#,
    );
    let e = expect_only(&errors, "nodes[0]", Some(3), "cycle: a → b → a");
    assert!(e.message.contains("acyclic"), "{e:?}");
}

#[test]
fn an_unknown_node_kind_is_refused_with_the_kinds_there_are() {
    let errors = refused(
        r#"
        name: k
        nodes:
          - id: a
            kind: llm
            prompt: hi
          - id: b
            kind: lm
            prompt: hi
        "#,
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = &errors[0];
    assert!(e.path.starts_with("nodes[1]"), "{e:?}");
    // The node (line 6) or, better, its `kind` (line 7).
    assert!(matches!(e.line, Some(6 | 7)), "{e:?}");
    assert!(e.message.contains("unknown variant `lm`"), "{e:?}");
    assert!(
        e.message.contains("`llm`") && e.message.contains("`human_input`"),
        "{e:?}"
    );
}

#[test]
fn a_misspelt_field_is_refused_on_its_own_line() {
    let errors = refused(
        r#"
        name: k
        nodes:
          - id: a
            kind: llm
            model: sim-small
            promt: "Hello {{ input.name }}"
        "#,
    );
    let e = expect(&errors, "nodes[0].promt", Some(6), "unknown field `promt`");
    assert!(
        e.message.contains("`prompt`"),
        "the message lists the fields there are: {e:?}"
    );
    assert_eq!(e.column, Some(5));

    // At the top level too.
    let errors = refused(
        r#"
        name: k
        descripton: typo
        nodes:
          - id: a
            kind: llm
            prompt: hi
        "#,
    );
    expect_only(&errors, "descripton", Some(2), "unknown field `descripton`");
}

#[test]
fn a_field_of_another_kind_is_refused_where_it_is() {
    let errors = refused(
        r#"
        name: k
        nodes:
          - id: a
            kind: llm
            prompt: hi
            over: input.items
          - id: b
            kind: wait
            duration_ms: 10
            tool: lookup
        "#,
    );
    expect(
        &errors,
        "nodes[0].over",
        Some(6),
        "`over` does not apply to a `llm` node",
    );
    expect(
        &errors,
        "nodes[1].tool",
        Some(10),
        "`tool` does not apply to a `wait` node",
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn missing_required_fields_are_each_reported() {
    let errors = refused(
        r#"
        name: k
        nodes:
          - id: a
            kind: llm
          - id: b
            kind: tool
          - id: c
            kind: map
          - id: d
            kind: wait
          - id: e
            kind: branch
            default: end
        "#,
    );
    expect(&errors, "nodes[0]", Some(3), "a `llm` call needs `prompt`");
    expect(&errors, "nodes[1]", Some(5), "a `tool` call needs `tool`");
    // Not in the text: located at the node.
    expect(&errors, "nodes[2].over", Some(7), "a map needs `over`");
    expect(&errors, "nodes[2].node", Some(7), "a map needs `node`");
    expect(&errors, "nodes[3]", Some(9), "a wait needs `duration_ms`");
    expect(&errors, "nodes[4].cases", Some(11), "at least one case");
    assert_eq!(errors.len(), 6, "{errors:#?}");
}

#[test]
fn a_node_without_an_id_or_a_kind_is_refused_at_the_node() {
    let errors = refused(
        r#"
        name: k
        nodes:
          - id: a
            kind: llm
            prompt: hi
          - kind: llm
            prompt: hi
          - id: c
            prompt: hi
        "#,
    );
    expect(&errors, "nodes[1]", Some(6), "missing field `id`");
    expect(&errors, "nodes[2]", Some(8), "missing field `kind`");
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn a_map_call_missing_its_required_field_is_refused_at_the_call() {
    let errors = refused(
        r#"
        name: k
        nodes:
          - id: each
            kind: map
            over: input.items
            node:
              kind: tool
              args: {x: "{{ item }}"}
        "#,
    );
    expect_only(
        &errors,
        "nodes[0].node",
        Some(6),
        "a `tool` call needs `tool`",
    );
}

#[test]
fn references_to_unknown_nodes_are_refused_where_they_are() {
    let errors = refused(
        r#"
        name: k
        nodes:
          - id: a
            kind: llm
            prompt: hi
            next: nowhere
          - id: b
            kind: branch
            cases:
              - when: "true"
                goto: ghost
            default: phantom
        "#,
    );
    expect(&errors, "nodes[0].next", Some(6), "no node `nowhere`");
    expect(
        &errors,
        "nodes[1].cases[0].goto",
        Some(11),
        "no node `ghost`",
    );
    expect(&errors, "nodes[1].default", Some(12), "no node `phantom`");
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

#[test]
fn duplicate_ids_and_the_id_end_are_refused() {
    let errors = refused(
        r#"
        name: k
        nodes:
          - id: a
            kind: llm
            prompt: hi
          - id: a
            kind: llm
            prompt: again
          - id: end
            kind: llm
            prompt: last
        "#,
    );
    expect(
        &errors,
        "nodes[1].id",
        Some(6),
        "`a` is used by an earlier node",
    );
    expect(&errors, "nodes[2].id", Some(9), "not `end`");
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn bad_names_are_refused() {
    let long = "a".repeat(65);
    let errors = refused(&format!(
        r#"
        name: Support Triage
        inputs:
          Question: {{type: string}}
        nodes:
          - id: Step-1
            kind: llm
            prompt: hi
          - id: {long}
            kind: wait
            signal: Not A Name
        "#
    ));
    expect(&errors, "name", Some(1), "lower-case letters");
    expect(
        &errors,
        "inputs.Question",
        Some(3),
        "input names are lower-case",
    );
    expect(
        &errors,
        "nodes[0].id",
        Some(5),
        "`Step-1`: ids are lower-case",
    );
    expect(&errors, "nodes[1].id", Some(8), "ids are lower-case");
    expect(
        &errors,
        "nodes[1].signal",
        Some(10),
        "signal names are lower-case",
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

#[test]
fn invalid_templates_and_conditions_are_refused_where_they_are() {
    let errors = refused(
        r#"
        name: k
        outputs:
          answer: {value: "steps.a.output +"}
        nodes:
          - id: a
            kind: llm
            prompt: "{{ unclosed"
          - id: b
            kind: branch
            cases:
              - when: steps.a.output ==
                goto: end
          - id: c
            kind: tool
            tool: t
            args:
              deep: ["{% if %}"]
        "#,
    );
    expect(&errors, "outputs.answer.value", Some(3), "syntax error");
    expect(&errors, "nodes[0].prompt", Some(7), "syntax error");
    expect(&errors, "nodes[1].cases[0].when", Some(11), "syntax error");
    expect(&errors, "nodes[2].args", Some(16), "syntax error");
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

#[test]
fn a_human_input_with_an_invalid_json_schema_is_refused() {
    let errors = refused(
        r#"
        name: k
        nodes:
          - id: approve
            kind: human_input
            question: "OK to send {{ input.draft }}?"
            schema:
              type: objekt
              required: yes-please
        "#,
    );
    expect_only(
        &errors,
        "nodes[0].schema",
        Some(6),
        "not a valid JSON Schema",
    );
}

#[test]
fn a_map_concurrency_outside_1_to_64_is_refused() {
    let errors = refused(
        r#"
        name: k
        nodes:
          - id: none
            kind: map
            over: input.items
            concurrency: 0
            node: {kind: llm, prompt: "{{ item }}"}
          - id: flood
            kind: map
            over: input.items
            concurrency: 1000
            node: {kind: llm, prompt: "{{ item }}"}
          - id: most
            kind: map
            over: input.items
            concurrency: 64
            node: {kind: llm, prompt: "{{ item }}"}
        "#,
    );
    expect(&errors, "nodes[0].concurrency", Some(6), "between 1 and 64");
    expect(
        &errors,
        "nodes[1].concurrency",
        Some(11),
        "between 1 and 64",
    );
    assert_eq!(errors.len(), 2, "64 is allowed: {errors:#?}");
}

#[test]
fn a_document_that_is_not_an_object_is_refused() {
    for (text, line) in [
        ("- name: a\n- name: b\n", Some(1)),
        ("just a sentence\n", Some(1)),
        ("42\n", Some(1)),
        ("null\n", Some(1)),
        ("[1, 2]\n", Some(1)),
        ("", None),
        ("# only a comment\n", None),
        ("   \n\n", None),
    ] {
        let errors = refused_raw(text, prod(), &no_fragments());
        expect_only(&errors, "", line, "a workflow spec is an object");
    }
}

#[test]
fn a_document_without_nodes_is_refused() {
    expect_only(&refused("name: k\n"), "", Some(1), "missing field `nodes`");
    expect_only(
        &refused("name: k\nnodes: []\n"),
        "nodes",
        Some(2),
        "at least one node",
    );
}

#[test]
fn duplicate_keys_are_refused_on_the_second_one() {
    let errors = refused(
        r#"
        name: k
        nodes:
          - id: a
            kind: llm
            prompt: hi
            prompt: again
        "#,
    );
    let e = expect_only(&errors, "", Some(6), "duplicate mapping key");
    assert!(e.message.contains("prompt"), "{e:?}");
}

#[test]
fn more_than_one_document_is_refused() {
    let errors = refused("---\nname: a\n---\nname: b\n");
    expect_only(&errors, "", Some(3), "invalid YAML");
}

#[test]
fn tabs_and_bad_indentation_are_syntax_errors_with_a_line() {
    // A tab as indentation.
    let errors = refused_raw(
        "name: k\nnodes:\n\t- id: a\n\t  kind: llm\n",
        prod(),
        &no_fragments(),
    );
    let e = expect_only(&errors, "", Some(3), "invalid YAML");
    assert!(e.message.contains("tab"), "{e:?}");

    // A key indented deeper than its siblings.
    let errors = refused_raw(
        "name: k\nnodes:\n  - id: a\n     kind: llm\n",
        prod(),
        &no_fragments(),
    );
    let e = expect_only(&errors, "", Some(4), "invalid YAML");
    assert_eq!(e.column, Some(10));

    // An unclosed flow sequence.
    let errors = refused_raw("name: k\nnodes: [\n  {id: a}\n", prod(), &no_fragments());
    let e = &errors[0];
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(e.message.starts_with("invalid YAML"), "{e:?}");
    assert!(e.line.is_some(), "{e:?}");
}

#[test]
fn a_json_syntax_error_has_its_line_and_column() {
    let errors = refused(
        r#"
        {
          "name": "k",
          "nodes": [
            {"id": "a", "kind": "llm", "prompt": "hi"},
          ]
        }
        "#,
    );
    let e = expect_only(&errors, "", Some(5), "invalid JSON: trailing comma");
    assert_eq!(e.column, Some(3));
}

#[test]
fn json_field_errors_have_their_lines_too() {
    let errors = refused(
        r#"
        {
          "name": "k",
          "nodes": [
            {"id": "a", "kind": "llm", "prompt": "hi", "next": "b"},
            {"id": "b", "kind": "llm", "promt": "typo"}
          ]
        }
        "#,
    );
    expect(&errors, "nodes[1].promt", Some(5), "unknown field `promt`");
}

#[test]
fn every_problem_is_reported_at_once() {
    let errors = refused(
        r#"
        name: k
        nodes:
          - id: a
            kind: llm
            prompt: "{{ oops"
            next: b
          - id: b
            kind: map
            concurrency: 0
            next: a
        "#,
    );
    expect(&errors, "nodes[0].prompt", Some(5), "syntax error");
    expect(&errors, "nodes[1].over", Some(7), "a map needs `over`");
    expect(&errors, "nodes[1].node", Some(7), "a map needs `node`");
    expect(&errors, "nodes[1].concurrency", Some(9), "between 1 and 64");
    expect(&errors, "nodes[0]", Some(3), "cycle");
    assert_eq!(errors.len(), 5, "{errors:#?}");
    // The error's text names each problem with its line.
    let text = Error::Spec(errors).to_string();
    assert!(text.contains("line 5: nodes[0].prompt"), "{text}");
    assert!(text.contains("line 9: nodes[1].concurrency"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// 3. Resource attacks: each refused cleanly (no panic, no hang, no exhaustion)

#[test]
fn a_billion_laughs_alias_bomb_is_refused() {
    // Nine levels, each a list of ten aliases of the previous level: 10^9 strings if expanded.
    let mut text = String::from("lol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..=9 {
        let refs = vec![format!("*lol{}", level - 1); 10].join(", ");
        text.push_str(&format!("lol{level}: &lol{level} [{refs}]\n"));
    }
    text.push_str("name: bomb\nnodes: *lol9\n");
    assert!(text.len() < 1_000);
    let errors = refused_raw(&text, prod(), &no_fragments());
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = &errors[0];
    assert!(
        e.message.starts_with("invalid YAML: budget breached"),
        "{e:?}"
    );
    assert!(e.line.is_some(), "{e:?}");

    // The same in block style, inside a tool's args.
    let mut text = String::from(
        "name: bomb\nnodes:\n  - id: a\n    kind: tool\n    tool: t\n    args:\n      l0: &l0 lol\n",
    );
    for level in 1..=9 {
        text.push_str(&format!("      l{level}: &l{level}\n"));
        for _ in 0..9 {
            text.push_str(&format!("        - *l{}\n", level - 1));
        }
    }
    let errors = refused_raw(&text, prod(), &no_fragments());
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].message.contains("budget breached"), "{errors:#?}");
}

#[test]
fn a_few_aliases_are_fine() {
    // Anchors and aliases are YAML; only their excess is refused.
    let spec = valid(
        r#"
        name: k
        nodes:
          - id: a
            kind: tool
            tool: t
            args: &common {region: eu, tier: gold}
          - id: b
            kind: tool
            tool: u
            args: *common
        "#,
    );
    assert_eq!(spec.nodes[0].args, spec.nodes[1].args);
    assert_eq!(
        spec.nodes[1].args,
        Some(json!({"region": "eu", "tier": "gold"}))
    );
}

#[test]
fn deep_nesting_is_refused() {
    // 10,000 nested flow sequences.
    let text = format!(
        "name: deep\nnodes: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let errors = refused_raw(&text, prod(), &no_fragments());
    let e = expect_only(&errors, "", Some(2), "invalid YAML");
    assert!(
        e.message.contains("recursion limit") || e.message.contains("Depth"),
        "{e:?}"
    );

    // Unclosed, at the very start.
    let errors = refused_raw(&"[".repeat(10_000), prod(), &no_fragments());
    expect_only(&errors, "", Some(1), "invalid YAML");

    // 200 nested block mappings: refused past depth 32, on the line where it goes too deep.
    let mut text = String::new();
    for level in 0..200 {
        text.push_str(&format!("{}k{level}:\n", "  ".repeat(level)));
    }
    text.push_str(&format!("{}v: 1\n", "  ".repeat(200)));
    let errors = refused_raw(&text, prod(), &no_fragments());
    let e = expect_only(&errors, "", Some(33), "invalid YAML");
    assert!(e.message.contains("Depth"), "{e:?}");

    // Within the parser's limits but deeper than a spec may be (inside a tool's args).
    let args = format!("{}1{}", "{\"a\": ".repeat(40), "}".repeat(40));
    let text = format!(
        "{{\"name\": \"k\", \"nodes\": [{{\"id\": \"a\", \"kind\": \"tool\", \"tool\": \"t\", \"args\": {args}}}]}}"
    );
    let errors = refused_raw(&text, prod(), &no_fragments());
    let e = expect_only(&errors, "", Some(1), "invalid JSON: budget breached");
    assert!(e.message.contains("Depth"), "{e:?}");
}

#[test]
fn a_json_document_nested_10000_deep_is_refused() {
    let text = format!("{}1{}", "{\"a\": ".repeat(10_000), "}".repeat(10_000));
    let errors = refused_raw(&text, prod(), &no_fragments());
    let e = expect_only(&errors, "", Some(1), "invalid JSON");
    assert!(e.message.contains("recursion limit"), "{e:?}");

    let text = format!(
        "{{\"name\": \"k\", \"nodes\": {}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let errors = refused_raw(&text, prod(), &no_fragments());
    expect_only(&errors, "", Some(1), "recursion limit");
}

#[test]
fn a_document_over_the_size_limit_is_refused_before_parsing() {
    let text = format!(
        "name: big\ndescription: \"{}\"\nnodes: [{{id: a, kind: llm, prompt: hi}}]\n",
        "x".repeat(MAX_SPEC_BYTES)
    );
    let errors = refused_raw(&text, prod(), &no_fragments());
    expect_only(
        &errors,
        "",
        None,
        &format!("at most {MAX_SPEC_BYTES} are accepted"),
    );
    // The same in JSON, and for fragments and bare parsing.
    let json = format!("{{\"name\": \"{}\"}}", "x".repeat(MAX_SPEC_BYTES));
    expect_only(
        &refused_raw(&json, prod(), &no_fragments()),
        "",
        None,
        "bytes",
    );
    let Err(Error::Spec(errors)) = load_fragment(&text) else {
        panic!("an oversized fragment is refused")
    };
    expect_only(&errors, "", None, "bytes");
    let errors = parse_document(&text).unwrap_err();
    expect_only(&errors, "", None, "bytes");
}

/// A spec of `n` llm nodes, one after the other.
fn chain(n: usize) -> String {
    let mut text = String::from("name: many\nnodes:\n");
    for i in 0..n {
        text.push_str(&format!("  - id: n{i}\n    kind: llm\n    prompt: hi\n"));
    }
    text
}

#[test]
fn more_than_500_nodes_are_refused() {
    let errors = refused_raw(&chain(501), prod(), &no_fragments());
    expect_only(&errors, "nodes", Some(2), "501 nodes; at most 500");
    let spec = load(&chain(500), prod(), &no_fragments()).expect("500 nodes are allowed");
    assert_eq!(spec.nodes.len(), 500);
}

#[test]
fn a_very_long_key_is_refused() {
    let key = "k".repeat(500_000);
    // YAML: a plain key of more than 1024 characters is a syntax error, on its line.
    let text = format!("name: k\nnodes:\n  - id: a\n    kind: llm\n    prompt: hi\n    {key}: 1\n");
    let errors = refused_raw(&text, prod(), &no_fragments());
    expect_only(&errors, "", Some(6), "invalid YAML");

    // JSON: a key longer than the parser looks ahead for is refused on its line.
    let text = format!(
        "{{\n \"name\": \"k\",\n \"nodes\": [\n  {{\"id\": \"a\", \"kind\": \"llm\", \"prompt\": \"hi\",\n   \"{key}\": 1}}\n ]\n}}\n"
    );
    let errors = refused_raw(&text, prod(), &no_fragments());
    assert_eq!(errors.len(), 1, "one error");
    let e = &errors[0];
    assert!(e.message.starts_with("invalid JSON"), "{}", e.message);
    assert_eq!(e.line, Some(5));
    assert!(
        e.message.len() < 1_000,
        "the message does not repeat the key"
    );
}

#[test]
fn a_flow_list_of_many_scalars_is_refused_by_the_node_budget() {
    let text = format!(
        "name: k\ndescription: [{}]\nnodes: [{{id: a, kind: llm, prompt: hi}}]\n",
        "a,".repeat(150_000)
    );
    assert!(text.len() < MAX_SPEC_BYTES);
    let errors = refused_raw(&text, prod(), &no_fragments());
    let e = expect_only(&errors, "", Some(2), "invalid YAML: budget breached");
    assert!(e.message.contains("Nodes"), "{e:?}");
}

#[test]
fn long_keys_nested_deep_over_a_long_list_are_refused_cheaply() {
    // 30 nested keys of 1,000 characters (each under YAML's 1,024 limit for a plain key), then
    // a list of 60,000 numbers: 150 KB of text, 60,031 nodes (under the parser's budget), but
    // each number's path is 30 KB long: indexing them all is 1.8 GB of paths.
    let mut text = String::from("name: x\nnodes: [{id: a, kind: llm, prompt: hi}]\n");
    for level in 0..30 {
        let letter = char::from(b'a' + u8::try_from(level % 26).unwrap());
        text.push_str(&format!(
            "{}{}:\n",
            "  ".repeat(level),
            letter.to_string().repeat(1_000)
        ));
    }
    text.push_str(&format!("{}[{}]\n", "  ".repeat(30), "0,".repeat(60_000)));
    assert!(text.len() < 200_000);
    let errors = refused_raw(&text, prod(), &no_fragments());
    let e = &errors[0];
    assert_eq!(e.line, Some(3));
    assert!(e.message.starts_with("unknown field `aaa"));
}

// ---------------------------------------------------------------------------------------------
// 4. A run's input against the declared inputs

const WITH_INPUTS: &str = r#"
    name: k
    inputs:
      question:
        type: string
        description: What to answer.
      count:
        type: integer
        default: 3
      verbose:
        type: boolean
        required: false
      extra:
        type: object
        required: false
    nodes:
      - id: a
        kind: llm
        prompt: "{{ input.question }} ({{ input.count }})"
"#;

/// The message of a refused input.
#[track_caller]
fn bad_input(spec: &WorkflowSpec, input: Value) -> String {
    match validate_input(spec, &input) {
        Err(Error::Schema { what, message }) => {
            assert_eq!(what, "the run's input");
            message
        }
        Err(other) => panic!("expected Error::Schema, got {other}"),
        Ok(value) => panic!("{input} should be refused; it gave {value}"),
    }
}

#[test]
fn a_run_input_gets_its_defaults_filled_in() {
    let spec = valid(WITH_INPUTS);
    assert_eq!(
        validate_input(&spec, &json!({"question": "why?"})).unwrap(),
        json!({"question": "why?", "count": 3}),
        "the default is filled in; optional inputs without a default stay absent"
    );
    assert_eq!(
        validate_input(
            &spec,
            &json!({"question": "why?", "count": 7, "verbose": true})
        )
        .unwrap(),
        json!({"question": "why?", "count": 7, "verbose": true}),
        "given values win over defaults"
    );
}

#[test]
fn a_missing_required_input_is_refused() {
    let spec = valid(WITH_INPUTS);
    assert!(bad_input(&spec, json!({"count": 1})).contains("`question` is required"));
    assert!(bad_input(&spec, json!({})).contains("`question` is required"));
    assert!(bad_input(&spec, Value::Null).contains("`question` is required"));
}

#[test]
fn an_input_of_the_wrong_type_is_refused() {
    let spec = valid(WITH_INPUTS);
    let message = bad_input(&spec, json!({"question": 42}));
    assert!(
        message.contains("`question` must be of type string"),
        "{message}"
    );
    let message = bad_input(&spec, json!({"question": "q", "count": 2.5}));
    assert!(
        message.contains("`count` must be of type integer"),
        "{message}"
    );
    let message = bad_input(&spec, json!({"question": "q", "extra": [1]}));
    assert!(
        message.contains("`extra` must be of type object"),
        "{message}"
    );
    let message = bad_input(&spec, json!(["question"]));
    assert!(message.contains("the input must be an object"), "{message}");
}

#[test]
fn an_undeclared_input_is_refused() {
    let spec = valid(WITH_INPUTS);
    let message = bad_input(&spec, json!({"question": "q", "qestion": "typo"}));
    assert!(
        message.contains("`qestion` is not a declared input"),
        "{message}"
    );
    // Every problem at once.
    let message = bad_input(&spec, json!({"count": "three", "other": 1}));
    for needle in [
        "`other` is not a declared input",
        "`question` is required",
        "`count` must be",
    ] {
        assert!(message.contains(needle), "{message} should say {needle}");
    }
}

#[test]
fn a_spec_without_declared_inputs_takes_any_input() {
    let spec = valid("name: k\nnodes: [{id: a, kind: llm, prompt: hi}]\n");
    assert!(spec.inputs.is_empty());
    assert_eq!(
        validate_input(&spec, &json!(["anything"])).unwrap(),
        json!(["anything"])
    );
}

#[test]
fn a_default_of_the_wrong_type_is_refused_when_loading() {
    let errors = refused(
        r#"
        name: k
        inputs:
          count:
            type: integer
            default: three
        nodes:
          - id: a
            kind: llm
            prompt: "{{ input.count }}"
        "#,
    );
    expect_only(
        &errors,
        "inputs.count.default",
        Some(5),
        "not of type integer",
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Fragments

const SUMMARIZE_V1: &str = r#"
    fragment: summarize
    description: A short summary.
    node:
      kind: llm
      model: sim-small
      system: Be brief.
      prompt: "Summarize: {{ input.text }}"
      max_tokens: 300
"#;

const SUMMARIZE_V2: &str = r#"
    fragment: summarize
    node:
      kind: llm
      model: sim-large
      system: Be very brief.
      prompt: "Summarize: {{ input.text }}"
      max_tokens: 500
"#;

/// `summarize` versions 1 and 2, loaded from their documents.
fn registry() -> Registry {
    let mut registry = Registry::new();
    for text in [SUMMARIZE_V1, SUMMARIZE_V2] {
        let (name, node) = load_fragment(&dedent(text)).unwrap();
        assert_eq!(name, "summarize");
        registry.entry(name).or_default().push(node);
    }
    registry
}

/// A spec whose second node uses `reference`, setting its own prompt.
fn using(reference: &str) -> String {
    dedent(&format!(
        r#"
        name: frag
        nodes:
          - id: draft
            kind: llm
            prompt: "{{{{ input.text }}}}"
          - id: summary
            use: {reference}
            prompt: "Summarize {{{{ steps.draft.output }}}}"
        "#
    ))
}

#[test]
fn load_fragment_gives_the_name_and_the_partial_node() {
    let (name, node) = load_fragment(&dedent(SUMMARIZE_V1)).unwrap();
    assert_eq!(name, "summarize");
    assert_eq!(
        node,
        json!({
            "kind": "llm",
            "model": "sim-small",
            "system": "Be brief.",
            "prompt": "Summarize: {{ input.text }}",
            "max_tokens": 300
        })
    );
}

#[test]
fn a_fragment_at_a_version_merges_under_the_nodes_own_fields() {
    let spec = load(&using("summarize@1"), prod(), &registry()).unwrap();
    let node = spec.node("summary").unwrap();
    assert_eq!(node.kind.as_str(), "llm", "from the fragment");
    assert_eq!(node.model.as_deref(), Some("sim-small"), "from version 1");
    assert_eq!(node.system.as_deref(), Some("Be brief."));
    assert_eq!(node.max_tokens, Some(300));
    assert_eq!(
        node.prompt.as_deref(),
        Some("Summarize {{ steps.draft.output }}"),
        "the node's own field wins"
    );
    assert_eq!(node.id, "summary");

    // An explicit older version stays that version when newer ones exist.
    let spec_again = load(&using("summarize@1"), prod(), &registry()).unwrap();
    assert_eq!(spec_again, spec);
}

#[test]
fn a_fragment_without_a_version_is_the_newest() {
    let spec = load(&using("summarize"), prod(), &registry()).unwrap();
    let node = spec.node("summary").unwrap();
    assert_eq!(node.model.as_deref(), Some("sim-large"));
    assert_eq!(node.system.as_deref(), Some("Be very brief."));
    assert_eq!(node.max_tokens, Some(500));
    assert_eq!(
        node.prompt.as_deref(),
        Some("Summarize {{ steps.draft.output }}")
    );
    let v2 = load(&using("summarize@2"), prod(), &registry()).unwrap();
    assert_eq!(v2, spec);
}

#[test]
fn an_unknown_fragment_or_version_is_refused_at_the_use() {
    for (reference, needle) in [
        ("summarise@1", "no fragment `summarise@1` is registered"),
        ("summarise", "no fragment `summarise` is registered"),
        ("summarize@3", "no fragment `summarize@3` is registered"),
        ("summarize@0", "no fragment `summarize@0` is registered"),
        ("summarize@latest", "the version after `@` must be a number"),
        ("summarize@-1", "the version after `@` must be a number"),
    ] {
        let errors = refused_raw(&using(reference), prod(), &registry());
        expect_only(&errors, "nodes[1].use", Some(7), needle);
    }
    // No fragments registered at all.
    let errors = refused_raw(&using("summarize@1"), prod(), &no_fragments());
    expect_only(&errors, "nodes[1].use", Some(7), "no fragment");
    // `use` must be a string.
    let errors = refused_raw(
        &using("summarize@1").replace("use: summarize@1", "use: [summarize]"),
        prod(),
        &registry(),
    );
    expect_only(&errors, "nodes[1].use", Some(7), "`use` names a fragment");
}

#[test]
fn load_fragment_refuses_a_fragment_that_uses_a_fragment() {
    let Err(Error::Spec(errors)) = load_fragment(&dedent(
        r#"
        fragment: nested
        node:
          use: summarize@1
          max_tokens: 10
        "#,
    )) else {
        panic!("a fragment using a fragment is refused")
    };
    expect_only(
        &errors,
        "node.use",
        Some(3),
        "a fragment cannot use another fragment",
    );
}

#[test]
fn load_fragment_refuses_unknown_fields_and_bad_names() {
    let Err(Error::Spec(errors)) = load_fragment(&dedent(
        r#"
        fragment: Summarize Me
        version: 2
        nodes:
          - kind: llm
        "#,
    )) else {
        panic!("refused")
    };
    expect(&errors, "fragment", Some(1), "needs a name");
    expect(
        &errors,
        "version",
        Some(2),
        "unknown field; a fragment has `fragment`",
    );
    expect(&errors, "nodes", Some(3), "unknown field");
    expect(&errors, "node", None, "needs an object");
    assert_eq!(errors.len(), 4, "{errors:#?}");

    let Err(Error::Spec(errors)) = load_fragment("- fragment: x\n") else {
        panic!("refused")
    };
    expect_only(&errors, "", Some(1), "a fragment is an object");
}

#[test]
fn load_fragment_refuses_unknown_fields_in_the_node() {
    let Err(Error::Spec(errors)) = load_fragment(&dedent(
        r#"
        fragment: typo
        node:
          kind: llm
          promt: hi
        "#,
    )) else {
        panic!("a fragment whose node has an unknown field is refused")
    };
    expect(&errors, "node.promt", Some(4), "unknown field `promt`");
}

#[test]
fn a_fragment_field_that_does_not_apply_is_reported_on_the_using_node() {
    let mut registry = registry();
    registry.insert(
        "waiter".into(),
        vec![json!({"kind": "wait", "duration_ms": 5})],
    );
    let errors = refused_raw(&using("waiter"), prod(), &registry);
    expect_only(
        &errors,
        "nodes[1].prompt",
        Some(8),
        "`prompt` does not apply to a `wait` node",
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Overlays

const OVERLAID: &str = r#"
    name: ov
    nodes:
      - id: draft
        kind: llm
        model: sim-small
        temperature: 0.7
        prompt: "{{ input.q }}"
    overlays:
      env:
        prod:
          nodes:
            draft: {model: sim-large, temperature: null}
        staging:
          description: staging only
          nodes:
            draft: {model: sim-staging}
      tenant:
        acme:
          nodes:
            draft: {model: sim-acme, max_tokens: 50}
"#;

fn with(env: Option<&'static str>, tenant: &'static [&'static str]) -> WorkflowSpec {
    load(
        &dedent(OVERLAID),
        LoadOptions { env, tenant },
        &no_fragments(),
    )
    .unwrap_or_else(|e| panic!("loads: {e}"))
}

#[test]
fn the_environments_overlay_patches_a_node() {
    let spec = with(Some("prod"), &[]);
    let draft = spec.node("draft").unwrap();
    assert_eq!(draft.model.as_deref(), Some("sim-large"));
    assert_eq!(
        draft.prompt.as_deref(),
        Some("{{ input.q }}"),
        "the rest stays"
    );
    assert_eq!(
        spec.description, "",
        "staging's patch does not apply in prod"
    );
    assert_eq!(
        spec.overlays,
        Default::default(),
        "a loaded spec has no overlays left"
    );
}

#[test]
fn a_null_in_an_overlay_removes_the_field() {
    let draft = with(Some("prod"), &[]).node("draft").unwrap().clone();
    assert_eq!(draft.temperature, None);
    let base = with(None, &[]).node("draft").unwrap().clone();
    assert_eq!(base.temperature, Some(0.7));
}

#[test]
fn the_tenants_overlay_applies_after_the_environments() {
    let spec = with(Some("prod"), TENANT);
    let draft = spec.node("draft").unwrap();
    assert_eq!(
        draft.model.as_deref(),
        Some("sim-acme"),
        "both set it: the tenant wins"
    );
    assert_eq!(draft.temperature, None, "the environment's removal stays");
    assert_eq!(draft.max_tokens, Some(50));
    // By id as well as by name; the id's overlay is the one that applies when both exist.
    let text = dedent(OVERLAID).replace("    acme:\n", "    t-7f3a:\n");
    let spec = load(&text, prod(), &no_fragments()).unwrap();
    assert_eq!(
        spec.node("draft").unwrap().model.as_deref(),
        Some("sim-acme")
    );
    let text = dedent(OVERLAID) + "    t-7f3a:\n      nodes:\n        draft: {model: by-id}\n";
    let spec = load(&text, prod(), &no_fragments()).unwrap();
    assert_eq!(spec.node("draft").unwrap().model.as_deref(), Some("by-id"));
    assert_eq!(
        spec.node("draft").unwrap().max_tokens,
        None,
        "only one tenant overlay applies"
    );
}

#[test]
fn overlays_not_chosen_do_not_apply() {
    let base = with(None, &[]);
    assert_eq!(
        base.node("draft").unwrap().model.as_deref(),
        Some("sim-small")
    );
    assert_eq!(base.description, "");
    // An environment without an overlay, another tenant.
    assert_eq!(with(Some("dev"), &["t-other", "globex"]), base);
    // Staging's overlay, top-level fields included, applies only in staging.
    let staging = with(Some("staging"), &[]);
    assert_eq!(
        staging.node("draft").unwrap().model.as_deref(),
        Some("sim-staging")
    );
    assert_eq!(staging.node("draft").unwrap().temperature, Some(0.7));
    assert_eq!(staging.description, "staging only");
    // The tenant's overlay applies without an environment.
    let tenant_only = with(None, TENANT);
    assert_eq!(
        tenant_only.node("draft").unwrap().model.as_deref(),
        Some("sim-acme")
    );
    assert_eq!(tenant_only.node("draft").unwrap().temperature, Some(0.7));
}

#[test]
fn an_overlay_naming_an_unknown_node_is_refused_where_it_names_it() {
    let errors = refused(
        r#"
        name: ov
        nodes:
          - id: draft
            kind: llm
            prompt: hi
        overlays:
          env:
            prod:
              nodes:
                draft: {model: sim-large}
                drfat: {model: sim-large}
          tenant:
            acme:
              nodes:
                ghost: {model: x}
        "#,
    );
    expect(
        &errors,
        "overlays.env.prod.nodes.drfat",
        Some(11),
        "the spec has no node `drfat`",
    );
    expect(
        &errors,
        "overlays.tenant.acme.nodes.ghost",
        Some(15),
        "no node `ghost`",
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn malformed_overlays_are_refused() {
    let errors = refused(
        r#"
        name: ov
        nodes:
          - id: draft
            kind: llm
            prompt: hi
        overlays:
          region:
            eu: {}
          env:
            prod:
              nodes: [draft]
        "#,
    );
    expect(&errors, "overlays.region", Some(7), "unknown overlay kind");
    expect(
        &errors,
        "overlays.env.prod.nodes",
        Some(11),
        "maps node ids to patches",
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");

    let errors = refused("name: ov\nnodes: [{id: a, kind: llm, prompt: hi}]\noverlays: [prod]\n");
    expect_only(
        &errors,
        "overlays",
        Some(3),
        "an object with `env` and/or `tenant`",
    );

    let errors = refused(
        "name: ov\nnodes: [{id: a, kind: llm, prompt: hi}]\noverlays:\n  env:\n    prod: sim-large\n",
    );
    expect_only(
        &errors,
        "overlays.env.prod",
        Some(5),
        "an overlay is an object",
    );
}

#[test]
fn an_overlay_that_breaks_the_spec_is_refused() {
    // The overlay's result is checked like any spec: here it removes the prompt.
    let errors = refused(
        r#"
        name: ov
        nodes:
          - id: draft
            kind: llm
            prompt: hi
        overlays:
          env:
            prod:
              nodes:
                draft: {prompt: null}
        "#,
    );
    expect_only(&errors, "nodes[0]", Some(3), "a `llm` call needs `prompt`");
}

#[test]
fn fragments_resolve_before_overlays() {
    let text = using("summarize@1")
        + "overlays:\n  env:\n    prod:\n      nodes:\n        summary: {model: sim-prod}\n";
    let spec = load(&text, prod(), &registry()).unwrap();
    let node = spec.node("summary").unwrap();
    assert_eq!(
        node.model.as_deref(),
        Some("sim-prod"),
        "the overlay wins over the fragment"
    );
    assert_eq!(
        node.system.as_deref(),
        Some("Be brief."),
        "the fragment's other fields stay"
    );
}

#[test]
fn overlays_by_kind_must_be_objects() {
    let errors = refused(
        r#"
        name: ov
        nodes:
          - id: draft
            kind: llm
            prompt: hi
        overlays:
          env: prod
          tenant: [acme]
        "#,
    );
    expect(&errors, "overlays.env", Some(7), "");
    expect(&errors, "overlays.tenant", Some(8), "");
}

// ---------------------------------------------------------------------------------------------
// Other loader bugs, written as the behaviour expected

#[test]
fn duplicate_keys_in_json_are_refused() {
    let errors = refused(
        r#"
        {
          "name": "k",
          "nodes": [
            {"id": "a", "kind": "llm", "prompt": "the first", "prompt": "the second"}
          ]
        }
        "#,
    );
    expect_only(&errors, "", Some(4), "duplicate");
}

#[test]
fn a_type_error_outside_the_nodes_is_located_at_its_field() {
    let errors = refused(
        r#"
        name: k
        inputs:
          q: {type: strin}
        nodes:
          - id: a
            kind: llm
            prompt: hi
        "#,
    );
    expect_only(&errors, "inputs.q.type", Some(3), "unknown variant `strin`");
}

// ---------------------------------------------------------------------------------------------
// 7. The JSON Schema, and the examples

fn updating() -> bool {
    std::env::var_os("SWITCHYARD_UPDATE_SCHEMAS").is_some()
}

fn schema_path() -> PathBuf {
    root().join("schemas/workflow.schema.json")
}

#[test]
fn the_committed_json_schema_matches_the_rust_types() {
    let schema = serde_json::to_string_pretty(&WorkflowSpec::json_schema()).unwrap() + "\n";
    let path = schema_path();
    if updating() {
        std::fs::write(&path, &schema).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing (SWITCHYARD_UPDATE_SCHEMAS=1 writes it)",
            path.display()
        )
    });
    assert_eq!(
        committed, schema,
        "schemas/workflow.schema.json differs from WorkflowSpec (SWITCHYARD_UPDATE_SCHEMAS=1 rewrites it)"
    );
}

/// The committed schema, compiled.
fn schema_validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path()).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("the committed schema is a valid JSON Schema")
}

/// Schema errors of `document`, one line each.
fn schema_errors(validator: &jsonschema::Validator, document: &Value) -> Vec<String> {
    validator
        .iter_errors(document)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// The YAML files directly in `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

/// The example fragments, each registered as version 1 of its name.
fn example_fragments() -> Registry {
    let mut registry = Registry::new();
    for path in yaml_files(&root().join("examples/workflows/fragments")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let (name, node) =
            load_fragment(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            registry.insert(name, vec![node]).is_none(),
            "{}: a fragment of that name exists",
            path.display()
        );
    }
    registry
}

/// JSON merge patch (RFC 7396), as the loader applies fragments.
fn merge(target: &mut Value, patch: &Value) {
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

/// The document with each `use` replaced by its fragment under the node's own fields: the
/// committed schema describes nodes after fragments are applied (see
/// `the_schema_admits_nodes_that_use_a_fragment`).
fn with_fragments_applied(mut document: Value, fragments: &Registry) -> Value {
    if let Some(nodes) = document.get_mut("nodes").and_then(Value::as_array_mut) {
        for node in nodes {
            let Some(reference) = node.as_object_mut().and_then(|n| n.remove("use")) else {
                continue;
            };
            let reference = reference.as_str().expect("`use` is a string");
            let (name, version) = match reference.split_once('@') {
                Some((name, version)) => (name, version.parse::<usize>().unwrap()),
                None => (reference, fragments[reference].len()),
            };
            let mut merged = fragments[name][version - 1].clone();
            merge(&mut merged, node);
            *node = merged;
        }
    }
    document
}

/// The example workflows (not the fragments): file name → text.
fn example_workflows() -> Vec<(String, String)> {
    let examples: Vec<(String, String)> = yaml_files(&root().join("examples/workflows"))
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .filter(|(_, text)| {
            // A fragment document at the top level would not be a workflow.
            !parse_document(text).is_ok_and(|d| d.get("fragment").is_some())
        })
        .collect();
    let names: Vec<&str> = examples.iter().map(|(n, _)| n.as_str()).collect();
    for expected in ["review.yaml", "saga.yaml", "support-triage.yaml"] {
        assert!(
            names.contains(&expected),
            "examples/workflows/{expected} is missing"
        );
    }
    examples
}

#[test]
fn every_example_workflow_fits_the_schema_and_loads() {
    let validator = schema_validator();
    let fragments = example_fragments();
    assert!(fragments.contains_key("summarize"));
    for (name, text) in example_workflows() {
        let document = parse_document(&text)
            .unwrap_or_else(|e| panic!("{name}: {}", switchyard_workflows::spec::describe(&e)));
        let problems = schema_errors(&validator, &with_fragments_applied(document, &fragments));
        assert!(
            problems.is_empty(),
            "{name} does not fit the schema: {problems:#?}"
        );
        for options in [LoadOptions::default(), prod()] {
            load(&text, options, &fragments).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

#[test]
fn the_examples_say_what_they_say() {
    let fragments = example_fragments();
    let read =
        |name: &str| std::fs::read_to_string(root().join("examples/workflows").join(name)).unwrap();

    let triage = load(&read("support-triage.yaml"), prod(), &fragments).unwrap();
    let kinds: Vec<&str> = triage.nodes.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(kinds, ["llm", "tool", "llm"]);
    assert_eq!(triage.nodes[0].model.as_deref(), Some("sim-small"));
    assert_eq!(triage.nodes[1].tool.as_deref(), Some("lookup"));
    assert_eq!(
        triage.node("reply").unwrap().model.as_deref(),
        Some("sim-large"),
        "prod overlay"
    );
    let dev = load(
        &read("support-triage.yaml"),
        LoadOptions::default(),
        &fragments,
    )
    .unwrap();
    assert_eq!(
        dev.node("reply").unwrap().model,
        None,
        "no overlay outside prod"
    );
    assert_eq!(
        validate_input(
            &triage,
            &json!({"ticket": "I was charged twice", "customer_id": "c-42"})
        )
        .unwrap(),
        json!({"ticket": "I was charged twice", "customer_id": "c-42", "tone": "friendly"})
    );

    let saga = load(&read("saga.yaml"), prod(), &fragments).unwrap();
    let tools: Vec<&str> = saga
        .nodes
        .iter()
        .filter_map(|n| n.tool.as_deref())
        .collect();
    assert!(tools.len() >= 3, "{tools:?}");
    for node in saga
        .nodes
        .iter()
        .filter(|n| n.kind.as_str() == "tool" && n.id != "quote")
    {
        let undo = node
            .compensate
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no compensate", node.id));
        assert_eq!(undo.kind.as_str(), "tool");
    }
    assert!(saga.nodes.iter().any(|n| n.kind.as_str() == "branch"));

    let review = load(&read("review.yaml"), prod(), &fragments).unwrap();
    let each = review.node("review_each").unwrap();
    assert_eq!(
        (each.over.as_deref(), each.concurrency),
        (Some("input.items"), Some(2))
    );
    let approve = review.node("approve").unwrap();
    assert_eq!(approve.kind.as_str(), "human_input");
    jsonschema::validator_for(approve.schema.as_ref().unwrap()).unwrap();
    assert!(
        review
            .nodes
            .iter()
            .any(|n| n.kind.as_str() == "wait" && n.duration_ms.is_some())
    );
    let summary = review.node("summary").unwrap();
    assert_eq!(summary.kind.as_str(), "llm", "from the fragment");
    assert_eq!(
        summary.system,
        fragments["summarize"][0]["system"]
            .as_str()
            .map(str::to_owned)
    );
    assert!(
        summary
            .prompt
            .as_deref()
            .unwrap()
            .contains("Summarize these reviews"),
        "its own"
    );
}

#[test]
fn the_schema_admits_nodes_that_use_a_fragment() {
    let validator = schema_validator();
    let text = std::fs::read_to_string(root().join("examples/workflows/review.yaml")).unwrap();
    let problems = schema_errors(&validator, &parse_document(&text).unwrap());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_example_tool_definition_loads() {
    let text =
        std::fs::read_to_string(root().join("examples/workflows/tools/lookup.yaml")).unwrap();
    let tool = switchyard_workflows::registry::ToolDef::load(&text).unwrap();
    assert_eq!(tool.name, "lookup");
    assert!(
        tool.check_response(&json!({"name": "Customer c-1", "plan": "pro"}))
            .is_ok()
    );
    let refused = tool.check_response(&json!({"name": 5})).unwrap_err();
    assert!(refused.contains("response schema"), "{refused}");
    // A hostile definition: every problem at once.
    let Err(Error::Spec(errors)) = switchyard_workflows::registry::ToolDef::load(
        "name: Bad Name\nurl: ftp://x\nmethod: BREW\ntimeout_ms: 0\nresponse_schema: {type: 5}\n",
    ) else {
        panic!("a bad tool definition loaded")
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["name", "url", "method", "timeout_ms", "response_schema"]
    );
}

#[test]
fn retries_timeouts_and_budgets_are_bounded() {
    let errors = refused(
        r#"
        name: k
        defaults:
          retry: {max_attempts: 4000000000, backoff_ms: 0}
          timeout_ms: 0
        limits: {max_steps: 0}
        nodes:
          - id: a
            kind: tool
            tool: t
            timeout_ms: 0
            retry: {backoff_ms: 99999999999}
        "#,
    );
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for path in [
        "defaults.retry.max_attempts",
        "defaults.timeout_ms",
        "limits.max_steps",
        "nodes[0].timeout_ms",
        "nodes[0].retry.backoff_ms",
    ] {
        assert!(paths.contains(&path), "{path} missing from {errors:#?}");
    }
}
