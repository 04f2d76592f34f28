//! The resilience layer around provider calls: a circuit breaker per model (closed → open after
//! consecutive failures → half-open after a cool-down, where one probe decides), bulkheads
//! (bounded concurrency per provider and per tenant), and the call loop that retries with
//! backoff and jitter and then falls back along the model's chain — all before the first byte
//! reaches the client. Circuit state changes are events (`CircuitChanged`, stream
//! `circuit-<model>`), metrics and log lines.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rand::Rng;
use switchyard_events::{
    CircuitChanged, Event, EventStore, ExpectedVersion, Metadata, StreamId, TenantId,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::balance::Balancer;
use crate::config::{Config, ModelConfig};
use crate::metrics::INFERENCE;
use crate::providers::{Provider, ProviderError, Providers};
use crate::router::RouterHub;

/// Calls to one model per request (the first and its retries).
pub const MAX_ATTEMPTS: u32 = 3;

/// When a circuit opens and how long it stays open.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    pub failures_to_open: u32,
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures_to_open: 5,
            cool_down: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

/// Circuit breakers of every model, bulkheads of every provider and tenant.
pub struct Resilience {
    settings: BreakerSettings,
    circuits: DashMap<String, State>,
    providers: DashMap<String, Arc<Semaphore>>,
    tenants: DashMap<TenantId, Arc<Semaphore>>,
    tenant_limit: usize,
    store: Arc<dyn EventStore>,
    router: Arc<RouterHub>,
    /// The order of a model's deployments, and their load and latency.
    balancer: Balancer,
}

impl std::fmt::Debug for Resilience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resilience").finish_non_exhaustive()
    }
}

/// A transition to record.
struct Change {
    model: String,
    from: State,
    to: State,
}

impl Resilience {
    pub fn new(
        config: &Config,
        settings: BreakerSettings,
        store: Arc<dyn EventStore>,
        router: Arc<RouterHub>,
    ) -> Self {
        let providers = config
            .providers
            .iter()
            .map(|p| (p.name.clone(), Arc::new(Semaphore::new(p.max_concurrency))))
            .collect();
        Resilience {
            settings,
            circuits: DashMap::new(),
            providers,
            tenants: DashMap::new(),
            tenant_limit: config.tenant_max_concurrency,
            store,
            router,
            balancer: Balancer::default(),
        }
    }

    /// A slot in the tenant's bulkhead, held for the whole request (streams included).
    pub fn tenant_slot(&self, tenant: TenantId) -> Option<OwnedSemaphorePermit> {
        let semaphore = self
            .tenants
            .entry(tenant)
            .or_insert_with(|| Arc::new(Semaphore::new(self.tenant_limit)))
            .clone();
        semaphore.try_acquire_owned().ok()
    }

    /// Whether a call to `model` may go out now (a half-open circuit lets one probe through).
    fn allow(&self, model: &str) -> bool {
        let mut change = None;
        let allowed = {
            let mut state = self
                .circuits
                .entry(model.to_owned())
                .or_insert(State::Closed { failures: 0 });
            match *state {
                State::Closed { .. } => true,
                State::Open { until } if Instant::now() >= until => {
                    change = Some(Change {
                        model: model.to_owned(),
                        from: *state,
                        to: State::HalfOpen { probing: true },
                    });
                    *state = State::HalfOpen { probing: true };
                    true
                }
                State::Open { .. } | State::HalfOpen { probing: true } => false,
                State::HalfOpen { probing: false } => {
                    *state = State::HalfOpen { probing: true };
                    true
                }
            }
        };
        if let Some(change) = change {
            self.record_change(change);
        }
        allowed
    }

