//! The event catalog: every event type the platform stores, with its schema versions.
//!
//! This is the contract between the write side (`actors`) and the read side (`projections`).
//! Stored data is forever: a payload struct never changes shape. A change is a new schema
//! version: the old struct moves to an `older` list with a `From` impl into the new one (the
//! upcaster), and its JSON Schema and fixture under `schemas/events/` stay. Every match on
//! [`Event`] is exhaustive, so a new type forces a decision everywhere.
//!
//! A catalog, kept in one piece on purpose: every stored type and version sits in this one file
//! beside the one `catalog!` invocation that lists them, so any change to what is stored forever
//! shows up in one place in review.

use bytes::Bytes;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::codec::{self, EventPayload};
use crate::envelope::{Metadata, NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::ids::EventId;

/// Declares a catalog enum: one variant per event type, holding the current payload struct, and
/// the decoders for every schema version ever stored (current and older, upcast on read).
macro_rules! catalog {
    (
        $(#[$doc:meta])*
        pub enum $catalog:ident {
            $( $variant:ident($current:ty) $(, older { $($old_version:literal => $old:ty),* $(,)? })? ; )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $catalog {
            $( $variant($current), )*
        }

        impl $catalog {
            /// Every `(event type, schema version)` that may be stored, current and older.
            pub const KINDS: &'static [(&'static str, u16)] = &[
                $(
                    (<$current as EventPayload>::EVENT_TYPE, <$current as EventPayload>::SCHEMA_VERSION),
                    $($( (<$current as EventPayload>::EVENT_TYPE, $old_version), )*)?
                )*
            ];

            /// The stored type name.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => <$current as EventPayload>::EVENT_TYPE, )*
                }
            }

            /// The schema version of the payload this value holds (always the current one).
            pub fn schema_version(&self) -> u16 {
                match self {
                    $( Self::$variant(_) => <$current as EventPayload>::SCHEMA_VERSION, )*
                }
            }

            /// The payload's storage form.
            pub fn encode(&self) -> Result<Bytes> {
                match self {
                    $( Self::$variant(payload) => codec::encode(payload), )*
                }
            }

            /// The payload as JSON (the current schema version).
            pub fn to_json(&self) -> Result<serde_json::Value> {
                let value = match self {
                    $( Self::$variant(payload) => serde_json::to_value(payload), )*
                };
                value.map_err(|e| Error::Encode { what: self.event_type().into(), reason: e.to_string() })
            }

            /// Decodes a stored payload of any known schema version, upcasting old ones.
            pub fn decode(event_type: &str, schema_version: u16, payload: &[u8]) -> Result<Self> {
                $(
                    if event_type == <$current as EventPayload>::EVENT_TYPE {
                        if schema_version == <$current as EventPayload>::SCHEMA_VERSION {
                            return codec::decode::<$current>(event_type, payload).map(Self::$variant);
                        }
                        $($(
                            if schema_version == $old_version {
                                return codec::decode::<$old>(event_type, payload)
                                    .map(|old| Self::$variant(<$current>::from(old)));
                            }
                        )*)?
                    }
                )*
                Err(unknown(event_type, schema_version))
            }

            /// Reads the JSON form of any known schema version, upcasting old ones. Unknown
            /// fields are refused.
            pub fn from_json(event_type: &str, schema_version: u16, value: serde_json::Value) -> Result<Self> {
                let bad = |e: serde_json::Error| Error::decode(format!("{event_type} v{schema_version}"), e);
                $(
                    if event_type == <$current as EventPayload>::EVENT_TYPE {
                        if schema_version == <$current as EventPayload>::SCHEMA_VERSION {
                            return serde_json::from_value::<$current>(value).map(Self::$variant).map_err(bad);
                        }
                        $($(
                            if schema_version == $old_version {
                                return serde_json::from_value::<$old>(value)
                                    .map(|old| Self::$variant(<$current>::from(old)))
                                    .map_err(bad);
                            }
                        )*)?
                    }
                )*
                Err(unknown(event_type, schema_version))
            }

            /// The JSON Schema of one stored `(type, version)`.
            pub fn json_schema(event_type: &str, schema_version: u16) -> Result<schemars::Schema> {
                $(
                    if event_type == <$current as EventPayload>::EVENT_TYPE {
                        if schema_version == <$current as EventPayload>::SCHEMA_VERSION {
                            return Ok(schemars::schema_for!($current));
                        }
                        $($(
                            if schema_version == $old_version {
                                return Ok(schemars::schema_for!($old));
                            }
                        )*)?
                    }
                )*
                Err(unknown(event_type, schema_version))
            }
        }
    };
}

fn unknown(event_type: &str, schema_version: u16) -> Error {
    Error::decode(
        format!("{event_type} v{schema_version}"),
        "unknown event type or schema version",
    )
}

catalog! {
    /// Every event the platform stores.
    pub enum Event {
        TenantCreated(TenantCreated);
        TenantRenamed(TenantRenamed);
        TenantSuspended(TenantSuspended);
        TenantResumed(TenantResumed);
        TenantFlagSet(TenantFlagSet);
        TenantSettingSet(TenantSettingSet);
        ApiKeyIssued(ApiKeyIssued);
        ApiKeyRevoked(ApiKeyRevoked);
        ApiKeyRotated(ApiKeyRotated);
        TenantDeleted(TenantDeleted);
        TenantLimitsSet(TenantLimitsSet), older { 1 => TenantLimitsSetV1 };
        IdempotencyKeyClaimed(IdempotencyKeyClaimed);
        IdempotentResponseRecorded(IdempotentResponseRecorded), older { 1 => IdempotentResponseRecordedV1 };
        IdempotencyKeyReleased(IdempotencyKeyReleased);
        QuotaReserved(QuotaReserved);
        QuotaSettled(QuotaSettled);
        QuotaReleased(QuotaReleased);
        UsageRecorded(UsageRecorded);
        InvoiceFinalized(InvoiceFinalized), older { 1 => InvoiceFinalizedV1 };
        InvoicePaid(InvoicePaid);
        CreditNoteIssued(CreditNoteIssued);
        StorageMetered(StorageMetered);
        BillingDaySet(BillingDaySet);
        PriceBookPublished(PriceBookPublished);
        FeatureFlagSet(FeatureFlagSet);
        RateLimitSet(RateLimitSet);
        InferenceRequested(InferenceRequested), older { 1 => InferenceRequestedV1 };
        RouteChosen(RouteChosen);
        InferenceCompleted(InferenceCompleted), older { 1 => InferenceCompletedV1 };
        InferenceFailed(InferenceFailed), older { 1 => InferenceFailedV1 };
        GuardrailChecked(GuardrailChecked);
        InferenceCaptured(InferenceCaptured);
        CapturesDeleted(CapturesDeleted);
        RewardRecorded(RewardRecorded);
        RouterConfigured(RouterConfigured);
        CircuitChanged(CircuitChanged);
        WorkflowRegistered(WorkflowRegistered);
        FragmentRegistered(FragmentRegistered);
        ToolRegistered(ToolRegistered);
        PromptRegistered(PromptRegistered);
        ManifestSigned(ManifestSigned);
        DocumentAdded(DocumentAdded);
        DocumentChunked(DocumentChunked);
        DocumentIndexed(DocumentIndexed);
        DocumentDeleted(DocumentDeleted);
        RunStarted(RunStarted), older { 1 => RunStartedV1 };
        StepStarted(StepStarted);
        StepCompleted(StepCompleted);
        StepFailed(StepFailed);
        TimerStarted(TimerStarted);
        TimerFired(TimerFired);
        SignalReceived(SignalReceived);
        RunCancelRequested(RunCancelRequested);
        RunCompleted(RunCompleted);
        RunFailed(RunFailed);
        RunCancelled(RunCancelled);
        RunContinued(RunContinued);
        SegmentStarted(SegmentStarted);
    }
}

