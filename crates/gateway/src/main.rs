//! `switchyard`: the one binary. Subcommands parse configuration, build the store and serve, or
//! talk to a running server's admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use switchyard_actors::tenant::Tenant;
use switchyard_actors::{Runtime, RuntimeConfig};
use switchyard_events::{EventStore, PostgresOptions, PostgresStore, SqliteStore};

mod admin;
mod cli;
mod config;
mod http;
mod idempotency;
mod inference;
mod keys;
mod meter;
mod openai;
mod providers;
mod ratelimit;
mod telemetry;

/// Switchyard: a multi-tenant AI platform built as an event-sourced actor system.
///
/// With no configuration it runs embedded: the event log is a SQLite file in
/// `./switchyard-data`. Set SWITCHYARD_DATABASE_URL to keep it in PostgreSQL instead.
/// `tenant` and `key` talk to a running server's admin API.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open the event log and serve the HTTP API: the admin API (tenants, API keys, limits),
    /// /v1/tenant, /healthz, /readyz, /metrics.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Bearer token of the admin API. When unset, one is generated on first start and kept
        /// in `<data dir>/admin-token`.
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Redis URL; when set, rate-limit state is shared there by every node (in-process
        /// otherwise).
        #[arg(long, env = "SWITCHYARD_REDIS_URL", hide_env_values = true)]
        redis_url: Option<String>,
        /// TOML config of providers and models (without one: the simulated models sim-small
        /// and sim-large). See the README for an example.
        #[arg(long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create or upgrade the event log's schema, then exit.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Manage tenants through a running server (prints JSON).
    Tenant {
        #[command(flatten)]
        server: cli::ServerArgs,
        #[command(subcommand)]
        command: cli::TenantCommand,
    },
    /// Issue and revoke tenants' API keys through a running server (prints JSON).
    Key {
        #[command(flatten)]
        server: cli::ServerArgs,
        #[command(subcommand)]
        command: cli::KeyCommand,
    },
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// Directory of the embedded SQLite files and of the generated admin token and key secret.
    #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = "./switchyard-data")]
    data_dir: PathBuf,
    /// PostgreSQL URL; when set, the event log lives there instead of in SQLite.
    #[arg(long, env = "SWITCHYARD_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl StoreArgs {
    /// Opens the configured backend (and migrates its schema).
    async fn open(&self) -> anyhow::Result<(Arc<dyn EventStore>, String)> {
        match &self.database_url {
            Some(url) => {
                let store = PostgresStore::connect(PostgresOptions::new(url.clone()))
                    .await
                    .context("cannot open the PostgreSQL event log (SWITCHYARD_DATABASE_URL)")?;
                Ok((Arc::new(store), "postgres".into()))
            }
            None => {
                std::fs::create_dir_all(&self.data_dir).with_context(|| {
                    format!("cannot create data dir {}", self.data_dir.display())
                })?;
                let path = self.data_dir.join("events.db");
                let store = SqliteStore::open(&path).await.with_context(|| {
                    format!("cannot open the SQLite event log {}", path.display())
                })?;
                Ok((Arc::new(store), format!("sqlite:{}", path.display())))
            }
        }
    }
}

/// Reads the generated admin token, creating it on first start, and says where it is.
fn admin_token_file(path: &Path) -> anyhow::Result<String> {
    if !path.exists() {
        let token = format!("sya_{}", keys::generate().key.trim_start_matches("sy_"));
        keys::write_private(path, &token)?;
    }
    let token = std::fs::read_to_string(path)?.trim().to_owned();
    // On stderr, so stdout keeps its one line (the listening address).
    eprintln!(
        "switchyard: admin token (SWITCHYARD_ADMIN_TOKEN unset) is in {}",
        path.display()
    );
    Ok(token)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            store: args,
            listen,
            admin_token,
            redis_url,
            config,
        } => {
            let config = match &config {
                Some(path) => config::Config::load(path)?,
                None => config::Config::default(),
            };
            let providers = providers::Providers::build(&config)?;
            let (store, location) = args.open().await?;
            let head = store.head().await?;
            tracing::info!(store = %location, %head, "event log open");
            std::fs::create_dir_all(&args.data_dir)?;
            let token = match admin_token {
                Some(token) if token.len() >= 16 => token,
                Some(_) => anyhow::bail!("SWITCHYARD_ADMIN_TOKEN must be at least 16 characters"),
                None => admin_token_file(&args.data_dir.join("admin-token"))?,
            };
            let secret = keys::KeySecret::load_or_create(&args.data_dir.join("key-secret"))?;
            let (keys, directory) = keys::KeyIndex::follow(store.clone()).await?;
            let limiter = match &redis_url {
                Some(url) => ratelimit::Limiter::Redis(
                    ratelimit::RedisLimiter::connect(url)
                        .await
                        .context("cannot reach Redis (SWITCHYARD_REDIS_URL)")?,
                ),
                None => ratelimit::Limiter::local(),
            };
            let tenants = Runtime::<Tenant>::new(store.clone(), RuntimeConfig::default());
            let admin = admin::Admin {
                store: store.clone(),
                tenants,
                keys,
                directory,
                secret,
                token,
                limiter,
            };
            let gateway = inference::Gateway {
                config,
                providers,
                store: store.clone(),
            };
            http::serve(store, admin, gateway, listen).await
        }
        Command::Migrate { store } => {
            let (store, location) = store.open().await?;
            let head = store.head().await?;
            tracing::info!(store = %location, %head, "event log schema is up to date");
            Ok(())
        }
        Command::Tenant { server, command } => cli::tenant(&server, command).await,
        Command::Key { server, command } => cli::key(&server, command).await,
    }
}
