//! Guardrails: a tenant's checks before and after the model.
//!
//! A tenant's policy is its `guardrails` setting, a JSON document ([`GUARDRAILS_SETTING`]):
//!
//! ```json
//! {"pii": {"action": "redact", "kinds": ["email", "phone", "card", "iban", "ip", "name"],
//!          "names": ["Ada Lovelace"], "name_patterns": ["Dr\\. [A-Z][a-z]+"]},
//!  "topics": [{"name": "weapons", "keywords": ["nerve agent"], "patterns": ["(?i)build an? bomb"]}],
//!  "max_prompt_chars": 20000, "max_prompt_tokens": 4000,
//!  "output_schema": {"type": "object", "required": ["answer"]}, "schema_retries": 1}
//! ```
//!
//! Input rules run on every message's text before the request is routed (a redacted prompt is
//! what the provider, the cache and the log see); output rules run on the answer's text and
//! tool-call arguments before the client sees them, and on a stream chunk-wise
//! ([`StreamGuard`]). Every rule applies to `input`, `output` or `both` (the default). Each
//! stage's decision is one `GuardrailChecked` event in the inference's stream naming the rules
//! that fired and how often, never the text they matched. A block answers `400
//! content_blocked` naming the rule.

mod pii;
mod policy;
mod stream;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use switchyard_events::{GuardrailChecked, GuardrailHit};

pub use pii::{PiiKind, iban_valid, luhn};
pub use stream::StreamGuard;

use crate::openai::ChatRequest;

/// The tenant setting that holds the guardrail policy (JSON; null or absent: no guardrails).
pub const GUARDRAILS_SETTING: &str = "guardrails";

/// Where a rule applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stages {
    Input,
    Output,
    #[default]
    Both,
}

impl Stages {
    fn covers(self, stage: Stage) -> bool {
        matches!(
            (self, stage),
            (Stages::Both, _) | (Stages::Input, Stage::Input) | (Stages::Output, Stage::Output)
        )
    }
}

/// The two places the guard looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Input,
    Output,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Input => "input",
            Stage::Output => "output",
        }
    }
}

/// What a rule (or a stage's verdict) did, mildest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Pass,
    /// The answer broke the output schema and was asked for again.
    Retry,
    Redact,
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Retry => "retry",
            Action::Redact => "redact",
            Action::Block => "block",
        }
    }
}

#[derive(Debug)]
struct PiiRule {
    action: Action,
    kinds: Vec<PiiKind>,
    names: Option<Regex>,
    stages: Stages,
}

#[derive(Debug)]
struct TopicRule {
    rule: String,
    pattern: Regex,
    stages: Stages,
}

/// A tenant's compiled guardrail policy.
#[derive(Debug)]
pub struct Guard {
    pii: Option<PiiRule>,
    topics: Vec<TopicRule>,
    max_prompt_chars: Option<u64>,
    max_prompt_tokens: Option<u64>,
    output_schema: Option<jsonschema::Validator>,
    schema_retries: u8,
    fingerprint: [u8; 32],
}

/// One rule that fired at a stage: what it did and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// `pii.<kind>`, `topic.<name>`, `max_prompt_chars`, `max_prompt_tokens`, `output_schema`.
    pub rule: String,
    pub action: Action,
    pub count: u32,
}

/// A stage's decision: the rules that fired (none: pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub stage: Stage,
    pub hits: Vec<Hit>,
}

impl Verdict {
    pub fn new(stage: Stage) -> Self {
        Verdict {
            stage,
            hits: Vec::new(),
        }
    }

    /// The strongest action of the rules that fired.
    pub fn action(&self) -> Action {
        self.hits
            .iter()
            .map(|h| h.action)
            .max()
            .unwrap_or(Action::Pass)
    }

    /// The first rule that blocked.
    pub fn blocked_by(&self) -> Option<&str> {
        self.hits
            .iter()
            .find(|h| h.action == Action::Block)
            .map(|h| h.rule.as_str())
    }

