//! API keys at the edge: generation, keyed hashing, and the in-memory index every request is
//! authenticated against without touching the database; the tenant directory; and the view of
//! both that admission reads ([`AccountView`]).
//!
//! A key is `sy_` followed by 64 hex digits (256 random bits). The log stores only
//! BLAKE3-keyed hash of it under the server's secret (high-entropy keys need no slow password
//! hash) and a short prefix to recognise it by. The index is folded from the log by a
//! subscription, so a key issued on any node works on every node, and survives restarts.

use std::path::Path;
use std::sync::Arc;

use dashmap::DashMap;
use rand::Rng;
use switchyard_actors::tenant::{Limits, RateLimits};
use switchyard_events::{Event, LimitScope, RecordedEvent, TenantId};
use switchyard_inference::Accounts;
use switchyard_inference::follow::Folder;
use switchyard_inference::guard::Guard;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::settings::TenantSettings;

pub use switchyard_inference::Principal;

/// The secret that keys the hash of API keys.
#[derive(Clone)]
pub struct KeySecret([u8; 32]);

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySecret(..)")
    }
}

impl KeySecret {
    /// Reads the secret from `path`, creating it (readable by the owner only) on first use.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        if let Ok(text) = std::fs::read_to_string(path) {
            let bytes = decode_hex(text.trim())
                .ok_or_else(|| anyhow::anyhow!("{} is not 64 hex digits", path.display()))?;
            return Ok(KeySecret(bytes));
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill(&mut bytes);
        write_private(path, &hex(&bytes))?;
        Ok(KeySecret(bytes))
    }

    /// The keyed hash of `key`, as stored in `ApiKeyIssued`.
    pub fn hash(&self, key: &str) -> String {
        hex(blake3::keyed_hash(&self.0, key.as_bytes()).as_bytes())
    }
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A fresh API key and the parts the log keeps of it.
pub struct NewKey {
    pub key: String,
    pub prefix: String,
}

pub fn generate() -> NewKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    let key = format!("sy_{}", hex(&bytes));
    let prefix = key.chars().take(10).collect();
    NewKey { key, prefix }
}

#[derive(Debug, Clone)]
struct Entry {
    principal: Principal,
    expires_at_unix: Option<i64>,
    revoked: bool,
}

/// The scopes a key may be given; a key with none (or `*`) may call every tenant endpoint.
pub const SCOPES: &[&str] = &[
    "inference", // /v1/models, /v1/chat/completions, /v1/embeddings, /v1/feedback
    "feedback",  // /v1/feedback alone
    "analytics", // /v1/analytics/*, /v1/billing/*, /v1/inferences, /v1/router/*, the event feeds
    "router",    // /v1/router/arms, /v1/router/evaluate
    "events",    // /v1/events/stream, /v1/events/ws
    "workflows", // /v1/workflows, /v1/fragments, /v1/tools, /v1/runs/*
    "*",
];

/// Checks scopes for a new key: every one must be in [`SCOPES`].
pub fn check_scopes(scopes: &[String]) -> Result<(), String> {
    match scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        Some(unknown) => Err(format!(
            "unknown scope `{unknown}`; valid scopes: {}",
            SCOPES.join(", ")
        )),
        None => Ok(()),
    }
}

/// Why a key does not authenticate (all answered with the same 401 to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Revoked,
    Expired,
    Suspended,
}

impl Refusal {
    /// What the client is told.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Unknown => "invalid API key",
            Refusal::Revoked => "this API key was revoked",
            Refusal::Expired => "this API key has expired",
            Refusal::Suspended => "the tenant is suspended",
        }
    }
}

/// Key hash → principal, folded from the log.
#[derive(Debug, Default)]
pub struct KeyIndex {
    by_hash: DashMap<String, Entry>,
    hash_of: DashMap<Uuid, String>,
    suspended: DashMap<TenantId, ()>,
    limits: DashMap<TenantId, Limits>,
    key_limits: DashMap<Uuid, RateLimits>,
    model_limits: DashMap<(TenantId, String), RateLimits>,
    /// The tenant settings read on the request path.
    pub settings: TenantSettings,
    /// The platform's feature flags and the tenants' switches.
    pub flags: switchyard_actors::flags::FlagBook,
}

