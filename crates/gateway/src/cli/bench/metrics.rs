//! The routing benchmark's numbers, as RouteLLM defines them (Ong et al. 2024, "RouteLLM:
//! Learning to Route LLMs with Preference Data"): a router is a point (or, over a knob, a curve)
//! of quality against the share of calls that went to the strong model.
//!
//! - **PGR** (performance gap recovered) of a point: (q − q_weak) / (q_strong − q_weak).
//! - **APGR**: the area under PGR as a function of the strong-call share, from 0 to 1, with the
//!   curve closed by the weak model at 0 and the strong one at 1 (a random mix scores 0.5).
//! - **CPT(x)**: the smallest strong-call share at which the curve recovers x of the gap.

use serde::Serialize;

/// One router's result: the share of calls to the strong model and the quality reached.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub strong_share: f64,
    pub quality: f64,
}

/// A curve through `points` from (0, q_weak) to (1, q_strong), as PGR against strong share:
/// sorted by share, each share keeping its best quality, and monotone (a router can always
/// add strong calls at random, so the best reachable PGR never falls as the share grows).
pub fn pgr_curve(points: &[Point], weak: f64, strong: f64) -> Vec<(f64, f64)> {
    let gap = strong - weak;
    let pgr = |q: f64| {
        if gap.abs() < 1e-12 {
            1.0
        } else {
            (q - weak) / gap
        }
    };
    let mut curve: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.strong_share.is_finite() && p.quality.is_finite())
        .map(|p| (p.strong_share.clamp(0.0, 1.0), pgr(p.quality)))
        .chain([(0.0, 0.0), (1.0, 1.0)])
        .collect();
    curve.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    curve.dedup_by(|later, earlier| later.0 == earlier.0);
    // The upper envelope: mixing any point with the strong model at random reaches every
    // point on the segment to (1, 1), so drop points under a segment from an earlier one.
    let mut hull: Vec<(f64, f64)> = Vec::new();
    for point in curve {
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            let cross = (b.0 - a.0) * (point.1 - a.1) - (b.1 - a.1) * (point.0 - a.0);
            if cross >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(point);
    }
    hull
}

/// PGR at strong share `x` on a curve from [`pgr_curve`] (linear between its points).
#[cfg(test)]
fn pgr_at(curve: &[(f64, f64)], x: f64) -> f64 {
    for pair in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if x <= x1 {
            return if x1 - x0 < 1e-12 {
                y1
            } else {
                y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            };
        }
    }
    curve.last().map_or(0.0, |p| p.1)
}

/// Average performance gap recovered: the area under the curve.
pub fn apgr(curve: &[(f64, f64)]) -> f64 {
    curve
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
        .sum()
}

/// Call-performance threshold: the smallest strong share whose PGR reaches `target`.
pub fn cpt(curve: &[(f64, f64)], target: f64) -> f64 {
    for pair in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if y1 >= target {
            if y0 >= target {
                return x0;
            }
            return x0 + (x1 - x0) * (target - y0) / (y1 - y0);
        }
    }
    1.0
}

/// The oracle's points: given each task's chance of a right answer from the weak and the strong
/// model, the best router sends the tasks where the strong one gains most; one point per
/// `steps`-th of the tasks sent.
pub fn oracle(chances: &[(f64, f64)], steps: usize) -> Vec<Point> {
    let n = chances.len();
    if n == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let gain = |i: usize| chances[i].1 - chances[i].0;
        gain(b).total_cmp(&gain(a))
    });
    let weak: f64 = chances.iter().map(|c| c.0).sum();
    let mut quality = weak;
    let mut points = vec![Point {
        strong_share: 0.0,
        quality: weak / n as f64,
    }];
    for (k, &i) in order.iter().enumerate() {
        quality += chances[i].1 - chances[i].0;
        if (k + 1) % (n / steps.max(1)).max(1) == 0 || k + 1 == n {
            points.push(Point {
                strong_share: (k + 1) as f64 / n as f64,
                quality: quality / n as f64,
            });
        }
    }
    points
}

/// The mean of `values` (0 when empty).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(strong_share: f64, quality: f64) -> Point {
        Point {
            strong_share,
            quality,
        }
    }

    #[test]
    fn a_random_mix_recovers_half_the_gap_on_average() {
        let curve = pgr_curve(&[point(0.5, 0.75)], 0.5, 1.0);
        assert!((apgr(&curve) - 0.5).abs() < 1e-12);
        assert!((cpt(&curve, 0.5) - 0.5).abs() < 1e-12);
        assert!((cpt(&curve, 0.8) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn a_good_router_bends_the_curve_up_and_a_bad_point_is_dominated() {
        // 20% strong calls recover 80% of the gap; a point under the random line adds nothing.
        let curve = pgr_curve(&[point(0.2, 0.9), point(0.6, 0.6)], 0.5, 1.0);
        assert_eq!(curve, vec![(0.0, 0.0), (0.2, 0.8), (1.0, 1.0)]);
        let area = 0.2 * 0.8 / 2.0 + 0.8 * (0.8 + 1.0) / 2.0;
        assert!((apgr(&curve) - area).abs() < 1e-12);
        assert!((cpt(&curve, 0.5) - 0.125).abs() < 1e-12);
        assert!((cpt(&curve, 0.8) - 0.2).abs() < 1e-12);
        assert!((pgr_at(&curve, 0.6) - 0.9).abs() < 1e-12);
    }

    #[test]
    fn the_oracle_sends_the_largest_gains_first() {
        let chances = [(0.9, 0.95), (0.1, 0.9), (0.5, 0.5), (0.2, 0.6)];
        let points = oracle(&chances, 4);
        let q: Vec<f64> = points.iter().map(|p| p.quality).collect();
        let expected = [1.7, 2.5, 2.9, 2.95, 2.95].map(|x| x / 4.0);
        for (a, b) in q.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{q:?}");
        }
        // PGR 0, 0.64, 0.96, 1, 1 at quarters: the area is 0.775.
        let area = apgr(&pgr_curve(&points, q[0], q[4]));
        assert!((area - 0.775).abs() < 1e-9, "{area}");
    }

    #[test]
    fn hostile_points_do_not_break_the_curve() {
        let curve = pgr_curve(&[point(f64::NAN, 1.0), point(2.0, 5.0)], 0.5, 0.5);
        assert!(apgr(&curve).is_finite());
        assert_eq!(oracle(&[], 10), Vec::<Point>::new());
    }
}
