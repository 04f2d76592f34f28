//! The tenant actor: a tenant's name, plan, suspension, feature flags, settings and API keys,
//! folded from stream `tenant-<id>`.
//!
//! API keys are generated and hashed by the caller (the gateway) before the command, so
//! `decide` stays pure and the key itself never reaches the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_events::{
    ApiKeyIssued, ApiKeyRevoked, ApiKeyRotated, Event, LimitScope, RateLimitSet, TenantCreated,
    TenantDeleted, TenantFlagSet, TenantId, TenantLimitsSet, TenantRenamed, TenantResumed,
    TenantSettingSet, TenantSuspended,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::actor::Actor;

#[cfg(test)]
mod tests;

/// Most API keys (live or revoked) one tenant may hold.
pub const MAX_KEYS: usize = 100;
/// Most feature flags or settings one tenant may hold.
pub const MAX_ENTRIES: usize = 200;

/// The tenant actor kind.
#[derive(Debug, Clone, Copy)]
pub struct Tenant;

/// What the log says about a tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantState {
    /// False until `TenantCreated`: every other command is refused before it.
    pub created: bool,
    pub name: String,
    pub plan: String,
    /// The reason, while suspended.
    pub suspended: Option<String>,
    pub flags: BTreeMap<String, bool>,
    pub settings: BTreeMap<String, String>,
    pub keys: BTreeMap<Uuid, ApiKey>,
    pub limits: Limits,
    /// Rate limits of single keys (on top of the tenant's).
    pub key_limits: BTreeMap<Uuid, RateLimits>,
    /// Rate limits of single models across the tenant's keys.
    pub model_limits: BTreeMap<String, RateLimits>,
    /// After `TenantDeleted`: every command is refused as for an unknown tenant.
    #[serde(default)]
    pub deleted: bool,
}

/// Requests and tokens per minute at one tier; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}

/// A tenant's limits; `None` is no limit. Enforced by the rate limiter and the quota actor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    /// Integer micro-dollars: money is never a float.
    pub monthly_budget_micros: Option<u64>,
    pub daily_budget_micros: Option<u64>,
    /// Tokens (in + out) per UTC month and day.
    pub monthly_token_budget: Option<u64>,
    pub daily_token_budget: Option<u64>,
}

/// An API key as the log knows it: never the key, only its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub name: String,
    pub key_hash: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub expires_at_unix: Option<i64>,
    pub revoked: bool,
}

impl ApiKey {
    /// Whether the key may authenticate a request at `now`.
    pub fn is_usable(&self, now: OffsetDateTime) -> bool {
        !self.revoked
            && self
                .expires_at_unix
                .is_none_or(|at| now.unix_timestamp() < at)
    }
}

/// What can be asked of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantCommand {
    Create {
        name: String,
        plan: String,
    },
    Rename {
        name: String,
    },
    Suspend {
        reason: String,
    },
    Resume,
    SetFlag {
        flag: String,
        enabled: bool,
    },
    SetSetting {
        key: String,
        value: Option<String>,
    },
    IssueKey {
        key_id: Uuid,
        name: String,
        key_hash: String,
        prefix: String,
        scopes: Vec<String>,
        expires_at_unix: Option<i64>,
    },
    RevokeKey {
        key_id: Uuid,
    },
    /// Issue a new key with the old one's name, scopes and expiry; the old one keeps working
    /// until `grace_until_unix` (or its own expiry, if sooner).
    RotateKey {
        key_id: Uuid,
        new_key_id: Uuid,
        key_hash: String,
        prefix: String,
        grace_until_unix: i64,
    },
    /// Revoke every key and refuse the tenant from now on.
    Delete {
        reason: String,
    },
    SetLimits(Limits),
    /// Replace one key's or one model's rate limits (all `None` removes them).
    SetRateLimit {
        scope: LimitScope,
        limits: RateLimits,
    },
}

/// Why a tenant command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantRejection {
    #[error("no such tenant")]
    NotFound,
    #[error("the tenant already exists")]
    AlreadyExists,
    #[error("the tenant is suspended")]
    Suspended,
    #[error("the tenant is not suspended")]
    NotSuspended,
    #[error("no such API key")]
    UnknownKey,
    #[error("an API key with this id already exists")]
    DuplicateKey,
    #[error("{0}")]
    Invalid(String),
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), TenantRejection> {
    if value.trim().is_empty() || value.chars().count() > max || value.chars().any(char::is_control)
    {
        return Err(TenantRejection::Invalid(format!(
            "{field} must be 1-{max} characters without control characters"
        )));
    }
    Ok(())
}

