//! The WorkflowSpec: what a tenant writes (YAML or JSON), and how it is loaded.
//!
//! A spec is a list of nodes run from the first one; each node goes to its `next` (default: the
//! node after it in the list; `end` ends the run), a `branch` goes to the first case whose
//! condition holds. The graph must be acyclic. Templates (`{{ input.question }}`,
//! `{{ steps.draft.output }}`) and conditions (`steps.check.output.score > 0.5`) are MiniJinja,
//! evaluated on the run's state only.
//!
//! Loading ([`load`]) goes: text → JSON value (YAML under a budget, or JSON) → fragments
//! resolved (`use: name@version`, the node's own fields win) → the environment overlay → the
//! tenant overlay → typed [`WorkflowSpec`] → graph and template checks. Every problem is
//! reported with its field path and the line it came from.

mod load;
mod locate;
mod validate;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use load::{Fragments, LoadOptions, MAX_SPEC_BYTES, load, load_fragment, parse_document};
pub(crate) use validate::valid_name;
pub use validate::validate_input;

/// The name a node's `next` may take to end the run.
pub const END: &str = "end";

/// One problem in a spec: where (field path and line) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecError {
    /// The field, as a path: `nodes[2].next`, `inputs.question.type`.
    pub path: String,
    /// 1-based line of the field in the submitted text, when it came from it.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    pub message: String,
}

impl SpecError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// All problems, one per line of text.
pub fn describe(errors: &[SpecError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A workflow: typed inputs and outputs, defaults, and the nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// Lower-case letters, digits, `-` and `_`; at most 64 characters.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Declared inputs: a run's `input` must be an object with these fields.
    #[serde(default)]
    pub inputs: BTreeMap<String, Param>,
    /// The run's output: each field a template rendered on the final state. When empty, the
    /// output is the last node's output.
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputField>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub limits: Limits,
    pub nodes: Vec<Node>,
    /// Patches per environment and per tenant (see [`load`] for the merge order). Applied while
    /// loading; never present in a loaded spec.
    #[serde(default, skip_serializing)]
    pub overlays: Overlays,
}

/// Patches applied on top of the base spec while loading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Overlays {
    /// By environment name (`SWITCHYARD_ENV` / `--env`): a patch of the spec, where `nodes` is
    /// a map from node id to a patch of that node.
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    /// By tenant id or tenant name; applied after the environment's.
    #[serde(default)]
    pub tenant: BTreeMap<String, Value>,
}

/// A declared input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Param {
    #[serde(rename = "type", default)]
    pub kind: ValueType,
    /// Required unless it has a default; `required: false` makes it optional.
    #[serde(default)]
    pub required: Option<bool>,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub description: String,
}

/// A field of the run's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputField {
    /// An expression on the final state, e.g. `steps.polish.output`.
    pub value: String,
    #[serde(rename = "type", default)]
    pub kind: ValueType,
}

/// The JSON types a declared value may have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    #[default]
    Any,
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
}

impl ValueType {
    /// Whether `value` has this type.
    pub fn admits(self, value: &Value) -> bool {
        match self {
            ValueType::Any => true,
            ValueType::String => value.is_string(),
            ValueType::Number => value.is_number(),
            ValueType::Integer => value.is_i64() || value.is_u64(),
            ValueType::Boolean => value.is_boolean(),
            ValueType::Object => value.is_object(),
            ValueType::Array => value.is_array(),
        }
    }
}

/// What applies to every node unless it says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub retry: Retry,
    /// Per attempt of an `llm`, `tool` or `subworkflow` step.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The model of `llm` nodes that name none (`auto`: the router chooses).
    #[serde(default = "default_model")]
    pub model: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            retry: Retry::default(),
            timeout_ms: default_timeout_ms(),
            model: default_model(),
        }
    }
}

fn default_timeout_ms() -> u64 {
    60_000
}

fn default_model() -> String {
    "auto".to_owned()
}

/// Retries of a failed step: exponential backoff from `backoff_ms`, capped at `max_backoff_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, the first included (1: no retry).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: default_attempts(),
            backoff_ms: default_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
        }
    }
}

impl Retry {
    /// The delay before attempt `attempt + 1` (after `attempt` failed).
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(32);
        self.backoff_ms
            .saturating_mul(1_u64 << shift)
            .min(self.max_backoff_ms)
    }
}

fn default_attempts() -> u32 {
    3
}

fn default_backoff_ms() -> u64 {
    200
}

