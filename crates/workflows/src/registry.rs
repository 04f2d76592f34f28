//! The tenant's registry of workflow specs, fragments, tools and prompts: an actor per tenant
//! (stream `workflows-<tenant>`), each name with numbered versions. Registering what the newest
//! version already holds adds nothing and answers that version.
//!
//! A published manifest names its version: the next one is added (with a `ManifestSigned`
//! record of its digest and key in the same append), the same content again is a no-op, and
//! anything else is refused: a published version never changes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_actors::Actor;
use switchyard_events::{
    Event, FragmentRegistered, ManifestSigned, PromptRegistered, TenantId, ToolRegistered,
    WorkflowRegistered,
};
use switchyard_manifests::Kind;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::spec::{SpecError, WorkflowSpec};

/// What the registry holds for one tenant: per name, its versions (JSON text, version n at n-1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub workflows: BTreeMap<String, Vec<String>>,
    pub fragments: BTreeMap<String, Vec<String>>,
    pub tools: BTreeMap<String, Vec<String>>,
    pub prompts: BTreeMap<String, Vec<String>>,
    /// The entries published from manifests, by `kind:name@version`.
    pub manifests: BTreeMap<String, Provenance>,
}

/// Where a version published from a manifest came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// `blake3:<hex>` of the manifest's canonical JSON.
    pub digest: String,
    /// The key that signed it (`None`: published unsigned).
    pub key_id: Option<String>,
}

/// What can be registered: a kind, a name and the entry's JSON text.
#[derive(Debug, Clone)]
pub struct Register {
    pub kind: Kind,
    pub name: String,
    /// The entry as the registry keeps it (a loaded spec, a tool definition, a prompt).
    pub text: String,
    /// A workflow's text as submitted.
    pub source: String,
    /// The version a manifest names (`None`: the next one, or the newest if it is the same).
    pub version: Option<u32>,
    /// The manifest the entry came from.
    pub provenance: Option<Provenance>,
}

/// Why a registration was refused: it would change a published version.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The registry actor.
#[derive(Debug, Clone, Copy)]
pub struct Registry;

impl Catalog {
    /// The versions of `kind` by name (none of models and providers: they are the config's).
    pub fn of(&self, kind: Kind) -> &BTreeMap<String, Vec<String>> {
        static NONE: BTreeMap<String, Vec<String>> = BTreeMap::new();
        match kind {
            Kind::Workflow => &self.workflows,
            Kind::Fragment => &self.fragments,
            Kind::Tool => &self.tools,
            Kind::Prompt => &self.prompts,
            Kind::Model | Kind::Provider => &NONE,
        }
    }

    fn of_mut(&mut self, kind: Kind) -> Option<&mut BTreeMap<String, Vec<String>>> {
        match kind {
            Kind::Workflow => Some(&mut self.workflows),
            Kind::Fragment => Some(&mut self.fragments),
            Kind::Tool => Some(&mut self.tools),
            Kind::Prompt => Some(&mut self.prompts),
            Kind::Model | Kind::Provider => None,
        }
    }

    /// Where version `version` of `kind` `name` came from, if it was published as a manifest.
    pub fn provenance(&self, kind: Kind, name: &str, version: u32) -> Option<&Provenance> {
        self.manifests.get(&manifest_key(kind, name, version))
    }
}

fn manifest_key(kind: Kind, name: &str, version: u32) -> String {
    format!("{}:{name}@{version}", kind.as_str())
}

/// The version a registration lands on: `Ok(None)` when it is already there.
fn place(
    versions: Option<&Vec<String>>,
    command: &Register,
) -> std::result::Result<Option<u32>, Refused> {
    let held = versions.map_or(0, Vec::len);
    let what = format!("{} `{}`", command.kind.as_str(), command.name);
    let next = u32::try_from(held + 1).unwrap_or(u32::MAX);
    match command.version {
        None => Ok(match versions.and_then(|v| v.last()) {
            Some(last) if *last == command.text => None,
            _ => Some(next),
        }),
        Some(wanted) => {
            let index = usize::try_from(wanted).unwrap_or(usize::MAX);
            if index == 0 {
                Err(Refused(format!("{what}: versions start at 1")))
            } else if index <= held {
                match versions.and_then(|v| v.get(index - 1)) {
                    Some(text) if *text == command.text => Ok(None),
                    _ => Err(Refused(format!(
                        "{what} version {wanted} is published and cannot change; publish it as version {next}"
                    ))),
                }
            } else if wanted == next {
                Ok(Some(next))
            } else {
                Err(Refused(format!(
                    "the next version of {what} is {next}, not {wanted}"
                )))
            }
        }
    }
}

