//! The workflow engine's executor: `llm` steps go through
//! [`switchyard_inference::Pipeline::complete`] (routing, limits, budget, billing and the
//! inference's events, as for any request) as the run's tenant; `tool` steps are HTTP calls
//! with the step's idempotency key in an `Idempotency-Key` header, refused on addresses tools
//! may not reach; `retrieve` steps search the run's tenant's documents.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use async_trait::async_trait;
use serde_json::{Value, json};
use switchyard_inference::admission::{Check, enforce};
use switchyard_inference::openai::ChatRequest;
use switchyard_inference::{Pipeline, Principal};
use switchyard_workflows::engine::LeadOptions;
use switchyard_workflows::{Engine, Executor, StepCall, StepError, StepOutput};
use uuid::Uuid;

use crate::state::Admin;

/// The largest tool answer read.
const MAX_TOOL_RESPONSE: usize = 1 << 20;

/// Carries out `llm` and `tool` calls for the engine.
pub struct StepExecutor {
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
    http: reqwest::Client,
    /// Refuse tools on loopback and private addresses too (`SWITCHYARD_TOOLS_PUBLIC_ONLY`).
    public_only: bool,
}

impl std::fmt::Debug for StepExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepExecutor").finish_non_exhaustive()
    }
}

impl StepExecutor {
    pub fn new(admin: web::Data<Admin>, pipeline: web::Data<Pipeline>) -> anyhow::Result<Self> {
        let public_only = std::env::var("SWITCHYARD_TOOLS_PUBLIC_ONLY").is_ok_and(|v| v == "1");
        Ok(StepExecutor {
            admin,
            pipeline,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                // A redirect could lead past the address check below.
                .redirect(reqwest::redirect::Policy::none())
                // Through a proxy the resolver would see only the proxy's name.
                .no_proxy()
                // The addresses connected to are checked, not only the ones looked up before.
                .dns_resolver(crate::egress::GuardedResolver { public_only })
                .build()?,
            public_only,
        })
    }

    /// Refuses tool hosts whose addresses tools may not reach (`crate::egress`). The client's
    /// resolver checks again the addresses it connects to; this check covers literal addresses
    /// in URLs, which the resolver never sees.
    async fn check_host(&self, url: &reqwest::Url) -> Result<(), StepError> {
        use crate::egress::Refusal;
        crate::egress::check_url(url, self.public_only)
            .await
            .map_err(|refusal| match refusal {
                Refusal::Address(why) => StepError {
                    message: format!("tool {why}, which tools may not reach"),
                    retryable: false,
                },
                Refusal::Url(message) => StepError {
                    message: format!("the tool's URL: {message}"),
                    retryable: false,
                },
                Refusal::Lookup(message) => StepError {
                    message,
                    retryable: true,
                },
            })
    }