fn default_max_backoff_ms() -> u64 {
    10_000
}

/// Bounds of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Events in one segment of the run's stream before it continues as new (a new segment
    /// that starts from the carried-over state).
    #[serde(default = "default_segment_events")]
    pub segment_events: u32,
    /// Steps (attempts included) in the whole run; past it the run fails.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            segment_events: default_segment_events(),
            max_steps: default_max_steps(),
        }
    }
}

fn default_segment_events() -> u32 {
    1_000
}

fn default_max_steps() -> u32 {
    100_000
}

/// The kinds of node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A chat completion through the gateway (routing, limits, budget, billing all apply).
    Llm,
    /// An HTTP call to a registered tool.
    Tool,
    /// Goes to the first case whose condition holds.
    Branch,
    /// Runs `node` once per item of a list, at most `concurrency` at a time.
    Map,
    /// A timer (`duration_ms`), or until a signal (`signal`, with `duration_ms` as a timeout).
    Wait,
    /// Pauses until `POST /v1/runs/{id}/signals` with the node's id as the signal name.
    HumanInput,
    /// Runs another registered workflow as a child run and waits for its output.
    Subworkflow,
    /// Searches the tenant's documents (`POST /v1/retrieve`'s search): the output holds the
    /// chunks found, a numbered `context` for a prompt and the `citations`.
    Retrieve,
}

impl NodeKind {
    /// The name used in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Llm => "llm",
            NodeKind::Tool => "tool",
            NodeKind::Branch => "branch",
            NodeKind::Map => "map",
            NodeKind::Wait => "wait",
            NodeKind::HumanInput => "human_input",
            NodeKind::Subworkflow => "subworkflow",
            NodeKind::Retrieve => "retrieve",
        }
    }

    /// Whether a node of this kind is a call (to a model, a tool, a workflow or the index).
    pub fn is_call(self) -> bool {
        matches!(
            self,
            NodeKind::Llm | NodeKind::Tool | NodeKind::Subworkflow | NodeKind::Retrieve
        )
    }
}

/// How a `retrieve` node ranks chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetrieveMode {
    /// BM25 over the chunks' words.
    Keyword,
    /// Cosine similarity of the chunks' vectors (needs an embedding model).
    Vector,
    /// Both, fused by reciprocal rank.
    Hybrid,
}

impl RetrieveMode {
    /// The name used in specs and requests.
    pub fn as_str(self) -> &'static str {
        match self {
            RetrieveMode::Keyword => "keyword",
            RetrieveMode::Vector => "vector",
            RetrieveMode::Hybrid => "hybrid",
        }
    }
}

/// The answer format of an `llm` node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// The answer's text.
    #[default]
    Text,
    /// The answer parsed as JSON (a step failure when it is not JSON).
    Json,
}

/// One node. Which fields apply depends on `kind`; a field that does not apply is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Unique in the spec: lower-case letters, digits, `-` and `_`.
    pub id: String,
    pub kind: NodeKind,
    /// The node to go to next (default: the next in the list; `end` ends the run).
    #[serde(default)]
    pub next: Option<String>,
    /// `llm`: the model (default `defaults.model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `llm`: the system message (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// `llm`: the user message (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// `llm`: a registered prompt, `name@version` (or `name`: the newest), whose system and
    /// user messages fill `system` and `prompt` where the node leaves them out. Resolved and
    /// pinned to its version when the spec is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_ref: Option<String>,
    /// `llm`: `text` (default) or `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// `tool`: the registered tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// `tool`: the JSON body; every string in it is a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// `subworkflow`: the registered workflow's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// `subworkflow`: the version (default: the newest when the child run starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// `subworkflow`: the child's input; every string in it is a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// `retrieve`: what to look for (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// `retrieve`: how many chunks (1-50, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u32>,
    /// `retrieve`: `keyword`, `vector` or `hybrid` (default: hybrid with an embedding model,
    /// keyword without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RetrieveMode>,
    /// `retrieve`: only these documents' chunks: a list of ids (every string in it is a
    /// template; a string that is one expression may give the whole list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// `branch`: the cases, tried in order.
    #[serde(default)]
    pub cases: Vec<Case>,
    /// `branch`: where to go when no case holds (default: `next`).
    #[serde(default)]
    pub default: Option<String>,
    /// `map`: an expression giving the list.
    #[serde(default)]
    pub over: Option<String>,
    /// `map`: what to run per item (`item` and `index` are in its templates).
    #[serde(default)]
    pub node: Option<Box<Call>>,
    /// `map`: items in flight at once.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// `wait`: the timer, or the timeout of a signal wait; `human_input`: its timeout.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// `wait`: the signal name to wait for.
    #[serde(default)]
    pub signal: Option<String>,
    /// `human_input`: what the person is asked (shown in the run's state).
    #[serde(default)]
    pub question: Option<String>,
    /// `human_input`: a JSON Schema the signal's payload must satisfy.
    #[serde(default)]
    pub schema: Option<Value>,
    /// A call that undoes this node's effect; run, in reverse order of completion, when the run
    /// fails or is cancelled after this node completed.
    #[serde(default)]
    pub compensate: Option<Box<Call>>,
}