impl KeyIndex {
    /// Applies one event (idempotent: the admin API applies its own writes at once, and the
    /// subscription applies them again).
    pub fn apply(&self, tenant: TenantId, event: &Event) {
        match event {
            Event::ApiKeyIssued(e) => {
                self.hash_of.insert(e.key_id, e.key_hash.clone());
                self.by_hash
                    .entry(e.key_hash.clone())
                    .or_insert_with(|| Entry {
                        principal: Principal {
                            tenant,
                            key_id: e.key_id,
                            scopes: e.scopes.clone(),
                        },
                        expires_at_unix: e.expires_at_unix,
                        revoked: false,
                    });
            }
            Event::ApiKeyRevoked(e) => {
                if let Some(hash) = self.hash_of.get(&e.key_id)
                    && let Some(mut entry) = self.by_hash.get_mut(hash.value())
                {
                    entry.revoked = true;
                }
            }
            Event::ApiKeyRotated(e) => {
                if let Some(hash) = self.hash_of.get(&e.key_id)
                    && let Some(mut entry) = self.by_hash.get_mut(hash.value())
                {
                    entry.expires_at_unix = Some(e.old_expires_at_unix);
                }
            }
            Event::TenantSuspended(_) => {
                self.suspended.insert(tenant, ());
            }
            Event::TenantResumed(_) => {
                self.suspended.remove(&tenant);
            }
            Event::TenantLimitsSet(e) => {
                self.limits.insert(
                    tenant,
                    Limits {
                        requests_per_minute: e.requests_per_minute,
                        tokens_per_minute: e.tokens_per_minute,
                        monthly_budget_micros: e.monthly_budget_micros,
                        daily_budget_micros: e.daily_budget_micros,
                        monthly_token_budget: e.monthly_token_budget,
                        daily_token_budget: e.daily_token_budget,
                    },
                );
            }
            Event::TenantSettingSet(e) => {
                self.settings.apply(tenant, &e.key, e.value.as_deref());
            }
            Event::FeatureFlagSet(e) => self.flags.define(&e.name, e.definition.as_deref()),
            Event::TenantFlagSet(e) => self.flags.switch(tenant, &e.flag, e.enabled),
            Event::RateLimitSet(e) => {
                let limits = RateLimits {
                    requests_per_minute: e.requests_per_minute,
                    tokens_per_minute: e.tokens_per_minute,
                };
                let unlimited = limits == RateLimits::default();
                match &e.scope {
                    LimitScope::Key(key_id) if unlimited => {
                        self.key_limits.remove(key_id);
                    }
                    LimitScope::Key(key_id) => {
                        self.key_limits.insert(*key_id, limits);
                    }
                    LimitScope::Model(model) if unlimited => {
                        self.model_limits.remove(&(tenant, model.clone()));
                    }
                    LimitScope::Model(model) => {
                        self.model_limits.insert((tenant, model.clone()), limits);
                    }
                }
            }
            _ => {}
        }
    }

    /// The tenant's own limits (none set: no limit).
    /// Whether the tenant is suspended (its keys are refused, and its workflow steps too).
    pub fn is_suspended(&self, tenant: TenantId) -> bool {
        self.suspended.contains_key(&tenant)
    }

    pub fn tenant_limits(&self, tenant: TenantId) -> Limits {
        self.limits.get(&tenant).map(|l| *l).unwrap_or_default()
    }

    /// Whether a browser on `origin` may read `tenant`'s answers.
    pub fn cors_allows(&self, tenant: TenantId, origin: &str) -> bool {
        self.settings.cors_allows(tenant, origin)
    }

    /// One key's rate limits (none set: no limit at the key tier).
    pub fn key_limits(&self, key_id: Uuid) -> RateLimits {
        self.key_limits.get(&key_id).map(|l| *l).unwrap_or_default()
    }

    /// One model's rate limits within a tenant.
    pub fn model_limits(&self, tenant: TenantId, model: &str) -> RateLimits {
        self.model_limits
            .get(&(tenant, model.to_owned()))
            .map(|l| *l)
            .unwrap_or_default()
    }

    /// Whether key `key_id` may still be used at `now` (for what it opened earlier, such as an
    /// event feed).
    pub fn check_key(&self, key_id: Uuid, now: OffsetDateTime) -> Result<(), Refusal> {
        let hash = self.hash_of.get(&key_id).ok_or(Refusal::Unknown)?;
        self.authenticate(hash.value(), now).map(|_| ())
    }

    /// The principal of a presented key hash at `now`.
    pub fn authenticate(&self, key_hash: &str, now: OffsetDateTime) -> Result<Principal, Refusal> {
        let entry = self.by_hash.get(key_hash).ok_or(Refusal::Unknown)?;
        if entry.revoked {
            return Err(Refusal::Revoked);
        }
        if entry
            .expires_at_unix
            .is_some_and(|at| now.unix_timestamp() >= at)
        {
            return Err(Refusal::Expired);
        }
        if self.suspended.contains_key(&entry.principal.tenant) {
            return Err(Refusal::Suspended);
        }
        Ok(entry.principal.clone())
    }
}

