//! The tenant's registry through the engine: specs loaded, validated and registered, and
//! fragments and tools registered, each answered with its version.

use switchyard_events::{Metadata, TenantId};

use super::Engine;
use crate::error::{Error, Result};
use crate::registry::{Catalog, Register, ToolDef};
use crate::spec::{self, LoadOptions, WorkflowSpec};

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
        let catalog = self.catalog(tenant).await?;
        let spec = spec::load(source, options, &catalog.fragment_values())?;
        let text = serde_json::to_string(&spec).map_err(|e| Error::Conflict(e.to_string()))?;
        let name = spec.name.clone();
        let applied = self
            .registry
            .send(
                &tenant,
                Register::Workflow {
                    name: name.clone(),
                    spec: text.clone(),
                    source: source.to_owned(),
                },
                Metadata::default(),
            )
            .await
            .map_err(|e| Error::Conflict(e.to_string()))?;
        let version = version_of(applied.state.workflows.get(&name), &text);
        tracing::info!(%tenant, workflow = %name, version, "workflow registered");
        Ok((name, version, spec))
    }

    /// Registers a fragment document; answers its name and version.
    pub async fn register_fragment(&self, tenant: TenantId, source: &str) -> Result<(String, u32)> {
        let (name, node) = spec::load_fragment(source)?;
        let text = node.to_string();
        let applied = self
            .registry
            .send(
                &tenant,
                Register::Fragment {
                    name: name.clone(),
                    node: text.clone(),
                },
                Metadata::default(),
            )
            .await
            .map_err(|e| Error::Conflict(e.to_string()))?;
        let version = version_of(applied.state.fragments.get(&name), &text);
        Ok((name, version))
    }

    /// Registers a tool definition; answers its name and version.
    pub async fn register_tool(&self, tenant: TenantId, source: &str) -> Result<(String, u32)> {
        let tool = ToolDef::load(source)?;
        let text = serde_json::to_string(&tool).map_err(|e| Error::Conflict(e.to_string()))?;
        let applied = self
            .registry
            .send(
                &tenant,
                Register::Tool {
                    name: tool.name.clone(),
                    definition: text.clone(),
                },
                Metadata::default(),
            )
            .await
            .map_err(|e| Error::Conflict(e.to_string()))?;
        Ok((
            tool.name.clone(),
            version_of(applied.state.tools.get(&tool.name), &text),
        ))
    }
}

fn version_of(versions: Option<&Vec<String>>, text: &str) -> u32 {
    versions
        .and_then(|v| v.iter().rposition(|s| s == text))
        .map_or(0, |i| u32::try_from(i + 1).unwrap_or(u32::MAX))
}