    /// Records that `rule` fired `count` times, doing `action`.
    pub fn hit(&mut self, rule: &str, action: Action, count: u32) {
        if count == 0 {
            return;
        }
        if let Some(hit) = self.hits.iter_mut().find(|h| h.rule == rule) {
            hit.count = hit.count.saturating_add(count);
            hit.action = hit.action.max(action);
        } else {
            self.hits.push(Hit {
                rule: rule.to_owned(),
                action,
                count,
            });
        }
    }

    /// The `GuardrailChecked` event of this verdict (rules and counts, never the text).
    pub fn event(&self) -> GuardrailChecked {
        crate::metrics::GUARDRAILS
            .decisions
            .with_label_values(&[self.stage.as_str(), self.action().as_str()])
            .inc();
        GuardrailChecked {
            stage: self.stage.as_str().to_owned(),
            action: self.action().as_str().to_owned(),
            rules: self
                .hits
                .iter()
                .map(|h| GuardrailHit {
                    rule: h.rule.clone(),
                    action: h.action.as_str().to_owned(),
                    count: h.count,
                })
                .collect(),
        }
    }

    /// The message of a block: which rule, at which stage.
    pub fn block_message(&self) -> Option<String> {
        self.blocked_by().map(|rule| {
            format!(
                "the tenant's guardrail `{rule}` blocked this request's {}",
                match self.stage {
                    Stage::Input => "prompt",
                    Stage::Output => "answer",
                }
            )
        })
    }
}

impl Guard {
    /// A hash of the policy: cached answers made under another policy are not served.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// How many times an answer that breaks `output_schema` is asked for again.
    pub fn schema_retries(&self) -> u8 {
        if self.output_schema.is_some() {
            self.schema_retries
        } else {
            0
        }
    }

    /// Checks (and redacts, in place) a chat request's prompt.
    pub fn check_input(&self, request: &mut ChatRequest) -> Verdict {
        let mut verdict = Verdict::new(Stage::Input);
        if let Some(max) = self.max_prompt_chars {
            let chars: usize = request
                .messages
                .iter()
                .map(|m| m.text().chars().count())
                .sum();
            if chars as u64 > max {
                verdict.hit("max_prompt_chars", Action::Block, 1);
            }
        }
        if let Some(max) = self.max_prompt_tokens
            && request.estimate_prompt_tokens() > max
        {
            verdict.hit("max_prompt_tokens", Action::Block, 1);
        }
        for message in &mut request.messages {
            match &mut message.content {
                Some(Value::String(text)) => self.scan_in_place(Stage::Input, text, &mut verdict),
                Some(Value::Array(parts)) => {
                    for part in parts {
                        if let Some(Value::String(text)) = part.get_mut("text") {
                            self.scan_in_place(Stage::Input, text, &mut verdict);
                        }
                    }
                }
                _ => {}
            }
        }
        verdict
    }

    /// Checks (and redacts, in place) embeddings inputs, as a prompt's messages are.
    pub fn check_texts(&self, texts: &mut [String]) -> Verdict {
        let mut verdict = Verdict::new(Stage::Input);
        let chars: u64 = texts.iter().map(|t| t.chars().count() as u64).sum();
        if self.max_prompt_chars.is_some_and(|max| chars > max) {
            verdict.hit("max_prompt_chars", Action::Block, 1);
        }
        if self
            .max_prompt_tokens
            .is_some_and(|max| chars.div_ceil(4) > max)
        {
            verdict.hit("max_prompt_tokens", Action::Block, 1);
        }
        for text in texts {
            self.scan_in_place(Stage::Input, text, &mut verdict);
        }
        verdict
    }

    /// Checks (and redacts, in place) the choices of a whole answer: each message's content and
    /// tool-call arguments.
    pub fn check_output(&self, choices: &mut [Value]) -> Verdict {
        let mut verdict = Verdict::new(Stage::Output);
        for choice in choices {
            if let Some(Value::String(text)) = choice.pointer_mut("/message/content") {
                self.scan_in_place(Stage::Output, text, &mut verdict);
            }
            if let Some(Value::Array(calls)) = choice.pointer_mut("/message/tool_calls") {
                for call in calls {
                    if let Some(Value::String(arguments)) = call.pointer_mut("/function/arguments")
                    {
                        self.scan_in_place(Stage::Output, arguments, &mut verdict);
                    }
                }
            }
        }
        verdict
    }

