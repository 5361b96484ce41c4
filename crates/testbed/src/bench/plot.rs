//! The benches' plots, as SVG text (plotters' SVG backend, no fonts: the SVG names a font
//! family and the viewer draws it): lines over a linear or logarithmic x axis, and latency
//! histograms of several peers side by side.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// One line of a chart: its legend and its points (x, y).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The axes of a line chart.
pub struct Axes<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
    /// A logarithmic x axis (every x must then be positive).
    pub log_x: bool,
}

/// What drawing a chart failed on.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("plot {title:?}: {what}; the bench's data is at fault, fix the caller")]
    Data { title: String, what: String },
    #[error("plot {title:?}: drawing failed: {cause}")]
    Draw { title: String, cause: String },
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 500;

/// Distinct colours for up to eight series (then they repeat).
fn colour(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    C[i % C.len()]
}

fn draw_err<E: std::fmt::Debug>(title: &str) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError::Draw {
        title: title.into(),
        cause: format!("{e:?}"),
    }
}

/// The smallest and largest of `v`, or `None` when empty or not finite.
fn span(v: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    (lo.is_finite() && hi.is_finite()).then_some((lo, hi))
}

/// A line chart of `series`, each named in the legend.
pub fn lines(axes: &Axes, series: &[Series]) -> Result<String, PlotError> {
    panels(&[(axes, series)])
}

/// Line charts stacked top to bottom, one per (axes, series), each as [`lines`] draws one.
pub fn panels(charts: &[(&Axes, &[Series])]) -> Result<String, PlotError> {
    let mut svg = String::new();
    let height = if charts.len() > 1 {
        HEIGHT * 4 / 5
    } else {
        HEIGHT
    };
    {
        let size = (WIDTH, height * charts.len().max(1) as u32);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let title = charts.first().map_or("", |c| c.0.title);
        root.fill(&WHITE).map_err(draw_err(title))?;
        let areas = root.split_evenly((charts.len().max(1), 1));
        for ((axes, series), area) in charts.iter().zip(&areas) {
            panel(area, axes, series)?;
        }
        root.present().map_err(draw_err(title))?;
    }
    Ok(svg)
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    axes: &Axes,
    series: &[Series],
) -> Result<(), PlotError> {
    let data = |what: &str| PlotError::Data {
        title: axes.title.into(),
        what: what.into(),
    };
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = span(all().map(|p| p.0)).ok_or_else(|| data("no points"))?;
    let (_, y1) = span(all().map(|p| p.1)).ok_or_else(|| data("no points"))?;
    if axes.log_x && x0 <= 0.0 {
        return Err(data("a logarithmic x axis needs positive x"));
    }
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(axes.title, ("sans-serif", 20))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(45)
        .y_label_area_size(60);
    if axes.log_x {
        let x1 = if x1 > x0 { x1 } else { x0 * 10.0 };
        let mut chart = builder
            .build_cartesian_2d((x0..x1).log_scale(), 0f64..y1)
            .map_err(draw_err(axes.title))?;
        chart
            .configure_mesh()
            .x_desc(axes.x)
            .y_desc(axes.y)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(draw_err(axes.title))?;
        draw_series(&mut chart, axes.title, series)
    } else {
        let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
        let mut chart = builder
            .build_cartesian_2d(x0..x1, 0f64..y1)
            .map_err(draw_err(axes.title))?;
        chart
            .configure_mesh()
            .x_desc(axes.x)
            .y_desc(axes.y)
            .draw()
            .map_err(draw_err(axes.title))?;
        draw_series(&mut chart, axes.title, series)
    }
}

/// Series with more points than this are drawn without a mark on each point.
const MARKED_UP_TO: usize = 50;

