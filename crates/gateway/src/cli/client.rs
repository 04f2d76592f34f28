//! The `tenant` and `key` subcommands: a thin client of a running server's admin API, so that
//! every change goes through the same actors, checks and events as an HTTP call (and works the
//! same against one node or a cluster). Output is the server's JSON, pretty-printed.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the running server.
    #[arg(
        long,
        env = "SWITCHYARD_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// Admin token; when unset, read from `<data dir>/admin-token` (as `serve` generated it).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Where to find a generated admin token.
    #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = "./switchyard-data")]
    data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        #[arg(long)]
        name: String,
        /// The plan it is billed under.
        #[arg(long, default_value = "free")]
        plan: String,
    },
    /// List tenants in creation order.
    List {
        /// Show tenants created after this tenant id (the previous page's `next_after`).
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show a tenant with its limits, flags and keys (never the keys themselves).
    Show { id: String },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Issue an API key; the key is printed once, here, and never again.
    Create {
        /// The tenant id.
        tenant: String,
        #[arg(long)]
        name: String,
        /// A scope the key carries (repeat for several).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// RFC 3339 time after which the key stops working.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Revoke an API key for good.
    Revoke { tenant: String, key_id: String },
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Print a tenant's captured inferences as JSON lines: an eval task set
    /// (`{id, input, expected, scorer, tags}`, for `switchyard eval` and `switchyard replay`),
    /// or with `--raw` each capture as kept.
    Export {
        #[arg(long)]
        tenant: String,
        /// Captured at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Captured before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// The captures as kept (redacted request, choices, usage), not task lines.
        #[arg(long)]
        raw: bool,
    },
    /// Delete a tenant's captured payloads (all, or those from before `--before`); recorded in
    /// the log as `CapturesDeleted`. Prints how many went.
    Delete {
        #[arg(long)]
        tenant: String,
        /// Only captures from before this time (RFC 3339).
        #[arg(long)]
        before: Option<String>,
    },
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub(crate) fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let token = match &args.admin_token {
            Some(token) => token.clone(),
            None => {
                let path = args.data_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no --admin-token / SWITCHYARD_ADMIN_TOKEN, and cannot read {}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        Ok(Client {
            http: reqwest::Client::new(),
            base: args.server.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            // A retry of the same CLI call must not act twice.
            request = request
                .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                .json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {url}"))?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("no details");
            let code = value["error"]["code"].as_str().unwrap_or("error");
            anyhow::bail!("{status}: {code}: {message}");
        }
        Ok(value)
    }
}

impl Client {
    /// A GET whose answer is text (JSON lines, CSV), as it came.
    pub(crate) async fn text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            anyhow::bail!("{status}: {text}");
        }
        Ok(text)
    }
}

pub(crate) fn print(value: &Value) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

pub async fn tenant(args: &ServerArgs, command: TenantCommand) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let value = match command {
        TenantCommand::Create { name, plan } => {
            client
                .call(
                    reqwest::Method::POST,
                    "/v1/admin/tenants",
                    Some(json!({"name": name, "plan": plan})),
                )
                .await?
        }
        TenantCommand::List { after, limit } => {
            let after = after.map(|a| format!("&after={a}")).unwrap_or_default();
            client
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/admin/tenants?limit={limit}{after}"),
                    None,
                )
                .await?
        }
        TenantCommand::Show { id } => {
            client
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/admin/tenants/{id}"),
                    None,
                )
                .await?
        }
    };
    print(&value)
}

pub async fn key(args: &ServerArgs, command: KeyCommand) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let value = match command {
        KeyCommand::Create {
            tenant,
            name,
            scopes,
            expires_at,
        } => {
            let body = json!({"name": name, "scopes": scopes, "expires_at": expires_at});
            client
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/admin/tenants/{tenant}/keys"),
                    Some(body),
                )
                .await?
        }
        KeyCommand::Revoke { tenant, key_id } => {
            client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/admin/tenants/{tenant}/keys/{key_id}"),
                    None,
                )
                .await?
        }
    };
    print(&value)
}

/// Prints an off-policy evaluation: a table, or JSON.
pub fn print_report(
    report: &switchyard_actors::router::ope::Report,
    json: bool,
) -> anyhow::Result<()> {
    let out = if json {
        serde_json::to_string_pretty(report)?
    } else {
        let row = |name: &str, e: &switchyard_actors::router::ope::Estimate| {
            format!(
                "{name:<28} {:>8.4}   [{:.4}, {:.4}]\n",
                e.value, e.low, e.high
            )
        };
        let mut text = format!(
            "candidate policy: {}\nlogged decisions with a reward: {} (effective sample size {:.1})\n\n",
            report.policy, report.decisions, report.effective_sample_size
        );
        text.push_str(&format!("{:<28} {:>8}   95% interval\n", "", "reward"));
        text.push_str(&row("served (logged)", &report.logged_reward));
        text.push_str(&row("candidate, IPS", &report.ips));
        text.push_str(&row("candidate, SNIPS", &report.snips));
        text.push_str(&row("candidate, doubly robust", &report.dr));
        text.push_str(&format!(
            "\ncost per request: served {:.1} µ$, candidate (IPS) {:.1} µ$ [{:.1}, {:.1}]\n",
            report.logged_cost_micros,
            report.cost_micros.value,
            report.cost_micros.low,
            report.cost_micros.high
        ));
        let lift = report.snips.value - report.logged_reward.value;
        text.push_str(&format!("SNIPS lift over the serving policy: {lift:+.4}\n"));
        text
    };
    #[expect(clippy::print_stdout, reason = "the report is the command's output")]
    {
        println!("{out}");
    }
    Ok(())
}

/// A query string's value, percent-encoded (an RFC 3339 time's `+` and `:`).
pub(crate) fn encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn dataset(args: &ServerArgs, command: DatasetCommand) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    match command {
        DatasetCommand::Export {
            tenant,
            since,
            until,
            raw,
        } => {
            let mut query = vec![format!("format={}", if raw { "raw" } else { "dataset" })];
            if let Some(since) = since {
                query.push(format!("since={}", encoded(&since)));
            }
            if let Some(until) = until {
                query.push(format!("until={}", encoded(&until)));
            }
            let text = client
                .text(&format!(
                    "/v1/admin/tenants/{tenant}/captures?{}",
                    query.join("&")
                ))
                .await?;
            use std::io::Write;
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
        DatasetCommand::Delete { tenant, before } => {
            let query = before
                .map(|b| format!("?before={}", encoded(&b)))
                .unwrap_or_default();
            let value = client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/admin/tenants/{tenant}/captures{query}"),
                    None,
                )
                .await?;
            print(&value)
        }
    }
}
