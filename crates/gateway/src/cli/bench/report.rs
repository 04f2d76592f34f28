//! The routing benchmark's report: the runs, the RouteLLM metrics, the OPE check and the
//! targets of `docs/BENCHMARKS.md` ("Routing"), as Markdown, JSON and SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use switchyard_workflows::eval::Task;

use super::metrics::{self, Point};
use super::plot::{self, Series};
use super::{Arm, ArmReport, BenchArgs, OpeCheck, Truth};

/// A curve's RouteLLM numbers.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Curve {
    name: String,
    points: Vec<Point>,
    apgr: f64,
    cpt50: f64,
    cpt80: f64,
}

impl Curve {
    fn of(name: &str, points: Vec<Point>, weak: f64, strong: f64) -> Curve {
        let pgr = metrics::pgr_curve(&points, weak, strong);
        Curve {
            name: name.to_owned(),
            apgr: metrics::apgr(&pgr),
            cpt50: metrics::cpt(&pgr, 0.5),
            cpt80: metrics::cpt(&pgr, 0.8),
            points,
        }
    }
}

/// The best policy run that kept ≥ 95% of the strong model's quality.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Best {
    name: String,
    cost_saved: f64,
    quality_share: f64,
    regret_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Report {
    tasks: usize,
    families: BTreeMap<String, usize>,
    weak: String,
    strong: String,
    runs: Vec<ArmReport>,
    curves: Vec<Curve>,
    oracle: Curve,
    best_contextual: Option<Best>,
    ope: Vec<OpeCheck>,
    seconds: f64,
    #[serde(skip)]
    strong_run: Option<(f64, f64)>,
}

impl Report {
    pub(super) fn build(
        args: &BenchArgs,
        prepared: &[(Task, serde_json::Value, Truth)],
        runs: Vec<(Arm, ArmReport)>,
        ope: Vec<OpeCheck>,
        seconds: f64,
    ) -> Report {
        let mut families = BTreeMap::new();
        for (task, _, _) in prepared {
            let family = task
                .tags
                .iter()
                .find_map(|t| t.strip_prefix("family:"))
                .unwrap_or("other");
            *families.entry(family.to_owned()).or_insert(0) += 1;
        }
        let runs: Vec<ArmReport> = runs.into_iter().map(|(_, r)| r).collect();
        let find = |model: &str| {
            runs.iter()
                .find(|r| r.curve == "static" && r.name.ends_with(model))
                .map(|r| (r.quality, r.cost_usd))
        };
        let (weak_q, strong) = (find(&args.weak), find(&args.strong));
        let (weak_quality, strong_quality, strong_cost) = (
            weak_q.map_or(0.0, |w| w.0),
            strong.map_or(1.0, |s| s.0),
            strong.map_or(0.0, |s| s.1),
        );
        let mut by_curve: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        for run in runs.iter().filter(|r| r.curve != "static") {
            by_curve.entry(run.curve.clone()).or_default().push(Point {
                strong_share: run.strong_share,
                quality: run.quality,
            });
        }
        let curves = by_curve
            .into_iter()
            .map(|(name, points)| Curve::of(&name, points, weak_quality, strong_quality))
            .collect();
        let chances: Vec<(f64, f64)> = prepared
            .iter()
            .map(|(_, _, t)| (t.chance[0], t.chance[1]))
            .collect();
        let oracle_points = metrics::oracle(&chances, 50);
        let (oracle_weak, oracle_strong) = (
            oracle_points.first().map_or(0.0, |p| p.quality),
            oracle_points.last().map_or(1.0, |p| p.quality),
        );
        let oracle = Curve::of("oracle", oracle_points, oracle_weak, oracle_strong);
        let best_contextual = runs
            .iter()
            .filter(|r| r.curve == "linucb" && r.quality >= 0.95 * strong_quality)
            .map(|r| Best {
                name: r.name.clone(),
                cost_saved: 1.0 - r.cost_usd / strong_cost.max(f64::MIN_POSITIVE),
                quality_share: r.quality / strong_quality.max(f64::MIN_POSITIVE),
                regret_ratio: r.regret_last_quarter / r.regret_first_quarter.max(f64::MIN_POSITIVE),
            })
            .max_by(|a, b| a.cost_saved.total_cmp(&b.cost_saved));
        Report {
            tasks: prepared.len(),
            families,
            weak: args.weak.clone(),
            strong: args.strong.clone(),
            runs,
            curves,
            oracle,
            best_contextual,
            ope,
            seconds,
            strong_run: strong.map(|s| (s.0, s.1)),
        }
    }

