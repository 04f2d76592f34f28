//! Feature flags (issue 18, part 3): the platform's flags, one actor (stream
//! `flags-<system tenant>`), and their evaluation, a pure function the request path calls from
//! an in-memory copy kept current by the log.
//!
//! A flag is a JSON document:
//!
//! ```json
//! {"enabled": true, "rollout_percent": 25, "sticky_by": "user",
//!  "plans": ["enterprise"], "tenants": ["<tenant id>"], "keys": ["<key id>"]}
//! ```
//!
//! Evaluation, first match wins:
//! 1. `enabled = false` is the **kill switch**: off for everyone, whatever else says;
//! 2. a tenant's own switch (`PUT /v1/admin/tenants/{id}/flags/{name}`, `TenantFlagSet`);
//! 3. **targeting**: on for the listed keys, tenants and plans;
//! 4. the **rollout**: on for `rollout_percent` of the subjects, chosen by a hash of the flag's
//!    name and the subject (the API key by default, or the request's `user`, or the tenant), so
//!    a subject keeps its answer on every node and across restarts, and raising the percentage
//!    only adds subjects.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;

use serde::{Deserialize, Serialize};
use switchyard_events::{Event, FeatureFlagSet, TenantId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::actor::Actor;

/// Most subjects one target list may name.
pub const MAX_TARGETS: usize = 1_000;

/// Most flags the platform holds.
pub const MAX_FLAGS: usize = 1_000;

/// What a rollout is sticky to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sticky {
    /// The API key (every request of a key gets the same answer).
    #[default]
    Key,
    /// The request's `user` (the key when a request names none).
    User,
    /// The tenant.
    Tenant,
}

/// A flag's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    /// `false`: the kill switch, off for everyone.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Share of subjects the flag is on for, 0-100 (targets aside).
    #[serde(default)]
    pub rollout_percent: f64,
    #[serde(default)]
    pub sticky_by: Sticky,
    /// On for tenants on these plans.
    #[serde(default)]
    pub plans: Vec<String>,
    /// On for these tenants.
    #[serde(default)]
    pub tenants: Vec<TenantId>,
    /// On for these API keys.
    #[serde(default)]
    pub keys: Vec<Uuid>,
    #[serde(default)]
    pub description: Option<String>,
}

fn yes() -> bool {
    true
}

impl Flag {
    /// Parses and checks a definition.
    pub fn parse(text: &str) -> Result<Flag, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not a flag definition: {e}"))?;
        // An object only: serde would also read a struct from a list of its fields.
        if !value.is_object() {
            return Err("a flag definition is a JSON object".into());
        }
        let flag: Flag =
            serde_json::from_value(value).map_err(|e| format!("not a flag definition: {e}"))?;
        if !flag.rollout_percent.is_finite() || !(0.0..=100.0).contains(&flag.rollout_percent) {
            return Err("rollout_percent must be between 0 and 100".into());
        }
        if flag.plans.len() > MAX_TARGETS
            || flag.tenants.len() > MAX_TARGETS
            || flag.keys.len() > MAX_TARGETS
        {
            return Err(format!("a target list holds at most {MAX_TARGETS} entries"));
        }
        for plan in &flag.plans {
            check_name("a plan", plan)?;
        }
        // Sorted and without repeats: evaluation searches them, and the same set written in
        // another order is the same flag.
        let mut flag = flag;
        flag.plans.sort_unstable();
        flag.plans.dedup();
        flag.tenants.sort_unstable();
        flag.tenants.dedup();
        flag.keys.sort_unstable();
        flag.keys.dedup();
        if flag
            .description
            .as_ref()
            .is_some_and(|d| d.len() > 500 || d.chars().any(char::is_control))
        {
            return Err("description: at most 500 characters, no control characters".into());
        }
        Ok(flag)
    }

    /// The flag for `subject` (see the module docs for the order).
    pub fn evaluate(&self, name: &str, subject: &Subject<'_>) -> Decision {
        let decided = |on, reason| Decision { on, reason };
        if !self.enabled {
            return decided(false, Reason::Kill);
        }
        if let Some(on) = subject.tenant_switch {
            return decided(on, Reason::TenantSwitch);
        }
        if subject
            .key
            .is_some_and(|key| self.keys.binary_search(&key).is_ok())
        {
            return decided(true, Reason::Key);
        }
        if self.tenants.binary_search(&subject.tenant).is_ok() {
            return decided(true, Reason::Tenant);
        }
        if subject.plan.is_some_and(|plan| {
            self.plans
                .binary_search_by(|p| p.as_str().cmp(plan))
                .is_ok()
        }) {
            return decided(true, Reason::Plan);
        }
        decided(
            bucket(name, subject, self.sticky_by) < self.rollout_percent,
            Reason::Rollout,
        )
    }
}