    /// Whether the first choice's content is JSON that fits `output_schema` (`Ok` when no
    /// schema is set); the error says where it does not.
    pub fn check_schema(&self, choices: &[Value]) -> Result<(), String> {
        let Some(validator) = &self.output_schema else {
            return Ok(());
        };
        let content = choices
            .first()
            .and_then(|c| c.pointer("/message/content"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.check_schema_text(validator, content)
    }

    fn check_schema_text(
        &self,
        validator: &jsonschema::Validator,
        content: &str,
    ) -> Result<(), String> {
        let value: Value =
            serde_json::from_str(content).map_err(|e| format!("the answer is not JSON ({e})"))?;
        validator.validate(&value).map_err(|error| {
            let mut message = format!("the answer does not fit the schema: {error}");
            let at = error.instance_path().to_string();
            if !at.is_empty() {
                let _ = write!(message, " (at {at})");
            }
            message
        })
    }

    fn scan_in_place(&self, stage: Stage, text: &mut String, verdict: &mut Verdict) {
        if let Some(redacted) = self.scan(stage, text, verdict) {
            *text = redacted;
        }
    }

    /// Looks for every rule of `stage` in `text`, recording hits; the redacted text when a
    /// redaction changed it.
    fn scan(&self, stage: Stage, text: &str, verdict: &mut Verdict) -> Option<String> {
        self.scan_topics(stage, text, verdict);
        self.redact(stage, text, verdict)
    }

    /// Records each blocked topic of `stage` found in `text`.
    fn scan_topics(&self, stage: Stage, text: &str, verdict: &mut Verdict) {
        for topic in self.topics.iter().filter(|t| t.stages.covers(stage)) {
            let count = topic.pattern.find_iter(text).count();
            verdict.hit(&topic.rule, Action::Block, count_u32(count));
        }
    }

    /// Finds the PII of `stage` in `text`, recording hits; the redacted text when the policy
    /// redacts and something was found.
    fn redact(&self, stage: Stage, text: &str, verdict: &mut Verdict) -> Option<String> {
        let pii = self.pii.as_ref().filter(|p| p.stages.covers(stage))?;
        let mut current: Option<String> = None;
        for kind in &pii.kinds {
            let source = current.as_deref().unwrap_or(text);
            let spans = match kind {
                PiiKind::Name => pii
                    .names
                    .as_ref()
                    .map(|n| n.find_iter(source).map(|m| m.range()).collect())
                    .unwrap_or_default(),
                other => pii::find(*other, source),
            };
            if spans.is_empty() {
                continue;
            }
            let rule = format!("pii.{}", kind.as_str());
            verdict.hit(&rule, pii.action, count_u32(spans.len()));
            crate::metrics::GUARDRAILS
                .matches
                .with_label_values(&[kind.as_str(), pii.action.as_str()])
                .inc_by(spans.len() as u64);
            if pii.action == Action::Redact {
                current = Some(replace(source, &spans, kind.placeholder()));
            }
        }
        current
    }

    /// Every PII span of `stage` in `text` (a stream never cuts inside one).
    fn spans(&self, stage: Stage, text: &str) -> Vec<std::ops::Range<usize>> {
        let Some(pii) = self.pii.as_ref().filter(|p| p.stages.covers(stage)) else {
            return Vec::new();
        };
        let mut spans = Vec::new();
        for kind in &pii.kinds {
            match kind {
                PiiKind::Name => {
                    if let Some(names) = &pii.names {
                        spans.extend(names.find_iter(text).map(|m| m.range()));
                    }
                }
                other => spans.extend(pii::find(*other, text)),
            }
        }
        spans
    }
}

fn count_u32(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// `text` with every span replaced by `placeholder`.
fn replace(text: &str, spans: &[std::ops::Range<usize>], placeholder: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for span in spans {
        if span.start < at {
            continue;
        }
        out.push_str(&text[at..span.start]);
        out.push_str(placeholder);
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}
