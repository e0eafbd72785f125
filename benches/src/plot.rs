//! The report's SVG plots, drawn with plotters' SVG backend (text is written as SVG
//! `<text>`, so no font files or system libraries are needed).
//!
//! Two shapes: a line chart over categories (callers, pool sizes, percentiles) with
//! each point's interquartile range as a vertical bar, and a horizontal bar chart (ns
//! per call per wrapper).

use std::path::Path;

use plotters::{
    coord::{
        combinators::BindKeyPoints,
        ranged1d::{AsRangedCoord, ValueFormatter},
    },
    prelude::*,
};

use crate::stats::Summary;

/// The error a plot returns: plotters' drawing error, as text.
#[derive(Debug)]
pub struct PlotError(pub String);

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plot: {}", self.0)
    }
}

impl std::error::Error for PlotError {}

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

/// One line: a label and, per category, the median with its quartiles (`None`: no
/// point there).
#[derive(Clone, Debug)]
pub struct Line {
    /// The legend's label.
    pub label: String,
    /// One entry per category.
    pub points: Vec<Option<Summary>>,
}

/// A line chart over categories spaced evenly along x.
#[derive(Clone, Debug)]
pub struct LineChart {
    /// The title, above the plot.
    pub title: String,
    /// The x axis' caption.
    pub x_desc: String,
    /// The y axis' caption.
    pub y_desc: String,
    /// The categories' labels, left to right.
    pub categories: Vec<String>,
    /// The lines.
    pub lines: Vec<Line>,
    /// A logarithmic y axis (for latencies, whose tail is orders above the median).
    pub log_y: bool,
    /// Where the legend goes: a corner the lines leave free.
    pub legend: SeriesLabelPosition,
}

const WIDTH: u32 = 800;
const HEIGHT: u32 = 480;

fn color(i: usize) -> RGBColor {
    // Distinguishable for the common colour-vision deficiencies (Okabe–Ito).
    const COLORS: [RGBColor; 6] = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(213, 94, 0),
    ];
    COLORS[i % COLORS.len()]
}

/// The label of the category at `v`, when `v` is (close to) a category's position.
fn category_label(categories: &[String], v: f64) -> String {
    let i = v.round();
    if (v - i).abs() > 0.01 || i < 0.0 {
        return String::new();
    }
    categories.get(i as usize).cloned().unwrap_or_default()
}

/// 1, 2 and 5 times the powers of ten between `lo` and `hi`: a log axis' labels.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.max(f64::MIN_POSITIVE).log10().floor());
    while decade <= hi {
        ticks.extend(
            [1.0, 2.0, 5.0]
                .map(|m| m * decade)
                .into_iter()
                .filter(|t| (lo..=hi).contains(t)),
        );
        decade *= 10.0;
    }
    ticks
}

/// A y range from 0 (or the lowest figure, when `from_zero` is false) to 10 % over the
/// highest figure.
fn y_range(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let hi = if hi > 0.0 { hi * 1.1 } else { 1.0 };
    let lo = if from_zero || !lo.is_finite() {
        0.0
    } else {
        lo * 0.9
    };
    (lo, hi)
}