/// Where `subject` falls in `[0, 100)` for flag `name`: BLAKE3 of the name and the sticky
/// subject, the same on every node and every version.
fn bucket(name: &str, subject: &Subject<'_>, sticky: Sticky) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(name.as_bytes());
    hasher.update(&[0]);
    match (sticky, subject.user, subject.key) {
        (Sticky::User, Some(user), _) => {
            hasher.update(b"user\0");
            hasher.update(subject.tenant.as_uuid().as_bytes());
            hasher.update(user.as_bytes());
        }
        (Sticky::Tenant, ..) | (_, _, None) => {
            hasher.update(b"tenant\0");
            hasher.update(subject.tenant.as_uuid().as_bytes());
        }
        (_, _, Some(key)) => {
            hasher.update(b"key\0");
            hasher.update(key.as_bytes());
        }
    }
    let bytes: [u8; 8] = hasher.finalize().as_bytes()[..8]
        .try_into()
        .unwrap_or([0; 8]);
    // 53 bits, as an f64 holds them exactly.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64 * 100.0
}

/// Who a flag is evaluated for.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub tenant: TenantId,
    pub plan: Option<&'a str>,
    /// The API key's id (`None`: the tenant's own console, say).
    pub key: Option<Uuid>,
    /// The request's `user`.
    pub user: Option<&'a str>,
    /// The tenant's own switch for this flag, if it set one.
    pub tenant_switch: Option<bool>,
}

/// A flag's answer, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub on: bool,
    pub reason: Reason,
}

/// Why a flag answered as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Kill,
    TenantSwitch,
    Key,
    Tenant,
    Plan,
    Rollout,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Kill => "kill",
            Reason::TenantSwitch => "tenant_switch",
            Reason::Key => "key",
            Reason::Tenant => "tenant",
            Reason::Plan => "plan",
            Reason::Rollout => "rollout",
        }
    }
}

/// A flag or plan name: 1-64 characters of lowercase letters, digits and `-_.`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    {
        return Err(format!(
            "{what} name must be 1-64 characters of a-z, 0-9 and -_. ({name:?} is not)"
        ));
    }
    Ok(())
}

/// The flags actor kind (one actor: [`TenantId::SYSTEM`]).
#[derive(Debug, Clone, Copy)]
pub struct FeatureFlags;

/// Every flag's definition as it was written (checked when it was).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagsState {
    pub flags: BTreeMap<String, String>,
}

/// What can be asked of the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagsCommand {
    /// Define or change a flag (`Some`), or remove it (`None`).
    Set {
        name: String,
        definition: Option<String>,
    },
}

/// Why a flag change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsRejection {
    #[error("{0}")]
    Invalid(String),
    #[error("no flag {0}")]
    NotFound(String),
}

impl Actor for FeatureFlags {
    const KIND: &'static str = "flags";
    const SNAPSHOT_VERSION: u16 = 1;
    type Id = TenantId;
    type State = FlagsState;
    type Command = FlagsCommand;
    type Rejection = FlagsRejection;

    fn tenant(id: &TenantId) -> TenantId {
        *id
    }

