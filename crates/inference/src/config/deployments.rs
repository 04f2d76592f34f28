//! Several deployments of one model (the same model behind other providers, regions or
//! accounts): a model's own `provider` and `upstream` are its first deployment, `deployments`
//! the others. Each becomes a variant of the model with its own circuit breaker (key
//! `<model>:<provider>:<n>`), and a request tries them in the order the model's `balance`
//! gives ([`crate::balance`]): `weighted` (a draw by weight), `least_busy` (fewest calls in
//! flight) or `latency` (lowest recent latency); a deployment whose circuit is open is skipped.
//! Clients, prices, analytics and the router see the one model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ModelConfig, ProviderKind};
use crate::error::{Result, config_bail as bail};

/// One more deployment of a model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub provider: String,
    /// The provider's name for the model (defaults to the model's `upstream`, or its name).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Its share of `weighted` traffic (1-1000).
    #[serde(default = "one")]
    pub weight: u32,
}

pub(super) fn one() -> u32 {
    1
}

/// How a request picks among a model's deployments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// A draw by weight; the rest follow in a draw of their own.
    #[default]
    Weighted,
    /// The deployment with the fewest calls in flight on this node.
    LeastBusy,
    /// The deployment with the lowest recent latency (an untried one first).
    Latency,
}

/// Builds `model.variants`, one per deployment (its own first), checked against the declared
/// providers.
pub(super) fn expand(
    model: &mut ModelConfig,
    providers: &BTreeMap<String, ProviderKind>,
) -> Result<()> {
    if model.deployments.is_empty() {
        return Ok(());
    }
    if model.deployments.len() > 31 {
        bail!("model {}: at most 32 deployments", model.name);
    }
    let own = Deployment {
        provider: model.provider.clone(),
        upstream: model.upstream.clone(),
        weight: model.weight,
    };
    let mut variants = Vec::with_capacity(model.deployments.len() + 1);
    for (n, deployment) in std::iter::once(&own)
        .chain(model.deployments.iter())
        .enumerate()
    {
        match providers.get(&deployment.provider) {
            None => bail!(
                "model {}: deployment provider {} is not declared",
                model.name,
                deployment.provider
            ),
            Some(ProviderKind::Sim) => bail!(
                "model {}: a model with deployments cannot be served by a sim provider",
                model.name
            ),
            Some(_) => {}
        }
        if !(1..=1000).contains(&deployment.weight) {
            bail!("model {}: a deployment's weight must be 1-1000", model.name);
        }
        let mut variant = model.clone();
        variant.deployments.clear();
        variant.provider.clone_from(&deployment.provider);
        variant.upstream = Some(
            deployment
                .upstream
                .clone()
                .unwrap_or_else(|| model.upstream_name().to_owned()),
        );
        variant.weight = deployment.weight;
        variant.circuit = Some(format!("{}:{}:{n}", model.name, deployment.provider));
        variants.push(variant);
    }
    model.variants = variants;
    Ok(())
}
