//! Durability probe: appends to a SQLite event store in a loop from several concurrent writers
//! and prints `<event id> <global position>` for every append *after* it was acknowledged.
//!
//! Usage: `switchyard-append-probe <file.db> [writers]`. Kill it at any moment (`kill -9`); every
//! printed event must still be in the file afterwards. The crash test
//! (`tests/sqlite_crash.rs`) does exactly that; operators can use it to check a disk.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use switchyard_events::{
    EventId, EventStore, ExpectedVersion, Metadata, NewEvent, SqliteStore, StreamId, TenantId,
};
use tokio::sync::Mutex;

/// The payload the probe writes for an event: its id repeated, so a reader can check it intact.
fn payload(id: EventId) -> Bytes {
    Bytes::from(id.as_uuid().as_bytes().repeat(12))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: switchyard-append-probe <file.db> [writers]")?;
    let writers: usize = args.next().map(|w| w.parse()).transpose()?.unwrap_or(8);
    let store = SqliteStore::open(&path).await?;
    let tenant = TenantId::new();
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, out) = (store.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::of("probe", format!("{}-{w}", EventId::new()))?;
            loop {
                let event_id = EventId::new();
                let event = NewEvent {
                    event_id,
                    event_type: "ProbeAppended".into(),
                    schema_version: 1,
                    payload: payload(event_id),
                    metadata: Metadata::default(),
                };
                let result = store
                    .append(tenant, &stream, ExpectedVersion::Any, vec![event])
                    .await?;
                let mut out = out.lock().await;
                writeln!(out, "{event_id} {}", result.last_position())?;
                out.flush()?;
            }
            #[allow(unreachable_code, reason = "the loop ends only by error or by kill")]
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}
