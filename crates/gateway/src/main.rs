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
mod analytics;
mod billing_feed;
mod cli;
mod config;
mod events;
mod feedback;
mod http;
mod idempotency;
mod inference;
mod keys;
mod local;
mod meter;
mod openai;
mod projections_cli;
mod providers;
mod ratelimit;
mod resilience;
mod router;
mod telemetry;
mod workflows;

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
        /// NATS URL; when set, every committed event is published to JetStream
        /// (`events.<tenant>.<stream type>`, `Nats-Msg-Id` = event id).
        #[arg(long, env = "SWITCHYARD_NATS_URL", hide_env_values = true)]
        nats_url: Option<String>,
        /// Events the event-feed ring holds for slow clients (SSE) before the slow-consumer
        /// policy applies.
        #[arg(long, default_value_t = 4096)]
        feed_ring: usize,
        /// Seconds of silence before an event feed sends a heartbeat.
        #[arg(long, default_value_t = 15)]
        feed_heartbeat_secs: u64,
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
    /// The router: judge a candidate routing policy offline on the logged decisions.
    Router {
        #[command(subcommand)]
        command: RouterCommand,
    },
    /// The read side: projector status, rebuilds, the dead-letter queue, retention. Works on
    /// the database directly, also while a server runs.
    Projections {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: projections_cli::ProjectionsCommand,
    },
    /// Run a WorkflowSpec in-process (tenant `local`), showing its steps live; prints the final
    /// state as JSON. Exit status 1 when the run did not complete.
    Run {
        #[command(flatten)]
        store: StoreArgs,
        /// TOML config of providers and models (the simulated ones without it).
        #[arg(long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: local::RunArgs,
    },
    /// Replay a recorded run: exactly (rebuild its state with the current code and report any
    /// divergence; exit status 1), or re-executed with another model or prompt (`--model`,
    /// `--node-model`, `--prompt`), tool calls answered from the recording.
    Replay {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: local::ReplayArgs,
    },
    /// Run a golden task set (JSON lines) against a model or a workflow, in parallel; print a
    /// report (and write it as JSON and Markdown); compare with an earlier report.
    Eval {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: local::EvalArgs,
    },
    /// Issue and revoke tenants' API keys through a running server (prints JSON).
    Key {
        #[command(flatten)]
        server: cli::ServerArgs,
        #[command(subcommand)]
        command: cli::KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RouterCommand {
    /// Estimate what a candidate policy would have earned and cost on the logged traffic (IPS,
    /// self-normalised IPS and doubly robust, with 95% intervals and the effective sample
    /// size), beside what the serving policy earned. Reads the event log directly.
    ///
    /// The policy file is TOML, as in the config's `[router] policy`, e.g.
    /// `kind = "linucb"` and `alpha = 0.5`, or `kind = "static"` and `model = "sim-large"`.
    Evaluate {
        #[command(flatten)]
        store: StoreArgs,
        /// The candidate policy (TOML).
        #[arg(long)]
        policy: PathBuf,
        /// Only this tenant's decisions (all tenants' otherwise).
        #[arg(long)]
        tenant: Option<switchyard_events::TenantId>,
        /// Only rewards of this feedback metric.
        #[arg(long)]
        metric: Option<String>,
        /// The server's config, for the models' prices (the built-in one otherwise).
        #[arg(long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// The exploration floor the candidate would serve with (the config's when absent; 0
        /// judges the bare policy).
        #[arg(long)]
        min_exploration: Option<f64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
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
    /// PostgreSQL schema of the log and the read models (separate schemas are separate
    /// deployments in one database).
    #[arg(long, env = "SWITCHYARD_DATABASE_SCHEMA", default_value = "public")]
    database_schema: String,
}

impl StoreArgs {
    /// Opens the configured backend (and migrates its schema).
    async fn open(&self) -> anyhow::Result<(Arc<dyn EventStore>, String)> {
        match &self.database_url {
            Some(url) => {
                let store = PostgresStore::connect(
                    PostgresOptions::new(url.clone()).schema(self.database_schema.clone()),
                )
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

    /// Opens the read-model database: PostgreSQL's `public` schema beside the log, or
    /// `read.db` in the data dir.
    async fn open_read(&self) -> anyhow::Result<switchyard_projections::ReadDb> {
        match &self.database_url {
            Some(url) => {
                switchyard_projections::ReadDb::connect_postgres(url, &self.database_schema, 8)
                    .await
                    .context("cannot open the PostgreSQL read models (SWITCHYARD_DATABASE_URL)")
            }
            None => {
                let path = self.data_dir.join("read.db");
                switchyard_projections::ReadDb::open_sqlite(&path)
                    .await
                    .with_context(|| {
                        format!("cannot open the SQLite read models {}", path.display())
                    })
            }
        }
    }
}

/// What serves requests: the log, the admin side (tenants, keys, limits, budgets) and the
/// inference path (providers, router, resilience). `serve` puts HTTP in front of it; `run`,
/// `replay` and `eval` use it in-process.
struct Stack {
    store: Arc<dyn EventStore>,
    admin: actix_web::web::Data<admin::Admin>,
    gateway: actix_web::web::Data<inference::Gateway>,
}

async fn stack(
    args: &StoreArgs,
    config: Option<&Path>,
    admin_token: Option<String>,
    redis_url: Option<&str>,
) -> anyhow::Result<Stack> {
    let config = match config {
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
    let router = Arc::new(router::RouterHub::new(
        config.router.clone(),
        Runtime::new(store.clone(), RuntimeConfig::default()),
    ));
    let billing =
        billing_feed::BillingFeed::start(Runtime::<switchyard_actors::billing::Billing>::new(
            store.clone(),
            RuntimeConfig::default(),
        ));
    let (keys, directory) = keys::KeyIndex::follow(
        store.clone(),
        vec![router.clone() as Arc<dyn keys::Folder>, billing],
    )
    .await?;
    let limiter = match redis_url {
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
    let resilience = resilience::Resilience::new(
        &config,
        resilience::BreakerSettings::default(),
        store.clone(),
        router.clone(),
    );
    let gateway = inference::Gateway {
        config,
        providers,
        store: store.clone(),
        router,
        resilience,
    };
    Ok(Stack {
        store,
        admin: actix_web::web::Data::new(admin),
        gateway: actix_web::web::Data::new(gateway),
    })
}

/// The stack of an in-process command: no admin API, so a throwaway admin token.
async fn local_stack(args: &StoreArgs, config: Option<&Path>) -> anyhow::Result<Stack> {
    stack(args, config, Some(keys::generate().key), None).await
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
    // HTTPS to providers: rustls with ring's primitives (pure Rust and assembly, no CMake), and
    // the system's certificate store through rustls-platform-verifier.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a TLS crypto provider was already installed");
    }
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
            nats_url,
            feed_ring,
            feed_heartbeat_secs,
        } => {
            let Stack {
                store,
                admin,
                gateway,
            } = stack(&args, config.as_deref(), admin_token, redis_url.as_deref()).await?;
            let read_db = args.open_read().await?;
            let projections = switchyard_projections::Projections::start(
                store.clone(),
                read_db.clone(),
                switchyard_projections::RunnerConfig::default(),
            );
            if let Some(url) = nats_url {
                tokio::spawn(tracing::Instrument::instrument(
                    switchyard_projections::relay::run(
                        store.clone(),
                        read_db,
                        switchyard_projections::relay::RelayConfig::new(url),
                    ),
                    tracing::info_span!("nats_relay"),
                ));
            }
            let hub = events::EventHub::start(
                store.clone(),
                feed_ring,
                std::time::Duration::from_secs(feed_heartbeat_secs.max(1)),
            )
            .await?;
            let read = analytics::ReadSide { projections };
            let engine =
                workflows::start_engine(store.clone(), admin.clone(), gateway.clone()).await?;
            http::serve(store, admin, gateway, read, hub, engine, listen).await
        }
        Command::Run {
            store,
            config,
            args,
        } => {
            let local = local::Local::open(local_stack(&store, config.as_deref()).await?).await?;
            let completed = local::run(&local, args).await?;
            if !completed {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Replay {
            store,
            config,
            args,
        } => {
            let open =
                async || local::Local::open(local_stack(&store, config.as_deref()).await?).await;
            if !local::replay(args, open).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Eval {
            store,
            config,
            args,
        } => {
            let local = local::Local::open(local_stack(&store, config.as_deref()).await?).await?;
            if !local::eval(&local, args).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Migrate { store } => {
            let (store, location) = store.open().await?;
            let head = store.head().await?;
            tracing::info!(store = %location, %head, "event log schema is up to date");
            Ok(())
        }
        Command::Tenant { server, command } => cli::tenant(&server, command).await,
        Command::Key { server, command } => cli::key(&server, command).await,
        Command::Projections { store, command } => {
            let (log, _) = store.open().await?;
            let read = store.open_read().await?;
            projections_cli::run(log, read, command).await
        }
        Command::Router {
            command:
                RouterCommand::Evaluate {
                    store,
                    policy,
                    tenant,
                    metric,
                    config,
                    min_exploration,
                    json,
                },
        } => {
            let text = std::fs::read_to_string(&policy)
                .with_context(|| format!("cannot read {}", policy.display()))?;
            let policy: switchyard_actors::router::policy::Policy = toml::from_str(&text)
                .with_context(|| format!("{} is not a policy", policy.display()))?;
            policy.validate().map_err(anyhow::Error::msg)?;
            let config = match &config {
                Some(path) => config::Config::load(path)?,
                None => config::Config::default(),
            };
            let (store, _) = store.open().await?;
            let scope = tenant.map_or(
                switchyard_events::Scope::All,
                switchyard_events::Scope::Tenant,
            );
            let log = feedback::load_log(store.as_ref(), scope, metric.as_deref()).await?;
            let report = switchyard_actors::router::ope::evaluate(
                &policy,
                &log,
                &feedback::typical_costs(&config),
                min_exploration
                    .unwrap_or(config.router.min_exploration)
                    .clamp(0.0, 0.5),
                &mut rand::rng(),
            );
            cli::print_report(&report, json)
        }
    }
}
