//! The composition root: opens the configured store and builds what serves requests (the
//! admin side and the inference pipeline, kept current from the log by one subscription).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::web;
use anyhow::Context;
use clap::Args;
use switchyard_actors::billing::Billing;
use switchyard_actors::tenant::Tenant;
use switchyard_actors::{Runtime, RuntimeConfig};
use switchyard_events::{EventStore, PostgresOptions, PostgresStore, SqliteStore};
use switchyard_inference::Pipeline;
use switchyard_inference::admission::meter::Meter;
use switchyard_inference::admission::ratelimit::{Limiter, RedisLimiter};
use switchyard_inference::admission::shared::SharedBudgets;
use switchyard_inference::billing_feed::BillingFeed;
use switchyard_inference::cache::ResponseCache;
use switchyard_inference::config::Config;
use switchyard_inference::follow::{Folder, follow};
use switchyard_inference::invoicing::Invoicer;
use switchyard_inference::pipeline::{Durability, RecordForm, Recording};
use switchyard_inference::providers::Providers;
use switchyard_inference::redis_link::RedisTls;
use switchyard_inference::resilience::{BreakerSettings, Resilience};
use switchyard_inference::router::RouterHub;
use switchyard_projections::relay::NatsSecurity;

use crate::oidc::{OidcArgs, Verifier};

use crate::auth::{self, AccountView, KeyIndex, KeySecret, TenantDirectory};
use crate::state::Admin;

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Directory of the embedded SQLite files and of the generated admin token and key secret.
    #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = "./switchyard-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL; when set, the event log lives there instead of in SQLite.
    #[arg(long, env = "SWITCHYARD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL schema of the log and the read models (separate schemas are separate
    /// deployments in one database).
    #[arg(long, env = "SWITCHYARD_DATABASE_SCHEMA", default_value = "public")]
    pub database_schema: String,
    /// When an inference's answer goes out: `durable` after its events are on disk (fsync),
    /// `batched` at once, its events joining the next group commit (a crash loses the last
    /// commit's window of inference records; budgets are still never exceeded).
    #[arg(long, env = "SWITCHYARD_DURABILITY", default_value = "durable")]
    pub durability: Durability,
    /// `batched` only: milliseconds the answered inferences are gathered before they are
    /// appended together, in one commit (0: at once). A crash loses at most this window's
    /// records and their commit's.
    #[arg(long, env = "SWITCHYARD_BATCH_WINDOW_MS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub batch_window_ms: u64,
    /// How an inference is logged: `one` event (its outcome, carrying the request and the
    /// route), or `split` into the three events that releases before it read — for a cluster in
    /// the middle of a rolling upgrade from such a release (README, "An inference's record").
    #[arg(long, env = "SWITCHYARD_INFERENCE_RECORD", default_value = "one")]
    pub inference_record: RecordForm,
}

