//! Fuzz target `workflow-spec`: workflow specs, fragments and tool definitions (YAML and JSON),
//! edited (see `switchyard_events::fuzzing`). Loading never panics, and a spec that loads
//! loads again, the same, from its own JSON form.

use std::collections::BTreeMap;

use serde_json::Value;
use switchyard_events::fuzzing::{JSON_TOKENS, Mutated, Target};

use crate::registry::ToolDef;
use crate::spec::{self, LoadOptions};

/// YAML's own tokens, the spec's keys, and JSON's.
fn dictionary() -> Vec<&'static str> {
    let mut tokens = vec![
        "- ",
        ": ",
        "&a ",
        "*a",
        "<<: *a",
        "!!str ",
        "!!binary ",
        "---\n",
        "...\n",
        "? ",
        "|\n",
        ">-\n",
        "'",
        "#",
        "\n  ",
        "\n    ",
        "~",
        "0x7fffffffffffffff",
        ".inf",
        "nodes",
        "kind",
        "next",
        "input",
        "output",
        "llm",
        "tool",
        "retrieve",
        "query",
        "parallel",
        "branches",
        "when",
        "retry",
        "timeout_ms",
        "{{ input.x }}",
        "{% for x in y %}",
        "${",
        "fragment",
        "overlays",
        "env",
        "url",
        "http://[::ffff:127.0.0.1]/",
        "response_schema",
        "$ref",
        "type",
        "properties",
    ];
    tokens.extend_from_slice(JSON_TOKENS);
    tokens
}

fn property(fragments: &BTreeMap<String, Vec<Value>>, name: &str, bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if name.starts_with("tool.") {
        let _ = ToolDef::load(text);
        return;
    }
    if name.starts_with("fragment.") {
        let _ = spec::load_fragment(text);
        return;
    }
    let options = LoadOptions {
        env: None,
        tenant: &[],
    };
    if let Ok(spec) = spec::load(text, options, fragments) {
        let json = serde_json::to_string(&spec).expect("a spec serializes");
        let again = spec::load(&json, options, fragments)
            .unwrap_or_else(|e| panic!("its own JSON form does not load: {e}\n{json}"));
        assert_eq!(again, spec);
    }
}

#[test]
fn workflow_spec() {
    let target = Target::new("workflow-spec");
    let dictionary = dictionary();
    // The corpus's fragments are registered, so that specs using them load.
    let mut fragments: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, bytes) in target.seeds() {
        if name.starts_with("fragment.") {
            let text = std::str::from_utf8(bytes).expect("UTF-8 seed");
            let (fragment, value) = spec::load_fragment(text).expect("the fragment seed loads");
            fragments.entry(fragment).or_default().push(value);
        }
    }
    // The seeds are well-formed: the target starts from specs that load.
    for (name, bytes) in target.seeds() {
        let text = std::str::from_utf8(bytes).expect("UTF-8 seed");
        let loaded = if name.starts_with("tool.") {
            ToolDef::load(text).map(|_| ())
        } else if name.starts_with("fragment.") {
            spec::load_fragment(text).map(|_| ())
        } else {
            let options = LoadOptions {
                env: None,
                tenant: &[],
            };
            spec::load(text, options, &fragments).map(|_| ())
        };
        assert!(loaded.is_ok(), "seed {name}: {loaded:?}");
        property(&fragments, name, bytes);
    }
    bolero::check!().with_type::<Mutated>().for_each(|input| {
        target.run(&dictionary, input, |name, bytes| {
            property(&fragments, name, bytes)
        })
    });
}
