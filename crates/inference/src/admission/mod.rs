//! Admission: who is asking, what their tenant, key and model may still take, and the checks
//! that refuse a request before it costs anything.
//!
//! Request and token limits are GCRA ([`ratelimit`]), checked tier by tier (tenant, key, model)
//! in this process or in Redis; the money and token budgets are the [`meter`] on one node, and
//! [`shared`] budgets in Redis when several nodes serve. The tenant's limits come through
//! [`Accounts`], which the composition root keeps current from the log.

pub mod below; // budgets per key, user and tag: the accounts below a tenant
pub mod meter;
pub mod ratelimit;
pub mod shared;

use std::time::Duration;

use switchyard_actors::tenant::{Limits, RateLimits};
use switchyard_events::TenantId;
use uuid::Uuid;

use crate::error::Error;
use ratelimit::{Decision, Limit, Limiter};

/// What a valid key lets a request be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub key_id: Uuid,
    pub scopes: Vec<String>,
}

impl Principal {
    /// Whether the key may use an endpoint that needs one of `scopes`: a key with no scopes may
    /// do anything, `*` too.
    pub fn allows(&self, scopes: &[&str]) -> bool {
        self.scopes.is_empty()
            || self
                .scopes
                .iter()
                .any(|s| s == "*" || scopes.contains(&s.as_str()))
    }
}

/// The flag that gates the semantic cache: where it is defined and off, a request is looked up
/// by its exact key only (and its question is not kept).
pub const SEMANTIC_CACHE_FLAG: &str = "semantic-cache";

/// The flag that gates the router's canary splits: where it is defined and off, `auto` is
/// served by the routing's main policy, and the route is logged as
/// `flag.router-splits.<reason>:<policy>`.
pub const ROUTER_SPLITS_FLAG: &str = "router-splits";

/// The flag `name` for a request, counted and logged; `None` when it is not defined.
pub fn flag(
    accounts: &dyn Accounts,
    name: &str,
    principal: &Principal,
    user: Option<&str>,
) -> Option<switchyard_actors::flags::Decision> {
    let decision = accounts.flag(name, principal, user)?;
    crate::metrics::FLAGS
        .decisions
        .with_label_values(&[
            name,
            if decision.on { "true" } else { "false" },
            decision.reason.as_str(),
        ])
        .inc();
    tracing::debug!(
        flag = name,
        on = decision.on,
        reason = decision.reason.as_str(),
        "flag evaluated"
    );
    Some(decision)
}

/// What admission reads about tenants and keys: their limits and plans, as the log says.
pub trait Accounts: Send + Sync {
    /// The tenant's own limits (none set: no limit).
    fn tenant_limits(&self, tenant: TenantId) -> Limits;
    /// One key's rate limits (none set: no limit at the key tier).
    fn key_limits(&self, key_id: Uuid) -> RateLimits;
    /// One model's rate limits within a tenant.
    fn model_limits(&self, tenant: TenantId, model: &str) -> RateLimits;
    /// The tenant's plan (a router signal).
    fn plan(&self, tenant: TenantId) -> Option<String>;
    /// The models the tenant may use (setting [`ALLOWED_MODELS_SETTING`]); `None`: every one.
    fn allowed_models(&self, _tenant: TenantId) -> Option<Vec<String>> {
        None
    }
    /// The tenant's guardrails (setting [`crate::guard::GUARDRAILS_SETTING`]); `None`: none.
    fn guardrails(&self, _tenant: TenantId) -> Option<std::sync::Arc<crate::guard::Guard>> {
        None
    }
    /// The tenant's capture policy (setting [`crate::capture::CAPTURE_SETTING`]); `None`: its
    /// inferences are not captured.
    fn capture(&self, _tenant: TenantId) -> Option<crate::capture::CapturePolicy> {
        None
    }
    /// The tenant's semantic cache (setting [`crate::cache::semantic::SEMANTIC_CACHE_SETTING`]);
    /// `None`: exact matches only.
    fn semantic_cache(&self, _tenant: TenantId) -> Option<crate::cache::semantic::SemanticPolicy> {
        None
    }
    /// The platform flag `name` for this request, counted in
    /// `switchyard_flag_decisions_total` by [`flag`] (`None`: no such flag; the behaviour it gates
    /// is as without flags). See `switchyard_actors::flags`.
    fn flag(
        &self,
        _name: &str,
        _principal: &Principal,
        _user: Option<&str>,
    ) -> Option<switchyard_actors::flags::Decision> {
        None
    }
    /// The tenant's budgets below it (setting [`below::SPEND_LIMITS_SETTING`]).
    fn spend_limits(&self, _tenant: TenantId) -> Option<std::sync::Arc<below::SpendLimits>> {
        None
    }
}

/// The tenant setting that limits the models a tenant may list and call: model names separated
/// by commas, or `*` (the default: every configured model).
pub const ALLOWED_MODELS_SETTING: &str = "allowed_models";