    /// Records a call's outcome: a retryable failure counts against the circuit, anything else
    /// (an answer, or the client's own mistake) is the provider working.
    fn outcome(&self, model: &str, failed: bool) {
        let change = {
            let mut state = self
                .circuits
                .entry(model.to_owned())
                .or_insert(State::Closed { failures: 0 });
            let from = *state;
            let to = match (from, failed) {
                (State::Closed { .. }, false) => State::Closed { failures: 0 },
                (State::Closed { failures }, true)
                    if failures + 1 >= self.settings.failures_to_open =>
                {
                    State::Open {
                        until: Instant::now() + self.settings.cool_down,
                    }
                }
                (State::Closed { failures }, true) => State::Closed {
                    failures: failures + 1,
                },
                (State::HalfOpen { .. }, false) => State::Closed { failures: 0 },
                (State::HalfOpen { .. }, true) => State::Open {
                    until: Instant::now() + self.settings.cool_down,
                },
                (open @ State::Open { .. }, _) => open,
            };
            *state = to;
            (from.name() != to.name()).then(|| Change {
                model: model.to_owned(),
                from,
                to,
            })
        };
        if let Some(change) = change {
            self.record_change(change);
        }
    }

    fn record_change(&self, change: Change) {
        let (from, to) = (change.from.name(), change.to.name());
        tracing::warn!(model = %change.model, from, to, "circuit state changed");
        INFERENCE
            .circuit_changes
            .with_label_values(&[&change.model, to])
            .inc();
        self.router
            .set_circuit(&change.model, matches!(change.to, State::Open { .. }));
        let store = self.store.clone();
        let event = Event::CircuitChanged(CircuitChanged {
            model: change.model.clone(),
            from: from.to_owned(),
            to: to.to_owned(),
        });
        tokio::spawn(async move {
            let Ok(stream) = StreamId::of("circuit", &change.model) else {
                return;
            };
            let appended = match event.to_new_event(Metadata::default()) {
                Ok(new) => {
                    store
                        .append(TenantId::SYSTEM, &stream, ExpectedVersion::Any, vec![new])
                        .await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = appended {
                tracing::error!(%error, "cannot record a circuit change");
            }
        });
    }

    /// The circuit state of a model (`closed`, `open`, `half_open`).
    #[cfg(test)]
    fn state_name(&self, model: &str) -> &'static str {
        self.circuits.get(model).map_or("closed", |s| s.name())
    }

    /// Calls `op` on `first` and then on each fallback, each with retries (backoff with full
    /// jitter from 25 ms, or a short upstream `Retry-After`), skipping models whose circuit is
    /// open and providers whose bulkhead is full. Returns the outcome, the calls made and the
    /// model that answered (or failed last).
    pub async fn call<'a, T, F, Fut>(
        &self,
        operation: &'static str,
        config: &'a Config,
        providers: &Providers,
        first: &'a ModelConfig,
        op: F,
    ) -> (Result<T, ProviderError>, u32, &'a ModelConfig)
    where
        F: Fn(&'a ModelConfig, Arc<dyn Provider>) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        // Each model of the chain, or its deployments in its balance's order.
        let chain = std::iter::once(first)
            .chain(first.fallbacks.iter().filter_map(|name| config.model(name)))
            .flat_map(|model| self.balancer.order(model));
        let mut attempts = 0;
        let mut last_error = ProviderError {
            status: 503,
            ..ProviderError::retryable("circuit_open", "every model of the chain is unavailable")
        };
        let mut last_model = first;
        for model in chain {
            last_model = model;
            let Some(provider) = providers.get(&model.provider).cloned() else {
                continue;
            };
            let bulkhead = self.providers.get(&model.provider).map(|s| s.clone());
            let mut attempt = 0;
            loop {
                if !self.allow(model.circuit()) {
                    last_error = ProviderError {
                        status: 503,
                        ..ProviderError::retryable(
                            "circuit_open",
                            format!("{} is failing; its circuit is open", model.name),
                        )
                    };
                    break;
                }
                let _permit = match &bulkhead {
                    Some(semaphore) => match semaphore.clone().try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => {
                            // A probe that could not run must not keep the circuit half-open.
                            self.release_probe(model.circuit());
                            last_error = ProviderError {
                                status: 503,
                                ..ProviderError::retryable(
                                    "provider_busy",
                                    format!(
                                        "provider {} is at its concurrency limit",
                                        model.provider
                                    ),
                                )
                            };
                            break;
                        }
                    },
                    None => None,
                };
                attempt += 1;
                attempts += 1;
                // One span per attempt, named and labelled by the OpenTelemetry GenAI
                // conventions (the caller records the token counts it learns).
                let span = tracing::debug_span!(
                    "provider call",
                    otel.name = %format_args!("{operation} {}", model.name),
                    otel.kind = "client",
                    gen_ai.operation.name = operation,
                    gen_ai.request.model = %model.name,
                    gen_ai.provider.name = %model.provider,
                    gen_ai.usage.input_tokens = tracing::field::Empty,
                    gen_ai.usage.output_tokens = tracing::field::Empty,
                    error.type = tracing::field::Empty,
                    switchyard.attempt = attempt,
                    switchyard.circuit = ?self.circuits.get(model.circuit()).map(|s| *s),
                    switchyard.deployment = model.circuit(),
                );
                // Load and latency are kept for deployments only (what their balance reads).
                let deployment = model.circuit.as_deref();
                let busy = deployment.map(|key| self.balancer.start(key));
                let started = Instant::now();
                let called =
                    tracing::Instrument::instrument(op(model, provider.clone()), span.clone())
                        .await;
                drop(busy);
                if let Some(key) = deployment
                    && called.is_ok()
                {
                    self.balancer.observe(key, started.elapsed());
                }
                if let Err(error) = &called {
                    span.record("error.type", error.code);
                }
                match called {
                    Ok(value) => {
                        self.outcome(model.circuit(), false);
                        return (Ok(value), attempts, model);
                    }
                    Err(error) => {
                        self.outcome(model.circuit(), error.retryable);
                        if error.falls_back() {
                            // This model refuses the request; a fallback may take it.
                            tracing::info!(model = %model.name, code = error.code, "refused by the model; trying its fallback");
                            last_error = error;
                            break;
                        }
                        if !error.retryable {
                            return (Err(error), attempts, model);
                        }
                        let wait = match error.retry_after {
                            Some(after) if after > Duration::from_secs(2) => None,
                            Some(after) => Some(after),
                            None => {
                                let ceiling = 25u64 << attempt;
                                Some(Duration::from_millis(rand::rng().random_range(0..=ceiling)))
                            }
                        };
                        last_error = error;
                        match wait {
                            Some(wait) if attempt < MAX_ATTEMPTS => {
                                tracing::debug!(model = %model.name, attempt, ?wait, "retrying a provider call");
                                tokio::time::sleep(wait).await;
                            }
                            _ => break, // on to the fallback
                        }
                    }
                }
            }
        }
        (Err(last_error), attempts, last_model)
    }