impl LineChart {
    /// Draws the chart into an SVG file at `path`.
    ///
    /// # Errors
    ///
    /// When drawing or writing the file fails.
    pub fn write(&self, path: &Path) -> Result<(), PlotError> {
        let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let highest = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().flatten().map(|s| s.q3.max(s.median)));
        if self.log_y {
            let lowest = self
                .lines
                .iter()
                .flat_map(|l| l.points.iter().flatten().map(|s| s.q1.min(s.median)))
                .filter(|v| *v > 0.0)
                .fold(f64::INFINITY, f64::min);
            let (_, hi) = y_range(highest, true);
            let lo = if lowest.is_finite() { lowest * 0.8 } else { 1.0 };
            let hi = hi.max(lo * 2.0);
            self.draw(&root, (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)))?;
        } else {
            let (lo, hi) = y_range(highest, true);
            self.draw(&root, lo..hi)?;
        }
        root.present().map_err(err)
    }

    fn draw<Y>(
        &self,
        root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
        y: Y,
    ) -> Result<(), PlotError>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let n = self.categories.len().max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(-0.3f64..(n - 0.7), y)
            .map_err(err)?;
        let categories = self.categories.clone();
        let x_format = move |v: &f64| category_label(&categories, *v);
        let y_format = |v: &f64| format_figure(*v);
        chart
            .configure_mesh()
            .x_labels(self.categories.len() + 2)
            .x_label_formatter(&x_format)
            .y_label_formatter(&y_format)
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .disable_x_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(err)?;
        for (i, line) in self.lines.iter().enumerate() {
            let c = color(i);
            let points: Vec<(f64, f64)> = line
                .points
                .iter()
                .enumerate()
                .filter_map(|(x, s)| s.map(|s| (x as f64, s.median)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(line.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(err)?;
            // The interquartile range, slightly offset per line so bars do not overlap.
            let offset = (i as f64 - (self.lines.len() as f64 - 1.0) / 2.0) * 0.03;
            chart
                .draw_series(line.points.iter().enumerate().filter_map(|(x, s)| {
                    s.map(|s| {
                        PathElement::new(
                            vec![(x as f64 + offset, s.q1), (x as f64 + offset, s.q3)],
                            c.stroke_width(1),
                        )
                    })
                }))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(self.legend.clone())
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(err)
    }
}

/// A horizontal bar chart: one bar per entry, its median, with the interquartile range
/// drawn over it and the median written after it.
#[derive(Clone, Debug)]
pub struct BarChart {
    /// The title, above the plot.
    pub title: String,
    /// The x axis' caption (the figures' unit).
    pub x_desc: String,
    /// `(label, figures)`, top to bottom.
    pub bars: Vec<(String, Summary)>,
}

impl BarChart {
    /// Draws the chart into an SVG file at `path`.
    ///
    /// # Errors
    ///
    /// When drawing or writing the file fails.
    pub fn write(&self, path: &Path) -> Result<(), PlotError> {
        let height = 90 + 28 * self.bars.len() as u32;
        let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let n = self.bars.len().max(1) as f64;
        let (_, x_hi) = y_range(self.bars.iter().map(|(_, s)| s.q3.max(s.median)), true);
        let x_hi = x_hi * 1.12; // room for the figure after the longest bar
        let label_width = self.bars.iter().map(|(l, _)| l.len()).max().unwrap_or(8) as u32 * 7 + 16;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(label_width)
            .build_cartesian_2d(0f64..x_hi, -0.6f64..(n - 0.4))
            .map_err(err)?;
        // Top to bottom: entry 0 at the top, so y runs reversed.
        let labels: Vec<String> = self.bars.iter().map(|(l, _)| l.clone()).collect();
        let count = labels.len();
        let y_format = move |v: &f64| {
            let i = v.round();
            if (v - i).abs() > 0.01 || i < 0.0 || i as usize >= count {
                return String::new();
            }
            labels[count - 1 - i as usize].clone()
        };
        let x_format = |v: &f64| format_figure(*v);
        chart
            .configure_mesh()
            .y_labels(count + 2)
            .y_label_formatter(&y_format)
            .x_label_formatter(&x_format)
            .x_desc(self.x_desc.as_str())
            .disable_y_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(err)?;
        let position = |i: usize| (count - 1 - i) as f64;
        chart
            .draw_series(self.bars.iter().enumerate().map(|(i, (_, s))| {
                let y = position(i);
                Rectangle::new(
                    [(0.0, y - 0.32), (s.median, y + 0.32)],
                    color(0).mix(0.75).filled(),
                )
            }))
            .map_err(err)?;
        chart
            .draw_series(self.bars.iter().enumerate().map(|(i, (_, s))| {
                let y = position(i);
                PathElement::new(vec![(s.q1, y), (s.q3, y)], BLACK.stroke_width(2))
            }))
            .map_err(err)?;
        chart
            .draw_series(self.bars.iter().enumerate().map(|(i, (_, s))| {
                let y = position(i);
                Text::new(
                    format_figure(s.median),
                    (s.q3.max(s.median) + x_hi * 0.01, y + 0.18),
                    ("sans-serif", 15),
                )
            }))
            .map_err(err)?;
        root.present().map_err(err)
    }
}

/// A figure for an axis or a bar: no more digits than it needs, thousands as `k`.
pub fn format_figure(v: f64) -> String {
    let a = v.abs();
    if a >= 10_000.0 {
        format!("{:.0}k", v / 1_000.0)
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(median: f64) -> Summary {
        Summary {
            q1: median * 0.9,
            median,
            q3: median * 1.1,
            n: 3,
        }
    }

    /// The contents of the SVG's `<text>` elements, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let (_, rest) = t.split_once('>')?;
                let (content, _) = rest.split_once("</text>")?;
                Some(content.trim().to_owned())
            })
            .collect()
    }

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("stayfast-plot-{}-{name}", std::process::id()))
    }

    #[test]
    fn line_chart_writes_an_svg_with_its_text() {
        let path = temp("line.svg");
        LineChart {
            title: "GET throughput".into(),
            x_desc: "concurrent callers".into(),
            y_desc: "calls/s".into(),
            categories: ["1", "10", "100"].map(String::from).to_vec(),
            lines: vec![
                Line {
                    label: "raw fred".into(),
                    points: vec![Some(s(10_000.0)), Some(s(50_000.0)), Some(s(60_000.0))],
                },
                Line {
                    label: "stayfast".into(),
                    points: vec![Some(s(9_000.0)), None, Some(s(58_000.0))],
                },
            ],
            log_y: false,
            legend: SeriesLabelPosition::LowerRight,
        }
        .write(&path)
        .expect("an svg");
        let svg = std::fs::read_to_string(&path).expect("the svg written");
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        let texts = texts(&svg);
        for text in [
            "GET throughput",
            "raw fred",
            "stayfast",
            "concurrent callers",
            "100",
            "60k",
        ] {
            assert!(texts.iter().any(|t| t == text), "no text {text:?} in {texts:?}");
        }
    }

    #[test]
    fn log_scale_line_chart_writes_an_svg() {
        let path = temp("log.svg");
        LineChart {
            title: "latency".into(),
            x_desc: "percentile".into(),
            y_desc: "µs".into(),
            categories: ["p50", "p99.9"].map(String::from).to_vec(),
            lines: vec![Line {
                label: "stayfast".into(),
                points: vec![Some(s(20.0)), Some(s(4_000.0))],
            }],
            log_y: true,
            legend: SeriesLabelPosition::UpperLeft,
        }
        .write(&path)
        .expect("an svg");
        let svg = std::fs::read_to_string(&path).expect("the svg written");
        let _ = std::fs::remove_file(&path);
        assert!(svg.contains("p99.9") && svg.contains("stayfast"));
    }

    #[test]
    fn bar_chart_writes_an_svg_with_its_labels() {
        let path = temp("bar.svg");
        BarChart {
            title: "overhead".into(),
            x_desc: "ns per call".into(),
            bars: vec![("bare".into(), s(3.0)), ("policy_full".into(), s(120.0))],
        }
        .write(&path)
        .expect("an svg");
        let svg = std::fs::read_to_string(&path).expect("the svg written");
        let _ = std::fs::remove_file(&path);
        assert!(svg.len() > 1_000);
        let texts = texts(&svg);
        for text in ["bare", "policy_full", "ns per call", "120"] {
            assert!(texts.iter().any(|t| t == text), "no text {text:?} in {texts:?}");
        }
    }

    #[test]
    fn log_ticks_are_one_two_five() {
        assert_eq!(log_ticks(15.0, 600.0), [20.0, 50.0, 100.0, 200.0, 500.0]);
    }

    #[test]
    fn figures_are_short() {
        assert_eq!(format_figure(123_456.0), "123k");
        assert_eq!(format_figure(1_234.0), "1234");
        assert_eq!(format_figure(12.34), "12.3");
        assert_eq!(format_figure(1.234), "1.23");
        assert_eq!(format_figure(0.0), "0");
    }
}
