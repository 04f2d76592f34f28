//! Request capture: a tenant that opts in (setting [`CAPTURE_SETTING`]) has each inference's
//! prompt and answer kept, as its guardrails redacted them, for export as an eval dataset and
//! for replay against another model or policy.
//!
//! The payload is not in the log: the log is append-only, and captures must go when the tenant
//! asks or when their retention ends. It is a blob beside the log ([`switchyard_events::store::Blob`],
//! keyed by tenant and BLAKE3 content hash, in the same database), and the log records that
//! it was kept (`InferenceCaptured` on stream `captures-<tenant>`) and when captures were
//! deleted (`CapturesDeleted`). Capture runs after the answer has gone out, on a task of its
//! own: it never adds latency, and a capture that fails is counted and logged, never an error
//! for the client.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_events::store::Blob;
use switchyard_events::{
    Event, EventStore, ExpectedVersion, InferenceCaptured, Metadata, StreamId, TenantId,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::openai::{ChatRequest, Role};
use crate::providers::Usage;

/// The tenant setting that turns capture on: `{"retention": "30d", "max_bytes": 1048576}`.
pub const CAPTURE_SETTING: &str = "capture";

/// Longest retention (ten years).
const MAX_RETENTION: Duration = Duration::from_secs(3_650 * 86_400);
/// Largest capture kept whole.
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// A tenant's capture policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapturePolicy {
    /// How long a capture is kept.
    pub retention: Duration,
    /// A capture larger than this is not kept (counted as `too_large`).
    pub max_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    retention: Option<String>,
    #[serde(default)]
    max_bytes: Option<u64>,
}

/// A duration as `<n><unit>`, the unit one of `s`, `m`, `h`, `d`.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(seconds).map(Duration::from_secs)
}

impl CapturePolicy {
    /// Reads the setting's JSON, naming every problem.
    pub fn parse(value: &str) -> Result<Self, String> {
        let shape = |e: &dyn std::fmt::Display| {
            format!("capture must be {{\"retention\": \"30d\", \"max_bytes\": N}}: {e}")
        };
        let object: Value = serde_json::from_str(value).map_err(|e| shape(&e))?;
        if !object.is_object() {
            return Err(shape(&"not an object"));
        }
        let raw: Raw = serde_json::from_value(object).map_err(|e| shape(&e))?;
        let retention = match raw.retention.as_deref() {
            None => Duration::from_secs(30 * 86_400),
            Some(text) => parse_duration(text)
                .filter(|d| !d.is_zero() && *d <= MAX_RETENTION)
                .ok_or_else(|| {
                    format!(
                        "capture retention {text:?} must be <n>s, <n>m, <n>h or <n>d, above 0 and at most 3650d"
                    )
                })?,
        };
        let max_bytes = match raw.max_bytes {
            None => 1024 * 1024,
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_BYTES).contains(n))
                .ok_or_else(|| format!("capture max_bytes must be 1-{MAX_BYTES}"))?,
        };
        Ok(CapturePolicy {
            retention,
            max_bytes,
        })
    }
}

/// The capture stream of a tenant.
pub fn stream_of(tenant: TenantId) -> Result<StreamId, crate::Error> {
    StreamId::of("captures", tenant.as_uuid()).map_err(|_| crate::Error::Unavailable)
}

/// What one capture keeps.
#[derive(Debug)]
pub struct Captured<'a> {
    pub tenant: TenantId,
    pub inference_id: Uuid,
    /// The request as the provider saw it (redacted by the guardrails).
    pub request: &'a ChatRequest,
    pub model: &'a str,
    /// The answer's choices as the client got them.
    pub choices: Vec<Value>,
    pub usage: Usage,
}

impl Captured<'_> {
    /// The blob's JSON body.
    pub fn body(&self, at: OffsetDateTime) -> Value {
        json!({
            "inference_id": self.inference_id,
            "captured_at_ms": unix_ms(at),
            "model": self.model,
            "request": self.request,
            "choices": self.choices,
            "usage": {"prompt_tokens": self.usage.prompt_tokens,
                      "completion_tokens": self.usage.completion_tokens},
        })
    }
}