    async fn llm(&self, call: &StepCall) -> Result<StepOutput, StepError> {
        let r = &call.request;
        let body = json!({
            "model": r["model"],
            "messages": r["messages"],
            "max_tokens": r.get("max_tokens").filter(|v| !v.is_null()),
            "temperature": r.get("temperature").filter(|v| !v.is_null()),
            // `output: json`: ask for JSON mode (the answer is parsed either way).
            "response_format": (r["output"] == "json").then(|| json!({"type": "json_object"})),
        });
        let request: ChatRequest = serde_json::from_value(body).map_err(|e| StepError {
            message: format!("invalid model request: {e}"),
            retryable: false,
        })?;
        request.validate().map_err(|e| StepError {
            message: e.to_string(),
            retryable: false,
        })?;
        if self.admin.keys.is_suspended(call.tenant) {
            return Err(StepError {
                message: "the tenant is suspended".into(),
                retryable: false,
            });
        }
        // The tenant's request limit holds for its runs as for its keys (429: retried later).
        if let Some(rpm) = self
            .admin
            .keys
            .tenant_limits(call.tenant)
            .requests_per_minute
        {
            let checks = [Check::requests(format!("rpm:{}", call.tenant), rpm)];
            enforce(&self.admin.limiter, &checks)
                .await
                .map_err(|e| StepError {
                    message: e.to_string(),
                    retryable: true,
                })?;
        }
        // Runs act for their tenant, not for a key: the nil key id stands for the engine.
        let principal = Principal {
            tenant: call.tenant,
            key_id: Uuid::nil(),
            scopes: Vec::new(),
        };
        let Some(_slot) = self.pipeline.resilience.tenant_slot(call.tenant) else {
            return Err(StepError {
                message: "the tenant has its most requests in flight".into(),
                retryable: true,
            });
        };
        // A re-execution under another routing policy (`overrides.policy`, for `model: auto`).
        let policy: Option<switchyard_actors::router::policy::Policy> = r
            .get("policy")
            .filter(|p| !p.is_null())
            .map(|p| serde_json::from_value(p.clone()))
            .transpose()
            .map_err(|e| StepError {
                message: format!("invalid routing policy: {e}"),
                retryable: false,
            })?;
        let done = self
            .pipeline
            .complete(
                Some(call.run_id.to_string()),
                &principal,
                &request,
                policy.as_ref(),
                Some(call.inference_id),
            )
            .await
            .map_err(|e| StepError {
                message: format!("{e} ({})", e.status()),
                retryable: e.retryable(),
            })?;
        let text = done.body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let output = if r["output"] == "json" {
            parse_json_answer(&text).ok_or_else(|| StepError {
                message: format!(
                    "the model's answer is not JSON: {}",
                    text.chars().take(200).collect::<String>()
                ),
                retryable: true,
            })?
        } else {
            Value::String(text)
        };
        Ok(StepOutput {
            output,
            inference_id: Some(done.inference_id),
            cost_micros: done.cost_micros,
        })
    }

