//! A guardrail policy document: its JSON form, and its compilation into a [`Guard`] with every
//! problem reported at once (bounded: the document's size, the rules' counts, each pattern's
//! compiled size).

use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::Value;

use super::{Action, Guard, PiiKind, PiiRule, Stages, TopicRule};

/// The longest policy document accepted (a tenant setting's limit).
const MAX_POLICY_BYTES: usize = 4096;
/// A compiled pattern's size bound (the `regex` crate matches in linear time; this bounds its
/// memory).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    pii: Option<PiiSpec>,
    #[serde(default)]
    topics: Vec<TopicSpec>,
    #[serde(default)]
    max_prompt_chars: Option<u64>,
    #[serde(default)]
    max_prompt_tokens: Option<u64>,
    #[serde(default)]
    output_schema: Option<Value>,
    #[serde(default = "one")]
    schema_retries: u8,
}

fn one() -> u8 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PiiSpec {
    #[serde(default = "redact")]
    action: Action,
    /// The kinds looked for (default: every built-in one, and `name` when names are listed).
    #[serde(default)]
    kinds: Option<Vec<PiiKind>>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name_patterns: Vec<String>,
    #[serde(default)]
    stages: Stages,
}

fn redact() -> Action {
    Action::Redact
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicSpec {
    name: String,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default)]
    stages: Stages,
}

impl Guard {
    /// Compiles a policy document, reporting every problem at once.
    pub fn compile(document: &str) -> Result<Guard, String> {
        if document.len() > MAX_POLICY_BYTES {
            return Err(format!(
                "guardrails: the policy is {} bytes; at most {MAX_POLICY_BYTES}",
                document.len()
            ));
        }
        let value: Value =
            serde_json::from_str(document).map_err(|e| format!("guardrails: {e}"))?;
        if !value.is_object() {
            return Err("guardrails: the policy must be a JSON object".into());
        }
        let spec: Spec = serde_json::from_value(value).map_err(|e| format!("guardrails: {e}"))?;
        let mut problems = Vec::new();
        let pii = spec.pii.map(|p| compile_pii(p, &mut problems));
        if spec.topics.len() > 64 {
            problems.push("guardrails.topics: at most 64 topics".to_owned());
        }
        let topics = spec
            .topics
            .into_iter()
            .enumerate()
            .filter_map(|(i, t)| compile_topic(i, t, &mut problems))
            .collect();
        for (name, max) in [
            ("max_prompt_chars", spec.max_prompt_chars),
            ("max_prompt_tokens", spec.max_prompt_tokens),
        ] {
            if max == Some(0) {
                problems.push(format!("guardrails.{name} must be at least 1"));
            }
        }
        if spec.schema_retries > 3 {
            problems.push("guardrails.schema_retries must be 0-3".to_owned());
        }
        let output_schema = spec.output_schema.and_then(|schema| {
            jsonschema::validator_for(&schema)
                .map_err(|e| problems.push(format!("guardrails.output_schema: {e}")))
                .ok()
        });
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(Guard {
            pii,
            topics,
            max_prompt_chars: spec.max_prompt_chars,
            max_prompt_tokens: spec.max_prompt_tokens,
            output_schema,
            schema_retries: spec.schema_retries,
            fingerprint: *blake3::hash(document.as_bytes()).as_bytes(),
        })
    }
}

fn pattern(source: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(source)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

fn compile_pii(spec: PiiSpec, problems: &mut Vec<String>) -> PiiRule {
    if !matches!(spec.action, Action::Redact | Action::Block) {
        problems.push("guardrails.pii.action must be redact or block".to_owned());
    }
    if spec.names.len() > 10_000 || spec.name_patterns.len() > 64 {
        problems.push("guardrails.pii: at most 10000 names and 64 name_patterns".to_owned());
    }
    let mut alternatives: Vec<String> = spec
        .names
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .map(|n| format!(r"\b{}\b", regex::escape(n)))
        .collect();
    for (i, source) in spec.name_patterns.iter().enumerate() {
        match pattern(source) {
            Ok(_) => alternatives.push(format!("(?:{source})")),
            Err(e) => problems.push(format!("guardrails.pii.name_patterns[{i}]: {e}")),
        }
    }
    let names = if alternatives.is_empty() {
        None
    } else {
        pattern(&format!("(?i){}", alternatives.join("|")))
            .map_err(|e| problems.push(format!("guardrails.pii.names: {e}")))
            .ok()
    };
    let kinds = spec.kinds.unwrap_or_else(|| {
        let mut kinds = PiiKind::BUILT_IN.to_vec();
        if names.is_some() {
            kinds.push(PiiKind::Name);
        }
        kinds
    });
    if kinds.contains(&PiiKind::Name) && names.is_none() {
        problems.push("guardrails.pii: kind `name` needs names or name_patterns".to_owned());
    }
    // Cards and IBANs before phones: their digit runs would otherwise be taken for numbers.
    let mut ordered: Vec<PiiKind> = Vec::new();
    for kind in [
        PiiKind::Card,
        PiiKind::Iban,
        PiiKind::Email,
        PiiKind::Ip,
        PiiKind::Phone,
        PiiKind::Name,
    ] {
        if kinds.contains(&kind) {
            ordered.push(kind);
        }
    }
    PiiRule {
        action: spec.action,
        kinds: ordered,
        names,
        stages: spec.stages,
    }
}

fn compile_topic(i: usize, spec: TopicSpec, problems: &mut Vec<String>) -> Option<TopicRule> {
    let at = format!("guardrails.topics[{i}]");
    let valid_name = !spec.name.is_empty()
        && spec.name.len() <= 64
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_name {
        problems.push(format!(
            "{at}.name must be 1-64 letters, digits, `_` or `-`"
        ));
    }
    if spec.keywords.is_empty() && spec.patterns.is_empty() {
        problems.push(format!("{at} needs keywords or patterns"));
    }
    if spec.keywords.len() > 1000 || spec.patterns.len() > 64 {
        problems.push(format!("{at}: at most 1000 keywords and 64 patterns"));
    }
    let mut alternatives: Vec<String> = spec
        .keywords
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .map(|k| format!(r"(?i:\b{}\b)", regex::escape(k)))
        .collect();
    for (j, source) in spec.patterns.iter().enumerate() {
        match pattern(source) {
            Ok(_) => alternatives.push(format!("(?:{source})")),
            Err(e) => problems.push(format!("{at}.patterns[{j}]: {e}")),
        }
    }
    if !valid_name || alternatives.is_empty() {
        return None;
    }
    match pattern(&alternatives.join("|")) {
        Ok(compiled) => Some(TopicRule {
            rule: format!("topic.{}", spec.name),
            pattern: compiled,
            stages: spec.stages,
        }),
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            None
        }
    }
}
