//! The NATS relay: tails the log from its own checkpoint and publishes every committed event to
//! JetStream as `<prefix>.<tenant>.<stream category>`, with `Nats-Msg-Id` = the event id.
//!
//! Delivery is at-least-once from the relay and deduplicated by JetStream within the stream's
//! duplicate window: the checkpoint moves only after JetStream acknowledged every event of a
//! batch, so a crash or a NATS restart re-publishes at most that batch, and those copies carry
//! the same message ids. Subscribers that keep data longer than the window dedupe by event id
//! (also in the payload). What an acknowledgement is worth on a power loss depends on the
//! server's `sync_interval` (see deploy/README.md).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use switchyard_events::{EventStore, GlobalPosition, JsonEvent, RecordedEvent, Scope};
use time::OffsetDateTime;

use crate::db::ReadDb;
use crate::error::{Error, Result};
use crate::metrics::METRICS;

/// Where and how the relay publishes.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub url: String,
    /// JetStream stream that stores the events (created if missing).
    pub stream: String,
    /// Subject prefix: events go to `<prefix>.<tenant>.<stream category>`.
    pub prefix: String,
    /// Most events in flight before the relay waits for their acknowledgements.
    pub batch: usize,
    /// How long a batch's acknowledgements may take before the batch is retried.
    pub ack_timeout: Duration,
    /// Deduplication window of the stream (JetStream's default is 2 minutes).
    pub duplicate_window: Duration,
    /// How long JetStream keeps events (the log keeps them for ever; subscribers that fall
    /// further behind re-read the log).
    pub max_age: Duration,
    /// TLS and credentials beyond what the URL says.
    pub security: NatsSecurity,
}

/// How the relay proves who it is to NATS and checks who NATS is. A `tls://` URL or a CA
/// requires TLS; `nats://user:password@host` in the URL, or a `.creds` file, authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsSecurity {
    /// PEM root certificate(s) to trust (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate and key, for servers that verify clients.
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
    /// A NATS `.creds` file (user JWT and NKey seed).
    pub creds_file: Option<std::path::PathBuf>,
}

impl NatsSecurity {
    /// The connect options these settings ask for.
    pub async fn options(&self, url: &str) -> Result<async_nats::ConnectOptions> {
        let mut options =
            async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                options = options
                    .add_client_certificate(cert.clone(), key.clone())
                    .require_tls(true);
            }
            (None, None) => {}
            _ => {
                return Err(Error::Nats(
                    "a NATS client certificate needs its key, and a key its certificate".into(),
                ));
            }
        }
        if url.starts_with("tls://") {
            options = options.require_tls(true);
        }
        // `nats://user:password@host`: the URL's credentials, which the client does not take
        // from the URL by itself.
        if let Ok(address) = url.parse::<async_nats::ServerAddr>()
            && let (Some(user), Some(password)) = (address.username(), address.password())
        {
            options = options.user_and_password(user.to_owned(), password.to_owned());
        }
        if let Some(creds) = &self.creds_file {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| Error::Nats(format!("{}: {e}", creds.display())))?;
        }
        Ok(options)
    }
}

impl RelayConfig {
    pub fn new(url: impl Into<String>) -> RelayConfig {
        RelayConfig {
            url: url.into(),
            stream: "SWITCHYARD_EVENTS".into(),
            prefix: "events".into(),
            batch: 512,
            ack_timeout: Duration::from_secs(10),
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 86_400),
            security: NatsSecurity::default(),
        }
    }

    /// The checkpoint row of this relay.
    pub fn checkpoint_name(&self) -> String {
        format!("relay:{}", self.stream)
    }
}

/// A NATS subject token: anything but `.`, `*`, `>` and whitespace.
fn token(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".into()
    } else {
        cleaned
    }
}

/// The subject an event is published on.
pub fn subject(prefix: &str, event: &RecordedEvent) -> String {
    format!(
        "{prefix}.{}.{}",
        event.tenant_id.as_uuid(),
        token(event.stream_id.category())
    )
}

/// The JSON an event is published as: its outside form, or (for a type this build cannot decode)
/// the envelope with the decode error, so that nothing is silently skipped.
pub fn payload(event: &RecordedEvent) -> Vec<u8> {
    let value = match JsonEvent::from_recorded(event) {
        Ok(json) => serde_json::to_value(json),
        Err(error) => Ok(serde_json::json!({
            "event_id": event.event_id.as_uuid(),
            "tenant_id": event.tenant_id.as_uuid(),
            "stream_id": event.stream_id.as_str(),
            "stream_version": event.stream_version.0,
            "global_position": event.global_position.0,
            "event_type": event.event_type,
            "schema_version": event.schema_version,
            "data": null,
            "decode_error": error.to_string(),
        })),
    };
    value
        .and_then(|value| serde_json::to_vec(&value))
        .unwrap_or_default()
}

