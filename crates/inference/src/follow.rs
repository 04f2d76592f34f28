//! The server's one subscription to the log: every in-memory fold that the request path reads
//! (the key index, the budget meter, the router's bandit state, the billing feed) is a
//! [`Folder`] fed from it, so the log is tailed once per process, whatever the number of folds.

use std::sync::Arc;

use futures_util::StreamExt;
use switchyard_events::{EventStore, GlobalPosition, RecordedEvent, Scope};

/// Something kept current from the log by the one subscription the server follows.
pub trait Folder: Send + Sync {
    /// Folds one committed event (every event passes; take only what concerns you).
    fn fold(&self, recorded: &RecordedEvent);
}

/// Folds the whole log into `folders`, returns once they are caught up to the head it read at
/// the start (so a restarted server knows every key and every settled spend at once), and keeps
/// them current in a background task.
pub async fn follow(
    store: Arc<dyn EventStore>,
    folders: Vec<Arc<dyn Folder>>,
) -> crate::Result<()> {
    let mut events = store.subscribe_all(Scope::All, GlobalPosition::START);
    let head = store.head().await?;
    let mut position = GlobalPosition::START;
    while position < head {
        let Some(event) = events.next().await else {
            break;
        };
        let event = event?;
        position = event.global_position;
        for folder in &folders {
            folder.fold(&event);
        }
    }
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    for folder in &folders {
                        folder.fold(&event);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "the in-memory folds stopped following the log");
                    break;
                }
            }
        }
    });
    Ok(())
}
