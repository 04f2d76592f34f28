//! The order in which a request tries a model's deployments ([`crate::config::Balance`]):
//! a weighted draw without replacement (each next deployment drawn from the rest by weight),
//! fewest calls in flight on this node, or lowest recent latency (an exponentially weighted
//! mean of successful calls; an untried deployment goes first). Ties are broken at random so
//! equal deployments share the load. The resilience layer skips a deployment whose circuit is
//! open and moves to the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use rand::Rng;

use crate::config::{Balance, ModelConfig};

/// How much a new latency counts in the mean.
const ALPHA: f64 = 0.2;

/// Per-deployment load and latency, by circuit key.
#[derive(Debug, Default)]
pub struct Balancer {
    busy: DashMap<String, Arc<AtomicUsize>>,
    latency_us: DashMap<String, f64>,
}

/// A call in flight to a deployment; counted until dropped.
#[derive(Debug)]
pub struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    /// `model` itself, or its deployments in the order its balance gives.
    pub fn order<'a>(&self, model: &'a ModelConfig) -> Vec<&'a ModelConfig> {
        if model.variants.is_empty() {
            return vec![model];
        }
        let mut rng = rand::rng();
        // Efraimidis–Spirakis: sorting by u^(1/w) descending is a weighted draw without
        // replacement; with equal weights it is a shuffle (the tie-break of the other modes).
        let mut keyed: Vec<(f64, &ModelConfig)> = model
            .variants
            .iter()
            .map(|v| {
                let weight = match model.balance {
                    Balance::Weighted => f64::from(v.weight.max(1)),
                    Balance::LeastBusy | Balance::Latency => 1.0,
                };
                (rng.random::<f64>().powf(1.0 / weight), v)
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut ordered: Vec<&ModelConfig> = keyed.into_iter().map(|(_, v)| v).collect();
        match model.balance {
            Balance::Weighted => {}
            Balance::LeastBusy => ordered.sort_by_key(|v| self.in_flight(v.circuit())),
            Balance::Latency => ordered.sort_by(|a, b| {
                self.latency(a.circuit())
                    .total_cmp(&self.latency(b.circuit()))
            }),
        }
        ordered
    }

    /// Counts a call to deployment `key` until the guard drops.
    pub fn start(&self, key: &str) -> Busy {
        let counter = match self.busy.get(key) {
            Some(counter) => counter.clone(),
            None => self
                .busy
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(AtomicUsize::new(0)))
                .clone(),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Busy(counter)
    }

    /// Folds a successful call's latency into deployment `key`'s mean.
    pub fn observe(&self, key: &str, elapsed: Duration) {
        let micros = elapsed.as_secs_f64() * 1e6;
        if let Some(mut mean) = self.latency_us.get_mut(key) {
            *mean += ALPHA * (micros - *mean);
            return;
        }
        self.latency_us.insert(key.to_owned(), micros);
    }

    fn in_flight(&self, key: &str) -> usize {
        self.busy.get(key).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn latency(&self, key: &str) -> f64 {
        self.latency_us.get(key).map_or(0.0, |m| *m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn model(balance: &str) -> ModelConfig {
        let config = Config::parse(&format!(
            r#"
[[providers]]
name = "a"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
[[providers]]
name = "b"
kind = "openai"
base_url = "http://127.0.0.1:2/v1"
[[models]]
name = "m"
provider = "a"
weight = 3
balance = "{balance}"
deployments = [{{provider = "b", upstream = "m-b"}}]
"#
        ))
        .unwrap();
        config.model("m").unwrap().clone()
    }

    #[test]
    fn deployments_become_variants_with_their_own_circuits() {
        let m = model("weighted");
        let keys: Vec<&str> = m.variants.iter().map(ModelConfig::circuit).collect();
        assert_eq!(keys, ["m:a:0", "m:b:1"]);
        assert_eq!(m.variants[1].upstream_name(), "m-b");
        assert_eq!(m.variants[0].upstream_name(), "m");
        assert!(
            m.variants
                .iter()
                .all(|v| v.name == "m" && v.price == m.price)
        );
    }

    #[test]
    fn a_weighted_draw_follows_the_weights() {
        let (m, balancer) = (model("weighted"), Balancer::default());
        let first_a = (0..4000)
            .filter(|_| balancer.order(&m)[0].provider == "a")
            .count();
        // Weight 3 against 1: three quarters first, within a generous margin.
        assert!((2800..=3200).contains(&first_a), "{first_a}");
        assert_eq!(
            balancer.order(&m).len(),
            2,
            "every deployment stays in the order"
        );
    }

    #[test]
    fn least_busy_and_latency_pick_the_idle_and_the_fast() {
        let (m, balancer) = (model("least_busy"), Balancer::default());
        let held: Vec<Busy> = (0..3).map(|_| balancer.start("m:a:0")).collect();
        assert!((0..50).all(|_| balancer.order(&m)[0].provider == "b"));
        drop(held);
        let _one = balancer.start("m:b:1");
        assert!((0..50).all(|_| balancer.order(&m)[0].provider == "a"));

        let (m, balancer) = (model("latency"), Balancer::default());
        balancer.observe("m:a:0", Duration::from_millis(80));
        assert_eq!(
            balancer.order(&m)[0].provider,
            "b",
            "an untried deployment first"
        );
        balancer.observe("m:b:1", Duration::from_millis(200));
        assert!((0..50).all(|_| balancer.order(&m)[0].provider == "a"));
        for _ in 0..20 {
            balancer.observe("m:a:0", Duration::from_millis(900));
        }
        assert_eq!(balancer.order(&m)[0].provider, "b", "the mean follows");
    }

    #[test]
    fn bad_deployments_are_refused() {
        for (deployments, says) in [
            ("[{provider = \"nowhere\"}]", "not declared"),
            ("[{provider = \"b\", weight = 0}]", "weight"),
            ("[{provider = \"b\", extra = 1}]", "unknown field"),
        ] {
            let error = Config::parse(&format!(
                "[[providers]]\nname = \"b\"\nkind = \"openai\"\nbase_url = \"http://x\"\n\
                 [[models]]\nname = \"m\"\nprovider = \"b\"\ndeployments = {deployments}"
            ))
            .unwrap_err()
            .to_string();
            assert!(error.contains(says), "{deployments}: {error}");
        }
    }
}
