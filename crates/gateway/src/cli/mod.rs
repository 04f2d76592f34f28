//! The command line: `serve` and `migrate`, the admin API's clients (`tenant`, `key`), the
//! read side's operations (`projections`), offline router evaluation (`router evaluate`), the
//! routing benchmark (`router bench`), the simulator's workloads (`sim workload`), and
//! workflows in-process (`run`, `replay`, `eval`). Output is for people on stdout; JSON log
//! lines reach the terminal only when `RUST_LOG` asks for them (see `crate::telemetry`).

/// `tenant` and `key`: a client of the admin API.
/// `switchyard router bench`: the routing benchmark through a real server.
pub mod bench;
/// `billing`: price books, invoices, credit notes, re-pricing (a client of the admin API).
pub mod billing;
pub mod client;
/// `flag`: the platform's feature flags (a client of the admin API).
pub mod flags;
/// `run`, `replay` and `eval` in-process on the configured store.
pub mod local;
/// `projections status|rebuild|dlq|retention` on the databases directly.
pub mod projections;
/// `registry`: signing keys, signed manifests, and a server's registry.
pub mod registry;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::stack::StoreArgs;

/// Switchyard: a multi-tenant AI platform built as an event-sourced actor system.
///
/// With no configuration it runs embedded: the event log is a SQLite file in
/// `./switchyard-data`. Set SWITCHYARD_DATABASE_URL to keep it in PostgreSQL instead.
/// `tenant` and `key` talk to a running server's admin API.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about, long_about)]
pub struct Cli {
    /// The config file's `[profiles.<name>]` section to layer over it (see `config show`).
    #[arg(long, global = true, env = "SWITCHYARD_PROFILE")]
    pub profile: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open the event log and serve the HTTP API: the admin API (tenants, API keys, limits),
    /// /v1/tenant, /healthz, /readyz, /metrics.
    Serve(Box<crate::server::ServeArgs>),
    /// The layered configuration: built-in defaults, the config file, its profile section
    /// (`--profile`), the environment, the command line.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Read a PDF on standard input and write its text to standard output (what the server
    /// runs in a child process under time and memory limits).
    #[command(hide = true)]
    ExtractPdf,
    /// Create or upgrade the event log's schema, then exit.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Manage tenants through a running server (prints JSON).
    Tenant {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: client::TenantCommand,
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
        command: projections::ProjectionsCommand,
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
    /// `--node-model`, `--prompt`), tool calls answered from the recording. Or re-run a
    /// captured dataset (`switchyard dataset export`) against `--model` or `--policy`, each
    /// answer beside the recorded one.
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
    /// The simulator: generate workloads of verifiable tasks.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// A tenant's captured inferences through a running server: export them as an eval task
    /// set, or delete them.
    Dataset {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: client::DatasetCommand,
    },
    /// Billing through a running server: publish price books, print and export invoices
    /// (JSON or CSV), close them, record payments, issue credit notes, set billing days, and
    /// re-price a month under another price book (writes nothing).
    Billing {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: billing::BillingCommand,
    },
    /// The platform's feature flags through a running server: list, set (kill switch,
    /// targets, sticky percentage rollouts), delete, evaluate (prints JSON).
    Flag {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: flags::FlagCommand,
    },
    /// Signed registries: generate a signing key, sign a tool, workflow, fragment or prompt
    /// as a manifest, verify one against the config's trusted keys, publish it to a running
    /// server, list what a tenant's registry holds.
    Registry {
        #[command(subcommand)]
        command: registry::RegistryCommand,
    },
    /// Issue and revoke tenants' API keys through a running server (prints JSON).
    Key {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: client::KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective config `serve` would run with (it takes the same flags): every
    /// value with the layer it came from, secrets redacted.
    Show {
        /// Print JSON lines of `{key, value, source}` instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        serve: Box<crate::server::ServeArgs>,
    },
    /// Check a config file, alone and with each of its profiles: every problem at once, one
    /// per line; exit status 1 when there is any.
    Check {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Print a mixed workload of verifiable tasks (arithmetic, extraction to JSON, sentiment
    /// classification) as JSON lines of `{id, input, expected, scorer, tags}`, the task-set
    /// format of `switchyard eval`; the same seed gives the same tasks.
    Workload {
        /// How many tasks.
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        /// The generator's seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum RouterCommand {
    /// Replay a workload of verifiable tasks through a real server (started here on a free
    /// port, embedded log) once per routing policy, with exact scores sent back as feedback;
    /// print the report (per policy: strong calls, quality, cost saved, regret; APGR and
    /// CPT(50%)/CPT(80%) beside the oracle; OPE coverage) and write it with its plots to
    /// `--out`.
    Bench(bench::BenchArgs),
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

impl Cli {
    /// Whether this command runs the server (whose logs are JSON lines for collectors).
    pub fn is_server(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

/// Writes `text` to standard output.
fn write_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Runs the command; `matches` say where each serve setting came from.
pub async fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    use crate::layers::{Given, Layers};
    let profile = cli.profile.as_deref();
    let model_config = |file: Option<&std::path::Path>| crate::layers::model_config(file, profile);
    match cli.command {
        Command::Serve(args) => {
            let given = Given::from_matches(
                matches
                    .subcommand_matches("serve")
                    .context("the serve command's arguments")?,
            );
            let layers = Layers::build(args.config.as_deref(), profile, given)?;
            let config = layers.model_config()?;
            let args = layers.serve_args()?;
            tracing::info!(
                profile = layers.profile(),
                file = args.config.as_ref().map(|p| p.display().to_string()),
                "settings layered: defaults, file, profile, environment, command line"
            );
            crate::server::run(args, config).await
        }
        Command::Config {
            command: ConfigCommand::Show { json, serve },
        } => {
            let given = Given::from_matches(
                matches
                    .subcommand_matches("config")
                    .and_then(|m| m.subcommand_matches("show"))
                    .context("the show command's arguments")?,
            );
            let layers = Layers::build(serve.config.as_deref(), profile, given)?;
            let shown = layers.show()?;
            let mut text = String::new();
            if json {
                for line in &shown {
                    text.push_str(&serde_json::to_string(line)?);
                    text.push('\n');
                }
            } else {
                text = crate::layers::render(layers.profile(), &shown);
            }
            write_out(&text)
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let problems = crate::layers::check(&file)?;
            if problems.is_empty() {
                return write_out(&format!("{}: ok\n", file.display()));
            }
            let mut text = String::new();
            for problem in &problems {
                text.push_str(&format!("{}: {problem}\n", file.display()));
            }
            write_out(&text)?;
            tracing::debug!(problems = problems.len(), "config check failed");
            std::process::exit(1);
        }
        Command::Run {
            store,
            config,
            args,
        } => {
            let local = local::Local::open(
                crate::stack::local_stack(&store, model_config(config.as_deref())?).await?,
            )
            .await?;
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
            let open = async || {
                local::Local::open(
                    crate::stack::local_stack(&store, model_config(config.as_deref())?).await?,
                )
                .await
            };
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
            let local = local::Local::open(
                crate::stack::local_stack(&store, model_config(config.as_deref())?).await?,
            )
            .await?;
            if !local::eval(&local, args).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::ExtractPdf => {
            use std::io::{Read as _, Write as _};
            let mut bytes = Vec::new();
            std::io::stdin().lock().read_to_end(&mut bytes)?;
            let text = switchyard_retrieval::extract::pdf_text(&bytes)?;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
        Command::Migrate { store } => {
            let (store, location) = store.open().await?;
            let head = store.head().await?;
            tracing::info!(store = %location, %head, "event log schema is up to date");
            Ok(())
        }
        Command::Tenant { server, command } => client::tenant(&server, command).await,
        Command::Sim {
            command: SimCommand::Workload { n, seed },
        } => {
            use std::io::Write as _;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for task in switchyard_inference::providers::verifiable::workload(n, seed) {
                writeln!(out, "{}", task.to_json())?;
            }
            out.flush()?;
            Ok(())
        }
        Command::Router {
            command: RouterCommand::Bench(args),
        } => bench::bench(args).await,
        Command::Key { server, command } => client::key(&server, command).await,
        Command::Flag { server, command } => flags::run(&server, command).await,
        Command::Registry { command } => {
            let mut out = std::io::stdout().lock();
            let trust = |file: Option<&std::path::Path>| model_config(file).map(|c| c.registry);
            registry::run(command, &mut out, &trust).await?;
            std::io::Write::flush(&mut out)?;
            Ok(())
        }
        Command::Dataset { server, command } => client::dataset(&server, command).await,
        Command::Billing { server, command } => billing::run(&server, command).await,
        Command::Projections { store, command } => {
            let (log, _) = store.open().await?;
            let read = store.open_read().await?;
            projections::run(log, read, command).await
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
            let config = model_config(config.as_deref())?;
            let (store, _) = store.open().await?;
            let scope = tenant.map_or(
                switchyard_events::Scope::All,
                switchyard_events::Scope::Tenant,
            );
            let log = switchyard_inference::router::offline::load_log(
                store.as_ref(),
                scope,
                metric.as_deref(),
            )
            .await?;
            let report = switchyard_actors::router::ope::evaluate(
                &policy,
                &log,
                &switchyard_inference::router::offline::typical_costs(&config),
                min_exploration
                    .unwrap_or(config.router.min_exploration)
                    .clamp(0.0, 0.5),
                &mut rand::rng(),
            );
            client::print_report(&report, json)
        }
    }
}