impl Event {
    /// Wraps the event for appending, with a fresh event id.
    pub fn to_new_event(&self, metadata: Metadata) -> Result<NewEvent> {
        self.envelope(self.schema_version(), self.encode()?, metadata)
    }

    /// Wraps the event for appending in the form releases before v2 of the outcome events
    /// decode: an `InferenceCompleted` or `InferenceFailed` as v1, without the request and the
    /// route (a log in that form holds them as `InferenceRequested` and `RouteChosen` before
    /// the outcome); any other event as [`Event::to_new_event`]. For clusters in the middle of
    /// a rolling upgrade from such a release.
    pub fn to_new_event_v1(&self, metadata: Metadata) -> Result<NewEvent> {
        let payload = match self {
            Event::InferenceCompleted(done) => codec::encode(&InferenceCompletedV1 {
                model: done.model.clone(),
                provider: done.provider.clone(),
                tokens_in: done.tokens_in,
                tokens_out: done.tokens_out,
                cost_micros: done.cost_micros,
                latency_us: done.latency_us,
                ttft_us: done.ttft_us,
                finish_reason: done.finish_reason.clone(),
                attempts: done.attempts,
            })?,
            Event::InferenceFailed(failed) => codec::encode(&InferenceFailedV1 {
                model: failed.model.clone(),
                provider: failed.provider.clone(),
                code: failed.code.clone(),
                message: failed.message.clone(),
                tokens_in: failed.tokens_in,
                tokens_out: failed.tokens_out,
                cost_micros: failed.cost_micros,
                latency_us: failed.latency_us,
                attempts: failed.attempts,
            })?,
            _ => return self.to_new_event(metadata),
        };
        self.envelope(1, payload, metadata)
    }

    fn envelope(
        &self,
        schema_version: u16,
        payload: Bytes,
        mut metadata: Metadata,
    ) -> Result<NewEvent> {
        if metadata.traceparent.is_none() {
            metadata.traceparent = crate::trace::current();
        }
        Ok(NewEvent {
            event_id: EventId::new(),
            event_type: self.event_type().to_owned(),
            schema_version,
            payload,
            metadata,
        })
    }

    /// Decodes the payload of a recorded event.
    pub fn from_recorded(event: &RecordedEvent) -> Result<Self> {
        Self::decode(&event.event_type, event.schema_version, &event.payload)
    }

    /// An inference's request: an `InferenceRequested` (logs before v2 of the outcome events)
    /// or the one an outcome carries (v2); `None` for any other event.
    pub fn inference_request(&self) -> Option<&InferenceRequested> {
        match self {
            Event::InferenceRequested(requested) => Some(requested),
            Event::InferenceCompleted(done) => done.request.as_ref(),
            Event::InferenceFailed(failed) => failed.request.as_ref(),
            _ => None,
        }
    }

    /// An inference's route: a `RouteChosen` (logs before v2 of the outcome events) or the one
    /// an outcome carries (v2); `None` for any other event.
    pub fn inference_route(&self) -> Option<&RouteChosen> {
        match self {
            Event::RouteChosen(route) => Some(route),
            Event::InferenceCompleted(done) => done.route.as_ref(),
            Event::InferenceFailed(failed) => failed.route.as_ref(),
            _ => None,
        }
    }
}

/// The envelope and payload of a recorded event in its outside (JSON) form, as APIs and
/// subscribers see it.
#[derive(Debug, Clone, Serialize)]
pub struct JsonEvent {
    pub event_id: EventId,
    pub tenant_id: crate::TenantId,
    pub stream_id: crate::StreamId,
    pub stream_version: crate::StreamVersion,
    pub global_position: crate::GlobalPosition,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub schema_version: u16,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: time::OffsetDateTime,
    pub metadata: Metadata,
    pub data: serde_json::Value,
}

impl JsonEvent {
    /// Decodes (and upcasts) a recorded event into its JSON form.
    pub fn from_recorded(event: &RecordedEvent) -> Result<Self> {
        let decoded = Event::from_recorded(event)?;
        Ok(JsonEvent {
            event_id: event.event_id,
            tenant_id: event.tenant_id,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            global_position: event.global_position,
            event_type: decoded.event_type(),
            schema_version: decoded.schema_version(),
            recorded_at: event.recorded_at,
            metadata: event.metadata.clone(),
            data: decoded.to_json()?,
        })
    }
}

macro_rules! payload {
    ($ty:ident, $version:literal) => {
        impl EventPayload for $ty {
            const EVENT_TYPE: &'static str = stringify!($ty);
            const SCHEMA_VERSION: u16 = $version;
        }
    };
}

/// A tenant was created (stream `tenant-<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantCreated {
    /// Display name, unique per platform.
    pub name: String,
    /// The plan the tenant is billed under (`free`, `pro`, …).
    pub plan: String,
}
payload!(TenantCreated, 1);

