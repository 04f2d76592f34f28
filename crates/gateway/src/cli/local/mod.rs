//! `switchyard run`, `replay` and `eval`: workflows in-process, on the configured store, for a
//! tenant named `local` (created on first use). Model calls take the same path as the server's
//! (routing, limits, budget, billing, events), and every run is recorded in the log like a run
//! started over HTTP, so it can be inspected and replayed.

mod dataset;
mod eval;
mod replay;
mod run;

pub use eval::{EvalArgs, eval};
pub use replay::{ReplayArgs, replay};
pub use run::{RunArgs, run};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use switchyard_actors::tenant::TenantCommand;
use switchyard_events::{EventStore, Metadata, TenantId};
use switchyard_workflows::Engine;
use switchyard_workflows::spec::{LoadOptions, WorkflowSpec};

use crate::auth::TenantEntry;
use crate::executor::StepExecutor;

/// The tenant of in-process runs.
pub const LOCAL_TENANT: &str = "local";

/// The in-process platform: the stack, the engine, the local tenant.
pub struct Local {
    pub store: Arc<dyn EventStore>,
    pub engine: Arc<Engine>,
    pub tenant: TenantId,
    pub admin: actix_web::web::Data<crate::state::Admin>,
    pub pipeline: actix_web::web::Data<switchyard_inference::Pipeline>,
}

impl Local {
    /// Builds the engine over a stack (without resuming other runs: that is the server's job).
    pub async fn open(stack: crate::stack::Stack) -> anyhow::Result<Local> {
        let crate::stack::Stack {
            store,
            admin,
            pipeline,
        } = stack;
        let tenant = match admin
            .directory
            .page(None, usize::MAX, None)
            .into_iter()
            .find(|t| t.name == LOCAL_TENANT)
        {
            Some(entry) => entry.id,
            None => {
                let tenant = TenantId::new();
                let applied = admin
                    .tenants
                    .send(
                        &tenant,
                        TenantCommand::Create {
                            name: LOCAL_TENANT.into(),
                            plan: "free".into(),
                        },
                        Metadata::default(),
                    )
                    .await
                    .context("cannot create the local tenant")?;
                admin.directory.insert(TenantEntry {
                    id: tenant,
                    name: applied.state.name.clone(),
                    plan: applied.state.plan,
                    created_at: time::OffsetDateTime::now_utc(),
                });
                tenant
            }
        };
        let executor = Arc::new(StepExecutor::new(admin.clone(), pipeline.clone())?);
        let engine = Engine::new(store.clone(), executor);
        Ok(Local {
            store,
            engine,
            tenant,
            admin,
            pipeline,
        })
    }

    /// Adds a file to the local tenant's documents (as `POST /v1/documents` would: the same
    /// bytes again change nothing), for the runs' `retrieve` steps. Answers the document's id
    /// and whether it is new.
    pub async fn add_document(&self, path: &Path) -> anyhow::Result<(uuid::Uuid, bool)> {
        let limit = self.pipeline.config.retrieval.max_document_bytes;
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if size > limit {
            bail!(
                "{} is larger than [retrieval] max_document_bytes ({limit})",
                path.display()
            );
        }
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path.file_name().map_or_else(
            || "document".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        let media = switchyard_retrieval::extract::Media::detect(None, &name, &bytes)
            .with_context(|| format!("document {}", path.display()))?;
        let principal = switchyard_inference::Principal {
            tenant: self.tenant,
            key_id: uuid::Uuid::nil(),
            scopes: Vec::new(),
        };
        let done = crate::ingest::ingest(
            &self.admin,
            &self.pipeline,
            &principal,
            name,
            "file".into(),
            media,
            bytes,
        )
        .await
        .map_err(|e| anyhow::anyhow!("document {}: {}", path.display(), e.message()))?;
        Ok((done.id, done.created))
    }

    /// Registers fragments and tools from files, then the spec; answers it loaded.
    pub async fn register(
        &self,
        spec: &Path,
        env: Option<&str>,
        fragments: &[PathBuf],
        tools: &[PathBuf],
    ) -> anyhow::Result<(u32, WorkflowSpec)> {
        for path in fragments {
            let (name, version) = self
                .engine
                .register_fragment(self.tenant, &read(path)?)
                .await
                .with_context(|| format!("fragment {}", path.display()))?;
            tracing::debug!(%name, version, "fragment registered");
        }
        for path in tools {
            self.engine
                .register_tool(self.tenant, &read(path)?)
                .await
                .with_context(|| format!("tool {}", path.display()))?;
        }
        let tenant = self.tenant.to_string();
        let keys = [tenant.as_str(), LOCAL_TENANT];
        let (_, version, spec) = self
            .engine
            .register_workflow(
                self.tenant,
                &read(spec)?,
                LoadOptions { env, tenant: &keys },
            )
            .await
            .with_context(|| format!("spec {}", spec.display()))?;
        Ok((version, spec))
    }
}

pub(super) fn read(path: &Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > 16 << 20 {
        bail!("{} is larger than 16 MiB", path.display());
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `--input`: JSON text, or `@file`.
pub(super) fn input_value(input: Option<&str>) -> anyhow::Result<Value> {
    match input {
        None => Ok(json!({})),
        Some(text) => {
            let text = match text.strip_prefix('@') {
                Some(path) => read(Path::new(path))?,
                None => text.to_owned(),
            };
            serde_json::from_str(&text).context("--input is not JSON")
        }
    }
}

pub(super) fn print_json(value: &Value) -> anyhow::Result<()> {
    #[expect(clippy::print_stdout, reason = "the command's output")]
    {
        println!("{}", serde_json::to_string_pretty(value)?);
    }
    Ok(())
}
