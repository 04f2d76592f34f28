//! `switchyard router bench`: a workload of verifiable tasks replayed through a real server
//! (this binary's `serve`, started on a free port with a fresh embedded log) once per routing
//! policy, each policy serving its own tenant (set through the admin API). Every answer is
//! scored exactly and the score is sent back as feedback, as a user's thumbs would be; the
//! router learns from it as in production.
//!
//! The report gives, per policy, its strong-call share, quality, cost saved against always the
//! strong model, and regret: per request, the expected reward of the model that the best router
//! seeing the whole request would pick (its chance of a right answer averaged over the
//! difficulty the request hides, which the bench knows from the simulator and the policies
//! never see), minus the chosen model's; the RouteLLM metrics (APGR,
//! CPT(50%), CPT(80%)) beside the oracle and the random mix; and whether off-policy evaluation
//! on a uniformly logged tenant covers what each policy earned online. Markdown and JSON, with
//! two SVG plots.

pub mod metrics;
mod ope;
pub mod plot;
mod report;

use ope::{OpeCheck, ope_check};
use report::Report;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use switchyard_actors::router::RewardWeights;
use switchyard_inference::config::ModelConfig;
use switchyard_inference::openai::ChatRequest;
use switchyard_inference::providers::sim::{chance_correct, expected_chance};
use switchyard_inference::providers::verifiable;
use switchyard_workflows::eval::{Task, parse_task_set, score_output};

/// The built-in bench config: a weak and a strong simulated model, 16× apart in price, with
/// abilities per task family (see `providers::verifiable`), no latency. The weak one is about
/// as good as the strong one on plain prompts and far worse on long, padded ones.
pub const BENCH_CONFIG: &str = r#"
[[providers]]
name = "sim"
kind = "sim"

[[models]]
name = "sim-small"
provider = "sim"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
sim = { latency_ms = 0, quality = 0.6, ability = { arithmetic = 4.0, extraction = 3.5, classification = 4.5 } }

[[models]]
name = "sim-large"
provider = "sim"
input_usd_per_million = "2.50"
output_usd_per_million = "10.00"
sim = { latency_ms = 0, quality = 0.9, ability = { arithmetic = 5.5, extraction = 5.5, classification = 5.5 } }
"#;

/// `switchyard router bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The tasks: JSON lines as `switchyard sim workload` writes them (generated when absent).
    #[arg(long)]
    pub tasks: Option<PathBuf>,
    /// Tasks to generate (without `--tasks`).
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// The generator's seed (without `--tasks`).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The server's config (the built-in bench config, two simulated models, when absent).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The weak (cheap) model.
    #[arg(long, default_value = "sim-small")]
    pub weak: String,
    /// The strong (dear) model.
    #[arg(long, default_value = "sim-large")]
    pub strong: String,
    /// The reward's cost weight of every policy but LinUCB's curve (the uniform logger's too, so
    /// that off-policy evaluation judges each of them, and the LinUCB run at this weight, on
    /// rewards it would have earned).
    #[arg(long, default_value_t = 0.15)]
    pub cost_weight: f64,
    /// Cost weights of LinUCB's curve (each one a policy run).
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.15,0.2")]
    pub cost_weights: Vec<f64>,
    /// Requests in flight per policy (its feedback lags by as many).
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// The directory for report.md, report.json, quality.svg and regret.svg.
    #[arg(long, default_value = "router-bench")]
    pub out: PathBuf,
}

/// A policy run: its tenant's routing document and reward weights.
#[derive(Debug, Clone)]
struct Arm {
    name: String,
    /// The family of the curve it belongs to (the policy's kind).
    curve: String,
    policy: Value,
    weights: RewardWeights,
    min_exploration: f64,
}

/// One answered task of a run.
#[derive(Debug, Clone, Copy)]
struct Step {
    strong: bool,
    correct: bool,
    cost_micros: u64,
    reward: f64,
    regret: f64,
}

/// A run's results.
#[derive(Debug, Clone, Serialize)]
struct ArmReport {
    name: String,
    curve: String,
    cost_weight: f64,
    requests: usize,
    strong_share: f64,
    quality: f64,
    quality_ci95: f64,
    cost_usd: f64,
    mean_reward: f64,
    regret_first_quarter: f64,
    regret_last_quarter: f64,
    seconds: f64,
    #[serde(skip)]
    steps: Vec<Step>,
    /// The run's tenant key (the OPE check reads the logger's traffic with it).
    #[serde(skip)]
    key: String,
}