    pub(super) fn markdown(&self) -> String {
        let mut md = String::new();
        let (strong_quality, strong_cost) = self.strong_run.unwrap_or((1.0, 0.0));
        let _ = writeln!(
            md,
            "# Router bench\n\n{} tasks ({}), weak `{}`, strong `{}`; {:.0} s in all.\n",
            self.tasks,
            self.families
                .iter()
                .map(|(f, n)| format!("{f} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.weak,
            self.strong,
            self.seconds
        );
        md.push_str("| policy | strong calls | quality (95% CI) | % of strong's quality | cost saved | mean reward | regret 1st / last quarter | s |\n|---|---|---|---|---|---|---|---|\n");
        for r in &self.runs {
            let _ = writeln!(
                md,
                "| {} | {:.1}% | {:.3} ± {:.3} | {:.1}% | {:.1}% | {:.3} | {:.1} / {:.1} | {:.1} |",
                r.name,
                100.0 * r.strong_share,
                r.quality,
                r.quality_ci95,
                100.0 * r.quality / strong_quality.max(f64::MIN_POSITIVE),
                100.0 * (1.0 - r.cost_usd / strong_cost.max(f64::MIN_POSITIVE)),
                r.mean_reward,
                r.regret_first_quarter,
                r.regret_last_quarter,
                r.seconds
            );
        }
        md.push_str("\n## RouteLLM metrics\n\nPGR = (q − q_weak) / (q_strong − q_weak) against the share of strong calls; a curve is the frontier of its runs (a router can mix two settings at random), closed by the weak model at 0 and the strong at 1. A random mix has APGR 0.5 and CPT(x) = x. The oracle knows each task's chances (the simulator's) and sends the largest gains to the strong model.\n\n| router | APGR | CPT(50%) | CPT(80%) |\n|---|---|---|---|\n");
        for c in self.curves.iter().chain(std::iter::once(&self.oracle)) {
            let _ = writeln!(
                md,
                "| {} | {:.3} | {:.1}% | {:.1}% |",
                c.name,
                c.apgr,
                100.0 * c.cpt50,
                100.0 * c.cpt80
            );
        }
        md.push_str("| random mix | 0.500 | 50.0% | 80.0% |\n");
        md.push_str("\n## Off-policy evaluation against what each policy earned\n\nThe uniform logger's traffic, judged for each policy as a candidate (`POST /v1/router/evaluate`), against the mean reward the policy earned serving its own tenant over the requests its replay learnt from (with its own 95% interval: an estimate covers it when the two overlap).\n\n| candidate | online | IPS | SNIPS | DR | covered (IPS, SNIPS, DR) |\n|---|---|---|---|---|---|\n");
        let interval = |e: &serde_json::Value| {
            format!(
                "{:.3} [{:.3}, {:.3}]",
                e["value"].as_f64().unwrap_or(f64::NAN),
                e["low"].as_f64().unwrap_or(f64::NAN),
                e["high"].as_f64().unwrap_or(f64::NAN)
            )
        };
        for check in &self.ope {
            let _ = writeln!(
                md,
                "| {} | {:.3} ± {:.3} | {} | {} | {} | {:?} |",
                check.policy,
                check.online,
                check.online_ci95,
                interval(&check.ips),
                interval(&check.snips),
                interval(&check.dr),
                check.covered
            );
        }
        md.push_str("\n## Targets\n\n");
        match &self.best_contextual {
            Some(best) => {
                let _ = writeln!(
                    md,
                    "- best contextual policy at ≥ 95% of the strong model's quality: **{}**, {:.1}% of the cost saved at {:.1}% of the quality (target ≥ 50%: {}); regret last quarter / first quarter = {:.2} (target < 0.5: {})",
                    best.name,
                    100.0 * best.cost_saved,
                    100.0 * best.quality_share,
                    pass(best.cost_saved >= 0.5),
                    best.regret_ratio,
                    pass(best.regret_ratio < 0.5)
                );
            }
            None => md.push_str(
                "- no contextual run kept 95% of the strong model's quality: **not met**\n",
            ),
        }
        let covered = self
            .ope
            .iter()
            .filter(|c| c.covered.contains(&true))
            .count();
        let _ = writeln!(
            md,
            "- OPE intervals cover the online value: {covered} of {} candidates by at least one estimator; by DR {} of {} ({})",
            self.ope.len(),
            self.ope.iter().filter(|c| c.covered[2]).count(),
            self.ope.len(),
            pass(self.ope.iter().all(|c| c.covered[2]))
        );
        let _ = writeln!(
            md,
            "- the bench ran in {:.0} s (target < 120 s: {})",
            self.seconds,
            pass(self.seconds < 120.0)
        );
        md.push_str("\nPlots: `quality.svg` (quality against strong calls), `regret.svg` (cumulative regret).\n");
        md
    }

    pub(super) fn quality_plot(&self) -> anyhow::Result<String> {
        let mut series: Vec<Series> = self
            .curves
            .iter()
            .map(|c| Series {
                name: c.name.clone(),
                points: c
                    .points
                    .iter()
                    .map(|p| (p.strong_share, p.quality))
                    .collect(),
                line: false,
            })
            .collect();
        series.push(Series {
            name: "static".into(),
            points: self
                .runs
                .iter()
                .filter(|r| r.curve == "static")
                .map(|r| (r.strong_share, r.quality))
                .collect(),
            line: true,
        });
        series.push(Series {
            name: "oracle".into(),
            points: self
                .oracle
                .points
                .iter()
                .map(|p| (p.strong_share, p.quality))
                .collect(),
            line: true,
        });
        plot::svg(
            "Quality against the share of strong calls",
            "share of calls to the strong model",
            "quality (exact score)",
            &series,
        )
        .map_err(anyhow::Error::msg)
    }

    pub(super) fn regret_plot(&self) -> anyhow::Result<String> {
        let series: Vec<Series> = self
            .runs
            .iter()
            .filter(|r| r.curve != "uniform")
            .map(|r| {
                let every = (r.steps.len() / 200).max(1);
                let mut total = 0.0;
                let mut points = Vec::new();
                for (i, step) in r.steps.iter().enumerate() {
                    total += step.regret;
                    if i % every == 0 || i + 1 == r.steps.len() {
                        points.push(((i + 1) as f64, total));
                    }
                }
                Series {
                    name: r.name.clone(),
                    points,
                    line: true,
                }
            })
            .collect();
        plot::svg(
            "Cumulative regret against the best router that sees the whole request",
            "requests",
            "cumulative regret",
            &series,
        )
        .map_err(anyhow::Error::msg)
    }
}

fn pass(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}