/// A tenant's display name changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantRenamed {
    pub name: String,
}
payload!(TenantRenamed, 1);

/// A tenant was suspended: its keys stop working until it is resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSuspended {
    pub reason: String,
}
payload!(TenantSuspended, 1);

/// A suspended tenant was resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantResumed {}
payload!(TenantResumed, 1);

/// A tenant's feature flag was switched on or off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantFlagSet {
    pub flag: String,
    pub enabled: bool,
}
payload!(TenantFlagSet, 1);

/// A tenant setting was set (`value`) or removed (`None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSettingSet {
    pub key: String,
    pub value: Option<String>,
}
payload!(TenantSettingSet, 1);

/// An API key was issued to a tenant. The key itself is never stored: only its keyed hash
/// (BLAKE3 keyed with the server's secret, hex) and a short prefix to recognise it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyIssued {
    pub key_id: uuid::Uuid,
    pub name: String,
    pub key_hash: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    /// Unix seconds after which the key no longer works.
    pub expires_at_unix: Option<i64>,
}
payload!(ApiKeyIssued, 1);

/// An API key was revoked; it never works again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRevoked {
    pub key_id: uuid::Uuid,
}
payload!(ApiKeyRevoked, 1);

/// An API key was replaced by another (issued in the same append, with the same name, scopes and
/// expiry): the old one works until `old_expires_at_unix`, the grace period for its users to
/// move to the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRotated {
    pub key_id: uuid::Uuid,
    pub replaced_by: uuid::Uuid,
    /// Unix seconds after which the old key no longer works.
    pub old_expires_at_unix: i64,
}
payload!(ApiKeyRotated, 1);

/// A tenant was deleted: its keys were revoked in the same append, nothing authenticates as it
/// and no command applies to it again. Its history stays in the log (usage, invoices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantDeleted {
    pub reason: String,
}
payload!(TenantDeleted, 1);

/// A tenant's limits were replaced (`None`: no limit). Money is integer micro-dollars; months
/// and days are UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitsSet {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub monthly_budget_micros: Option<u64>,
    pub daily_budget_micros: Option<u64>,
    pub monthly_token_budget: Option<u64>,
    pub daily_token_budget: Option<u64>,
}
payload!(TenantLimitsSet, 2);

/// `TenantLimitsSet` v1, before daily and token budgets: read and upcast, never written. Its
/// schema keeps the title and text it was published with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "TenantLimitsSet",
    description = "A tenant's limits were replaced (`None`: no limit). Money is integer micro-dollars."
)]
pub struct TenantLimitsSetV1 {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub monthly_budget_micros: Option<u64>,
}

impl From<TenantLimitsSetV1> for TenantLimitsSet {
    fn from(old: TenantLimitsSetV1) -> Self {
        TenantLimitsSet {
            requests_per_minute: old.requests_per_minute,
            tokens_per_minute: old.tokens_per_minute,
            monthly_budget_micros: old.monthly_budget_micros,
            daily_budget_micros: None,
            monthly_token_budget: None,
            daily_token_budget: None,
        }
    }
}

/// A request with an `Idempotency-Key` started (stream `idem-<hash of scope and key>`): the
/// append with `NoStream` is what makes exactly one of several concurrent retries win.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyKeyClaimed {
    /// BLAKE3 of method, path and body: a retry must send the same request.
    pub request_hash: String,
}
payload!(IdempotencyKeyClaimed, 1);

/// The response to an idempotent request, replayed to every retry with the same key: its
/// status, body and the headers a replay sends again (`content-type`, `retry-after`,
/// `x-ratelimit-*`, `x-switchyard-*`; never `set-cookie`, `date` or `content-length`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotentResponseRecorded {
    pub status: u16,
    /// The JSON body as sent.
    pub body: String,
    /// Header names (lower case) and values as sent. Absent in JSON reads as none.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}
payload!(IdempotentResponseRecorded, 2);

/// `IdempotentResponseRecorded` v1, before headers were recorded: read and upcast (with no
/// headers), never written. Its schema keeps the title and text it was published with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "IdempotentResponseRecorded",
    description = "The response to an idempotent request, replayed to every retry with the same key."
)]
pub struct IdempotentResponseRecordedV1 {
    pub status: u16,
    /// The JSON body as sent.
    pub body: String,
}

impl From<IdempotentResponseRecordedV1> for IdempotentResponseRecorded {
    fn from(old: IdempotentResponseRecordedV1) -> Self {
        IdempotentResponseRecorded {
            status: old.status,
            body: old.body,
            headers: std::collections::BTreeMap::new(),
        }
    }
}

/// An idempotent request failed in a way a retry may fix (a 5xx): the key may be used again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyKeyReleased {}
payload!(IdempotencyKeyReleased, 1);

/// Budget was set aside for a piece of work before it runs (stream `quota-<tenant>`).
/// `period` is the calendar month the spend counts against (`2026-11`, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaReserved {
    pub reservation_id: uuid::Uuid,
    pub period: String,
    pub micros: u64,
    pub tokens: u64,
}
payload!(QuotaReserved, 1);

/// A reservation was settled with what the work really cost; the rest went back to the budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettled {
    pub reservation_id: uuid::Uuid,
    pub micros: u64,
    pub tokens: u64,
}
payload!(QuotaSettled, 1);

/// A reservation was given back whole (the work did not run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaReleased {
    pub reservation_id: uuid::Uuid,
}
payload!(QuotaReleased, 1);

/// Usage billed to a tenant (stream `billing-<tenant>`), priced when recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRecorded {
    /// Billed once per id.
    pub usage_id: uuid::Uuid,
    /// The invoice month, `YYYY-MM` (UTC).
    pub period: String,
    pub model: String,
    pub requests: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub tool_calls: u64,
    /// Integer micro-dollars, rounded up.
    pub cost_micros: u64,
}
payload!(UsageRecorded, 1);

/// One line of a closed invoice: a model's usage in the period and what it costs on the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceLine {
    pub model: String,
    pub requests: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub tool_calls: u64,
    /// The usage at list prices (what each inference's event says it cost).
    pub list_micros: u64,
    /// The usage at the plan's prices, after the model's included allowance, priced per
    /// inference and rounded up per inference, as the list cost is.
    pub amount_micros: u64,
}

