//! Budgets below the tenant: per API key, per end user (`user`) and per tag, set as the tenant
//! setting [`SPEND_LIMITS_SETTING`], and checked with the same reserve-and-settle rules as the
//! tenant's own budget (this node's meter, or Redis when budgets are shared).
//!
//! ```json
//! {"keys":  {"<key id>": {"monthly_usd": "10.00"}},
//!  "users": {"*": {"monthly_usd": "1.00"}, "alice": {"monthly_usd": "20", "daily_usd": "2"}},
//!  "tags":  {"team-a": {"monthly_usd": "100", "monthly_tokens": 5000000}}}
//! ```
//!
//! `users."*"` is every user's own budget unless one is named; each limit is one of
//! `monthly_usd`, `daily_usd` (exact decimals), `monthly_tokens`, `daily_tokens`.

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_actors::tenant::Limits;
use switchyard_events::TenantId;
use uuid::Uuid;

/// The tenant setting of budgets below the tenant.
pub const SPEND_LIMITS_SETTING: &str = "spend_limits";

/// Most budgets one setting may hold.
const MAX_BUDGETS: usize = 1_000;

/// Whose budget a reservation counts against: the tenant's own, or one below it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Account {
    pub tenant: TenantId,
    pub below: Option<Below>,
}

/// A budget holder below the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Below {
    Key(Uuid),
    User(String),
    Tag(String),
}

impl From<TenantId> for Account {
    fn from(tenant: TenantId) -> Self {
        Account {
            tenant,
            below: None,
        }
    }
}

impl Account {
    pub fn below(tenant: TenantId, below: Below) -> Self {
        Account {
            tenant,
            below: Some(below),
        }
    }

    /// Who it is, for a refusal's message: `tenant`, `key <id>`, `user "alice"`, `tag "a"`.
    pub fn label(&self) -> String {
        match &self.below {
            None => "tenant".into(),
            Some(Below::Key(id)) => format!("key {id}"),
            Some(Below::User(user)) => format!("user {user:?}"),
            Some(Below::Tag(tag)) => format!("tag {tag:?}"),
        }
    }

    /// What follows the tenant in its Redis keys (a user by a hash: users are free text).
    pub fn redis_suffix(&self) -> String {
        match &self.below {
            None => String::new(),
            Some(Below::Key(id)) => format!(":key:{id}"),
            Some(Below::User(user)) => {
                format!(":user:{}", &blake3::hash(user.as_bytes()).to_hex()[..32])
            }
            Some(Below::Tag(tag)) => format!(":tag:{tag}"),
        }
    }

    /// The accounts below the tenant an inference counts against: its key, its user and each
    /// of its tags.
    pub fn of_inference(
        tenant: TenantId,
        key_id: Uuid,
        user: Option<&str>,
        tags: &[String],
    ) -> Vec<Account> {
        let mut accounts = vec![Account::below(tenant, Below::Key(key_id))];
        accounts.extend(user.map(|u| Account::below(tenant, Below::User(u.to_owned()))));
        accounts.extend(
            tags.iter()
                .map(|t| Account::below(tenant, Below::Tag(t.clone()))),
        );
        accounts
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    #[serde(default)]
    monthly_usd: Option<String>,
    #[serde(default)]
    daily_usd: Option<String>,
    #[serde(default)]
    monthly_tokens: Option<u64>,
    #[serde(default)]
    daily_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    keys: BTreeMap<String, RawBudget>,
    #[serde(default)]
    users: BTreeMap<String, RawBudget>,
    #[serde(default)]
    tags: BTreeMap<String, RawBudget>,
}

/// A tenant's budgets below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendLimits {
    keys: BTreeMap<Uuid, Limits>,
    users: BTreeMap<String, Limits>,
    any_user: Option<Limits>,
    tags: BTreeMap<String, Limits>,
}

fn limits(at: &str, raw: RawBudget) -> Result<Limits, String> {
    let usd = |field: &str, value: Option<String>| {
        value
            .map(|v| {
                crate::config::usd_to_micros(&v)
                    .map_err(|_| format!("{at}.{field} {v:?} is not an amount in USD (\"12.50\")"))
            })
            .transpose()
    };
    let limits = Limits {
        monthly_budget_micros: usd("monthly_usd", raw.monthly_usd)?,
        daily_budget_micros: usd("daily_usd", raw.daily_usd)?,
        monthly_token_budget: raw.monthly_tokens,
        daily_token_budget: raw.daily_tokens,
        ..Limits::default()
    };
    if limits == Limits::default() {
        return Err(format!(
            "{at} sets no budget (monthly_usd, daily_usd, monthly_tokens, daily_tokens)"
        ));
    }
    Ok(limits)
}

