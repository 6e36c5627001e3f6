use std::path::Path;

use plotters::prelude::*;

/// A plotting failure (I/O or drawing), with the file it was for.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {detail}")]
pub struct PlotError {
    path: String,
    detail: String,
}

/// One line of a forecast plot.
#[derive(Debug, Clone)]
pub struct SeriesToPlot {
    /// Legend label.
    pub name: String,
    /// One value per test window.
    pub values: Vec<f64>,
}

/// Training and validation loss per epoch of one model.
#[derive(Debug, Clone)]
pub struct LossCurve {
    /// Legend label.
    pub name: String,
    /// Training loss per epoch.
    pub train: Vec<f64>,
    /// Validation loss per epoch.
    pub val: Vec<f64>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |detail| PlotError {
        path: path.display().to_string(),
        detail,
    }
}

/// Draws with `draw` into an SVG held in memory, then writes it atomically: a failed or
/// interrupted plot never leaves a half-written file.
fn svg_file(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), PlotError>,
) -> Result<(), PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root)?;
    }
    tns_data::write_atomic(path, svg.as_bytes()).map_err(|x| err(path)(x.to_string()))
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-12);
    (lo - pad, hi + pad)
}

/// Draws consecutive forecasts: the truth as points, each series as a line, and the
/// conformal band `(lower, upper)` shaded, as SVG; `x_desc` names the horizontal axis.
pub fn plot_forecasts(
    path: &Path,
    title: &str,
    x_desc: &str,
    truth: &[f64],
    series: &[SeriesToPlot],
    band: Option<(&[f64], &[f64])>,
) -> Result<(), PlotError> {
    let e = err(path);
    svg_file(path, (1000, 500), |root| {
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let all = truth
            .iter()
            .chain(series.iter().flat_map(|s| &s.values))
            .chain(band.iter().flat_map(|(l, u)| l.iter().chain(u.iter())))
            .copied();
        let (lo, hi) = bounds(all);
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..truth.len().max(1) as f64, lo..hi)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .draw()
            .map_err(|x| e(x.to_string()))?;
        if let Some((lower, upper)) = band {
            let polygon: Vec<(f64, f64)> = lower
                .iter()
                .enumerate()
                .map(|(i, &v)| (i as f64, v))
                .chain(upper.iter().enumerate().rev().map(|(i, &v)| (i as f64, v)))
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(
                    polygon,
                    COLORS[0].mix(0.15).filled(),
                )))
                .map_err(|x| e(x.to_string()))?
                .label("conformal interval")
                .legend(|(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 15, y + 5)], COLORS[0].mix(0.15).filled())
                });
        }
        chart
            .draw_series(
                truth
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| Circle::new((i as f64, v), 2, BLACK.filled())),
            )
            .map_err(|x| e(x.to_string()))?
            .label("observed")
            .legend(|(x, y)| Circle::new((x + 7, y), 3, BLACK.filled()));
        let xs: Vec<f64> = (0..truth.len()).map(|i| i as f64).collect();
        draw_lines(&mut chart, &xs, series, 1).map_err(&e)?;
        finish(chart, root).map_err(e)
    })
}

type Chart<'a> = ChartContext<
    'a,
    SVGBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One labelled line per series over `xs`, colours from `COLORS[first_color..]`.
fn draw_lines(
    chart: &mut Chart<'_>,
    xs: &[f64],
    series: &[SeriesToPlot],
    first_color: usize,
) -> Result<(), String> {
    for (k, s) in series.iter().enumerate() {
        let color = COLORS[(k + first_color) % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                xs.iter().copied().zip(s.values.iter().copied()),
                color.stroke_width(2),
            ))
            .map_err(|x| x.to_string())?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 15, y)], color.stroke_width(2))
            });
    }
    Ok(())
}

/// Draws the legend and writes the file.
fn finish(
    mut chart: Chart<'_>,
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| x.to_string())?;
    root.present().map_err(|x| x.to_string())
}