/// A period's invoice was closed (stream `billing-<tenant>`): what it bills, priced once and
/// for good. A closed invoice never changes; refunds and adjustments are [`CreditNoteIssued`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceFinalized {
    /// `YYYY-MM`: the month the period starts in.
    pub period: String,
    /// What is owed: `subtotal - discount - included`.
    pub total_micros: u64,
    /// The plan the tenant was billed under.
    pub plan: String,
    /// The price-book version of the plan that priced it; `None`: list prices.
    pub book_version: Option<u32>,
    pub lines: Vec<InvoiceLine>,
    /// The lines' amounts summed.
    pub subtotal_micros: u64,
    /// The plan's discount off the subtotal, rounded down.
    pub discount_micros: u64,
    /// The plan's monthly credit used.
    pub included_micros: u64,
    /// How many usage records the invoice covers.
    pub records: u64,
}
payload!(InvoiceFinalized, 2);

/// [`InvoiceFinalized`] v1: a total of list prices, with no lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "InvoiceFinalized",
    description = "A month's invoice was closed with its total."
)]
pub struct InvoiceFinalizedV1 {
    pub period: String,
    pub total_micros: u64,
}

impl From<InvoiceFinalizedV1> for InvoiceFinalized {
    fn from(old: InvoiceFinalizedV1) -> Self {
        InvoiceFinalized {
            period: old.period,
            total_micros: old.total_micros,
            plan: String::new(),
            book_version: None,
            lines: Vec::new(),
            subtotal_micros: old.total_micros,
            discount_micros: 0,
            included_micros: 0,
            records: 0,
        }
    }
}

/// A credit note against a closed invoice: a refund or an adjustment, which the invoice
/// itself never gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditNoteIssued {
    /// Issued once per id.
    pub credit_note_id: uuid::Uuid,
    /// The invoice it credits.
    pub period: String,
    pub amount_micros: u64,
    pub reason: String,
}

payload!(CreditNoteIssued, 1);

/// Document storage metered on the tenant's billing ledger (stream `billing-<tenant>`): a
/// document's bytes added, or (negative) removed when it is deleted; once per document event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageMetered {
    /// The document event metered (its event id): metered once.
    pub usage_id: uuid::Uuid,
    /// The invoice period, `YYYY-MM`.
    pub period: String,
    pub document_id: uuid::Uuid,
    /// Bytes added; negative when the document was deleted.
    pub bytes: i64,
}
payload!(StorageMetered, 1);

/// The day of the month a tenant's billing periods start on (1-28; 1: calendar months), from
/// the period `from_period` on. A period is named by the month it starts in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingDaySet {
    pub day: u8,
    pub from_period: String,
}
payload!(BillingDaySet, 1);

/// One model's price on a plan, in micro-dollars, and how much of it a period includes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRate {
    pub input_micros_per_million: u64,
    pub output_micros_per_million: u64,
    pub micros_per_request: u64,
    /// Requests, input tokens and output tokens each period includes before any is billed.
    pub included_requests: u64,
    pub included_input_tokens: u64,
    pub included_output_tokens: u64,
}

/// What a plan charges: per-model rates (a model without one is billed at its list price), a
/// discount and a monthly credit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanPrices {
    pub models: std::collections::BTreeMap<String, ModelRate>,
    /// Off the subtotal, in basis points (1,000 = 10%), rounded down.
    pub discount_bps: u32,
    /// A credit each period, in micro-dollars, taken off after the discount.
    pub included_micros: u64,
}

/// A version of a plan's price book (stream `pricebooks-<system tenant>`). It prices every
/// period from `effective_from` (`YYYY-MM`) on that is still open when it closes, until a later
/// version takes over; the plan `*` prices the plans that have no book of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceBookPublished {
    pub plan: String,
    /// 1, 2, … per plan; a published version never changes.
    pub version: u32,
    pub effective_from: String,
    pub prices: PlanPrices,
}
payload!(PriceBookPublished, 1);

/// A platform feature flag was defined or changed (`definition`: its JSON document, see
/// `switchyard_actors::flags::Flag`) or removed (`None`), on the stream `flags-<system tenant>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureFlagSet {
    pub name: String,
    pub definition: Option<String>,
}
payload!(FeatureFlagSet, 1);

/// A finalized invoice was paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoicePaid {
    pub period: String,
}
payload!(InvoicePaid, 1);

/// What a [`RateLimitSet`] limits, within its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum LimitScope {
    /// One API key.
    Key(uuid::Uuid),
    /// One model, across the tenant's keys.
    Model(String),
}

/// A key's or a model's rate limits were replaced (`None`: no limit at this tier); the tenant's
/// own are in [`TenantLimitsSet`]. A request must pass every tier that applies to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSet {
    pub scope: LimitScope,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}
payload!(RateLimitSet, 1);

// Since v2 of `InferenceCompleted` and `InferenceFailed` this struct is stored inside them
// (their `request`): a new version of it changes their stored form too, so it needs a new version
// of both. (A plain comment: the doc comment below is the published schema's description.)
/// A chat completion or embedding request was accepted (stream `inference-<id>`, whose id is
/// the `x-switchyard-inference-id` of the response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequested {
    /// `chat` or `embeddings`.
    pub endpoint: String,
    /// The model the client named (`auto` lets the router choose).
    pub model_requested: String,
    pub key_id: uuid::Uuid,
    pub stream: bool,
    pub messages: u32,
    /// Prompt tokens as estimated before the call (the provider's count is in the outcome).
    pub prompt_tokens_estimate: u64,
    pub max_tokens: Option<u64>,
    /// The end user the request was made for (OpenAI's `user`), for spend below the tenant.
    pub user: Option<String>,
    /// The request's tags (`metadata.tags` or `x-switchyard-tags`), for spend below the tenant.
    pub tags: Vec<String>,
}
payload!(InferenceRequested, 2);

/// `InferenceRequested` v1, before `user` and `tags`: read and upcast, never written. Its
/// schema keeps the title and text it was published with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "InferenceRequested",
    description = "A chat completion or embedding request was accepted (stream `inference-<id>`, whose id is\nthe `x-switchyard-inference-id` of the response)."
)]
pub struct InferenceRequestedV1 {
    /// `chat` or `embeddings`.
    pub endpoint: String,
    /// The model the client named (`auto` lets the router choose).
    pub model_requested: String,
    pub key_id: uuid::Uuid,
    pub stream: bool,
    pub messages: u32,
    /// Prompt tokens as estimated before the call (the provider's count is in the outcome).
    pub prompt_tokens_estimate: u64,
    pub max_tokens: Option<u64>,
}