/// The server under test, stopped when dropped.
struct ServerProcess {
    child: Child,
    base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(
    config: &Path,
    data: &Path,
    token: &str,
    log: &Path,
) -> anyhow::Result<ServerProcess> {
    let binary = std::env::current_exe().context("cannot find this binary")?;
    let log = std::fs::File::create(log).context("cannot create the server log")?;
    let mut child = Command::new(binary)
        .arg("serve")
        .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
        .env("SWITCHYARD_DATA_DIR", data)
        .env("SWITCHYARD_CONFIG", config)
        .env("SWITCHYARD_ADMIN_TOKEN", token)
        .env("SWITCHYARD_DURABILITY", "durable")
        .env("SWITCHYARD_NO_WORKFLOWS", "true")
        .env_remove("SWITCHYARD_DATABASE_URL")
        .env_remove("SWITCHYARD_REDIS_URL")
        .env_remove("SWITCHYARD_NATS_URL")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start the server")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(base) = line.trim().strip_prefix("switchyard listening on ") else {
        let _ = child.kill();
        bail!("the server did not start (its log: server.log in the --out directory)");
    };
    Ok(ServerProcess {
        base: base.to_owned(),
        child,
    })
}

/// The arms of a bench: the two static endpoints, the uniform logger for OPE, the shipped
/// learning policies at the default cost weight, and LinUCB at each cost weight.
fn arms(args: &BenchArgs) -> Vec<Arm> {
    let weights = |cost: f64| RewardWeights {
        quality: 1.0,
        cost,
        latency: 0.0,
    };
    let default = weights(args.cost_weight);
    let mut arms = vec![
        Arm {
            name: format!("always {}", args.weak),
            curve: "static".into(),
            policy: json!({"kind": "static", "model": args.weak}),
            weights: default,
            min_exploration: 0.0,
        },
        Arm {
            name: format!("always {}", args.strong),
            curve: "static".into(),
            policy: json!({"kind": "static", "model": args.strong}),
            weights: default,
            min_exploration: 0.0,
        },
        Arm {
            name: "uniform (logger)".into(),
            curve: "uniform".into(),
            policy: json!({"kind": "epsilon_greedy", "epsilon": 1.0}),
            weights: default,
            min_exploration: 0.0,
        },
        Arm {
            name: "cheapest".into(),
            curve: "cheapest".into(),
            policy: json!({"kind": "cheapest", "quality_floor": 0.9, "min_pulls": 20}),
            weights: default,
            min_exploration: 0.02,
        },
        Arm {
            name: "epsilon_greedy".into(),
            curve: "epsilon_greedy".into(),
            policy: json!({"kind": "epsilon_greedy", "epsilon": 0.05}),
            weights: default,
            min_exploration: 0.02,
        },
        Arm {
            name: "thompson".into(),
            curve: "thompson".into(),
            policy: json!({"kind": "thompson"}),
            weights: default,
            min_exploration: 0.02,
        },
    ];
    for &cost in &args.cost_weights {
        arms.push(Arm {
            name: format!("linucb w_cost={cost}"),
            curve: "linucb".into(),
            policy: json!({"kind": "linucb", "alpha": 0.25}),
            weights: weights(cost),
            min_exploration: 0.01,
        });
    }
    arms
}

/// A bench client of the server's HTTP API.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: &Value,
    ) -> anyhow::Result<(Value, reqwest::header::HeaderMap)> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {value}");
        }
        Ok((value, headers))
    }

    /// A tenant with the arm's routing, and a key for it.
    async fn tenant(&self, arm: &Arm, candidates: [&str; 2]) -> anyhow::Result<String> {
        let admin = self.token.as_str();
        let (tenant, _) = self
            .json(
                reqwest::Method::POST,
                "/v1/admin/tenants",
                admin,
                &json!({"name": format!("bench {}", arm.name)}),
            )
            .await?;
        let id = tenant["id"].as_str().context("no tenant id")?;
        let (key, _) = self
            .json(
                reqwest::Method::POST,
                &format!("/v1/admin/tenants/{id}/keys"),
                admin,
                &json!({"name": "bench"}),
            )
            .await?;
        self.json(
            reqwest::Method::PUT,
            &format!("/v1/admin/tenants/{id}/router"),
            admin,
            &json!({
                "policy": arm.policy,
                "candidates": candidates,
                "min_exploration": arm.min_exploration,
                "reward": {"quality": arm.weights.quality, "cost": arm.weights.cost, "latency": arm.weights.latency},
            }),
        )
        .await?;
        Ok(key["key"].as_str().context("no key")?.to_owned())
    }
}

