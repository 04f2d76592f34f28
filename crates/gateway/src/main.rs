//! `switchyard`: the one binary. `main` parses the command line, installs logging and TLS, and
//! hands the command to [`cli::run`]; the composition root is `stack`, the server `server`.

use clap::{CommandFactory as _, FromArgMatches as _};

/// The HTTP surfaces, one module per API.
mod api;
/// API keys, the key index, the tenant directory, and the accounts view admission reads.
mod auth;
/// The command line and its subcommands.
mod cli;
/// Where workflow tools may connect: every special-purpose address range, in every form.
mod egress;
/// The workflow engine's executor: model steps through the pipeline, tool steps over HTTP.
mod executor;
#[cfg(test)]
mod fuzz; // fuzz target: tool URLs and the addresses they reach
/// The HTTP plumbing the surfaces share: errors, request ids, parsing, middleware, idempotency.
mod http;
/// Documents in: text extraction (PDF in a child process), chunking, the document actor.
mod ingest;
/// Config profiles: defaults, the file, a profile section, the environment, the command line.
mod layers;
/// Admin identity: OIDC/JWT tokens checked against the IdP's JWKS, and the roles they grant.
mod oidc;
/// Traces over OTLP (when the `OTEL_*` variables ask for them).
mod otel;
/// One search of a tenant's documents, for the API, chat and the workflow `retrieve` node.
mod search;
/// `switchyard serve`: read side, engine, HTTP server.
mod server;
/// The tenant settings read on the request path: CORS origins, allowed models, guardrails.
mod settings;
/// The composition root: stores, folds, the admin side and the inference pipeline.
mod stack;
/// What the admin side's handlers share.
mod state;
/// Logs (JSON for the server, quiet for the CLI) and the HTTP metrics.
mod telemetry;
/// JSON views shared by the API and the CLI.
mod views;

fn main() -> anyhow::Result<()> {
    // The matches are kept: the config layers need where each value came from.
    let matches = cli::Cli::command().get_matches();
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    // HTTPS to providers: rustls with ring's primitives (pure Rust and assembly, no CMake), and
    // the system's certificate store through rustls-platform-verifier. Installed first: the
    // OTLP exporter's client needs it too.
    let installed = rustls::crypto::ring::default_provider()
        .install_default()
        .is_ok();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let traces = telemetry::init(cli.is_server(), &runtime);
    if !installed {
        tracing::debug!("a TLS crypto provider was already installed");
    }
    let outcome = runtime.block_on(cli::run(cli, &matches));
    // Export the spans still buffered.
    if let Some(provider) = traces
        && let Err(error) = provider.shutdown()
    {
        tracing::warn!(%error, "traces not all exported at exit");
    }
    outcome
}