/// Parses [`ALLOWED_MODELS_SETTING`]: `*` is every model (`None`), else 1–256 names, each a
/// configured model (`known`), never `auto` (the router chooses among the allowed ones).
pub fn parse_allowed_models(
    value: &str,
    known: &dyn Fn(&str) -> bool,
) -> Result<Option<Vec<String>>, String> {
    if value.trim() == "*" {
        return Ok(None);
    }
    let names: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() || names.len() > 256 {
        return Err("allowed_models must list 1-256 model names separated by commas, or *".into());
    }
    for name in &names {
        if name == "auto" {
            return Err("allowed_models lists models; `auto` routes among the allowed ones".into());
        }
        if !known(name) {
            return Err(format!("allowed_models: no model {name:?} is configured"));
        }
    }
    Ok(Some(names))
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Requests,
    Tokens,
}

/// One tier's limit to take `cost` units from.
#[derive(Debug, Clone)]
pub struct Check {
    pub key: String,
    pub limit: Limit,
    pub cost: u64,
    pub unit: Unit,
}

impl Check {
    pub fn requests(key: String, per_minute: u32) -> Self {
        Check {
            key,
            limit: Limit::per_minute(u64::from(per_minute)),
            cost: 1,
            unit: Unit::Requests,
        }
    }

    pub fn tokens(key: String, per_minute: u64, cost: u64) -> Self {
        Check {
            key,
            limit: Limit::per_minute(per_minute),
            cost,
            unit: Unit::Tokens,
        }
    }
}

/// The tightest tier of each unit after a round of checks: what `x-ratelimit-*` shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateStatus {
    pub requests: Option<Decision>,
    pub tokens: Option<Decision>,
}

impl RateStatus {
    fn slot(&mut self, unit: Unit) -> &mut Option<Decision> {
        match unit {
            Unit::Requests => &mut self.requests,
            Unit::Tokens => &mut self.tokens,
        }
    }
}

/// Takes every check's units, tier by tier; the first tier that refuses answers
/// [`Error::RateLimited`] with its wait. The status shows the tightest tier of each unit.
/// (Tiers checked before a refusing one keep what they took: a refused request still counted
/// there, as in Envoy's and OpenAI's limiters.)
pub async fn enforce(limiter: &Limiter, checks: &[Check]) -> Result<RateStatus, Error> {
    let mut status = RateStatus::default();
    for check in checks {
        let decision = limiter.check(&check.key, check.limit, check.cost).await;
        let slot = status.slot(check.unit);
        if slot.is_none_or(|d| decision.remaining < d.remaining) || !decision.allowed {
            *slot = Some(decision);
        }
        if !decision.allowed {
            let (what, setting) = match check.unit {
                Unit::Requests => ("requests per minute", "requests_per_minute"),
                Unit::Tokens => ("tokens per minute", "tokens_per_minute"),
            };
            return Err(Error::RateLimited {
                message: format!(
                    "{what} exceeded: {} {setting} is {}; retry after Retry-After seconds",
                    tier(&check.key),
                    check.limit.per_minute
                ),
                rate: Box::new(status),
                retry_after_secs: whole_seconds(decision.retry_after).max(1),
            });
        }
    }
    Ok(status)
}

/// Whose limit a check's key is, for the refusal's message: `rpm:<tenant>` is the tenant's,
/// `tpm:key:<id>` the key's, `tpm:model:<tenant>:<model>` the model's.
fn tier(key: &str) -> String {
    let mut parts = key.splitn(3, ':').skip(1);
    match (parts.next(), parts.next()) {
        (Some("key"), _) => "the key's".to_owned(),
        (Some("model"), Some(rest)) => {
            let model = rest.split_once(':').map_or(rest, |(_, model)| model);
            format!("model {model}'s")
        }
        _ => "the tenant's".to_owned(),
    }
}

/// A wait rounded up to whole seconds.
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refusal_names_the_tier_and_the_setting_that_refused() {
        let limiter = Limiter::local();
        for (key, unit, named) in [
            (
                "tpm:key:0190",
                Unit::Tokens,
                "the key's tokens_per_minute is 10",
            ),
            (
                "tpm:model:t1:sim:large",
                Unit::Tokens,
                "model sim:large's tokens_per_minute is 10",
            ),
            (
                "tpm:t1",
                Unit::Tokens,
                "the tenant's tokens_per_minute is 10",
            ),
            (
                "rpm:key:0190",
                Unit::Requests,
                "the key's requests_per_minute is 10",
            ),
            (
                "rpm:t1",
                Unit::Requests,
                "the tenant's requests_per_minute is 10",
            ),
        ] {
            let check = Check {
                key: key.to_owned(),
                limit: Limit::per_minute(10),
                cost: 11,
                unit,
            };
            let error = enforce(&limiter, &[check]).await.unwrap_err();
            let message = error.to_string();
            assert!(message.contains(named), "{key}: {message}");
        }
    }
}