/// The chat request of a task (JSON mode for extractions, as a client would ask).
fn request_of(task: &Task) -> Value {
    let prompt = task
        .input
        .as_str()
        .map_or_else(|| task.input.to_string(), str::to_owned);
    let mut body = json!({"model": "auto", "messages": [{"role": "user", "content": prompt}]});
    if task.tags.iter().any(|t| t == "family:extraction") {
        body["response_format"] = json!({"type": "json_object"});
    }
    body
}

/// What the bench knows of a task that the policies do not: each model's chance of a right
/// answer (for the oracle), and that chance averaged over what the request does not show
/// (for regret: the best a router seeing the whole request could expect).
#[derive(Debug, Clone, Copy)]
struct Truth {
    chance: [f64; 2],
    visible: [f64; 2],
}

async fn run_arm(
    client: &Client,
    arm: &Arm,
    models: [&ModelConfig; 2],
    tasks: &[(Task, Value, Truth)],
    in_flight: usize,
) -> anyhow::Result<ArmReport> {
    let key = client
        .tenant(arm, [&models[0].name, &models[1].name])
        .await?;
    let started = Instant::now();
    let steps: Vec<anyhow::Result<Step>> = futures_util::stream::iter(tasks.iter())
        .map(|(task, body, truth)| {
            let key = key.clone();
            async move {
                let (answer, headers) = client
                    .json(reqwest::Method::POST, "/v1/chat/completions", &key, body)
                    .await?;
                let id = headers
                    .get("x-switchyard-inference-id")
                    .and_then(|v| v.to_str().ok())
                    .context("no inference id")?
                    .to_owned();
                let output = answer["choices"][0]["message"]["content"].clone();
                let output = match &output {
                    Value::String(text) if task.tags.iter().any(|t| t == "family:extraction") => {
                        serde_json::from_str(text).unwrap_or(output)
                    }
                    _ => output,
                };
                let correct = score_output(task, &output, None).await?.passed;
                let (feedback, _) = client
                    .json(
                        reqwest::Method::POST,
                        "/v1/feedback",
                        &key,
                        &json!({"inference_id": id, "metric": "correct", "value": if correct { 1.0 } else { 0.0 }}),
                    )
                    .await?;
                let strong = answer["model"].as_str() == Some(models[1].name.as_str());
                let (tokens_in, tokens_out) = (
                    answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
                    answer["usage"]["completion_tokens"].as_u64().unwrap_or(0),
                );
                let costs = models.map(|m| m.price.cost(1, tokens_in, tokens_out));
                let dearest = costs[0].max(costs[1]);
                let expected: [f64; 2] = std::array::from_fn(|m| {
                    arm.weights.reward(truth.visible[m], costs[m], dearest, 0.0)
                });
                let chosen = usize::from(strong);
                Ok(Step {
                    strong,
                    correct,
                    cost_micros: costs[chosen],
                    reward: feedback["reward"].as_f64().unwrap_or(0.0),
                    regret: expected[0].max(expected[1]) - expected[chosen],
                })
            }
        })
        .buffered(in_flight.max(1))
        .collect()
        .await;
    let steps: Vec<Step> = steps.into_iter().collect::<anyhow::Result<_>>()?;
    let n = steps.len().max(1) as f64;
    let quality = steps.iter().filter(|s| s.correct).count() as f64 / n;
    let quarter = (steps.len() / 4).max(1);
    let regrets: Vec<f64> = steps.iter().map(|s| s.regret).collect();
    Ok(ArmReport {
        name: arm.name.clone(),
        curve: arm.curve.clone(),
        cost_weight: arm.weights.cost,
        requests: steps.len(),
        strong_share: steps.iter().filter(|s| s.strong).count() as f64 / n,
        quality,
        quality_ci95: 1.96 * (quality * (1.0 - quality) / n).sqrt(),
        cost_usd: steps.iter().map(|s| s.cost_micros).sum::<u64>() as f64 / 1e6,
        mean_reward: metrics::mean(&steps.iter().map(|s| s.reward).collect::<Vec<_>>()),
        regret_first_quarter: regrets[..quarter.min(regrets.len())].iter().sum(),
        regret_last_quarter: regrets[regrets.len().saturating_sub(quarter)..]
            .iter()
            .sum(),
        seconds: started.elapsed().as_secs_f64(),
        steps,
        key,
    })
}