impl From<InferenceRequestedV1> for InferenceRequested {
    fn from(old: InferenceRequestedV1) -> Self {
        InferenceRequested {
            endpoint: old.endpoint,
            model_requested: old.model_requested,
            key_id: old.key_id,
            stream: old.stream,
            messages: old.messages,
            prompt_tokens_estimate: old.prompt_tokens_estimate,
            max_tokens: old.max_tokens,
            user: None,
            tags: Vec::new(),
        }
    }
}

/// The model that served an inference and how it was chosen. `propensity_ppb` is the
/// probability (parts per billion) with which the policy chose it: what off-policy evaluation
/// divides by. `features_milli` is the feature vector the policy saw, ×1000, in the order of
/// feature set `feature_set`.
// Since v2 of `InferenceCompleted` and `InferenceFailed` this struct is stored inside them
// (their `route`): a new version of it (or of `ShadowChoice`) needs a new version of both. (A
// plain comment: the doc comment above is the published schema's description.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteChosen {
    pub policy: String,
    pub model: String,
    pub provider: String,
    pub candidates: Vec<String>,
    pub propensity_ppb: u32,
    pub feature_set: u16,
    pub features_milli: Vec<i64>,
    /// What shadow policies would have chosen (they learn and are judged, never serve).
    pub shadow: Vec<ShadowChoice>,
}
payload!(RouteChosen, 1);

/// One shadow policy's choice for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowChoice {
    pub policy: String,
    pub model: String,
    pub propensity_ppb: u32,
}

/// Feedback on an inference became a reward for the router (stream `router-<tenant>`). It
/// carries what the decision saw, so the bandits and off-policy evaluation need nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardRecorded {
    pub inference_id: uuid::Uuid,
    pub metric: String,
    /// The feedback value as sent, ×1000.
    pub value_milli: i64,
    /// The reward the router learns from, in [0, 1] ×1000: quality, cost and latency combined
    /// with the configured weights.
    pub reward_milli: i64,
    pub policy: String,
    pub model: String,
    pub candidates: Vec<String>,
    pub propensity_ppb: u32,
    pub feature_set: u16,
    pub features_milli: Vec<i64>,
    /// What the inference cost, for cost estimates of candidate policies.
    pub cost_micros: u64,
}
payload!(RewardRecorded, 1);

/// A tenant's routing was set (stream `router-<tenant>`): its policy, candidates, exploration
/// floor, reward weights, splits and shadow policies, as one document that replaces the last;
/// `None` returns the tenant to the server's `[router]` config. Each one is a new revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterConfigured {
    /// 1 for the first configuration of the tenant, then one more each time.
    pub revision: u64,
    /// The routing document as JSON text (`switchyard_actors::router::Routing`, validated when
    /// written; text, since the stored form is not self-describing).
    pub routing_json: Option<String>,
    /// What changed, for the history (`set`, `reset`, `promote:<split>`, `rollback:<split>`).
    pub change: String,
}
payload!(RouterConfigured, 1);

/// An inference answered; the usage is billed from this event (once per inference id). It is
/// the inference's one record: since v2 it carries the request and the route, which v1 logs
/// kept in the stream's `InferenceRequested` and `RouteChosen` (read back as `None` here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InferenceCompleted {
    pub model: String,
    pub provider: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Integer micro-dollars at the price in force, rounded up.
    pub cost_micros: u64,
    pub latency_us: u64,
    /// Time to the first token (streams) or to the whole answer.
    pub ttft_us: u64,
    pub finish_reason: String,
    /// Calls to the provider, retries and fallbacks included.
    pub attempts: u32,
    /// The request as admitted (`None`: a v1 event, whose request is a separate event).
    pub request: Option<InferenceRequested>,
    /// How the model was chosen (`None`: a v1 event, or no route was drawn).
    pub route: Option<RouteChosen>,
}
payload!(InferenceCompleted, 2);

/// `InferenceCompleted` v1, before the request and the route: read and upcast, never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "InferenceCompleted",
    description = "An inference answered; the usage is billed from this event (once per inference id)."
)]
pub struct InferenceCompletedV1 {
    pub model: String,
    pub provider: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Integer micro-dollars at the price in force, rounded up.
    pub cost_micros: u64,
    pub latency_us: u64,
    /// Time to the first token (streams) or to the whole answer.
    pub ttft_us: u64,
    pub finish_reason: String,
    /// Calls to the provider, retries and fallbacks included.
    pub attempts: u32,
}

impl From<InferenceCompletedV1> for InferenceCompleted {
    fn from(old: InferenceCompletedV1) -> Self {
        InferenceCompleted {
            model: old.model,
            provider: old.provider,
            tokens_in: old.tokens_in,
            tokens_out: old.tokens_out,
            cost_micros: old.cost_micros,
            latency_us: old.latency_us,
            ttft_us: old.ttft_us,
            finish_reason: old.finish_reason,
            attempts: old.attempts,
            request: None,
            route: None,
        }
    }
}

/// An inference failed. Tokens already delivered (a stream cut mid-way) are still billed. It is
/// the inference's one record: since v2 it carries the request and the route (`None` when the
/// inference failed before a model was drawn, and for v1 events, whose request and route are
/// separate events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InferenceFailed {
    /// The last model tried ("" when none was).
    pub model: String,
    pub provider: String,
    /// The stable error code answered to the client.
    pub code: String,
    pub message: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_micros: u64,
    pub latency_us: u64,
    pub attempts: u32,
    /// The request as admitted (`None`: a v1 event, whose request is a separate event).
    pub request: Option<InferenceRequested>,
    /// How the model was chosen (`None`: a v1 event, or no route was drawn).
    pub route: Option<RouteChosen>,
}
payload!(InferenceFailed, 2);

/// `InferenceFailed` v1, before the request and the route: read and upcast, never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "InferenceFailed",
    description = "An inference failed. Tokens already delivered (a stream cut mid-way) are still billed."
)]
pub struct InferenceFailedV1 {
    /// The last model tried ("" when none was).
    pub model: String,
    pub provider: String,
    /// The stable error code answered to the client.
    pub code: String,
    pub message: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_micros: u64,
    pub latency_us: u64,
    pub attempts: u32,
}