/// Runs the relay until the task is dropped: it holds the relay's lease, and retries with
/// backoff after any error (NATS down, store down), resuming from its checkpoint.
pub async fn run(store: Arc<dyn EventStore>, db: ReadDb, config: RelayConfig) {
    let mut delay = Duration::from_millis(100);
    loop {
        match relay(store.as_ref(), &db, &config).await {
            Ok(()) => delay = Duration::from_millis(100),
            Err(error) => {
                METRICS.relay_errors.inc();
                tracing::warn!(%error, retry_in = ?delay, "NATS relay failed; resuming from its checkpoint");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn relay(store: &dyn EventStore, db: &ReadDb, config: &RelayConfig) -> Result<()> {
    let name = config.checkpoint_name();
    let Some(_lease) = db.try_lease(&name).await? else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        return Ok(());
    };
    let client = config
        .security
        .options(&config.url)
        .await?
        .connect(config.url.as_str())
        .await
        .map_err(|error| Error::Nats(error.to_string()))?;
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.prefix)],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: config.duplicate_window,
        max_age: config.max_age,
        ..Default::default()
    })
    .await
    .map_err(|error| Error::Nats(error.to_string()))?;

    let mut at = db.checkpoint(&name).await?;
    METRICS
        .relay_position
        .set(i64::try_from(at).unwrap_or(i64::MAX));
    tracing::info!(position = at, stream = %config.stream, "NATS relay publishing");
    let mut events = store
        .subscribe_all(Scope::All, GlobalPosition(at))
        .ready_chunks(config.batch);
    while let Some(chunk) = events.next().await {
        let batch = chunk
            .into_iter()
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let Some(last) = batch.last() else { continue };
        // The batch continues the trace of its first traced event; each message carries its
        // own event's trace context, so subscribers continue the request's trace.
        let spans = switchyard_events::trace::batch_spans(
            || {
                tracing::debug_span!(
                    "nats publish",
                    otel.kind = "producer",
                    messaging.system = "nats",
                    messaging.destination.name = %config.stream,
                    messaging.batch.message_count = batch.len(),
                )
            },
            batch.iter().map(|e| e.metadata.traceparent.as_deref()),
        );
        let publish = async {
            let mut acks = Vec::with_capacity(batch.len());
            for event in &batch {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    event.event_id.to_string().as_str(),
                );
                headers.insert(
                    "Switchyard-Position",
                    event.global_position.0.to_string().as_str(),
                );
                if let Some(parent) = &event.metadata.traceparent {
                    headers.insert("traceparent", parent.as_str());
                }
                if let Some(state) = &event.metadata.tracestate {
                    headers.insert("tracestate", state.as_str());
                }
                let ack = js
                    .publish_with_headers(
                        subject(&config.prefix, event),
                        headers,
                        payload(event).into(),
                    )
                    .await
                    .map_err(|error| Error::Nats(error.to_string()))?;
                acks.push(ack);
            }
            Ok::<_, Error>(acks)
        };
        let acks = tracing::Instrument::instrument(publish, spans[0].clone()).await?;
        drop(spans);
        let acknowledged = tokio::time::timeout(config.ack_timeout, async {
            for ack in acks {
                ack.await.map_err(|error| Error::Nats(error.to_string()))?;
            }
            Ok::<(), Error>(())
        })
        .await
        .map_err(|_| {
            Error::Nats(format!(
                "no acknowledgement within {:?}",
                config.ack_timeout
            ))
        })?;
        acknowledged?;
        let to = last.global_position.0;
        db.advance(&name, at, to).await?;
        at = to;
        METRICS.relay_published.inc_by(batch.len() as u64);
        METRICS
            .relay_position
            .set(i64::try_from(at).unwrap_or(i64::MAX));
        METRICS.relay_lag_seconds.set(
            (OffsetDateTime::now_utc() - last.recorded_at)
                .as_seconds_f64()
                .max(0.0),
        );
        if let Ok(head) = store.head().await {
            METRICS
                .relay_lag_events
                .set(i64::try_from(head.0.saturating_sub(at)).unwrap_or(i64::MAX));
        }
    }
    Err(Error::Invalid("the log subscription ended".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tokens_cannot_escape_their_level() {
        assert_eq!(token("a.b*c>d e"), "a_b_c_d_e");
        assert_eq!(token(""), "_");
    }

    #[tokio::test]
    async fn half_a_client_key_pair_or_a_missing_creds_file_is_refused() {
        let half = NatsSecurity {
            client_key: Some("/nonexistent/client.key".into()),
            ..NatsSecurity::default()
        };
        let error = half.options("tls://127.0.0.1:4222").await.unwrap_err();
        assert!(error.to_string().contains("needs its key"), "{error}");
        let creds = NatsSecurity {
            creds_file: Some("/nonexistent/relay.creds".into()),
            ..NatsSecurity::default()
        };
        let error = creds.options("nats://127.0.0.1:4222").await.unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/relay.creds"),
            "{error}"
        );
        NatsSecurity::default()
            .options("nats://user:pw@127.0.0.1:4222")
            .await
            .unwrap();
    }
}