    fn release_probe(&self, model: &str) {
        if let Some(mut state) = self.circuits.get_mut(model)
            && *state == (State::HalfOpen { probing: true })
        {
            *state = State::HalfOpen { probing: false };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouterConfig;

    fn resilience(config: &Config) -> Resilience {
        resilience_with(
            config,
            BreakerSettings {
                failures_to_open: 2,
                cool_down: Duration::from_millis(50),
            },
        )
    }

    fn resilience_with(config: &Config, settings: BreakerSettings) -> Resilience {
        let store: Arc<dyn EventStore> = Arc::new(switchyard_events::MemoryStore::new());
        let router = Arc::new(RouterHub::new(
            RouterConfig::default(),
            switchyard_actors::Runtime::new(
                store.clone(),
                switchyard_actors::RuntimeConfig::default(),
            ),
        ));
        Resilience::new(config, settings, store, router)
    }

    #[tokio::test]
    async fn a_circuit_opens_after_failures_half_opens_after_the_cool_down_and_closes_on_success() {
        let config = Config::default();
        let r = resilience(&config);
        assert!(r.allow("m"));
        r.outcome("m", true);
        assert_eq!(r.state_name("m"), "closed");
        r.outcome("m", true);
        assert_eq!(r.state_name("m"), "open");
        assert!(!r.allow("m"));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(r.allow("m"), "one probe after the cool-down");
        assert_eq!(r.state_name("m"), "half_open");
        assert!(!r.allow("m"), "only one probe at a time");
        r.outcome("m", true);
        assert_eq!(r.state_name("m"), "open", "a failed probe opens it again");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(r.allow("m"));
        r.outcome("m", false);
        assert_eq!(r.state_name("m"), "closed");
    }

    /// An upstream on a local port that answers every request with `status`; returns its
    /// address and how many requests it answered.
    async fn upstream(status: u16) -> (String, Arc<std::sync::atomic::AtomicU32>) {
        use std::sync::atomic::{AtomicU32, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}/v1", listener.local_addr().unwrap());
        let served = Arc::new(AtomicU32::new(0));
        let counter = served.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    // Read the head and the body the head announces, then answer and close.
                    let mut request = Vec::new();
                    let mut buffer = [0_u8; 4096];
                    loop {
                        let Ok(n) = socket.read(&mut buffer).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..n]);
                        let text = String::from_utf8_lossy(&request).to_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = r#"{"error":{"message":"refused by the upstream"}}"#;
                    let answer = format!(
                        "HTTP/1.1 {status} Refused\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        (address, served)
    }

    /// Failures in a row that open a circuit, in the upstream tests.
    const THRESHOLD: u32 = 2;

    /// Calls model `m` of an OpenAI-compatible provider whose upstream answers `status`, once
    /// per `calls`; returns the circuit's state and the requests the upstream answered.
    async fn calls_answered(status: u16, calls: u32) -> (&'static str, u32) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (base, served) = upstream(status).await;
        let config = Config::parse(&format!(
            "[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{base}\"\n\
             [[models]]\nname = \"m\"\nprovider = \"up\"\n"
        ))
        .unwrap();
        let providers = Providers::build(&config).unwrap();
        // Open stays open for the whole test: no half-open probe reaches the upstream.
        let r = resilience_with(
            &config,
            BreakerSettings {
                failures_to_open: THRESHOLD,
                cool_down: Duration::from_secs(600),
            },
        );
        let model = config.model("m").unwrap();
        let request: crate::openai::ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}]
        }))
        .unwrap();
        for _ in 0..calls {
            let (outcome, _, _) = r
                .call("chat", &config, &providers, model, |model, provider| {
                    let request = &request;
                    async move { provider.chat(model, request).await }
                })
                .await;
            assert!(outcome.is_err(), "{status}");
        }
        (
            r.state_name("m"),
            served.load(std::sync::atomic::Ordering::SeqCst),
        )
    }

    /// A client error (the upstream refusing the request: 400, 404, 422) is the provider
    /// working: however many there are, the circuit stays closed and every call reaches the
    /// upstream. The same number of 5xx answers opens it.
    #[tokio::test]
    async fn client_errors_from_the_upstream_do_not_open_the_circuit_and_as_many_5xx_do() {
        let threshold = THRESHOLD;
        for status in [400, 404, 422] {
            assert_eq!(
                calls_answered(status, threshold * 3).await,
                ("closed", threshold * 3),
                "{status}"
            );
        }
        // One call retries a 5xx: the upstream answers `threshold` times, then it is open.
        assert_eq!(calls_answered(500, 1).await, ("open", threshold));
        assert_eq!(
            calls_answered(503, threshold * 3).await,
            ("open", threshold)
        );
    }

    #[tokio::test]
    async fn a_tenant_bulkhead_bounds_concurrent_requests() {
        let config = Config {
            tenant_max_concurrency: 2,
            ..Config::default()
        };
        let r = resilience(&config);
        let tenant = TenantId::new();
        let a = r.tenant_slot(tenant).unwrap();
        let _b = r.tenant_slot(tenant).unwrap();
        assert!(r.tenant_slot(tenant).is_none());
        assert!(
            r.tenant_slot(TenantId::new()).is_some(),
            "tenants are isolated"
        );
        drop(a);
        assert!(r.tenant_slot(tenant).is_some());
    }
}