impl SpendLimits {
    /// Reads the setting's JSON, naming the first problem.
    pub fn parse(value: &str) -> Result<Self, String> {
        let shape = |e: &dyn std::fmt::Display| {
            format!(
                "spend_limits must be {{\"keys\": {{…}}, \"users\": {{…}}, \"tags\": {{…}}}}: {e}"
            )
        };
        let object: serde_json::Value = serde_json::from_str(value).map_err(|e| shape(&e))?;
        if !object.is_object() {
            return Err(shape(&"not an object"));
        }
        let raw: Raw = serde_json::from_value(object).map_err(|e| shape(&e))?;
        if raw.keys.len() + raw.users.len() + raw.tags.len() > MAX_BUDGETS {
            return Err(format!("spend_limits holds at most {MAX_BUDGETS} budgets"));
        }
        let mut out = SpendLimits::default();
        for (key, budget) in raw.keys {
            let id = Uuid::parse_str(&key)
                .map_err(|_| format!("spend_limits.keys: {key:?} is not a key id"))?;
            out.keys.insert(id, limits(&format!("keys.{key}"), budget)?);
        }
        for (user, budget) in raw.users {
            let parsed = limits(&format!("users.{user}"), budget)?;
            if user == "*" {
                out.any_user = Some(parsed);
            } else {
                crate::openai::attribution::check_user(Some(&user))
                    .map_err(|e| format!("spend_limits.users: {e}"))?;
                out.users.insert(user, parsed);
            }
        }
        for (tag, budget) in raw.tags {
            crate::openai::attribution::tags(None, Some(&tag))
                .ok()
                .filter(|t| t.len() == 1)
                .ok_or_else(|| format!("spend_limits.tags: {tag:?} is not a tag"))?;
            let parsed = limits(&format!("tags.{tag}"), budget)?;
            out.tags.insert(tag, parsed);
        }
        Ok(out)
    }

    /// The budgets an inference of `key_id` for `user` with `tags` counts against.
    pub fn for_inference(
        &self,
        tenant: TenantId,
        key_id: Uuid,
        user: Option<&str>,
        tags: &[String],
    ) -> Vec<(Account, Limits)> {
        Account::of_inference(tenant, key_id, user, tags)
            .into_iter()
            .filter_map(|account| {
                let limits = match &account.below {
                    Some(Below::Key(id)) => self.keys.get(id).copied(),
                    Some(Below::User(user)) => self.users.get(user).copied().or(self.any_user),
                    Some(Below::Tag(tag)) => self.tags.get(tag).copied(),
                    None => None,
                }?;
                Some((account, limits))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_names_budgets_per_key_user_and_tag() {
        let key = Uuid::now_v7();
        let limits = SpendLimits::parse(&format!(
            r#"{{"keys": {{"{key}": {{"monthly_usd": "10"}}}},
                "users": {{"*": {{"daily_usd": "1.5"}}, "alice": {{"monthly_tokens": 900}}}},
                "tags": {{"team-a": {{"monthly_usd": "0.000001"}}}}}}"#
        ))
        .unwrap();
        let tenant = TenantId::new();
        let tags = ["team-a".to_owned(), "free".to_owned()];
        let found = limits.for_inference(tenant, key, Some("bob"), &tags);
        let labels: Vec<String> = found.iter().map(|(a, _)| a.label()).collect();
        assert_eq!(
            labels,
            [
                format!("key {key}"),
                "user \"bob\"".into(),
                "tag \"team-a\"".into()
            ]
        );
        assert_eq!(found[0].1.monthly_budget_micros, Some(10_000_000));
        assert_eq!(found[1].1.daily_budget_micros, Some(1_500_000));
        assert_eq!(found[2].1.monthly_budget_micros, Some(1));
        let alice = limits.for_inference(tenant, Uuid::now_v7(), Some("alice"), &[]);
        assert_eq!(alice.len(), 1);
        assert_eq!(alice[0].1.monthly_token_budget, Some(900));
        assert!(
            limits
                .for_inference(tenant, Uuid::now_v7(), None, &[])
                .is_empty()
        );
    }

    #[test]
    fn hostile_settings_are_refused_with_the_reason() {
        for (value, says) in [
            ("[]", "spend_limits must be"),
            (r#"{"teams": {}}"#, "spend_limits must be"),
            (
                r#"{"keys": {"nope": {"monthly_usd": "1"}}}"#,
                "not a key id",
            ),
            (r#"{"users": {"a": {}}}"#, "sets no budget"),
            (
                r#"{"users": {"a": {"monthly_usd": "1e3"}}}"#,
                "not an amount",
            ),
            (
                r#"{"users": {"a": {"monthly_usd": "-1"}}}"#,
                "not an amount",
            ),
            (
                r#"{"tags": {"bad tag": {"monthly_usd": "1"}}}"#,
                "not a tag",
            ),
            (r#"{"tags": {"a,b": {"monthly_usd": "1"}}}"#, "not a tag"),
            (
                r#"{"users": {"a": {"monthly_usd": "1", "weekly_usd": "1"}}}"#,
                "spend_limits must be",
            ),
        ] {
            let error = SpendLimits::parse(value).unwrap_err();
            assert!(error.contains(says), "{value}: {error}");
        }
    }
}
