//! `switchyard flag …`: the platform's feature flags through a running server's admin API.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Client, ServerArgs, print};

#[derive(Debug, Subcommand)]
pub enum FlagCommand {
    /// Every flag and its definition (JSON).
    List,
    /// Define or change a flag. The definition is JSON: `{"enabled": true, "rollout_percent":
    /// 25, "sticky_by": "key"|"user"|"tenant", "plans": [...], "tenants": [...], "keys":
    /// [...], "description": "..."}`; `--enabled false` alone is the kill switch.
    Set {
        name: String,
        /// The definition, as JSON text.
        #[arg(long, conflicts_with = "file")]
        definition: Option<String>,
        /// The definition, from a JSON file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Remove a flag.
    Delete { name: String },
    /// What a flag answers for a tenant (and a key, and a user), and why.
    Evaluate {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

pub async fn run(args: &ServerArgs, command: FlagCommand) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let value = match command {
        FlagCommand::List => {
            client
                .call(reqwest::Method::GET, "/v1/admin/flags", None)
                .await?
        }
        FlagCommand::Set {
            name,
            definition,
            file,
        } => {
            let text = match (definition, file) {
                (Some(text), _) => text,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                (None, None) => anyhow::bail!("give the definition: --definition JSON or --file F"),
            };
            let definition: Value =
                serde_json::from_str(&text).context("the definition is not JSON")?;
            client
                .call(
                    reqwest::Method::PUT,
                    &format!("/v1/admin/flags/{name}"),
                    Some(definition),
                )
                .await?
        }
        FlagCommand::Delete { name } => {
            client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/admin/flags/{name}"),
                    None,
                )
                .await?
        }
        FlagCommand::Evaluate {
            name,
            tenant,
            key,
            user,
        } => {
            client
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/admin/flags/{name}/evaluate"),
                    Some(json!({"tenant": tenant, "key_id": key, "user": user})),
                )
                .await?
        }
    };
    print(&value)
}