/// Training (dashed) and validation (solid) loss per epoch, log scale, as SVG.
pub fn plot_loss_curves(path: &Path, curves: &[LossCurve]) -> Result<(), PlotError> {
    let e = err(path);
    svg_file(path, (900, 500), |root| {
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let epochs = curves
            .iter()
            .map(|c| c.train.len())
            .max()
            .unwrap_or(1)
            .max(2);
        let (lo, hi) = bounds(
            curves
                .iter()
                .flat_map(|c| c.train.iter().chain(&c.val))
                .copied()
                .filter(|v| *v > 0.0),
        );
        let mut chart = ChartBuilder::on(root)
            .caption(
                "loss per epoch (normalized MSE; dashed: train, solid: validation)",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(1f64..epochs as f64, (lo.max(1e-12)..hi).log_scale())
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(|x| e(x.to_string()))?;
        for (k, c) in curves.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let pts = |v: &[f64]| {
                v.iter()
                    .enumerate()
                    .map(|(i, &y)| ((i + 1) as f64, y))
                    .collect::<Vec<_>>()
            };
            chart
                .draw_series(DashedLineSeries::new(
                    pts(&c.train),
                    6,
                    4,
                    color.stroke_width(1),
                ))
                .map_err(|x| e(x.to_string()))?;
            chart
                .draw_series(LineSeries::new(pts(&c.val), color.stroke_width(2)))
                .map_err(|x| e(x.to_string()))?
                .label(c.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 15, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(x.to_string()))?;
        root.present().map_err(|x| e(x.to_string()))
    })
}

/// Latency distributions as histograms over log-spaced bins (x: microseconds, log scale;
/// y: share of calls per bin), one line per series, as SVG.
pub fn plot_latency_histograms(
    path: &Path,
    title: &str,
    series: &[SeriesToPlot],
) -> Result<(), PlotError> {
    const BINS: usize = 80;
    let e = err(path);
    let (lo, hi) = series
        .iter()
        .flat_map(|s| s.values.iter())
        .filter(|v| **v > 0.0 && v.is_finite())
        .fold((f64::INFINITY, 0f64), |(a, b), &v| (a.min(v), b.max(v)));
    let lo = if lo.is_finite() { lo } else { 1.0 };
    let hi = hi.max(lo * 1.01);
    let ratio = (hi / lo).ln() / BINS as f64;
    let histograms: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            let mut counts = vec![0usize; BINS];
            for &v in &s.values {
                let b = ((v.max(lo) / lo).ln() / ratio) as usize;
                counts[b.min(BINS - 1)] += 1;
            }
            let n = s.values.len().max(1) as f64;
            counts
                .iter()
                .enumerate()
                .map(|(b, &c)| (lo * ((b as f64 + 0.5) * ratio).exp(), c as f64 / n))
                .collect()
        })
        .collect();
    let top = histograms
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(0.0, f64::max)
        .max(1e-9);
    svg_file(path, (900, 500), |root| {
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..top * 1.05)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("latency (µs)")
            .y_desc("share of calls")
            .draw()
            .map_err(|x| e(x.to_string()))?;
        for (k, (s, points)) in series.iter().zip(histograms).enumerate() {
            let color = COLORS[k % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|x| e(x.to_string()))?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 15, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(x.to_string()))?;
        root.present().map_err(|x| e(x.to_string()))
    })
}

/// One line per series over the points `xs` (each series has one value per point), with an
/// optional dashed horizontal reference (value, label), as SVG.
pub fn plot_lines(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    xs: &[f64],
    series: &[SeriesToPlot],
    reference: Option<(f64, &str)>,
) -> Result<(), PlotError> {
    let e = err(path);
    svg_file(path, (900, 500), |root| {
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let (x0, x1) = bounds(xs.iter().copied());
        let (lo, hi) = bounds(
            series
                .iter()
                .flat_map(|s| s.values.iter().copied())
                .chain(reference.map(|r| r.0)),
        );
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, lo..hi)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(|x| e(x.to_string()))?;
        if let Some((value, label)) = reference {
            chart
                .draw_series(LineSeries::new(
                    [(x0, value), (x1, value)],
                    BLACK.mix(0.5).stroke_width(1),
                ))
                .map_err(|x| e(x.to_string()))?
                .label(label.to_string())
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK.mix(0.5)));
        }
        draw_lines(&mut chart, xs, series, 0).map_err(&e)?;
        finish(chart, root).map_err(e)
    })
}
