//! `switchyard registry …`: signing keys, signed manifests, and a running server's registry.
//!
//! - `keygen --id ID` writes a new ed25519 key file (`ID.key`, mode 0600) and prints the
//!   `[registry.keys.ID]` section that trusts it.
//! - `sign FILE --kind K --version N --key ID.key` writes the signed manifest of a tool,
//!   workflow, fragment or prompt definition (YAML or JSON) to stdout: canonical JSON bytes.
//! - `verify MANIFEST` checks one against the config's `[registry]` (with `--profile`, the
//!   environment's), as the server would: exit 1 and the refusal's code when it is refused.
//! - `publish MANIFEST` and `list` talk to a running server with a tenant API key.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use switchyard_manifests::{Kind, Manifest, SecretKey, SignedManifest, Trust};

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Generate a signing key: writes the key file and prints the config section that trusts
    /// its public key.
    Keygen {
        /// The key's id (letters, digits, `.`, `-`, `_`), named in every signature it makes.
        #[arg(long)]
        id: String,
        /// Where to write the key file (default `<id>.key`; never overwritten).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign a definition (YAML or JSON) as a manifest; the file goes to stdout (or `--out`).
    Sign {
        /// The definition: a tool, a WorkflowSpec, a fragment or a prompt (`{messages: [...]}`).
        file: PathBuf,
        /// tool, workflow, fragment or prompt.
        #[arg(long)]
        kind: String,
        /// The version this manifest publishes (from 1; a published version never changes).
        #[arg(long)]
        version: u32,
        /// The entry's name (default: the definition's `name`, or a fragment's `fragment`).
        #[arg(long)]
        name: Option<String>,
        /// The key file (`registry keygen`); without it the manifest is written unsigned.
        #[arg(long)]
        key: Option<PathBuf>,
        /// RFC 3339 time after which the manifest is refused.
        #[arg(long)]
        expires_at: Option<String>,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify a manifest against the config's `[registry]` keys (its profile's with
    /// `--profile`) as the server would.
    Verify {
        manifest: PathBuf,
        /// The config file with the `[registry]` section.
        #[arg(long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Refuse an unsigned manifest even where the config does not.
        #[arg(long)]
        require: bool,
    },
    /// Publish a manifest to a running server's registry (the API key's tenant).
    Publish {
        manifest: PathBuf,
        #[command(flatten)]
        tenant: TenantServer,
        /// The environment whose overlay applies to a workflow.
        #[arg(long)]
        env: Option<String>,
    },
    /// The tenant's registry entries: each version with its digest and signer (JSON).
    List {
        #[command(flatten)]
        tenant: TenantServer,
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
    },
}

/// A running server and a tenant API key.
#[derive(Debug, Args)]
pub struct TenantServer {
    /// Base URL of the running server.
    #[arg(
        long,
        env = "SWITCHYARD_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// A tenant API key with the `workflows` scope (or no scopes).
    #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
    api_key: String,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {} (it is never overwritten)", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// `registry keygen|sign|verify|publish|list`. `trust` reads the layered config's `[registry]`.
pub async fn run(
    command: RegistryCommand,
    out: &mut dyn std::io::Write,
    trust: &dyn Fn(Option<&Path>) -> anyhow::Result<switchyard_manifests::TrustConfig>,
) -> anyhow::Result<()> {
    match command {
        RegistryCommand::Keygen { id, out: path } => {
            let key = SecretKey::generate(&id)?;
            let path = path.unwrap_or_else(|| PathBuf::from(format!("{id}.key")));
            write_new(&path, &key.to_file())?;
            writeln!(
                out,
                "# key file: {} (keep it secret)\n[registry.keys.{id}]\npublic_key = \"{}\"",
                path.display(),
                key.public_key()
            )?;
        }
        RegistryCommand::Sign {
            file,
            kind,
            version,
            name,
            key,
            expires_at,
            out: path,
        } => {
            let kind = Kind::parse(&kind)?;
            let text = String::from_utf8(read(&file)?)
                .with_context(|| format!("{} is not UTF-8", file.display()))?;
            let body = switchyard_workflows::spec::parse_document(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {}",
                    file.display(),
                    switchyard_workflows::spec::describe(&e)
                )
            })?;
            let field = if kind == Kind::Fragment {
                "fragment"
            } else {
                "name"
            };
            let name = match (name, body.get(field).and_then(Value::as_str)) {
                (Some(name), _) => name,
                (None, Some(name)) => name.to_owned(),
                (None, None) => bail!("give --name: the definition has no `{field}`"),
            };
            let manifest = Manifest {
                kind,
                name,
                version,
                expires_at,
                body,
            };
            let bytes = match key {
                Some(key) => {
                    let text =
                        String::from_utf8(read(&key)?).context("the key file is not UTF-8")?;
                    manifest.sign(&SecretKey::from_file(&text)?)?
                }
                None => {
                    tracing::warn!("no --key: the manifest is written unsigned");
                    manifest.unsigned()?
                }
            };
            match path {
                Some(path) => std::fs::write(&path, &bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => out.write_all(&bytes)?,
            }
        }
        RegistryCommand::Verify {
            manifest,
            config,
            require,
        } => {
            let trust = Trust::compile(&trust(config.as_deref())?)
                .map_err(|problems| anyhow::anyhow!("[registry]: {}", problems.join("; ")))?;
            let outcome = SignedManifest::parse(&read(&manifest)?).and_then(|signed| {
                trust
                    .verify(&signed, require, time::OffsetDateTime::now_utc())
                    .map(|verified| (signed, verified))
            });
            match outcome {
                Ok((signed, verified)) => writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "kind": signed.manifest.kind.as_str(),
                        "name": signed.manifest.name,
                        "version": signed.manifest.version,
                        "digest": verified.digest,
                        "key_id": verified.key_id,
                    })
                )?,
                Err(error) => bail!("{}: {error}", error.code()),
            }
        }
        RegistryCommand::Publish {
            manifest,
            tenant,
            env,
        } => {
            let mut url = format!(
                "{}/v1/registry/manifests",
                tenant.server.trim_end_matches('/')
            );
            if let Some(env) = env {
                url.push_str(&format!("?env={env}"));
            }
            let request = reqwest::Client::new()
                .post(&url)
                .bearer_auth(&tenant.api_key)
                .header("content-type", "application/json")
                .body(read(&manifest)?);
            print_answer(out, request, &url).await?;
        }
        RegistryCommand::List { tenant, kind } => {
            let mut url = format!("{}/v1/registry", tenant.server.trim_end_matches('/'));
            if let Some(kind) = kind {
                url.push_str(&format!("?kind={kind}"));
            }
            let request = reqwest::Client::new()
                .get(&url)
                .bearer_auth(&tenant.api_key);
            print_answer(out, request, &url).await?;
        }
    }
    Ok(())
}

async fn print_answer(
    out: &mut dyn std::io::Write,
    request: reqwest::RequestBuilder,
    url: &str,
) -> anyhow::Result<()> {
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {url}"))?;
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{status}: {}: {}",
            value["error"]["code"].as_str().unwrap_or("error"),
            value["error"]["message"].as_str().unwrap_or("no details")
        );
    }
    writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    Ok(())
}