/// Runs the bench and writes its report; prints the Markdown.
pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let begun = Instant::now();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let config_path = match &args.config {
        Some(path) => path.clone(),
        None => {
            let path = args.out.join("bench-config.toml");
            std::fs::write(&path, BENCH_CONFIG)?;
            path
        }
    };
    let config = crate::layers::model_config(Some(&config_path), None)
        .with_context(|| format!("{} is not a valid config", config_path.display()))?;
    let weak = config
        .model(&args.weak)
        .with_context(|| format!("no model {} in the config", args.weak))?
        .clone();
    let strong = config
        .model(&args.strong)
        .with_context(|| format!("no model {} in the config", args.strong))?
        .clone();
    let tasks: Vec<Task> = match &args.tasks {
        Some(path) => parse_task_set(
            &std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )?,
        None => parse_task_set(
            &verifiable::workload(args.n, args.seed)
                .iter()
                .map(|g| g.to_json().to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )?,
    };
    if tasks.is_empty() {
        bail!("no tasks");
    }
    let prepared: Vec<(Task, Value, Truth)> = tasks
        .into_iter()
        .map(|task| {
            let body = request_of(&task);
            let request: ChatRequest = serde_json::from_value(body.clone())?;
            let chance = [&weak, &strong].map(|m| chance_correct(m, &request).unwrap_or(0.0));
            let visible = [&weak, &strong].map(|m| expected_chance(m, &request).unwrap_or(0.0));
            Ok((task, body, Truth { chance, visible }))
        })
        .collect::<anyhow::Result<_>>()?;

    let data = tempfile::tempdir().context("cannot create a data directory")?;
    let token = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let server = start_server(
        &config_path,
        data.path(),
        &token,
        &args.out.join("server.log"),
    )?;
    let client = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        token,
    };
    let arms = arms(&args);
    let models = [&weak, &strong];
    // Two policies at a time (each its own tenant): the server has work on both cores, and
    // more at once only contend for them.
    let results: Vec<anyhow::Result<(Arm, ArmReport)>> = futures_util::stream::iter(arms.iter())
        .map(|arm| {
            let client = &client;
            let prepared = &prepared;
            async move {
                let report = run_arm(client, arm, models, prepared, args.in_flight).await?;
                eprintln!(
                    "router bench: {:<22} quality {:.3}, strong calls {:>5.1}%, ${:.4}, {:.1} s",
                    report.name,
                    report.quality,
                    100.0 * report.strong_share,
                    report.cost_usd,
                    report.seconds
                );
                Ok((arm.clone(), report))
            }
        })
        .buffer_unordered(2)
        .collect()
        .await;
    let mut runs: Vec<(Arm, ArmReport)> = results.into_iter().collect::<anyhow::Result<_>>()?;
    runs.sort_by_key(|(arm, _)| arms.iter().position(|a| a.name == arm.name));

    let ope = ope_check(&client, &runs).await?;
    drop(server);
    let report = Report::build(&args, &prepared, runs, ope, begun.elapsed().as_secs_f64());
    let markdown = report.markdown();
    std::fs::write(args.out.join("report.md"), &markdown)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.out.join("quality.svg"), report.quality_plot()?)?;
    std::fs::write(args.out.join("regret.svg"), report.regret_plot()?)?;
    let mut stdout = std::io::stdout();
    std::io::Write::write_all(&mut stdout, markdown.as_bytes())?;
    Ok(())
}
