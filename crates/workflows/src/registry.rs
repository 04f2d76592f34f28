//! The tenant's registry of workflow specs, fragments and tools: an actor per tenant (stream
//! `workflows-<tenant>`), each name with numbered versions. Registering what the newest version
//! already holds adds nothing and answers that version.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_actors::Actor;
use switchyard_events::{Event, FragmentRegistered, TenantId, ToolRegistered, WorkflowRegistered};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::spec::{SpecError, WorkflowSpec};

/// What the registry holds for one tenant: per name, its versions (JSON text, version n at n-1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub workflows: BTreeMap<String, Vec<String>>,
    pub fragments: BTreeMap<String, Vec<String>>,
    pub tools: BTreeMap<String, Vec<String>>,
}

/// What can be registered.
#[derive(Debug, Clone)]
pub enum Register {
    Workflow {
        name: String,
        spec: String,
        source: String,
    },
    Fragment {
        name: String,
        node: String,
    },
    Tool {
        name: String,
        definition: String,
    },
}

/// The registry never refuses a well-formed command (validation happens before it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("registry: {0}")]
pub struct Refused(String);

/// The registry actor.
#[derive(Debug, Clone, Copy)]
pub struct Registry;

impl Actor for Registry {
    const KIND: &'static str = "workflows";
    const SNAPSHOT_VERSION: u16 = 1;
    type Id = TenantId;
    type State = Catalog;
    type Command = Register;
    type Rejection = Refused;

    fn tenant(id: &TenantId) -> TenantId {
        *id
    }

    fn decide(
        state: &Catalog,
        command: Register,
        _now: OffsetDateTime,
    ) -> std::result::Result<Vec<Event>, Refused> {
        let next = |versions: Option<&Vec<String>>, text: &str| -> Option<u32> {
            match versions {
                Some(v) if v.last().map(String::as_str) == Some(text) => None,
                Some(v) => Some(u32::try_from(v.len() + 1).unwrap_or(u32::MAX)),
                None => Some(1),
            }
        };
        Ok(match command {
            Register::Workflow { name, spec, source } => next(state.workflows.get(&name), &spec)
                .map(|version| {
                    Event::WorkflowRegistered(WorkflowRegistered {
                        name,
                        version,
                        spec,
                        source,
                    })
                })
                .into_iter()
                .collect(),
            Register::Fragment { name, node } => next(state.fragments.get(&name), &node)
                .map(|version| {
                    Event::FragmentRegistered(FragmentRegistered {
                        name,
                        version,
                        node,
                    })
                })
                .into_iter()
                .collect(),
            Register::Tool { name, definition } => next(state.tools.get(&name), &definition)
                .map(|version| {
                    Event::ToolRegistered(ToolRegistered {
                        name,
                        version,
                        definition,
                    })
                })
                .into_iter()
                .collect(),
        })
    }

    fn apply(state: &mut Catalog, event: &Event) {
        match event {
            Event::WorkflowRegistered(e) => state
                .workflows
                .entry(e.name.clone())
                .or_default()
                .push(e.spec.clone()),
            Event::FragmentRegistered(e) => state
                .fragments
                .entry(e.name.clone())
                .or_default()
                .push(e.node.clone()),
            Event::ToolRegistered(e) => state
                .tools
                .entry(e.name.clone())
                .or_default()
                .push(e.definition.clone()),
            _ => {}
        }
    }
}

impl Catalog {
    /// Workflow `name` at `version` (newest when `None`), with its version number.
    pub fn workflow(&self, name: &str, version: Option<u32>) -> Option<(u32, WorkflowSpec)> {
        let (version, text) = pick(self.workflows.get(name)?, version)?;
        Some((version, serde_json::from_str(text).ok()?))
    }

    /// Tool `name`, newest version.
    pub fn tool(&self, name: &str) -> Option<ToolDef> {
        let (_, text) = pick(self.tools.get(name)?, None)?;
        serde_json::from_str(text).ok()
    }

    /// The fragments as [`crate::spec::Fragments`] see them.
    pub fn fragment_values(&self) -> BTreeMap<String, Vec<Value>> {
        self.fragments
            .iter()
            .map(|(name, versions)| {
                (
                    name.clone(),
                    versions
                        .iter()
                        .map(|v| serde_json::from_str(v).unwrap_or(Value::Null))
                        .collect(),
                )
            })
            .collect()
    }
}

fn pick(versions: &[String], version: Option<u32>) -> Option<(u32, &String)> {
    let index = match version {
        Some(v) => usize::try_from(v).ok()?.checked_sub(1)?,
        None => versions.len().checked_sub(1)?,
    };
    Some((u32::try_from(index + 1).ok()?, versions.get(index)?))
}

/// An HTTP tool: `POST` (or `method`) of the step's `args` as JSON to `url`; the answer's JSON
/// body is the step's output, checked against `response_schema` when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolDef {
    pub name: String,
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub description: String,
    /// Per attempt (a step's own `timeout_ms` wins).
    #[serde(default = "default_tool_timeout")]
    pub timeout_ms: u64,
    /// Attempts in all for this tool's steps (a step's own `retry` wins).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub response_schema: Option<Value>,
}

fn default_method() -> String {
    "POST".into()
}

fn default_tool_timeout() -> u64 {
    30_000
}

impl ToolDef {
    /// Parses and checks a tool definition (YAML or JSON).
    pub fn load(text: &str) -> Result<ToolDef> {
        let value = crate::spec::parse_document(text).map_err(Error::Spec)?;
        let tool: ToolDef = serde_json::from_value(value)
            .map_err(|e| Error::Spec(vec![SpecError::new("", e.to_string())]))?;
        let mut errors = Vec::new();
        if !crate::spec::valid_name(&tool.name) {
            errors.push(SpecError::new(
                "name",
                "lower-case letters, digits, `-` and `_`",
            ));
        }
        if !(tool.url.starts_with("http://") || tool.url.starts_with("https://")) {
            errors.push(SpecError::new("url", "an http:// or https:// URL"));
        }
        if !matches!(
            tool.method.as_str(),
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE"
        ) {
            errors.push(SpecError::new("method", "GET, POST, PUT, PATCH or DELETE"));
        }
        if tool.timeout_ms == 0 || tool.timeout_ms > 600_000 {
            errors.push(SpecError::new("timeout_ms", "between 1 and 600000"));
        }
        if let Some(schema) = &tool.response_schema
            && let Err(e) = jsonschema::validator_for(schema)
        {
            errors.push(SpecError::new(
                "response_schema",
                format!("not a valid JSON Schema: {e}"),
            ));
        }
        if errors.is_empty() {
            Ok(tool)
        } else {
            Err(Error::Spec(errors))
        }
    }

    /// The timeout of one attempt.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks an answer against the response schema.
    pub fn check_response(&self, body: &Value) -> std::result::Result<(), String> {
        let Some(schema) = &self.response_schema else {
            return Ok(());
        };
        let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
        let problems: Vec<String> = validator
            .iter_errors(body)
            .take(3)
            .map(|e| format!("{} at `{}`", e, e.instance_path()))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the answer does not match the tool's response schema: {}",
                problems.join("; ")
            ))
        }
    }
}