    fn decide(
        state: &FlagsState,
        command: FlagsCommand,
        _now: OffsetDateTime,
    ) -> Result<Vec<Event>, FlagsRejection> {
        let FlagsCommand::Set { name, definition } = command;
        check_name("a flag", &name).map_err(FlagsRejection::Invalid)?;
        let definition = match definition {
            None if !state.flags.contains_key(&name) => {
                return Err(FlagsRejection::NotFound(name));
            }
            None => None,
            Some(text) => {
                let flag = Flag::parse(&text).map_err(FlagsRejection::Invalid)?;
                // Stored in its canonical form, so the same flag written twice is one event.
                let text = serde_json::to_string(&flag)
                    .map_err(|e| FlagsRejection::Invalid(e.to_string()))?;
                if state.flags.get(&name) == Some(&text) {
                    return Ok(vec![]);
                }
                if !state.flags.contains_key(&name) && state.flags.len() >= MAX_FLAGS {
                    return Err(FlagsRejection::Invalid(format!(
                        "at most {MAX_FLAGS} flags"
                    )));
                }
                Some(text)
            }
        };
        Ok(vec![Event::FeatureFlagSet(FeatureFlagSet {
            name,
            definition,
        })])
    }

    fn apply(state: &mut FlagsState, event: &Event) {
        if let Event::FeatureFlagSet(e) = event {
            match &e.definition {
                Some(text) => state.flags.insert(e.name.clone(), text.clone()),
                None => state.flags.remove(&e.name),
            };
        }
    }
}

/// The platform's flags as the request path reads them: every flag's definition and every
/// tenant's own switches, folded from the log (`FeatureFlagSet`, `TenantFlagSet`), so every
/// node evaluates a flag alike once it has read the same log. Evaluation is two map lookups,
/// a binary search and a hash: no I/O, no lock held across an await.
#[derive(Debug, Default)]
pub struct FlagBook {
    flags: DashMap<String, Arc<Flag>>,
    switches: DashMap<TenantId, BTreeMap<String, bool>>,
}

impl FlagBook {
    /// Applies a `FeatureFlagSet` (`None`: removed). A definition that no longer parses (a
    /// field removed from a later version) removes the flag, logged.
    pub fn define(&self, name: &str, definition: Option<&str>) {
        match definition.map(Flag::parse) {
            Some(Ok(flag)) => {
                self.flags.insert(name.to_owned(), Arc::new(flag));
            }
            Some(Err(problem)) => {
                tracing::error!(flag = name, %problem, "a flag no longer parses; it is off the books");
                self.flags.remove(name);
            }
            None => {
                self.flags.remove(name);
            }
        }
    }

    /// Applies a `TenantFlagSet`: the tenant's own switch for `flag`.
    pub fn switch(&self, tenant: TenantId, flag: &str, enabled: bool) {
        self.switches
            .entry(tenant)
            .or_default()
            .insert(flag.to_owned(), enabled);
    }

    /// Every flag, by name.
    pub fn list(&self) -> Vec<(String, Arc<Flag>)> {
        let mut flags: Vec<(String, Arc<Flag>)> = self
            .flags
            .iter()
            .map(|entry| (entry.key().clone(), entry.value().clone()))
            .collect();
        flags.sort_by(|a, b| a.0.cmp(&b.0));
        flags
    }

    /// Whether `name` is defined.
    pub fn defined(&self, name: &str) -> bool {
        self.flags.contains_key(name)
    }

    /// The flag `name` for a request; `None` when no such flag is defined (the behaviour it
    /// would gate is then as without flags).
    pub fn evaluate(
        &self,
        name: &str,
        tenant: TenantId,
        plan: Option<&str>,
        key: Option<Uuid>,
        user: Option<&str>,
    ) -> Option<Decision> {
        let flag = self.flags.get(name)?;
        let tenant_switch = self
            .switches
            .get(&tenant)
            .and_then(|switches| switches.get(name).copied());
        Some(flag.evaluate(
            name,
            &Subject {
                tenant,
                plan,
                key,
                user,
                tenant_switch,
            },
        ))
    }
}

#[cfg(test)]
mod tests;