impl From<InferenceFailedV1> for InferenceFailed {
    fn from(old: InferenceFailedV1) -> Self {
        InferenceFailed {
            model: old.model,
            provider: old.provider,
            code: old.code,
            message: old.message,
            tokens_in: old.tokens_in,
            tokens_out: old.tokens_out,
            cost_micros: old.cost_micros,
            latency_us: old.latency_us,
            attempts: old.attempts,
            request: None,
            route: None,
        }
    }
}

/// A tenant's guardrails checked an inference's prompt (`stage` input) or answer (output):
/// the verdict (`pass`, `redact`, `block`) and each rule that fired, with how often. Never the
/// text that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardrailChecked {
    pub stage: String,
    pub action: String,
    pub rules: Vec<GuardrailHit>,
}
payload!(GuardrailChecked, 1);

/// A tenant's capture kept one inference's prompt and answer (as its guardrails redacted
/// them) in a blob beside the log: the blob's content hash (BLAKE3, hex), its size, the model
/// that answered and when retention deletes it. Stream `captures-<tenant>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InferenceCaptured {
    pub inference_id: uuid::Uuid,
    pub blob: String,
    pub bytes: u64,
    pub model: String,
    pub expires_at_ms: u64,
}
payload!(InferenceCaptured, 1);

/// A tenant's captured payloads were deleted: on request (`reason` `request`: every capture
/// from before `before_ms`, or all of them without it) or by retention (`retention`: those
/// past their expiry, `before_ms` the sweep's time). `count` blobs went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapturesDeleted {
    pub reason: String,
    pub before_ms: Option<u64>,
    pub count: u64,
}
payload!(CapturesDeleted, 1);

/// One rule that fired: `pii.<kind>`, `topic.<name>`, `max_prompt_chars`, `max_prompt_tokens`
/// or `output_schema`; what it did and how many times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardrailHit {
    pub rule: String,
    pub action: String,
    pub count: u32,
}

/// A model's circuit breaker changed state (stream `circuit-<model>`, system tenant):
/// `closed`, `open` or `half_open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitChanged {
    pub model: String,
    pub from: String,
    pub to: String,
}
payload!(CircuitChanged, 1);

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(
        dead_code,
        reason = "the test catalog uses only part of what the macro generates"
    )]
    /// A catalog with a real upcaster, to prove the mechanism: `Widget` v1 had `size` in
    /// centimetres, v2 holds millimetres and a label.
    mod upcasting {
        use super::*;

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct WidgetV1 {
            pub size_cm: u32,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct Widget {
            pub size_mm: u32,
            pub label: String,
        }
        impl EventPayload for Widget {
            const EVENT_TYPE: &'static str = "Widget";
            const SCHEMA_VERSION: u16 = 2;
        }
        impl From<WidgetV1> for Widget {
            fn from(old: WidgetV1) -> Self {
                Widget {
                    size_mm: old.size_cm * 10,
                    label: "unlabelled".into(),
                }
            }
        }

        catalog! {
            pub enum TestCatalog {
                Widget(Widget), older { 1 => WidgetV1 };
            }
        }

        #[test]
        fn old_binary_and_json_payloads_are_upcast_on_read() {
            let v1 = codec::encode(&WidgetV1 { size_cm: 3 }).unwrap();
            let expected = TestCatalog::Widget(Widget {
                size_mm: 30,
                label: "unlabelled".into(),
            });
            assert_eq!(TestCatalog::decode("Widget", 1, &v1).unwrap(), expected);
            let json = serde_json::json!({"size_cm": 3});
            assert_eq!(TestCatalog::from_json("Widget", 1, json).unwrap(), expected);
            assert_eq!(TestCatalog::KINDS, &[("Widget", 2), ("Widget", 1)]);
            assert_eq!(expected.schema_version(), 2);
            assert!(TestCatalog::decode("Widget", 3, &v1).is_err());
        }
    }

    /// What a node of a release before v2 decodes: the outcome as v1, the request and route
    /// left out (they go in events of their own); read back here, upcast with `None`.
    #[test]
    fn an_outcome_written_as_v1_is_what_older_releases_decode() {
        let request = InferenceRequested {
            endpoint: "chat".into(),
            model_requested: "auto".into(),
            key_id: uuid::Uuid::nil(),
            stream: false,
            messages: 2,
            prompt_tokens_estimate: 9,
            max_tokens: None,
            user: Some("u".into()),
            tags: vec!["t".into()],
        };
        let done = InferenceCompleted {
            model: "m".into(),
            provider: "p".into(),
            tokens_in: 1,
            tokens_out: 2,
            cost_micros: 3,
            latency_us: 4,
            ttft_us: 5,
            finish_reason: "stop".into(),
            attempts: 1,
            request: Some(request.clone()),
            route: None,
        };
        let failed = InferenceFailed {
            model: "m".into(),
            provider: "p".into(),
            code: "upstream_error".into(),
            message: "no".into(),
            tokens_in: 1,
            tokens_out: 0,
            cost_micros: 0,
            latency_us: 4,
            attempts: 2,
            request: Some(request.clone()),
            route: None,
        };
        let written = Event::InferenceCompleted(done.clone())
            .to_new_event_v1(Metadata::default())
            .unwrap();
        assert_eq!(
            (written.event_type.as_str(), written.schema_version),
            ("InferenceCompleted", 1)
        );
        let old: InferenceCompletedV1 = codec::decode("v1", &written.payload).unwrap();
        assert_eq!(
            (old.model.as_str(), old.cost_micros, old.ttft_us),
            ("m", 3, 5)
        );
        let read = Event::decode("InferenceCompleted", 1, &written.payload).unwrap();
        assert_eq!(
            read,
            Event::InferenceCompleted(InferenceCompleted {
                request: None,
                ..done.clone()
            })
        );
        let written = Event::InferenceFailed(failed)
            .to_new_event_v1(Metadata::default())
            .unwrap();
        assert_eq!(written.schema_version, 1);
        let old: InferenceFailedV1 = codec::decode("v1", &written.payload).unwrap();
        assert_eq!((old.code.as_str(), old.attempts), ("upstream_error", 2));
        // Any other event is written as it is.
        let other = Event::InferenceRequested(request)
            .to_new_event_v1(Metadata::default())
            .unwrap();
        assert_eq!(other.schema_version, 2);
        // The current form keeps everything.
        let current = Event::InferenceCompleted(done.clone())
            .to_new_event(Metadata::default())
            .unwrap();
        assert_eq!(current.schema_version, 2);
        assert_eq!(
            Event::decode("InferenceCompleted", 2, &current.payload).unwrap(),
            Event::InferenceCompleted(done)
        );
    }

    #[test]
    fn every_event_roundtrips_through_the_storage_form() {
        let event = Event::TenantCreated(TenantCreated {
            name: "acme".into(),
            plan: "pro".into(),
        });
        let new = event.to_new_event(Metadata::default()).unwrap();
        assert_eq!(
            (new.event_type.as_str(), new.schema_version),
            ("TenantCreated", 1)
        );
        assert_eq!(
            Event::decode(&new.event_type, new.schema_version, &new.payload).unwrap(),
            event
        );
    }

    #[test]
    fn recorded_events_have_an_outside_json_form() {
        let event = Event::TenantRenamed(TenantRenamed {
            name: "Acme Corp".into(),
        });
        let new = event
            .to_new_event(Metadata {
                correlation_id: Some("req-1".into()),
                ..Metadata::default()
            })
            .unwrap();
        let recorded = RecordedEvent {
            event_id: new.event_id,
            tenant_id: crate::TenantId::new(),
            stream_id: crate::StreamId::parse("tenant-1").unwrap(),
            stream_version: crate::StreamVersion(2),
            global_position: crate::GlobalPosition(7),
            event_type: new.event_type.clone(),
            schema_version: new.schema_version,
            recorded_at: time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            metadata: new.metadata.clone(),
            payload: new.payload,
        };
        let json = serde_json::to_value(JsonEvent::from_recorded(&recorded).unwrap()).unwrap();
        assert_eq!(json["type"], "TenantRenamed");
        assert_eq!(json["data"], serde_json::json!({"name": "Acme Corp"}));
        assert_eq!(json["global_position"], 7);
        assert_eq!(json["recorded_at"], "2027-01-15T08:00:00Z");
        assert_eq!(json["metadata"]["correlation_id"], "req-1");
        let mut corrupt = recorded;
        corrupt.payload = bytes::Bytes::from_static(b"\x01\xff");
        assert!(JsonEvent::from_recorded(&corrupt).is_err());
    }

    #[test]
    fn responses_recorded_before_headers_still_decode_with_none() {
        let body = r#"{"id":"t1"}"#;
        let expected = Event::IdempotentResponseRecorded(IdempotentResponseRecorded {
            status: 201,
            body: body.into(),
            headers: std::collections::BTreeMap::new(),
        });
        // The old shape, as JSON and as stored bytes, under its own version.
        let old = serde_json::json!({"status": 201, "body": body});
        assert_eq!(
            Event::from_json("IdempotentResponseRecorded", 1, old.clone()).unwrap(),
            expected
        );
        let stored = codec::encode(&IdempotentResponseRecordedV1 {
            status: 201,
            body: body.into(),
        })
        .unwrap();
        assert_eq!(
            Event::decode("IdempotentResponseRecorded", 1, &stored).unwrap(),
            expected
        );
        // JSON of the current version without `headers` reads as no headers.
        assert_eq!(
            Event::from_json("IdempotentResponseRecorded", 2, old).unwrap(),
            expected
        );
        let with = Event::IdempotentResponseRecorded(IdempotentResponseRecorded {
            status: 200,
            body: body.into(),
            headers: [("retry-after".to_owned(), "3".to_owned())].into(),
        });
        let new = with.to_new_event(Metadata::default()).unwrap();
        assert_eq!(new.schema_version, 2);
        assert_eq!(
            Event::decode(&new.event_type, 2, &new.payload).unwrap(),
            with
        );
    }

    #[test]
    fn unknown_types_versions_and_fields_are_refused() {
        assert!(Event::decode("NoSuchEvent", 1, &[1]).is_err());
        assert!(Event::from_json("TenantRenamed", 9, serde_json::json!({"name": "x"})).is_err());
        let extra = serde_json::json!({"name": "x", "admin": true});
        assert!(Event::from_json("TenantRenamed", 1, extra).is_err());
        let wrong_type = serde_json::json!({"name": 5});
        assert!(Event::from_json("TenantRenamed", 1, wrong_type).is_err());
    }
}