impl Actor for Registry {
    const KIND: &'static str = "workflows";
    const SNAPSHOT_VERSION: u16 = 2;
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
        // The same manifest again (by digest): nothing, even where what it resolves to (a
        // workflow's newest prompt or fragment) has moved since.
        if let (Some(version), Some(provenance)) = (command.version, &command.provenance)
            && state
                .manifests
                .get(&manifest_key(command.kind, &command.name, version))
                .is_some_and(|held| held.digest == provenance.digest)
        {
            return Ok(Vec::new());
        }
        let Some(version) = place(state.of(command.kind).get(&command.name), &command)? else {
            return Ok(Vec::new());
        };
        let Register {
            kind,
            name,
            text,
            source,
            provenance,
            ..
        } = command;
        let mut events = vec![match kind {
            Kind::Workflow => Event::WorkflowRegistered(WorkflowRegistered {
                name: name.clone(),
                version,
                spec: text,
                source,
            }),
            Kind::Fragment => Event::FragmentRegistered(FragmentRegistered {
                name: name.clone(),
                version,
                node: text,
            }),
            Kind::Tool => Event::ToolRegistered(ToolRegistered {
                name: name.clone(),
                version,
                definition: text,
            }),
            Kind::Prompt => Event::PromptRegistered(PromptRegistered {
                name: name.clone(),
                version,
                prompt: text,
            }),
            Kind::Model | Kind::Provider => {
                return Err(Refused(format!(
                    "{} manifests are the config's ([registry] manifests), not a tenant's",
                    kind.as_str()
                )));
            }
        }];
        if let Some(provenance) = provenance {
            events.push(Event::ManifestSigned(ManifestSigned {
                kind: kind.as_str().to_owned(),
                name,
                version,
                digest: provenance.digest,
                key_id: provenance.key_id,
            }));
        }
        Ok(events)
    }

    fn apply(state: &mut Catalog, event: &Event) {
        let (kind, name, text) = match event {
            Event::WorkflowRegistered(e) => (Kind::Workflow, &e.name, &e.spec),
            Event::FragmentRegistered(e) => (Kind::Fragment, &e.name, &e.node),
            Event::ToolRegistered(e) => (Kind::Tool, &e.name, &e.definition),
            Event::PromptRegistered(e) => (Kind::Prompt, &e.name, &e.prompt),
            Event::ManifestSigned(e) => {
                if let Ok(kind) = Kind::parse(&e.kind) {
                    state.manifests.insert(
                        manifest_key(kind, &e.name, e.version),
                        Provenance {
                            digest: e.digest.clone(),
                            key_id: e.key_id.clone(),
                        },
                    );
                }
                return;
            }
            _ => return,
        };
        if let Some(entries) = state.of_mut(kind) {
            entries.entry(name.clone()).or_default().push(text.clone());
        }
    }
}

impl Catalog {
    /// Workflow `name` at `version` (newest when `None`), with its version number.
    pub fn workflow(&self, name: &str, version: Option<u32>) -> Option<(u32, WorkflowSpec)> {
        let (version, text) = pick(self.workflows.get(name)?, version)?;
        Some((version, serde_json::from_str(text).ok()?))
    }

    /// Prompt `name` at `version` (newest when `None`), with its version number.
    pub fn prompt(&self, name: &str, version: Option<u32>) -> Option<(u32, crate::prompt::Prompt)> {
        let (version, text) = pick(self.prompts.get(name)?, version)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn command(version: Option<u32>, text: &str, signed: bool) -> Register {
        Register {
            kind: Kind::Prompt,
            name: "summarize".into(),
            text: text.into(),
            source: String::new(),
            version,
            provenance: signed.then(|| Provenance {
                digest: format!("blake3:{text}"),
                key_id: Some("k1".into()),
            }),
        }
    }

    fn run(state: &mut Catalog, command: Register) -> std::result::Result<usize, String> {
        let events = Registry::decide(state, command, OffsetDateTime::UNIX_EPOCH)
            .map_err(|e| e.to_string())?;
        for event in &events {
            Registry::apply(state, event);
        }
        Ok(events.len())
    }

    #[test]
    fn a_published_version_never_changes_and_versions_have_no_gaps() {
        let mut state = Catalog::default();
        assert_eq!(run(&mut state, command(Some(1), "a", true)), Ok(2));
        assert_eq!(
            state
                .provenance(Kind::Prompt, "summarize", 1)
                .unwrap()
                .key_id
                .as_deref(),
            Some("k1")
        );
        // The same content again: nothing; other content under a published version: refused.
        assert_eq!(run(&mut state, command(Some(1), "a", true)), Ok(0));
        // The same manifest (digest) whose resolved text moved since: still nothing.
        let mut moved = command(Some(1), "a-resolved-differently", true);
        moved.provenance = command(Some(1), "a", true).provenance;
        assert_eq!(run(&mut state, moved), Ok(0));
        let changed = run(&mut state, command(Some(1), "b", true)).unwrap_err();
        assert!(changed.contains("cannot change"), "{changed}");
        let gap = run(&mut state, command(Some(3), "b", true)).unwrap_err();
        assert!(gap.contains("next version") && gap.contains('2'), "{gap}");
        assert!(run(&mut state, command(Some(0), "b", true)).is_err());
        // An unsigned registration takes the next version and records no signer.
        assert_eq!(run(&mut state, command(None, "b", false)), Ok(1));
        assert_eq!(state.prompts["summarize"], ["a", "b"]);
        assert!(state.provenance(Kind::Prompt, "summarize", 2).is_none());
        assert_eq!(run(&mut state, command(None, "b", false)), Ok(0));
        // Each kind has its own names.
        let mut tool = command(Some(1), "t", false);
        tool.kind = Kind::Tool;
        assert_eq!(run(&mut state, tool), Ok(1));
        assert_eq!(state.tools["summarize"], ["t"]);
    }
}
