//! `switchyard projections …`: projector status, rebuilds (with a progress bar), the dead-letter
//! queue and retention, on the read-model database directly.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use switchyard_events::EventStore;
use switchyard_projections::{ReadDb, projectors};

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projector's checkpoint, how far behind the log it is, and its open dead letters.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a projector (or `all`) from the start of the log into shadow tables and swap them
    /// in. A running server keeps projecting meanwhile; the swap waits until the rebuild has
    /// caught up with it.
    Rebuild {
        /// usage, inferences, billing, directory, or all.
        projector: String,
        /// Events per transaction.
        #[arg(long, default_value_t = 5000)]
        batch: usize,
    },
    /// The dead-letter queue: events a projector could not apply.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Delete read-model data older than a number of days (whole monthly partitions in
    /// PostgreSQL).
    Retention {
        #[arg(long)]
        keep_days: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Unresolved dead letters, newest first (JSON lines).
    List {
        /// Only this projector's.
        #[arg(long)]
        projector: Option<String>,
        /// Resolved ones too.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// One dead letter with its event as JSON.
    Show { id: i64 },
    /// Apply a dead letter's event again (after a fix) and mark it resolved.
    Retry { id: i64 },
}

#[expect(clippy::print_stdout, reason = "the command's output")]
pub async fn run(
    log: Arc<dyn EventStore>,
    read: ReadDb,
    command: ProjectionsCommand,
) -> anyhow::Result<()> {
    match command {
        ProjectionsCommand::Status { json } => {
            let head = log.head().await?.0;
            let checkpoints = read.checkpoints().await?;
            let letters = read.dead_letters(None, false, i64::MAX).await?;
            let rows: Vec<serde_json::Value> = checkpoints
                .iter()
                .map(|(name, position, updated)| {
                    let open = letters.iter().filter(|l| &l.projector == name).count();
                    serde_json::json!({
                        "projector": name,
                        "position": position,
                        "behind": head.saturating_sub(*position),
                        "updated_at_us": updated,
                        "dead_letters": open,
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::json!({"head": head, "projectors": rows}));
            } else {
                println!("log head {head}");
                println!(
                    "{:<24} {:>12} {:>10} {:>6}",
                    "projector", "position", "behind", "dlq"
                );
                for (name, position, _) in &checkpoints {
                    let open = letters.iter().filter(|l| &l.projector == name).count();
                    println!(
                        "{name:<24} {position:>12} {:>10} {open:>6}",
                        head.saturating_sub(*position)
                    );
                }
            }
            Ok(())
        }
        ProjectionsCommand::Rebuild { projector, batch } => {
            let chosen: Vec<_> = if projector == "all" {
                projectors::ALL.to_vec()
            } else {
                vec![projectors::by_name(&projector).with_context(|| {
                    format!(
                        "no projector {projector:?} (usage, inferences, billing, directory, all)"
                    )
                })?]
            };
            for projector in chosen {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix:>10} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(projector.name);
                let report = switchyard_projections::rebuild(
                    log.as_ref(),
                    &read,
                    projector,
                    batch.max(1),
                    &|at, head| {
                        bar.set_length(head);
                        bar.set_position(at);
                    },
                )
                .await?;
                bar.finish();
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(())
        }
        ProjectionsCommand::Dlq { command } => match command {
            DlqCommand::List {
                projector,
                all,
                limit,
            } => {
                for entry in read.dead_letters(projector.as_deref(), all, limit).await? {
                    println!("{}", serde_json::to_string(&entry)?);
                }
                Ok(())
            }
            DlqCommand::Show { id } => {
                let entry = read
                    .dead_letter(id)
                    .await?
                    .with_context(|| format!("no dead letter {id}"))?;
                let position = u64::try_from(entry.position).unwrap_or(0);
                let event =
                    switchyard_projections::runner::event_at(log.as_ref(), position).await?;
                let event = event.map(|e| match switchyard_events::JsonEvent::from_recorded(&e) {
                    Ok(json) => serde_json::to_value(json).unwrap_or_default(),
                    Err(error) => serde_json::json!({
                        "event_type": e.event_type,
                        "payload_bytes": e.payload.len(),
                        "decode_error": error.to_string(),
                    }),
                });
                println!(
                    "{}",
                    serde_json::json!({"dead_letter": entry, "event": event})
                );
                Ok(())
            }
            DlqCommand::Retry { id } => {
                let done =
                    switchyard_projections::retry_dead_letter(log.as_ref(), &read, id).await?;
                anyhow::ensure!(done, "no unresolved dead letter {id}");
                println!("{}", serde_json::json!({"id": id, "resolved": true}));
                Ok(())
            }
        },
        ProjectionsCommand::Retention { keep_days } => {
            let cutoff =
                time::OffsetDateTime::now_utc().unix_timestamp() - i64::from(keep_days) * 86_400;
            for line in read.retention(cutoff).await? {
                println!("{line}");
            }
            Ok(())
        }
    }
}