// ---- Workflows: the registry (stream `workflows-<tenant>`) and runs (stream
// `workflow_run-<run id>`, then `workflow_run-<run id>.<segment>` after a continue-as-new).
// JSON documents (specs, inputs, outputs, requests) are stored as JSON text: the binary form
// carries no self-describing values.

/// A version of a workflow spec was registered. `spec` is the loaded spec (fragments and
/// overlays applied) as JSON; `source` the text as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRegistered {
    pub name: String,
    pub version: u32,
    pub spec: String,
    pub source: String,
}
payload!(WorkflowRegistered, 1);

/// A version of a reusable node definition (a fragment) was registered; `node` is JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FragmentRegistered {
    pub name: String,
    pub version: u32,
    pub node: String,
}
payload!(FragmentRegistered, 1);

/// A version of an HTTP tool was registered; `definition` is JSON (url, method, timeout,
/// retries, response schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolRegistered {
    pub name: String,
    pub version: u32,
    pub definition: String,
}
payload!(ToolRegistered, 1);

/// A version of a prompt was registered (stream `workflows-<tenant>`): `prompt` is JSON
/// (`{"messages": [{"role", "content"}], "description"?}`, each content a template), served to
/// chat requests and workflow nodes that name it `name@version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptRegistered {
    pub name: String,
    pub version: u32,
    pub prompt: String,
}
payload!(PromptRegistered, 1);

/// The registry entry registered just before it in the same append came from a verified
/// manifest: `kind` (`tool`, `workflow`, `fragment`, `prompt`), `name` at `version`, the
/// manifest's content digest (`blake3:<hex>` of its canonical JSON) and the key that signed it
/// (`None`: published unsigned where that is allowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestSigned {
    pub kind: String,
    pub name: String,
    pub version: u32,
    pub digest: String,
    pub key_id: Option<String>,
}
payload!(ManifestSigned, 1);

// ---- Ingestion: a tenant's documents (stream `document-<id>`, the id derived from the tenant
// and the content's BLAKE3, so the same bytes uploaded again are the same document).

/// A document was added to the tenant's library: its name, media type, size, content hash
/// (`blake3:<hex>`), where it came from (`upload`, or the URL) and the characters of text
/// extracted from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentAdded {
    pub name: String,
    pub media_type: String,
    pub bytes: u64,
    pub content_hash: String,
    pub source: String,
    pub characters: u64,
}
payload!(DocumentAdded, 1);

