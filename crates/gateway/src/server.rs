//! `switchyard serve`: the stack, the read side (projectors, NATS relay, event hub), the
//! workflow engine, and the HTTP server in front of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use clap::Args;
use switchyard_events::EventStore;
use switchyard_inference::Pipeline;

use crate::api::analytics::ReadSide;
use crate::api::events::EventHub;
use crate::api::ops::StoreHandle;
use crate::http::observe::observe;
use crate::stack::{Stack, StoreArgs, stack};
use crate::state::Admin;

/// Largest JSON body the API reads.
const MAX_BODY: usize = 256 * 1024;

/// `switchyard serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Bearer token of the admin API. When unset, one is generated on first start and kept
    /// in `<data dir>/admin-token`.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Redis URL; when set, rate-limit state is shared there by every node (in-process
    /// otherwise).
    #[arg(long, env = "SWITCHYARD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// TOML config of providers and models, and of these settings in `[server]`, with
    /// `[profiles.<name>]` sections (without one: the simulated models sim-small and
    /// sim-large). See the README for an example.
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// NATS URL; when set, every committed event is published to JetStream
    /// (`events.<tenant>.<stream type>`, `Nats-Msg-Id` = event id).
    #[arg(long, env = "SWITCHYARD_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// Events the event-feed ring holds for slow clients (SSE) before the slow-consumer
    /// policy applies.
    #[arg(long, default_value_t = 4096)]
    pub feed_ring: usize,
    /// Seconds of silence before an event feed sends a heartbeat.
    #[arg(long, default_value_t = 15)]
    pub feed_heartbeat_secs: u64,
    /// Run no workflow engine on this node: it still serves the workflow API (starts, signals
    /// and cancellations are recorded in the log), and the node holding the engine lease
    /// carries the runs out.
    #[arg(long, env = "SWITCHYARD_NO_WORKFLOWS")]
    pub no_workflows: bool,
    /// The drain on SIGTERM/SIGINT: the listener closes at once, and requests and streams in
    /// flight get this many seconds to finish before they are cut (then what was answered in
    /// `batched` durability is written to the log).
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// How often captures past their retention are deleted, in ms (one node sweeps at a
    /// time).
    #[arg(long, env = "SWITCHYARD_CAPTURE_SWEEP_MS", default_value_t = 60_000)]
    pub capture_sweep_ms: u64,
    /// How often ended billing periods are looked for and their invoices closed, in ms (one
    /// node closes at a time).
    #[arg(long, env = "SWITCHYARD_INVOICE_CLOSE_MS", default_value_t = 60_000)]
    pub invoice_close_ms: u64,
    /// How long after a period ends its invoice is closed, in seconds: inferences that were in
    /// flight at the end get this long to be recorded.
    #[arg(long, env = "SWITCHYARD_INVOICE_GRACE_SECS", default_value_t = 3_600)]
    pub invoice_grace_secs: u64,
    #[command(flatten)]
    pub oidc: crate::oidc::OidcArgs,
    #[command(flatten)]
    pub tls: crate::stack::BackingTls,
}

/// Builds everything and serves until SIGINT/SIGTERM (`args` and `config` as layered by
/// [`crate::layers`]).
pub async fn run(
    args: ServeArgs,
    config: switchyard_inference::config::Config,
) -> anyhow::Result<()> {
    let Stack {
        store,
        admin,
        pipeline,
    } = stack(
        &args.store,
        config,
        args.admin_token,
        args.redis_url.as_deref().map(|url| (url, args.tls.redis())),
        Some(&args.oidc),
    )
    .await?;
    let read_db = args.store.open_read().await?;
    let projections = switchyard_projections::Projections::start(
        store.clone(),
        read_db.clone(),
        switchyard_projections::RunnerConfig::default(),
    );
    if let Some(url) = args.nats_url {
        tokio::spawn(tracing::Instrument::instrument(
            switchyard_projections::relay::run(
                store.clone(),
                read_db,
                switchyard_projections::relay::RelayConfig {
                    security: args.tls.nats(),
                    ..switchyard_projections::relay::RelayConfig::new(url)
                },
            ),
            tracing::info_span!("nats_relay"),
        ));
    }
    let hub = EventHub::start(
        store.clone(),
        args.feed_ring,
        std::time::Duration::from_secs(args.feed_heartbeat_secs.max(1)),
    )
    .await?;
    let read = ReadSide { projections };
    tokio::spawn(tracing::Instrument::instrument(
        switchyard_inference::capture::sweep(
            store.clone(),
            std::time::Duration::from_millis(args.capture_sweep_ms.max(10)),
        ),
        tracing::info_span!("capture_retention"),
    ));
    tokio::spawn(tracing::Instrument::instrument(
        switchyard_inference::invoicing::run(
            admin.invoicer.clone(),
            std::time::Duration::from_millis(args.invoice_close_ms.max(10)),
            std::time::Duration::from_secs(args.invoice_grace_secs),
        ),
        tracing::info_span!("invoicing"),
    ));
    let engine = crate::executor::start_engine(
        store.clone(),
        admin.clone(),
        pipeline.clone(),
        !args.no_workflows,
    )
    .await?;
    serve(
        store,
        admin,
        pipeline,
        read,
        hub,
        engine,
        Bind {
            listen: args.listen,
            shutdown_timeout: args.shutdown_timeout,
        },
    )
    .await
}

/// Where to listen, and how long the drain may take.
struct Bind {
    listen: SocketAddr,
    shutdown_timeout: u64,
}

/// Binds and serves until SIGINT/SIGTERM.
async fn serve(
    store: Arc<dyn EventStore>,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
    read: ReadSide,
    hub: EventHub,
    engine: Arc<switchyard_workflows::Engine>,
    bind: Bind,
) -> anyhow::Result<()> {
    let Bind {
        listen,
        shutdown_timeout,
    } = bind;
    let read = web::Data::new(read);
    let hub = web::Data::new(hub);
    let store = web::Data::from(Arc::new(StoreHandle(store)));
    let engine = web::Data::from(engine);
    let recording = pipeline.recording.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(store.clone())
            .app_data(admin.clone())
            .app_data(pipeline.clone())
            .app_data(read.clone())
            .app_data(hub.clone())
            .app_data(engine.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .wrap(actix_web::middleware::from_fn(observe))
            .configure(crate::api::configure)
            .default_service(web::to(crate::api::ops::not_found))
    })
    // A streamed answer's first chunk follows its headers in a second write: with Nagle's
    // algorithm on, it waits for the client's (delayed, up to 40 ms) ACK of the headers.
    .tcp_nodelay(true)
    .shutdown_timeout(shutdown_timeout)
    .bind(listen)?;
    for addr in server.addrs() {
        tracing::info!(%addr, "listening");
        // The one line on stdout: scripts and tests read the bound address from it.
        #[expect(
            clippy::print_stdout,
            reason = "the bound address is the binary's output"
        )]
        {
            println!("switchyard listening on http://{addr}");
        }
    }
    server.run().await?;
    tracing::info!("stopped accepting; requests in flight finished or were cut");
    // In `batched` durability, answered inferences may still be on their way to the log.
    recording.drain().await;
    Ok(())
}