impl StoreArgs {
    /// Opens the configured backend (and migrates its schema).
    pub async fn open(&self) -> anyhow::Result<(Arc<dyn EventStore>, String)> {
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
    pub async fn open_read(&self) -> anyhow::Result<switchyard_projections::ReadDb> {
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

/// What serves requests: the log, the admin side (tenants, keys, limits) and the inference
/// pipeline (providers, router, resilience, limits, budgets). `serve` puts HTTP in front of
/// it; `run`, `replay` and `eval` use it in-process.
pub struct Stack {
    pub store: Arc<dyn EventStore>,
    pub admin: web::Data<Admin>,
    pub pipeline: web::Data<Pipeline>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").finish_non_exhaustive()
    }
}

/// TLS and credentials for Redis and NATS. PostgreSQL's are in its URL, as libpq has them:
/// `sslmode` (`require`, `verify-ca`, `verify-full`), `sslrootcert`, `sslcert`, `sslkey`.
#[derive(Debug, Clone, Default, Args)]
pub struct BackingTls {
    /// PEM CA to trust for a `rediss://` Redis URL (instead of the system's roots).
    #[arg(long, env = "SWITCHYARD_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM client certificate for Redis (with `--redis-client-key`), when Redis verifies clients.
    #[arg(long, env = "SWITCHYARD_REDIS_CLIENT_CERT")]
    pub redis_client_cert: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_REDIS_CLIENT_KEY")]
    pub redis_client_key: Option<PathBuf>,
    /// PEM CA to trust for NATS; setting it requires TLS (as does a `tls://` URL).
    #[arg(long, env = "SWITCHYARD_NATS_CA_FILE")]
    pub nats_ca_file: Option<PathBuf>,
    /// PEM client certificate for NATS (with `--nats-client-key`).
    #[arg(long, env = "SWITCHYARD_NATS_CLIENT_CERT")]
    pub nats_client_cert: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_NATS_CLIENT_KEY")]
    pub nats_client_key: Option<PathBuf>,
    /// A NATS `.creds` file (user JWT and seed); user and password can go in the URL instead.
    #[arg(long, env = "SWITCHYARD_NATS_CREDS_FILE")]
    pub nats_creds_file: Option<PathBuf>,
}

impl BackingTls {
    pub fn redis(&self) -> RedisTls {
        RedisTls {
            ca_file: self.redis_ca_file.clone(),
            client_cert: self.redis_client_cert.clone(),
            client_key: self.redis_client_key.clone(),
        }
    }

    pub fn nats(&self) -> NatsSecurity {
        NatsSecurity {
            ca_file: self.nats_ca_file.clone(),
            client_cert: self.nats_client_cert.clone(),
            client_key: self.nats_client_key.clone(),
            creds_file: self.nats_creds_file.clone(),
        }
    }
}

/// The config without a file: the simulated models, and the local embedding model
/// `all-minilm-l6-v2` when `SWITCHYARD_EMBEDDING_MODEL_DIR` names its folder. A file is read
/// through [`crate::layers`] (its profiles).
pub fn builtin_config() -> anyhow::Result<Config> {
    Ok(match std::env::var("SWITCHYARD_EMBEDDING_MODEL_DIR") {
        Ok(dir) if !dir.is_empty() => Config::default_with_local_embeddings(&dir)?,
        _ => Config::default(),
    })
}

/// Builds the stack on the configured store.
pub async fn stack(
    args: &StoreArgs,
    config: Config,
    admin_token: Option<String>,
    redis: Option<(&str, RedisTls)>,
    oidc: Option<&OidcArgs>,
) -> anyhow::Result<Stack> {
    let oidc = match oidc {
        Some(args) => Verifier::from_args(args)?,
        None => None,
    };
    if let Some(verifier) = &oidc {
        tracing::info!(
            ?verifier,
            "admin API: OIDC bearer tokens on (the static token is break-glass)"
        );
    }
    let providers = Providers::build(&config)?;
    let trust = Arc::new(
        switchyard_manifests::Trust::compile(&config.registry)
            .map_err(|problems| anyhow::anyhow!("[registry]: {}", problems.join("; ")))?,
    );
    let (store, location) = args.open().await?;
    let head = store.head().await?;
    tracing::info!(store = %location, %head, "event log open");
    std::fs::create_dir_all(&args.data_dir)?;
    let token = match admin_token {
        Some(token) if token.len() >= 16 => token,
        Some(_) => anyhow::bail!("SWITCHYARD_ADMIN_TOKEN must be at least 16 characters"),
        None => admin_token_file(&args.data_dir.join("admin-token"))?,
    };
    let secret = KeySecret::load_or_create(&args.data_dir.join("key-secret"))?;
    let router = Arc::new(RouterHub::new(
        config.router.clone(),
        Runtime::new(store.clone(), RuntimeConfig::default()),
    ));
    let billing_actors = Runtime::<Billing>::new(store.clone(), RuntimeConfig::default());
    let billing = BillingFeed::start(billing_actors.clone());
    let keys = Arc::new(KeyIndex::default());
    let directory = Arc::new(TenantDirectory::default());
    let meter = Arc::new(Meter::default());
    let library = switchyard_retrieval::Library::start();
    let folders: Vec<Arc<dyn Folder>> = vec![
        Arc::new(crate::state::LibraryFeed(library.clone())),
        keys.clone(),
        directory.clone(),
        meter.clone(),
        router.clone(),
        billing.clone(),
    ];
    let follower = follow(store.clone(), folders).await?;
    let invoicer = Arc::new(Invoicer::new(
        store.clone(),
        billing_actors,
        billing,
        follower.clone(),
        Arc::new(time::OffsetDateTime::now_utc),
    ));
    let limiter = Arc::new(match &redis {
        Some((url, tls)) => Limiter::Redis(
            RedisLimiter::connect_with(url, tls)
                .await
                .context("cannot reach Redis (SWITCHYARD_REDIS_URL)")?,
        ),
        None => Limiter::local(),
    });
    // Several nodes share one Redis: their budgets are checked there, exactly, for all of them.
    let shared_budgets = match &redis {
        Some((url, tls)) => Some(
            SharedBudgets::connect(url, tls)
                .await
                .context("cannot reach Redis (SWITCHYARD_REDIS_URL)")?,
        ),
        None => None,
    };
    // The response cache: in Redis when the nodes share one (a hit on any node), else here.
    let cache = match (config.cache.enabled, &redis) {
        (false, _) => None,
        (true, Some((url, tls))) => Some(Arc::new(
            ResponseCache::redis(config.cache.clone(), url, tls)
                .await
                .context("cannot reach Redis (SWITCHYARD_REDIS_URL) for the response cache")?,
        )),
        (true, None) => Some(Arc::new(ResponseCache::memory(config.cache.clone()))),
    };
    if let Some(cache) = &cache {
        tracing::info!(?cache, "response cache on");
    }
    let tenants = Runtime::<Tenant>::new(store.clone(), RuntimeConfig::default());
    let resilience = Resilience::new(
        &config,
        BreakerSettings::default(),
        store.clone(),
        router.clone(),
    );
    let pipeline = Pipeline {
        config,
        providers,
        store: store.clone(),
        router,
        resilience,
        limiter: limiter.clone(),
        meter: meter.clone(),
        shared_budgets,
        accounts: Arc::new(AccountView {
            keys: keys.clone(),
            directory: directory.clone(),
        }),
        recording: Recording::new(args.durability)
            .with_form(args.inference_record)
            .with_window(std::time::Duration::from_millis(args.batch_window_ms)),
        cache,
    };
    tracing::info!(
        durability = %args.durability,
        form = %args.inference_record,
        batch_window_ms = args.batch_window_ms,
        "inference recording"
    );
    let admin = Admin {
        store: store.clone(),
        tenants,
        keys,
        directory,
        meter,
        secret,
        token,
        oidc,
        limiter,
        follower,
        invoicer,
        auth_failures: auth::AuthFailures::default(),
        flags: Runtime::new(store.clone(), RuntimeConfig::default()),
        trust,
        library,
        documents: Runtime::new(store.clone(), RuntimeConfig::default()),
    };
    Ok(Stack {
        store,
        admin: web::Data::new(admin),
        pipeline: web::Data::new(pipeline),
    })
}

/// The stack of an in-process command: no admin API, so a throwaway admin token.
pub async fn local_stack(args: &StoreArgs, config: Config) -> anyhow::Result<Stack> {
    stack(args, config, Some(auth::generate().key), None, None).await
}

/// Reads the generated admin token, creating it on first start, and says where it is.
fn admin_token_file(path: &Path) -> anyhow::Result<String> {
    if !path.exists() {
        let token = format!("sya_{}", auth::generate().key.trim_start_matches("sy_"));
        auth::write_private(path, &token)?;
    }
    let token = std::fs::read_to_string(path)?.trim().to_owned();
    // On stderr, so stdout keeps its one line (the listening address).
    eprintln!(
        "switchyard: admin token (SWITCHYARD_ADMIN_TOKEN unset) is in {}",
        path.display()
    );
    Ok(token)
}