/// One part (of `parts`) of a document's chunks, in order: each with its text, its byte range
/// in the extracted text, the headings it sits under and its estimated tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentChunked {
    pub part: u32,
    pub parts: u32,
    pub chunks: Vec<DocumentChunk>,
}
payload!(DocumentChunked, 1);

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentChunk {
    pub index: u32,
    pub text: String,
    pub start: u64,
    pub end: u64,
    pub heading_path: Vec<String>,
    pub tokens: u32,
}

/// Embeddings of chunks `first..first + vectors.len()` by `model`: unit vectors, each component
/// ×32767 as an integer (so the log stores them compactly and exactly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentIndexed {
    pub model: String,
    pub dimensions: u32,
    pub first: u32,
    pub vectors: Vec<Vec<i16>>,
}
payload!(DocumentIndexed, 1);

/// The document was deleted: every chunk, index entry and vector of it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentDeleted {
    pub reason: String,
}
payload!(DocumentDeleted, 1);

/// A workflow run started. `spec` and `input` are JSON; the run never reads the registry again,
/// so its replay needs nothing but its own events. `seed` is where any randomness comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunStarted {
    pub run_id: uuid::Uuid,
    pub workflow: String,
    pub version: u32,
    pub spec: String,
    pub input: String,
    /// A child run: its parent run and the parent's step that waits for it.
    pub parent_run: Option<uuid::Uuid>,
    pub parent_step: Option<String>,
    /// A re-execution: the recorded run it re-executes, and what it changes (JSON).
    pub replay_of: Option<uuid::Uuid>,
    pub overrides: String,
    pub seed: u64,
    pub at_ms: u64,
    /// The version of the workflow engine's decision logic that runs it (and replays it):
    /// `switchyard_workflows::run::ENGINE` when it started.
    pub engine: u32,
}
payload!(RunStarted, 2);

/// `RunStarted` v1, before runs recorded their engine version: read and upcast (engine 1, the
/// only one then), never written. Its schema keeps the title and text it was published with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "RunStarted",
    description = "A workflow run started. `spec` and `input` are JSON; the run never reads the registry again,\nso its replay needs nothing but its own events. `seed` is where any randomness comes from."
)]
pub struct RunStartedV1 {
    pub run_id: uuid::Uuid,
    pub workflow: String,
    pub version: u32,
    pub spec: String,
    pub input: String,
    /// A child run: its parent run and the parent's step that waits for it.
    pub parent_run: Option<uuid::Uuid>,
    pub parent_step: Option<String>,
    /// A re-execution: the recorded run it re-executes, and what it changes (JSON).
    pub replay_of: Option<uuid::Uuid>,
    pub overrides: String,
    pub seed: u64,
    pub at_ms: u64,
}

impl From<RunStartedV1> for RunStarted {
    fn from(old: RunStartedV1) -> Self {
        RunStarted {
            run_id: old.run_id,
            workflow: old.workflow,
            version: old.version,
            spec: old.spec,
            input: old.input,
            parent_run: old.parent_run,
            parent_step: old.parent_step,
            replay_of: old.replay_of,
            overrides: old.overrides,
            seed: old.seed,
            at_ms: old.at_ms,
            engine: 1,
        }
    }
}

/// The run started a step (attempt `attempt`, not before `not_before_ms`). `request` is the
/// rendered call (JSON): what the step sends, so that a re-execution can match recorded tool
/// results and a reader can see what was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepStarted {
    pub step: String,
    pub node: String,
    pub attempt: u32,
    pub request: String,
    pub not_before_ms: u64,
    pub at_ms: u64,
}
payload!(StepStarted, 1);

/// A step completed with `output` (JSON). `decided` is true when the run itself completed it
/// (a branch, a map's last item, a wait), false when the result came from outside (a model, a
/// tool, a child run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepCompleted {
    pub step: String,
    pub output: String,
    pub decided: bool,
    /// The inference that answered an `llm` step, and what the step cost.
    pub inference_id: Option<uuid::Uuid>,
    pub cost_micros: u64,
    pub at_ms: u64,
}
payload!(StepCompleted, 1);

/// An attempt of a step failed; `retryable` failures are retried while attempts are left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepFailed {
    pub step: String,
    pub attempt: u32,
    pub error: String,
    pub retryable: bool,
    /// True when the run itself failed the step (a template or condition that cannot be
    /// evaluated, a map item that failed for good, a timed-out human input).
    pub decided: bool,
    pub at_ms: u64,
}
payload!(StepFailed, 1);

/// A `wait` (or the timeout of a signal wait or human input) set a timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerStarted {
    pub step: String,
    pub fire_at_ms: u64,
    pub at_ms: u64,
}
payload!(TimerStarted, 1);

/// A timer fired (time enters the run only through this event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerFired {
    pub step: String,
    pub at_ms: u64,
}
payload!(TimerFired, 1);

/// A signal reached the run (`POST /v1/runs/{id}/signals`); `payload` is JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalReceived {
    pub name: String,
    pub payload: String,
    pub at_ms: u64,
}
payload!(SignalReceived, 1);

/// Someone asked the run to stop; it compensates what it completed, then ends cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCancelRequested {
    pub reason: String,
    pub at_ms: u64,
}
payload!(RunCancelRequested, 1);

/// The run ended with `output` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCompleted {
    pub output: String,
    pub at_ms: u64,
}
payload!(RunCompleted, 1);

/// The run failed at `step`; `compensated` lists the steps whose compensation ran, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunFailed {
    pub error: String,
    pub step: Option<String>,
    pub compensated: Vec<String>,
    pub at_ms: u64,
}
payload!(RunFailed, 1);

/// The run was cancelled; `compensated` lists the steps whose compensation ran, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCancelled {
    pub reason: String,
    pub compensated: Vec<String>,
    pub at_ms: u64,
}
payload!(RunCancelled, 1);

/// This segment of the run's stream is full: the run continues in segment `segment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunContinued {
    pub segment: u32,
    pub at_ms: u64,
}
payload!(RunContinued, 1);

/// The first event of a later segment: the run's state carried over (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentStarted {
    pub run_id: uuid::Uuid,
    pub segment: u32,
    pub state: String,
    pub at_ms: u64,
}
payload!(SegmentStarted, 1);