fn check_identifier(field: &str, value: &str) -> Result<(), TenantRejection> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.' | ':')
        });
    if ok {
        Ok(())
    } else {
        Err(TenantRejection::Invalid(format!(
            "{field} must be 1-64 of a-z, 0-9, '_', '-', '.', ':'"
        )))
    }
}

impl Actor for Tenant {
    const KIND: &'static str = "tenant";
    const SNAPSHOT_VERSION: u16 = 4;
    type Id = TenantId;
    type State = TenantState;
    type Command = TenantCommand;
    type Rejection = TenantRejection;

    fn tenant(id: &TenantId) -> TenantId {
        *id
    }

    fn decide(
        state: &TenantState,
        command: TenantCommand,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, TenantRejection> {
        use TenantCommand as C;
        if let C::Create { name, plan } = command {
            if state.created {
                return Err(TenantRejection::AlreadyExists);
            }
            check_text("name", &name, 100)?;
            check_identifier("plan", &plan)?;
            return Ok(vec![Event::TenantCreated(TenantCreated { name, plan })]);
        }
        if !state.created || state.deleted {
            return Err(TenantRejection::NotFound);
        }
        let events = match command {
            C::Create { .. } => vec![], // handled above
            C::Rename { name } => {
                check_text("name", &name, 100)?;
                if name == state.name {
                    vec![]
                } else {
                    vec![Event::TenantRenamed(TenantRenamed { name })]
                }
            }
            C::Suspend { reason } => {
                check_text("reason", &reason, 500)?;
                if state.suspended.is_some() {
                    return Err(TenantRejection::Suspended);
                }
                vec![Event::TenantSuspended(TenantSuspended { reason })]
            }
            C::Resume => {
                if state.suspended.is_none() {
                    return Err(TenantRejection::NotSuspended);
                }
                vec![Event::TenantResumed(TenantResumed {})]
            }
            C::SetFlag { flag, enabled } => {
                check_identifier("flag", &flag)?;
                if state.flags.get(&flag) == Some(&enabled) {
                    vec![]
                } else if !state.flags.contains_key(&flag) && state.flags.len() >= MAX_ENTRIES {
                    return Err(TenantRejection::Invalid(format!(
                        "at most {MAX_ENTRIES} flags"
                    )));
                } else {
                    vec![Event::TenantFlagSet(TenantFlagSet { flag, enabled })]
                }
            }
            C::SetSetting { key, value } => {
                check_identifier("setting", &key)?;
                if let Some(value) = &value {
                    check_text("setting value", value, 4096)?;
                }
                if state.settings.get(&key) == value.as_ref() {
                    vec![]
                } else if value.is_some()
                    && !state.settings.contains_key(&key)
                    && state.settings.len() >= MAX_ENTRIES
                {
                    return Err(TenantRejection::Invalid(format!(
                        "at most {MAX_ENTRIES} settings"
                    )));
                } else {
                    vec![Event::TenantSettingSet(TenantSettingSet { key, value })]
                }
            }
            C::IssueKey {
                key_id,
                name,
                key_hash,
                prefix,
                scopes,
                expires_at_unix,
            } => {
                if state.suspended.is_some() {
                    return Err(TenantRejection::Suspended);
                }
                if state.keys.contains_key(&key_id) {
                    return Err(TenantRejection::DuplicateKey);
                }
                if state.keys.len() >= MAX_KEYS {
                    return Err(TenantRejection::Invalid(format!(
                        "at most {MAX_KEYS} API keys"
                    )));
                }
                check_text("key name", &name, 100)?;
                for scope in &scopes {
                    check_identifier("scope", scope)?;
                }
                if expires_at_unix.is_some_and(|at| at <= now.unix_timestamp()) {
                    return Err(TenantRejection::Invalid(
                        "expires_at must be in the future".into(),
                    ));
                }
                if key_hash.len() != 64 || !key_hash.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(TenantRejection::Invalid(
                        "key_hash must be 64 hex digits".into(),
                    ));
                }
                vec![Event::ApiKeyIssued(ApiKeyIssued {
                    key_id,
                    name,
                    key_hash,
                    prefix,
                    scopes,
                    expires_at_unix,
                })]
            }
            C::SetLimits(limits) => {
                if limits.requests_per_minute == Some(0) || limits.tokens_per_minute == Some(0) {
                    return Err(TenantRejection::Invalid(
                        "a limit of 0 would refuse everything; omit it for no limit".into(),
                    ));
                }
                if limits == state.limits {
                    vec![]
                } else {
                    vec![Event::TenantLimitsSet(TenantLimitsSet {
                        requests_per_minute: limits.requests_per_minute,
                        tokens_per_minute: limits.tokens_per_minute,
                        monthly_budget_micros: limits.monthly_budget_micros,
                        daily_budget_micros: limits.daily_budget_micros,
                        monthly_token_budget: limits.monthly_token_budget,
                        daily_token_budget: limits.daily_token_budget,
                    })]
                }
            }
            C::SetRateLimit { scope, limits } => {
                if limits.requests_per_minute == Some(0) || limits.tokens_per_minute == Some(0) {
                    return Err(TenantRejection::Invalid(
                        "a limit of 0 would refuse everything; omit it for no limit".into(),
                    ));
                }
                let current = match &scope {
                    LimitScope::Key(key_id) => {
                        if !state.keys.contains_key(key_id) {
                            return Err(TenantRejection::UnknownKey);
                        }
                        state.key_limits.get(key_id).copied()
                    }
                    LimitScope::Model(model) => {
                        check_text("model", model, 200)?;
                        let current = state.model_limits.get(model).copied();
                        if current.is_none() && state.model_limits.len() >= MAX_ENTRIES {
                            return Err(TenantRejection::Invalid(format!(
                                "at most {MAX_ENTRIES} models may carry limits of their own"
                            )));
                        }
                        current
                    }
                };
                if current.unwrap_or_default() == limits {
                    vec![]
                } else {
                    vec![Event::RateLimitSet(RateLimitSet {
                        scope,
                        requests_per_minute: limits.requests_per_minute,
                        tokens_per_minute: limits.tokens_per_minute,
                    })]
                }
            }
            C::RotateKey {
                key_id,
                new_key_id,
                key_hash,
                prefix,
                grace_until_unix,
            } => {
                let Some(old) = state.keys.get(&key_id) else {
                    return Err(TenantRejection::UnknownKey);
                };
                if !old.is_usable(now) {
                    return Err(TenantRejection::Invalid(
                        "a revoked or expired key cannot be rotated".into(),
                    ));
                }
                if state.keys.contains_key(&new_key_id) {
                    return Err(TenantRejection::DuplicateKey);
                }
                if state.keys.len() >= MAX_KEYS {
                    return Err(TenantRejection::Invalid(format!(
                        "at most {MAX_KEYS} API keys per tenant"
                    )));
                }
                if grace_until_unix < now.unix_timestamp() {
                    return Err(TenantRejection::Invalid(
                        "the grace period cannot end in the past".into(),
                    ));
                }
                let old_expires_at_unix = old
                    .expires_at_unix
                    .map_or(grace_until_unix, |at| at.min(grace_until_unix));
                vec![
                    Event::ApiKeyIssued(ApiKeyIssued {
                        key_id: new_key_id,
                        name: old.name.clone(),
                        key_hash,
                        prefix,
                        scopes: old.scopes.clone(),
                        expires_at_unix: old.expires_at_unix,
                    }),
                    Event::ApiKeyRotated(ApiKeyRotated {
                        key_id,
                        replaced_by: new_key_id,
                        old_expires_at_unix,
                    }),
                ]
            }
            C::Delete { reason } => {
                check_text("reason", &reason, 500)?;
                let mut events: Vec<Event> = state
                    .keys
                    .iter()
                    .filter(|(_, key)| !key.revoked)
                    .map(|(key_id, _)| Event::ApiKeyRevoked(ApiKeyRevoked { key_id: *key_id }))
                    .collect();
                events.push(Event::TenantDeleted(TenantDeleted { reason }));
                events
            }
            C::RevokeKey { key_id } => match state.keys.get(&key_id) {
                None => return Err(TenantRejection::UnknownKey),
                Some(key) if key.revoked => vec![],
                Some(_) => vec![Event::ApiKeyRevoked(ApiKeyRevoked { key_id })],
            },
        };
        Ok(events)
    }

