//! The routing benchmark's plots, as SVG: quality against the share of strong calls (each
//! policy's measured points and frontier, the oracle, the random mix), and cumulative regret
//! over the requests.

use plotters::prelude::*;

/// One series of a plot.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Joined by lines (else drawn as points).
    pub line: bool,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// An SVG line/scatter chart of `series` (the document, as text).
pub fn svg(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<String, String> {
    let finite = |f: fn(&(f64, f64)) -> f64| {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(f))
            .filter(|v| v.is_finite())
            .collect::<Vec<f64>>()
    };
    let (xs, ys) = (finite(|p| p.0), finite(|p| p.1));
    let range = |values: &[f64]| {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !low.is_finite() || !high.is_finite() {
            (0.0, 1.0)
        } else if high - low < 1e-9 {
            (low - 0.5, high + 0.5)
        } else {
            let pad = (high - low) * 0.04;
            (low - pad, high + pad)
        }
    };
    let ((x0, x1), (y0, y1)) = (range(&xs), range(&ys));
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            let drawn = if s.line {
                chart.draw_series(LineSeries::new(points, color.stroke_width(2)))
            } else {
                chart.draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 5, color.filled())),
                )
            };
            drawn
                .map_err(|e| e.to_string())?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_document_with_its_labels() {
        let document = svg(
            "Quality against strong calls",
            "share of calls to the strong model",
            "quality",
            &[
                Series {
                    name: "linucb".into(),
                    points: vec![(0.0, 0.6), (0.3, 0.85), (1.0, 0.9)],
                    line: true,
                },
                Series {
                    name: "points".into(),
                    points: vec![(0.5, f64::NAN), (0.4, 0.8)],
                    line: false,
                },
            ],
        )
        .unwrap();
        assert!(document.starts_with("<svg"), "{}", &document[..80]);
        assert!(document.contains("linucb") && document.contains("quality"));
        // Nothing to draw is still a chart.
        assert!(svg("empty", "x", "y", &[]).unwrap().contains("</svg>"));
    }
}