    async fn tool(&self, call: &StepCall) -> Result<StepOutput, StepError> {
        let Some(tool) = &call.tool else {
            return Err(StepError {
                message: "no tool definition".into(),
                retryable: false,
            });
        };
        let method =
            reqwest::Method::from_bytes(tool.method.as_bytes()).map_err(|e| StepError {
                message: e.to_string(),
                retryable: false,
            })?;
        let args = call.request.get("args").cloned().unwrap_or(Value::Null);
        let mut url = reqwest::Url::parse(&tool.url).map_err(|e| StepError {
            message: format!("tool `{}`: bad url: {e}", tool.name),
            retryable: false,
        })?;
        self.check_host(&url).await?;
        if method == reqwest::Method::GET
            && let Some(map) = args.as_object()
        {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in map {
                pairs.append_pair(key, value.as_str().map_or(&value.to_string(), |s| s));
            }
        }
        let mut request = self
            .http
            .request(method.clone(), url)
            .timeout(call.timeout)
            .header("idempotency-key", &call.idempotency_key)
            .header("x-switchyard-run", call.run_id.to_string())
            .header("x-switchyard-step", &call.step);
        if method != reqwest::Method::GET {
            request = request.json(&args);
        }
        let response = request.send().await.map_err(|e| StepError {
            message: format!("tool `{}`: {e}", tool.name),
            retryable: true,
        })?;
        let status = response.status();
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| StepError {
            message: format!("tool `{}`: {e}", tool.name),
            retryable: true,
        })? {
            if bytes.len() + chunk.len() > MAX_TOOL_RESPONSE {
                return Err(StepError {
                    message: format!(
                        "tool `{}` answered more than {MAX_TOOL_RESPONSE} bytes",
                        tool.name
                    ),
                    retryable: false,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() {
            return Err(StepError {
                message: format!(
                    "tool `{}` answered {status}: {}",
                    tool.name,
                    text.chars().take(200).collect::<String>()
                ),
                retryable: status.is_server_error() || status.as_u16() == 429,
            });
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        tool.check_response(&body).map_err(|message| StepError {
            message: format!("tool `{}`: {message}", tool.name),
            retryable: false,
        })?;
        Ok(StepOutput {
            output: body,
            inference_id: None,
            cost_micros: 0,
        })
    }
}

impl StepExecutor {
    /// A `retrieve` step: the run's tenant's best chunks, as `POST /v1/retrieve` finds them.
    /// The output holds the chunks, `context` (numbered sources for a prompt) and `citations`
    /// (`[n] document › heading`, in the same numbering). Its query's vector, if any, is billed
    /// to the tenant like the run's model calls.
    async fn retrieve(&self, call: &StepCall) -> Result<StepOutput, StepError> {
        use crate::search::{MAX_K, Search, check, place, search, sources};
        let r = &call.request;
        let refuse = |message: String| StepError {
            message,
            retryable: false,
        };
        let mode: Option<switchyard_retrieval::Mode> = r
            .get("mode")
            .filter(|m| !m.is_null())
            .map(|m| serde_json::from_value(m.clone()))
            .transpose()
            .map_err(|e| refuse(format!("invalid mode: {e}")))?;
        let documents: Option<Vec<Uuid>> =
            match r.get("documents") {
                None | Some(Value::Null) => None,
                Some(Value::String(one)) => {
                    Some(vec![one.parse().map_err(|_| {
                        refuse(format!("`documents`: {one:?} is not a document id"))
                    })?])
                }
                Some(list) => Some(serde_json::from_value(list.clone()).map_err(|e| {
                    refuse(format!("`documents` must be a list of document ids: {e}"))
                })?),
            };
        let k = r.get("k").and_then(Value::as_u64).unwrap_or(5);
        let query = Search {
            text: r.get("query").and_then(Value::as_str).unwrap_or_default(),
            k: usize::try_from(k).unwrap_or(usize::MAX),
            mode,
            documents: documents.as_deref(),
        };
        check(&query, MAX_K).map_err(|e| refuse(e.message().to_owned()))?;
        let principal = Principal {
            tenant: call.tenant,
            key_id: Uuid::nil(),
            scopes: Vec::new(),
        };
        let (mode, hits) = search(&self.admin, &self.pipeline, &principal, query)
            .await
            .map_err(|e| StepError {
                message: format!("retrieval: {}", e.message()),
                // The index behind the log, a limit or the embedding model may pass.
                retryable: e.status().is_server_error() || e.status().as_u16() == 429,
            })?;
        let citations: Vec<String> = hits
            .iter()
            .enumerate()
            .map(|(n, hit)| format!("[{}] {}", n + 1, place(hit)))
            .collect();
        tracing::debug!(run = %call.run_id, step = %call.step, chunks = hits.len(), "retrieve step");
        Ok(StepOutput {
            output: json!({
                "mode": mode,
                "context": if hits.is_empty() { String::new() } else { sources(&hits) },
                "citations": citations,
                "chunks": hits,
            }),
            inference_id: None,
            cost_micros: 0,
        })
    }
}

/// The JSON in a model's answer (also inside a ```json fence).
fn parse_json_answer(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
        .unwrap_or(trimmed);
    serde_json::from_str(inner.trim()).ok()
}

#[async_trait]
impl Executor for StepExecutor {
    async fn call(&self, call: &StepCall) -> Result<StepOutput, StepError> {
        match call.request.get("kind").and_then(Value::as_str) {
            Some("llm") => self.llm(call).await,
            Some("tool") => self.tool(call).await,
            Some("retrieve") => self.retrieve(call).await,
            other => Err(StepError {
                message: format!("cannot carry out a call of kind {other:?}"),
                retryable: false,
            }),
        }
    }
}

/// Builds the engine of a server: the executor over the pipeline. With `execute`, the engine
/// competes for the log's engine lease and, while it holds it, recovers the runs that had not
/// ended and carries out every run's steps; without it (`--no-workflows`), this node only
/// records what requests ask and another node's engine carries it out.
pub async fn start_engine(
    store: Arc<dyn switchyard_events::EventStore>,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
    execute: bool,
) -> anyhow::Result<Arc<Engine>> {
    let executor = Arc::new(StepExecutor::new(admin, pipeline)?);
    let engine = Engine::new(store, executor);
    if execute {
        engine.lead(LeadOptions::default());
    } else {
        engine.stand_by();
        tracing::info!("no workflow engine on this node (--no-workflows)");
    }
    Ok(engine)
}