impl Folder for KeyIndex {
    fn fold(&self, recorded: &RecordedEvent) {
        if !matches!(
            recorded.event_type.as_str(),
            "ApiKeyIssued"
                | "ApiKeyRevoked"
                | "ApiKeyRotated"
                | "TenantSuspended"
                | "TenantResumed"
                | "TenantLimitsSet"
                | "RateLimitSet"
                | "TenantSettingSet"
                | "FeatureFlagSet"
                | "TenantFlagSet"
        ) {
            return;
        }
        if let Ok(event) = Event::from_recorded(recorded) {
            self.apply(recorded.tenant_id, &event);
        }
    }
}

/// Failed key checks one address may make per minute (a burst of as many) before its requests
/// are refused with 429, keys unchecked, until the window lets it try again.
pub const AUTH_FAILURES_PER_MINUTE: u32 = 30;

/// Addresses refused for failing key checks too often, on this node: the failures are counted
/// by a GCRA limiter of the node's own (so N nodes allow an address N times the allowance: a
/// brute-force brake, not a quota, and one that keeps working when Redis does not); the refusal
/// is remembered until its `Retry-After`, so that a blocked address gets no key checked, and is
/// logged once per block.
#[derive(Debug)]
pub struct AuthFailures {
    pub limiter: switchyard_inference::admission::ratelimit::Limiter,
    blocked: DashMap<std::net::IpAddr, std::time::Instant>,
}

impl Default for AuthFailures {
    fn default() -> Self {
        AuthFailures {
            limiter: switchyard_inference::admission::ratelimit::Limiter::local(),
            blocked: DashMap::new(),
        }
    }
}

impl AuthFailures {
    /// How long `address` is still refused, if it is.
    pub fn blocked(&self, address: std::net::IpAddr) -> Option<std::time::Duration> {
        let until = *self.blocked.get(&address)?;
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            self.blocked.remove(&address);
            return None;
        }
        Some(left)
    }

    /// Blocks `address` for `retry_after`; answers whether it was not blocked already (the
    /// caller logs the block once).
    pub fn block(&self, address: std::net::IpAddr, retry_after: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + retry_after;
        self.blocked
            .insert(address, until)
            .is_none_or(|was| was <= std::time::Instant::now())
    }
}

/// What admission reads: limits from the key index, plans from the directory.
#[derive(Debug)]
pub struct AccountView {
    pub keys: Arc<KeyIndex>,
    pub directory: Arc<TenantDirectory>,
}

impl Accounts for AccountView {
    fn tenant_limits(&self, tenant: TenantId) -> Limits {
        self.keys.tenant_limits(tenant)
    }

    fn key_limits(&self, key_id: Uuid) -> RateLimits {
        self.keys.key_limits(key_id)
    }

    fn model_limits(&self, tenant: TenantId, model: &str) -> RateLimits {
        self.keys.model_limits(tenant, model)
    }

    fn plan(&self, tenant: TenantId) -> Option<String> {
        self.directory.plan(tenant)
    }

    fn allowed_models(&self, tenant: TenantId) -> Option<Vec<String>> {
        self.keys.settings.allowed_models(tenant)
    }

    fn guardrails(&self, tenant: TenantId) -> Option<Arc<Guard>> {
        self.keys.settings.guardrails(tenant)
    }

    fn capture(&self, tenant: TenantId) -> Option<switchyard_inference::capture::CapturePolicy> {
        self.keys.settings.capture(tenant)
    }

    fn semantic_cache(
        &self,
        tenant: TenantId,
    ) -> Option<switchyard_inference::cache::semantic::SemanticPolicy> {
        self.keys.settings.semantic_cache(tenant)
    }

    fn flag(
        &self,
        name: &str,
        principal: &Principal,
        user: Option<&str>,
    ) -> Option<switchyard_actors::flags::Decision> {
        if !self.keys.flags.defined(name) {
            return None;
        }
        let plan = self.directory.plan(principal.tenant);
        self.keys.flags.evaluate(
            name,
            principal.tenant,
            plan.as_deref(),
            Some(principal.key_id),
            user,
        )
    }

    fn spend_limits(
        &self,
        tenant: TenantId,
    ) -> Option<Arc<switchyard_inference::admission::below::SpendLimits>> {
        self.keys.settings.spend_limits(tenant)
    }
}

/// One line of the tenant directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantEntry {
    pub id: TenantId,
    pub name: String,
    pub plan: String,
    pub created_at: OffsetDateTime,
}

/// Every tenant, folded from the log, for listing (the admin API's `GET /v1/admin/tenants`).
/// A read model in memory until the projections of the read side exist.
#[derive(Debug, Default)]
pub struct TenantDirectory {
    tenants: DashMap<TenantId, TenantEntry>,
}

