//! The tenant's registry through the engine: specs loaded, validated and registered,
//! fragments, tools and prompts registered, and manifests published, each answered with its
//! version.

use switchyard_events::{Metadata, TenantId};
use switchyard_manifests::{Kind, Manifest};

use super::Engine;
use crate::error::{Error, Result};
use crate::prompt::Prompt;
use crate::registry::{Catalog, Provenance, Register};
use crate::spec::{self, LoadOptions, SpecError, WorkflowSpec};

/// The longest prompt name.
const MAX_PROMPT_NAME: usize = 48;

/// A registration's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub kind: Kind,
    pub name: String,
    pub version: u32,
    /// Whether this registration added the version (`false`: it was already there).
    pub created: bool,
    /// Where the version came from, if it was published as a manifest (as first recorded).
    pub provenance: Option<Provenance>,
}

impl Engine {
    /// The tenant's registry.
    pub async fn catalog(&self, tenant: TenantId) -> Result<Catalog> {
        self.registry
            .read(&tenant)
            .await
            .map(|(catalog, _)| catalog)
            .map_err(|e| Error::Conflict(e.to_string()))
    }

    /// Loads (fragments and overlays applied), validates and registers a spec; answers its
    /// name and version.
    pub async fn register_workflow(
        &self,
        tenant: TenantId,
        source: &str,
        options: LoadOptions<'_>,
    ) -> Result<(String, u32, WorkflowSpec)> {
        let (command, spec) = self.workflow_command(tenant, source, options).await?;
        let registered = self.register(tenant, command).await?;
        Ok((registered.name, registered.version, spec))
    }

    async fn workflow_command(
        &self,
        tenant: TenantId,
        source: &str,
        options: LoadOptions<'_>,
    ) -> Result<(Register, WorkflowSpec)> {
        let catalog = self.catalog(tenant).await?;
        let spec = spec::load(source, options, &catalog.fragment_values())?;
        let spec = super::prompts::resolve(spec, &catalog)?;
        let text = serde_json::to_string(&spec).map_err(|e| Error::Conflict(e.to_string()))?;
        Ok((
            command(Kind::Workflow, &spec.name, text, source.to_owned()),
            spec,
        ))
    }

    /// Registers a fragment document; answers its name and version.
    pub async fn register_fragment(&self, tenant: TenantId, source: &str) -> Result<(String, u32)> {
        let (name, node) = spec::load_fragment(source)?;
        let registered = self
            .register(
                tenant,
                command(Kind::Fragment, &name, node.to_string(), String::new()),
            )
            .await?;
        Ok((registered.name, registered.version))
    }

    /// Registers a tool definition; answers its name and version.
    pub async fn register_tool(&self, tenant: TenantId, source: &str) -> Result<(String, u32)> {
        let tool = crate::registry::ToolDef::load(source)?;
        let text = serde_json::to_string(&tool).map_err(|e| Error::Conflict(e.to_string()))?;
        let registered = self
            .register(tenant, command(Kind::Tool, &tool.name, text, String::new()))
            .await?;
        Ok((registered.name, registered.version))
    }

    /// Publishes a verified manifest at the version it names: its body is loaded and checked as
    /// its kind's registration would be, and the version is added, found already there (the
    /// same content), or refused (`Conflict`: a published version never changes).
    pub async fn publish(
        &self,
        tenant: TenantId,
        manifest: &Manifest,
        provenance: Provenance,
        options: LoadOptions<'_>,
    ) -> Result<Registered> {
        let body_text = manifest.body.to_string();
        let named = |found: &str| -> Result<()> {
            if found == manifest.name {
                Ok(())
            } else {
                Err(Error::Spec(vec![SpecError::new(
                    "name",
                    format!("the body names `{found}`, the manifest `{}`", manifest.name),
                )]))
            }
        };
        let mut command = match manifest.kind {
            Kind::Model | Kind::Provider => {
                return Err(Error::Spec(vec![SpecError::new(
                    "kind",
                    "model and provider manifests are loaded from the config's [registry] manifests; a tenant publishes tools, workflows, fragments and prompts",
                )]));
            }
            Kind::Workflow => self.workflow_command(tenant, &body_text, options).await?.0,
            Kind::Fragment => {
                let (name, node) = spec::load_fragment(&body_text)?;
                command(Kind::Fragment, &name, node.to_string(), String::new())
            }
            Kind::Tool => {
                let tool = crate::registry::ToolDef::load(&body_text)?;
                let text =
                    serde_json::to_string(&tool).map_err(|e| Error::Conflict(e.to_string()))?;
                command(Kind::Tool, &tool.name, text, String::new())
            }
            Kind::Prompt => {
                // Logged with each inference as the tag `prompt:<name>:<version>` (64 at most).
                if manifest.name.len() > MAX_PROMPT_NAME {
                    return Err(Error::Spec(vec![SpecError::new(
                        "name",
                        format!("a prompt's name is at most {MAX_PROMPT_NAME} characters"),
                    )]));
                }
                let prompt = Prompt::load(&manifest.body)?;
                if let Some(name) = &prompt.name {
                    named(name)?;
                }
                let text =
                    serde_json::to_string(&prompt).map_err(|e| Error::Conflict(e.to_string()))?;
                command(Kind::Prompt, &manifest.name, text, String::new())
            }
        };
        named(&command.name)?;
        command.version = Some(manifest.version);
        command.provenance = Some(provenance);
        let registered = self.register(tenant, command).await?;
        crate::metrics::manifest_outcome(
            registered.kind.as_str(),
            if registered.created {
                "created"
            } else {
                "unchanged"
            },
        );
        tracing::info!(
            %tenant,
            kind = registered.kind.as_str(),
            name = %registered.name,
            version = registered.version,
            created = registered.created,
            "manifest published"
        );
        Ok(registered)
    }

    async fn register(&self, tenant: TenantId, command: Register) -> Result<Registered> {
        let (kind, name, text) = (command.kind, command.name.clone(), command.text.clone());
        let named_version = command.version;
        let applied = self
            .registry
            .send(&tenant, command, Metadata::default())
            .await
            .map_err(|e| Error::Conflict(e.to_string()))?;
        let version =
            named_version.unwrap_or_else(|| version_of(applied.state.of(kind).get(&name), &text));
        tracing::info!(%tenant, kind = kind.as_str(), %name, version, "registered");
        Ok(Registered {
            provenance: applied.state.provenance(kind, &name, version).cloned(),
            kind,
            name,
            version,
            created: !applied.events.is_empty(),
        })
    }
}

fn command(kind: Kind, name: &str, text: String, source: String) -> Register {
    Register {
        kind,
        name: name.to_owned(),
        text,
        source,
        version: None,
        provenance: None,
    }
}

fn version_of(versions: Option<&Vec<String>>, text: &str) -> u32 {
    versions
        .and_then(|v| v.iter().rposition(|s| s == text))
        .map_or(0, |i| u32::try_from(i + 1).unwrap_or(u32::MAX))
}