fn unix_ms(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Keeps a capture on a task of its own (the answer has gone out already).
pub fn spawn(store: Arc<dyn EventStore>, policy: CapturePolicy, captured: Captured<'_>) {
    let now = OffsetDateTime::now_utc();
    let body = captured.body(now);
    let tenant = captured.tenant;
    let model = captured.model.to_owned();
    let inference_id = captured.inference_id;
    tokio::spawn(async move {
        let outcome = keep(
            store.as_ref(),
            policy,
            tenant,
            inference_id,
            model,
            body,
            now,
        )
        .await;
        let label = match &outcome {
            Ok(true) => "stored",
            Ok(false) => "too_large",
            Err(_) => "failed",
        };
        crate::metrics::INFERENCE
            .captures
            .with_label_values(&[label])
            .inc();
        if let Err(error) = outcome {
            tracing::warn!(%error, %tenant, %inference_id, "an inference's capture was not kept");
        }
    });
}

async fn keep(
    store: &dyn EventStore,
    policy: CapturePolicy,
    tenant: TenantId,
    inference_id: Uuid,
    model: String,
    body: Value,
    now: OffsetDateTime,
) -> Result<bool, switchyard_events::Error> {
    let bytes = serde_json::to_vec(&body).map_err(|e| switchyard_events::Error::Decode {
        what: "capture".into(),
        reason: e.to_string(),
    })?;
    if bytes.len() > policy.max_bytes {
        return Ok(false);
    }
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let created_at_us = i64::try_from(now.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX);
    let retention_us = i64::try_from(policy.retention.as_micros()).unwrap_or(i64::MAX);
    let expires_at_us = created_at_us.saturating_add(retention_us);
    let size = bytes.len() as u64;
    store
        .put_blob(Blob {
            tenant,
            hash: hash.clone(),
            body: bytes,
            created_at_us,
            expires_at_us: Some(expires_at_us),
        })
        .await?;
    let event = Event::InferenceCaptured(InferenceCaptured {
        inference_id,
        blob: hash,
        bytes: size,
        model,
        expires_at_ms: u64::try_from(expires_at_us / 1_000).unwrap_or(0),
    });
    let metadata = Metadata {
        traceparent: switchyard_events::trace::current(),
        ..Metadata::default()
    };
    append(store, tenant, &event, metadata).await?;
    Ok(true)
}

/// Appends one event to the tenant's capture stream.
async fn append(
    store: &dyn EventStore,
    tenant: TenantId,
    event: &Event,
    metadata: Metadata,
) -> Result<(), switchyard_events::Error> {
    let stream = StreamId::of("captures", tenant.as_uuid())?;
    store
        .append(
            tenant,
            &stream,
            ExpectedVersion::Any,
            vec![event.to_new_event(metadata)?],
        )
        .await?;
    Ok(())
}

/// A capture as a line of an eval task set (`switchyard eval`, `switchyard replay`): the
/// prompt (a lone user message as text, a conversation as `{"messages": [...]}`), the
/// recorded answer as what is expected (scored `exact`), and the model and inference as tags.
pub fn dataset_line(body: &Value) -> Option<Value> {
    let request: ChatRequest = serde_json::from_value(body.get("request")?.clone()).ok()?;
    let input = match request.messages.as_slice() {
        [only] if only.role == Role::User => Value::String(only.text()),
        messages => json!({"messages": messages}),
    };
    // The recorded answer: its text, or the tool calls it made instead.
    let message = body.pointer("/choices/0/message")?;
    let answer = message
        .get("content")
        .filter(|c| c.is_string())
        .or_else(|| message.get("tool_calls"))
        .cloned()
        .unwrap_or_else(|| Value::String(String::new()));
    let mut tags = vec![format!("model:{}", body.get("model")?.as_str()?)];
    if let Some(calls) = body.pointer("/choices/0/message/tool_calls") {
        tags.push(format!(
            "tool_calls:{}",
            calls.as_array().map_or(0, Vec::len)
        ));
    }
    Some(json!({
        "id": body.get("inference_id")?,
        "input": input,
        "expected": answer,
        "scorer": "exact",
        "tags": tags,
    }))
}

/// Appends `CapturesDeleted` to the tenant's capture stream.
pub async fn record_deleted(
    store: &dyn EventStore,
    tenant: TenantId,
    reason: &str,
    before_ms: Option<u64>,
    count: u64,
    metadata: Metadata,
) -> Result<(), switchyard_events::Error> {
    let event = Event::CapturesDeleted(switchyard_events::CapturesDeleted {
        reason: reason.to_owned(),
        before_ms,
        count,
    });
    append(store, tenant, &event, metadata).await
}

/// Deletes captures past their retention every `every`, on one node at a time (the lease
/// `capture-retention`), recording per tenant what went. Runs until the process ends.
pub async fn sweep(store: Arc<dyn EventStore>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let lease = match store.try_lease("capture-retention").await {
            Ok(Some(lease)) => lease,
            Ok(None) => continue, // another node sweeps
            Err(error) => {
                tracing::warn!(%error, "capture retention: the lease cannot be taken");
                continue;
            }
        };
        let now = OffsetDateTime::now_utc();
        let now_us = i64::try_from(now.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX);
        match store.expire_blobs(now_us).await {
            Ok(expired) => {
                for (tenant, count) in expired {
                    tracing::info!(%tenant, count, "captures past their retention deleted");
                    let recorded = record_deleted(
                        store.as_ref(),
                        tenant,
                        "retention",
                        Some(unix_ms(now)),
                        count,
                        Metadata::default(),
                    )
                    .await;
                    if let Err(error) = recorded {
                        tracing::warn!(%error, %tenant, "capture retention: the deletion is not in the log");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "capture retention: the sweep failed"),
        }
        drop(lease);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_reads_its_retention_and_size_and_refuses_the_rest() {
        let policy = CapturePolicy::parse(r#"{"retention": "12h", "max_bytes": 4096}"#).unwrap();
        assert_eq!(policy.retention, Duration::from_secs(12 * 3_600));
        assert_eq!(policy.max_bytes, 4_096);
        let default = CapturePolicy::parse("{}").unwrap();
        assert_eq!(default.retention, Duration::from_secs(30 * 86_400));
        for bad in [
            "[]",
            "\"30d\"",
            r#"{"retention": "0s"}"#,
            r#"{"retention": "3651d"}"#,
            r#"{"retention": "30 days"}"#,
            r#"{"retention": "é"}"#,
            r#"{"retention": "99999999999999999999d"}"#,
            r#"{"max_bytes": 0}"#,
            r#"{"max_bytes": 16777217}"#,
            r#"{"retention": "1d", "extra": 1}"#,
        ] {
            let error = CapturePolicy::parse(bad).unwrap_err();
            assert!(error.contains("capture"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_capture_becomes_an_eval_task_line() {
        let request: ChatRequest = serde_json::from_value(json!({"model": "m",
            "messages": [{"role": "user", "content": "hi [REDACTED:EMAIL]"}]}))
        .unwrap();
        let captured = Captured {
            tenant: TenantId::new(),
            inference_id: Uuid::now_v7(),
            request: &request,
            model: "sim-small",
            choices: vec![
                json!({"index": 0, "message": {"role": "assistant", "content": "hello"}}),
            ],
            usage: Usage::default(),
        };
        let line = dataset_line(&captured.body(OffsetDateTime::now_utc())).unwrap();
        assert_eq!(line["input"], "hi [REDACTED:EMAIL]");
        assert_eq!(line["expected"], "hello");
        assert_eq!(line["tags"], json!(["model:sim-small"]));
        // A conversation stays a conversation.
        let conversation: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}))
        .unwrap();
        let line = dataset_line(
            &Captured {
                request: &conversation,
                ..captured
            }
            .body(OffsetDateTime::now_utc()),
        )
        .unwrap();
        assert_eq!(line["input"]["messages"][0]["role"], "system");
        assert!(dataset_line(&json!({"model": "m"})).is_none());
    }
}