fn draw_series<'a, X>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    title: &str,
    series: &[Series],
) -> Result<(), PlotError>
where
    X: Ranged<ValueType = f64>,
{
    for (i, s) in series.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
            .map_err(draw_err(title))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
        if s.points.len() <= MARKED_UP_TO {
            chart
                .draw_series(s.points.iter().map(|p| Circle::new(*p, 3, c.filled())))
                .map_err(draw_err(title))?;
        }
    }
    legend(chart, SeriesLabelPosition::UpperLeft, title)
}

/// The legend of `chart`'s labelled series, at `at`.
fn legend<'a, X>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    at: SeriesLabelPosition,
    title: &str,
) -> Result<(), PlotError>
where
    X: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err(title))
}

/// Bin edges for latencies from `lo` to `hi` ms: `per_decade` logarithmic bins a decade,
/// covering both ends.
pub fn log_bins(lo: f64, hi: f64, per_decade: u32) -> Vec<f64> {
    let lo = lo.max(0.1);
    let hi = hi.max(lo * 1.01);
    let step = 1.0 / f64::from(per_decade.max(1));
    let mut k = (lo.log10() / step).floor();
    let mut edges = vec![10f64.powf(k * step)];
    while *edges.last().unwrap() <= hi {
        k += 1.0;
        edges.push(10f64.powf(k * step));
    }
    edges
}

/// The share (%) of `v` in each bin of `edges` (a value on an edge goes to the bin above it;
/// values outside every bin are not counted).
pub fn shares(v: &[f64], edges: &[f64]) -> Vec<f64> {
    let mut counts = vec![0usize; edges.len().saturating_sub(1)];
    for x in v {
        if let Some(i) = edges.windows(2).position(|w| *x >= w[0] && *x < w[1]) {
            counts[i] += 1;
        }
    }
    let n = v.len().max(1) as f64;
    counts.into_iter().map(|c| c as f64 * 100.0 / n).collect()
}

/// A histogram of latencies (ms) for each peer, side by side in logarithmic bins: the share of
/// each peer's samples per bin, so peers with different sample counts compare.
pub fn latency_histogram(title: &str, peers: &[(&str, &[f64])]) -> Result<String, PlotError> {
    let data = |what: &str| PlotError::Data {
        title: title.into(),
        what: what.into(),
    };
    let (lo, hi) = span(peers.iter().flat_map(|(_, v)| v.iter().copied()))
        .ok_or_else(|| data("no samples"))?;
    if lo < 0.0 {
        return Err(data("a latency below zero"));
    }
    let edges = log_bins(lo, hi, 5);
    let per_peer: Vec<Vec<f64>> = peers.iter().map(|(_, v)| shares(v, &edges)).collect();
    let top = per_peer.iter().flatten().copied().fold(0f64, f64::max) * 1.1;
    let (x0, x1) = (edges[0], *edges.last().unwrap());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err(title))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .margin_right(36)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((x0..x1).log_scale(), 0f64..top.max(1.0))
            .map_err(draw_err(title))?;
        chart
            .configure_mesh()
            .x_desc("latency, ms (logarithmic bins)")
            .y_desc("share of the peer's samples, %")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(draw_err(title))?;
        let k = peers.len() as f64;
        for (p, ((name, v), share)) in peers.iter().zip(&per_peer).enumerate() {
            let c = colour(p);
            // Each bin is split in k slots on the log scale, one per peer.
            let bars = edges
                .windows(2)
                .zip(share)
                .filter(|(_, s)| **s > 0.0)
                .map(move |(w, s)| {
                    let (a, b) = (w[0].ln(), w[1].ln());
                    let left = (a + (b - a) * p as f64 / k).exp();
                    let right = (a + (b - a) * (p as f64 + 1.0) / k).exp();
                    Rectangle::new([(left, 0.0), (right, *s)], c.filled())
                });
            chart
                .draw_series(bars)
                .map_err(draw_err(title))?
                .label(format!("{name} ({} samples)", v.len()))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight, title)?;
        root.present().map_err(draw_err(title))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests;