    fn apply(state: &mut TenantState, event: &Event) {
        match event {
            Event::TenantCreated(e) => {
                state.created = true;
                state.name = e.name.clone();
                state.plan = e.plan.clone();
            }
            Event::TenantRenamed(e) => state.name = e.name.clone(),
            Event::TenantSuspended(e) => state.suspended = Some(e.reason.clone()),
            Event::TenantResumed(_) => state.suspended = None,
            Event::TenantFlagSet(e) => {
                state.flags.insert(e.flag.clone(), e.enabled);
            }
            Event::TenantSettingSet(e) => match &e.value {
                Some(value) => {
                    state.settings.insert(e.key.clone(), value.clone());
                }
                None => {
                    state.settings.remove(&e.key);
                }
            },
            Event::ApiKeyIssued(e) => {
                state.keys.insert(
                    e.key_id,
                    ApiKey {
                        name: e.name.clone(),
                        key_hash: e.key_hash.clone(),
                        prefix: e.prefix.clone(),
                        scopes: e.scopes.clone(),
                        expires_at_unix: e.expires_at_unix,
                        revoked: false,
                    },
                );
            }
            Event::ApiKeyRevoked(e) => {
                if let Some(key) = state.keys.get_mut(&e.key_id) {
                    key.revoked = true;
                }
            }
            Event::ApiKeyRotated(e) => {
                if let Some(key) = state.keys.get_mut(&e.key_id) {
                    key.expires_at_unix = Some(e.old_expires_at_unix);
                }
            }
            Event::TenantDeleted(_) => state.deleted = true,
            Event::TenantLimitsSet(e) => {
                state.limits = Limits {
                    requests_per_minute: e.requests_per_minute,
                    tokens_per_minute: e.tokens_per_minute,
                    monthly_budget_micros: e.monthly_budget_micros,
                    daily_budget_micros: e.daily_budget_micros,
                    monthly_token_budget: e.monthly_token_budget,
                    daily_token_budget: e.daily_token_budget,
                };
            }
            Event::RateLimitSet(e) => {
                let limits = RateLimits {
                    requests_per_minute: e.requests_per_minute,
                    tokens_per_minute: e.tokens_per_minute,
                };
                let unlimited = limits == RateLimits::default();
                match &e.scope {
                    LimitScope::Key(key_id) if unlimited => {
                        state.key_limits.remove(key_id);
                    }
                    LimitScope::Key(key_id) => {
                        state.key_limits.insert(*key_id, limits);
                    }
                    LimitScope::Model(model) if unlimited => {
                        state.model_limits.remove(model);
                    }
                    LimitScope::Model(model) => {
                        state.model_limits.insert(model.clone(), limits);
                    }
                }
            }
            // Not the tenant's: idempotency records live in streams of their own.
            Event::IdempotencyKeyClaimed(_)
            | Event::IdempotentResponseRecorded(_)
            | Event::IdempotencyKeyReleased(_)
            | Event::QuotaReserved(_)
            | Event::QuotaSettled(_)
            | Event::QuotaReleased(_)
            | Event::UsageRecorded(_)
            | Event::InvoiceFinalized(_)
            | Event::CreditNoteIssued(_)
            | Event::StorageMetered(_)
            | Event::BillingDaySet(_)
            | Event::PriceBookPublished(_)
            | Event::FeatureFlagSet(_)
            | Event::InvoicePaid(_)
            | Event::InferenceRequested(_)
            | Event::RouteChosen(_)
            | Event::InferenceCompleted(_)
            | Event::InferenceFailed(_)
            | Event::GuardrailChecked(_)
            | Event::InferenceCaptured(_)
            | Event::CapturesDeleted(_)
            | Event::RewardRecorded(_)
            | Event::RouterConfigured(_)
            | Event::CircuitChanged(_)
            | Event::WorkflowRegistered(_)
            | Event::FragmentRegistered(_)
            | Event::ToolRegistered(_)
            | Event::PromptRegistered(_)
            | Event::ManifestSigned(_)
            | Event::DocumentAdded(_)
            | Event::DocumentChunked(_)
            | Event::DocumentIndexed(_)
            | Event::DocumentDeleted(_)
            | Event::RunStarted(_)
            | Event::StepStarted(_)
            | Event::StepCompleted(_)
            | Event::StepFailed(_)
            | Event::TimerStarted(_)
            | Event::TimerFired(_)
            | Event::SignalReceived(_)
            | Event::RunCancelRequested(_)
            | Event::RunCompleted(_)
            | Event::RunFailed(_)
            | Event::RunCancelled(_)
            | Event::RunContinued(_)
            | Event::SegmentStarted(_) => {}
        }
    }
}