/// What an `llm`, `tool` or `subworkflow` node (or a map's per-item node, or a compensation)
/// runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// `llm`, `tool`, `subworkflow` or `retrieve`.
    pub kind: NodeKind,
    /// `llm`: the model (default `defaults.model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `llm`: the system message (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// `llm`: the user message (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// `llm`: a registered prompt, `name@version` (or `name`: the newest), whose system and
    /// user messages fill `system` and `prompt` where the node leaves them out. Resolved and
    /// pinned to its version when the spec is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_ref: Option<String>,
    /// `llm`: `text` (default) or `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// `tool`: the registered tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// `tool`: the JSON body; every string in it is a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// `subworkflow`: the registered workflow's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// `subworkflow`: the version (default: the newest when the child run starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// `subworkflow`: the child's input; every string in it is a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// `retrieve`: what to look for (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// `retrieve`: how many chunks (1-50, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u32>,
    /// `retrieve`: `keyword`, `vector` or `hybrid` (default: hybrid with an embedding model,
    /// keyword without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RetrieveMode>,
    /// `retrieve`: only these documents' chunks: a list of ids (every string in it is a
    /// template; a string that is one expression may give the whole list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// One case of a `branch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// A condition on the run's state, e.g. `steps.classify.output == "refund"`.
    pub when: String,
    /// The node to go to (or `end`).
    pub goto: String,
}

impl WorkflowSpec {
    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The node after `id` when it does not branch: its `next`, else the following node in the
    /// list; `None` at the end.
    pub fn successor(&self, id: &str) -> Option<&str> {
        let index = self.nodes.iter().position(|n| n.id == id)?;
        match self.nodes[index].next.as_deref() {
            Some(END) => None,
            Some(next) => Some(next),
            None => self.nodes.get(index + 1).map(|n| n.id.as_str()),
        }
    }

    /// The JSON Schema of a spec document (the file `schemas/workflow.schema.json`).
    ///
    /// It describes documents as written: a node may `use` a fragment (`name` or
    /// `name@version`) and then needs no `kind` of its own, and `overlays` are described.
    pub fn json_schema() -> Value {
        let mut schema =
            serde_json::to_value(schemars::schema_for!(WorkflowSpec)).unwrap_or(Value::Null);
        if let Some(node) = schema.pointer_mut("/$defs/Node") {
            if let Some(properties) = node.get_mut("properties").and_then(Value::as_object_mut) {
                properties.insert(
                    "use".into(),
                    serde_json::json!({
                        "description": "A registered fragment (`name` or `name@version`) whose fields this node takes; the node's own fields win.",
                        "type": "string",
                        "pattern": "^[a-z][a-z0-9_-]*(@[0-9]+)?$"
                    }),
                );
            }
            if let Some(object) = node.as_object_mut() {
                object.insert("required".into(), serde_json::json!(["id"]));
                object.insert(
                    "anyOf".into(),
                    serde_json::json!([{"required": ["kind"]}, {"required": ["use"]}]),
                );
            }
        }
        schema
    }
}

impl Node {
    /// What this node calls, with its kind filled in (for `llm`, `tool` and `subworkflow`).
    pub fn as_call(&self) -> Call {
        Call {
            kind: self.kind,
            model: self.model.clone(),
            system: self.system.clone(),
            prompt: self.prompt.clone(),
            prompt_ref: self.prompt_ref.clone(),
            output: self.output,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            tool: self.tool.clone(),
            args: self.args.clone(),
            workflow: self.workflow.clone(),
            version: self.version,
            input: self.input.clone(),
            query: self.query.clone(),
            k: self.k,
            mode: self.mode,
            documents: self.documents.clone(),
            retry: self.retry,
            timeout_ms: self.timeout_ms,
        }
    }
}