impl Folder for TenantDirectory {
    fn fold(&self, recorded: &RecordedEvent) {
        if !matches!(
            recorded.event_type.as_str(),
            "TenantCreated" | "TenantRenamed" | "TenantDeleted"
        ) {
            return;
        }
        match Event::from_recorded(recorded) {
            Ok(Event::TenantCreated(e)) => {
                self.tenants
                    .entry(recorded.tenant_id)
                    .or_insert(TenantEntry {
                        id: recorded.tenant_id,
                        name: e.name,
                        plan: e.plan,
                        created_at: recorded.recorded_at,
                    });
            }
            Ok(Event::TenantRenamed(e)) => {
                if let Some(mut entry) = self.tenants.get_mut(&recorded.tenant_id) {
                    entry.name = e.name;
                }
            }
            Ok(Event::TenantDeleted(_)) => self.remove(recorded.tenant_id),
            _ => {}
        }
    }
}

impl TenantDirectory {
    /// A tenant's plan.
    pub fn plan(&self, tenant: TenantId) -> Option<String> {
        self.tenants.get(&tenant).map(|e| e.plan.clone())
    }

    /// The tenant's name.
    pub fn name(&self, tenant: TenantId) -> Option<String> {
        self.tenants.get(&tenant).map(|t| t.name.clone())
    }

    /// Records a tenant the admin API just created (the log subscription agrees later).
    pub fn insert(&self, entry: TenantEntry) {
        self.tenants.entry(entry.id).or_insert(entry);
    }

    /// Forgets a deleted tenant.
    pub fn remove(&self, tenant: TenantId) {
        self.tenants.remove(&tenant);
    }

    /// Tenants in creation order (ids are UUIDv7), after `after`, at most `limit`; only those
    /// in `within` when it is given.
    pub fn page(
        &self,
        after: Option<TenantId>,
        limit: usize,
        within: Option<&[TenantId]>,
    ) -> Vec<TenantEntry> {
        let mut all: Vec<TenantEntry> = self
            .tenants
            .iter()
            .filter(|e| within.is_none_or(|within| within.contains(e.key())))
            .map(|e| e.value().clone())
            .collect();
        all.sort_by_key(|e| e.id);
        all.into_iter()
            .filter(|e| after.is_none_or(|after| e.id > after))
            .take(limit)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use switchyard_events::{ApiKeyIssued, ApiKeyRevoked, TenantResumed, TenantSuspended};

    use super::*;

    fn issued(key_id: Uuid, hash: &str, expires: Option<i64>) -> Event {
        Event::ApiKeyIssued(ApiKeyIssued {
            key_id,
            name: "k".into(),
            key_hash: hash.into(),
            prefix: "sy_".into(),
            scopes: vec![],
            expires_at_unix: expires,
        })
    }

    #[test]
    fn keys_authenticate_until_revoked_expired_or_suspended() {
        let index = KeyIndex::default();
        let (tenant, key_id) = (TenantId::new(), Uuid::now_v7());
        let now = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        index.apply(tenant, &issued(key_id, "h1", Some(2_000)));
        assert_eq!(index.authenticate("h1", now).unwrap().tenant, tenant);
        assert_eq!(index.authenticate("nope", now), Err(Refusal::Unknown));
        let later = OffsetDateTime::from_unix_timestamp(2_000).unwrap();
        assert_eq!(index.authenticate("h1", later), Err(Refusal::Expired));
        index.apply(
            tenant,
            &Event::TenantSuspended(TenantSuspended { reason: "x".into() }),
        );
        assert_eq!(index.authenticate("h1", now), Err(Refusal::Suspended));
        index.apply(tenant, &Event::TenantResumed(TenantResumed {}));
        assert!(index.authenticate("h1", now).is_ok());
        index.apply(tenant, &Event::ApiKeyRevoked(ApiKeyRevoked { key_id }));
        assert_eq!(index.authenticate("h1", now), Err(Refusal::Revoked));
        // Applying the issue again (the subscription after a write-through) does not revive it.
        index.apply(tenant, &issued(key_id, "h1", Some(2_000)));
        assert_eq!(index.authenticate("h1", now), Err(Refusal::Revoked));
    }

    #[test]
    fn the_secret_keys_the_hash_and_survives_a_reload() {
        let dir =
            std::env::temp_dir().join(format!("switchyard-key-secret-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key-secret");
        let first = KeySecret::load_or_create(&path).unwrap();
        let again = KeySecret::load_or_create(&path).unwrap();
        assert_eq!(first.hash("sy_abc"), again.hash("sy_abc"));
        assert_ne!(first.hash("sy_abc"), first.hash("sy_abd"));
        let generated = generate();
        assert_eq!(generated.key.len(), 67);
        assert!(generated.key.starts_with(&generated.prefix));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
