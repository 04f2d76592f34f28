//! The model that serves a request: the one it names, or the router's choice for `auto`.

use switchyard_actors::router::policy::Policy;
use switchyard_events::ShadowChoice;
use time::OffsetDateTime;

use super::Pipeline;
use crate::admission::Principal;
use crate::config::ModelConfig;
use crate::error::Error;
use crate::openai::ChatRequest;
use crate::router::{FEATURE_SET, TenantFacts};

/// The model that serves a request, and how it was chosen.
pub(super) struct Route<'a> {
    pub model: &'a ModelConfig,
    pub policy: String,
    pub candidates: Vec<String>,
    pub propensity_ppb: u32,
    pub feature_set: u16,
    pub features_milli: Vec<i64>,
    pub shadow: Vec<ShadowChoice>,
}

impl<'a> Route<'a> {
    /// A route with no choice in it (a named model, or `auto` without a router's input).
    fn fixed(model: &'a ModelConfig, policy: &str) -> Self {
        Route {
            model,
            policy: policy.into(),
            candidates: vec![model.name.clone()],
            propensity_ppb: 1_000_000_000,
            feature_set: 0,
            features_milli: Vec::new(),
            shadow: Vec::new(),
        }
    }
}

impl Pipeline {
    /// A named model, or the router's choice for `auto` (chat only; embeddings' `auto` is the
    /// first candidate).
    pub(super) fn route(
        &self,
        principal: &Principal,
        requested: &str,
        chat: Option<&ChatRequest>,
        policy: Option<&Policy>,
    ) -> Result<Route<'_>, Error> {
        let config = &self.config;
        let tenant = principal.tenant;
        // A model the tenant may not use is, for it, a model that does not exist.
        let allowed = self.accounts.allowed_models(tenant);
        let may_use = |name: &str| allowed.as_ref().is_none_or(|a| a.iter().any(|m| m == name));
        if requested != "auto" {
            let model = config
                .model(requested)
                .filter(|m| may_use(&m.name))
                .ok_or_else(|| Error::ModelNotFound(requested.to_owned()))?;
            return Ok(Route::fixed(model, "named"));
        }
        let state = self.router.state(tenant);
        let mut candidates = config.candidates_of(self.router.routing(&state));
        candidates.retain(|m| may_use(&m.name));
        let Some(request) = chat else {
            let model = candidates.first().copied().ok_or(Error::NoModels)?;
            return Ok(Route::fixed(model, "static"));
        };
        if candidates.is_empty() {
            return Err(Error::NoModels);
        }
        let now = OffsetDateTime::now_utc();
        let plan = self.accounts.plan(tenant).unwrap_or_default();
        let budget_left = match self.accounts.tenant_limits(tenant).monthly_budget_micros {
            Some(budget) if budget > 0 => {
                let spend = self.meter.view(tenant, now);
                budget.saturating_sub(spend.spent_micros + spend.reserved_micros) as f64
                    / budget as f64
            }
            Some(_) => 0.0,
            None => 1.0,
        };
        let facts = TenantFacts {
            plan: &plan,
            budget_left,
        };
        let features = self.router.features(request, facts, &candidates, now);
        let sticky = request
            .user
            .clone()
            .unwrap_or_else(|| principal.key_id.to_string());
        let span = tracing::debug_span!(
            "route",
            switchyard.route.policy = tracing::field::Empty,
            switchyard.route.model = tracing::field::Empty,
            switchyard.route.propensity = tracing::field::Empty,
            switchyard.route.candidates = candidates.len(),
        );
        // The router's splits, where the flag that gates them is defined and off: the label
        // the route is logged under says so.
        let without_splits = crate::admission::flag(
            self.accounts.as_ref(),
            crate::admission::ROUTER_SPLITS_FLAG,
            principal,
            request.user.as_deref(),
        )
        .filter(|decision| !decision.on)
        .map(|decision| {
            format!(
                "flag.{}.{}",
                crate::admission::ROUTER_SPLITS_FLAG,
                decision.reason.as_str()
            )
        });
        let choice = span.in_scope(|| {
            self.router.choose(
                &state,
                &sticky,
                &features,
                &candidates,
                policy,
                without_splits.as_deref(),
            )
        });
        span.record("switchyard.route.policy", choice.policy.as_str());
        span.record("switchyard.route.model", choice.model.as_str());
        span.record(
            "switchyard.route.propensity",
            f64::from(choice.propensity_ppb) / 1e9,
        );
        let model = config.model(&choice.model).ok_or(Error::NoModels)?;
        Ok(Route {
            model,
            policy: choice.policy,
            candidates: choice.candidates,
            propensity_ppb: choice.propensity_ppb,
            feature_set: FEATURE_SET,
            features_milli: choice.features_milli,
            shadow: choice.shadow,
        })
    }
}
