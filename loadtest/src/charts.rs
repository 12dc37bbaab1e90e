//! PNG charts of a [`Report`]: replication latency and watermark age per
//! region pair second by second, throughput, both with the fault windows
//! shaded, and bytes per event by encoding when recall was measured.
//!
//! Text needs a TrueType font: `VECSYNC_CHART_FONT`, or DejaVu Sans or
//! Liberation Sans where Linux distributions install them.

use crate::report::Report;
use anyhow::{Context, bail};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const SIZE: (u32, u32) = (1200, 560);
const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
const FAULT_SHADE: RGBColor = RGBColor(255, 215, 200);

/// Draws the charts into `dir`; returns the files written.
pub fn draw(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    load_font()?;
    let mut written = Vec::new();
    if !report.timeline.is_empty() {
        let path = dir.join("latency.png");
        latency(report, &path).with_context(|| format!("cannot draw {}", path.display()))?;
        written.push(path);
        let path = dir.join("throughput.png");
        throughput(report, &path).with_context(|| format!("cannot draw {}", path.display()))?;
        written.push(path);
    }
    if !report.recall.is_empty() {
        let path = dir.join("encodings.png");
        encodings(report, &path).with_context(|| format!("cannot draw {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Registers the first font found as plotters' sans-serif, once.
fn load_font() -> anyhow::Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let candidates: Vec<PathBuf> = std::env::var_os("VECSYNC_CHART_FONT")
                .map(PathBuf::from)
                .into_iter()
                .chain(FONT_PATHS.iter().map(PathBuf::from))
                .collect();
            let Some(bytes) = candidates.iter().find_map(|p| std::fs::read(p).ok()) else {
                return Err(format!(
                    "no TrueType font for the charts: install DejaVu Sans (Debian: fonts-dejavu-core) \
                     or set VECSYNC_CHART_FONT to a .ttf file; looked in {}",
                    FONT_PATHS.join(", ")
                ));
            };
            plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into()))
                .map_err(|_| "the chart font is not a TrueType font".to_owned())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Seconds the run lasted, the x range of the timeline charts.
fn seconds(report: &Report) -> f64 {
    report.timeline.last().map_or(1, |s| s.t_s) as f64
}

/// Shades every fault window across the chart's height and names it.
fn shade_faults<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<impl Ranged<ValueType = f64>, impl Ranged<ValueType = f64>>,
    >,
    report: &Report,
    (low, high): (f64, f64),
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    for f in &report.faults {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(f.from_s, low), (f.to_s, high)],
                FAULT_SHADE.filled(),
            )))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(f.what.clone())
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], FAULT_SHADE.filled()));
    }
    Ok(())
}

/// The series' legend, in the upper right corner.
fn legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn latency(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    // Log scale: milliseconds in steady state, tens of seconds in a cut.
    let values = report.timeline.iter().flat_map(|s| {
        s.pairs.iter().flat_map(|p| {
            p.latency_ms
                .iter()
                .flat_map(|l| [l.p50, l.p99])
                .chain(p.watermark_age_ms)
        })
    });
    let (low, high) = values.fold((f64::MAX, 1.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = ((low.max(0.5) / 2.0), high * 2.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Replication latency per second (p50, p99) and watermark age, by region pair",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..seconds(report), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds since the load started")
        .y_desc("milliseconds (log)")
        .draw()?;
    shade_faults(&mut chart, report, (low, high))?;
    let pairs: Vec<(String, String)> = report
        .timeline
        .iter()
        .flat_map(|s| s.pairs.iter().map(|p| (p.origin.clone(), p.region.clone())))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for (i, (origin, region)) in pairs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let of = |pick: &dyn Fn(&crate::report::PairSecond) -> Option<f64>| -> Vec<(f64, f64)> {
            report
                .timeline
                .iter()
                .filter_map(|s| {
                    let p = s
                        .pairs
                        .iter()
                        .find(|p| p.origin == *origin && p.region == *region)?;
                    Some((s.t_s as f64 - 0.5, pick(p)?))
                })
                .collect()
        };
        let name = format!("{origin} → {region}");
        for (quantile, width) in [("p99", 3), ("p50", 1)] {
            let points = of(&|p| {
                let l = p.latency_ms.as_ref()?;
                Some(if quantile == "p99" { l.p99 } else { l.p50 })
            });
            // A second without applied events breaks the line.
            let runs = points.chunk_by(|a, b| b.0 - a.0 < 1.5);
            chart
                .draw_series(
                    runs.map(|run| PathElement::new(run.to_vec(), color.stroke_width(width))),
                )?
                .label(format!("{name} {quantile}"))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(width))
                });
        }
        let age = of(&|p| p.watermark_age_ms);
        chart
            .draw_series(
                age.into_iter()
                    .map(|(x, y)| Circle::new((x, y), 3, color.filled())),
            )?
            .label(format!("{name} watermark age"))
            .legend(move |(x, y)| Circle::new((x + 8, y), 3, color.filled()));
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

fn throughput(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let high = report
        .timeline
        .iter()
        .map(|s| s.produced.max(s.replicated))
        .max()
        .unwrap_or(1) as f64
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Events per second: produced by every region, and replicated into the others",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..seconds(report), 0.0..high)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the load started")
        .y_desc("events per second")
        .draw()?;
    shade_faults(&mut chart, report, (0.0, high))?;
    for (i, (name, pick)) in [
        (
            "produced",
            (|s| s.produced) as fn(&crate::report::Second) -> u64,
        ),
        ("replicated", |s| s.replicated),
    ]
    .into_iter()
    .enumerate()
    {
        let color = Palette99::pick(i).to_rgba();
        let points = report
            .timeline
            .iter()
            .map(|s| (s.t_s as f64 - 0.5, pick(s) as f64));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

fn encodings(report: &Report, path: &Path) -> anyhow::Result<()> {
    let rows = &report.recall;
    if rows.is_empty() {
        bail!("no recall rows");
    }
    let root = BitMapBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let high = rows.iter().map(|r| r.bytes_per_event).fold(0.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Bytes on the wire per event by encoding (384-d), with recall@10",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..rows.len()).into_segmented(), 0.0..high)?;
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => rows
            .get(*i)
            .map(|r| r.encoding.to_string())
            .unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&label)
        .y_desc("bytes per event")
        .draw()?;
    let color = Palette99::pick(0).to_rgba();
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), r.bytes_per_event),
            ],
            color.filled(),
        );
        bar.set_margin(0, 0, 25, 25);
        bar
    }))?;
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        Text::new(
            format!("{:.0} B, recall {:.3}", r.bytes_per_event, r.recall_at_10),
            (SegmentValue::Exact(i), r.bytes_per_event + high * 0.03),
            ("sans-serif", 14),
        )
    }))?;
    root.present()?;
    Ok(())
}
