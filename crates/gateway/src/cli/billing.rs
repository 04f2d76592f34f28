//! `switchyard billing …`: price books, invoices, credit notes and what-if re-pricing, through
//! a running server's admin API (the same actors and checks as an HTTP call).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};
use switchyard_actors::billing::pricing::BookFile;
use switchyard_actors::billing::usd;

use super::client::{Client, ServerArgs, encoded, print};

#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// Publish a price book (TOML: `[plans.PLAN]` with `discount_percent`, `included_usd` and
    /// `[plans.PLAN.models.MODEL]` prices in dollars per million tokens): a new version of each
    /// plan it names.
    Publish {
        #[arg(long)]
        price_book: PathBuf,
        /// The first period it prices, `YYYY-MM` (default: the file's, else this month).
        #[arg(long)]
        effective_from: Option<String>,
    },
    /// List every plan's price-book versions.
    Books,
    /// Print a tenant's invoice for a month (closed, or the open month's draft).
    Invoice {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        month: String,
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Print every tenant's invoice for a month, as JSON or CSV.
    Export {
        #[arg(long)]
        month: String,
        #[arg(long, default_value = "csv")]
        format: String,
    },
    /// Close a tenant's invoice for a month that has ended.
    Close {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        month: String,
    },
    /// Record that a closed invoice was paid.
    Paid {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        month: String,
    },
    /// Issue a credit note against a closed invoice.
    Credit {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        month: String,
        #[arg(long)]
        amount_usd: f64,
        #[arg(long)]
        reason: String,
    },
    /// Set the day of the month a tenant's periods start on (1-28).
    BillingDay {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        day: u8,
    },
    /// Price a month's recorded usage under another price book and print each tenant's
    /// invoice beside the real one. Writes nothing.
    Reprice {
        #[arg(long)]
        price_book: PathBuf,
        #[arg(long)]
        month: String,
        /// The server's JSON answer instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// A TOML price book as the API's JSON.
fn read_book(path: &Path) -> anyhow::Result<BookFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the price book {}", path.display()))?;
    let book: BookFile =
        toml::from_str(&text).with_context(|| format!("{} is not a price book", path.display()))?;
    book.prices()
        .map_err(|message| anyhow::anyhow!("{}: {message}", path.display()))?;
    Ok(book)
}

fn write(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// The re-pricing as a table: one row per tenant and the totals.
fn reprice_table(answer: &Value) -> String {
    let micros = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = format!(
        "{:<38} {:<14} {:>16} {:>16} {:>16}\n",
        "tenant", "plan", "actual USD", "repriced USD", "difference USD"
    );
    for row in answer["tenants"].as_array().into_iter().flatten() {
        let diff = row["difference_micros"].as_i64().unwrap_or(0);
        let sign = if diff < 0 { "-" } else { "+" };
        out.push_str(&format!(
            "{:<38} {:<14} {:>16} {:>16} {:>16}\n",
            row["tenant"].as_str().unwrap_or(""),
            row["plan"].as_str().unwrap_or(""),
            usd(micros(&row["actual"]["total_micros"])),
            usd(micros(&row["repriced"]["total_micros"])),
            format!("{sign}{}", usd(diff.unsigned_abs())),
        ));
    }
    out.push_str(&format!(
        "{:<38} {:<14} {:>16} {:>16}\n",
        "TOTAL",
        "",
        usd(micros(&answer["actual_micros"])),
        usd(micros(&answer["repriced_micros"])),
    ));
    out
}

pub async fn run(args: &ServerArgs, command: BillingCommand) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let post = reqwest::Method::POST;
    match command {
        BillingCommand::Publish {
            price_book,
            effective_from,
        } => {
            let mut book = read_book(&price_book)?;
            if effective_from.is_some() {
                book.effective_from = effective_from;
            }
            let body = serde_json::to_value(&book)?;
            print(
                &client
                    .call(post, "/v1/admin/price-books", Some(body))
                    .await?,
            )
        }
        BillingCommand::Books => print(
            &client
                .call(reqwest::Method::GET, "/v1/admin/price-books", None)
                .await?,
        ),
        BillingCommand::Invoice {
            tenant,
            month,
            format,
        } => write(
            &client
                .text(&format!(
                    "/v1/admin/tenants/{}/invoices/{}?format={}",
                    encoded(&tenant),
                    encoded(&month),
                    encoded(&format)
                ))
                .await?,
        ),
        BillingCommand::Export { month, format } => write(
            &client
                .text(&format!(
                    "/v1/admin/invoices?period={}&format={}",
                    encoded(&month),
                    encoded(&format)
                ))
                .await?,
        ),
        BillingCommand::Close { tenant, month } => print(
            &client
                .call(
                    post,
                    &format!(
                        "/v1/admin/tenants/{}/invoices/{}/close",
                        encoded(&tenant),
                        encoded(&month)
                    ),
                    Some(json!({})),
                )
                .await?,
        ),
        BillingCommand::Paid { tenant, month } => print(
            &client
                .call(
                    post,
                    &format!(
                        "/v1/admin/tenants/{}/invoices/{}/paid",
                        encoded(&tenant),
                        encoded(&month)
                    ),
                    Some(json!({})),
                )
                .await?,
        ),
        BillingCommand::Credit {
            tenant,
            month,
            amount_usd,
            reason,
        } => print(
            &client
                .call(
                    post,
                    &format!("/v1/admin/tenants/{}/credit-notes", encoded(&tenant)),
                    Some(json!({"period": month, "amount_usd": amount_usd, "reason": reason})),
                )
                .await?,
        ),
        BillingCommand::BillingDay { tenant, day } => print(
            &client
                .call(
                    reqwest::Method::PUT,
                    &format!("/v1/admin/tenants/{}/billing-day", encoded(&tenant)),
                    Some(json!({"billing_day": day})),
                )
                .await?,
        ),
        BillingCommand::Reprice {
            price_book,
            month,
            json,
        } => {
            let book = read_book(&price_book)?;
            let body = json!({"period": month, "book": book});
            let answer = client
                .call(post, "/v1/admin/billing/reprice", Some(body))
                .await?;
            if json {
                print(&answer)
            } else {
                write(&reprice_table(&answer))
            }
        }
    }
}
