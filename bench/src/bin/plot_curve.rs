//! Draws the cost curve that `bench/curve.sh` measures: the sink's drain rate (thousand
//! rows per second, y) against the rows already in the table (millions, x), one line per
//! variant (kind of `tx_id` and collation of its column). Reads the script's CSV, writes
//! an SVG (text, so the committed image diffs and needs no font or image library).
//!
//!   cargo run -p bench --bin plot_curve -- --csv bench/curve.csv --out docs/img/cost-curve.svg

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use plotters::prelude::*;

#[derive(Parser)]
struct Args {
    /// The measurements: a header line, then `variant,rows_before,rows,secs,…`.
    #[arg(long, default_value = "bench/curve.csv")]
    csv: PathBuf,
    /// The image to write.
    #[arg(long, default_value = "docs/img/cost-curve.svg")]
    out: PathBuf,
}

/// One measured step: rows in the table before it, and the rate it drained at.
#[derive(Debug, serde::Deserialize)]
struct Step {
    variant: String,
    rows_before: u64,
    rows: u64,
    secs: f64,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut reader = csv::Reader::from_path(&args.csv)
        .with_context(|| format!("cannot read {}", args.csv.display()))?;
    // variant -> (millions of rows before the step, thousand rows per second)
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut step_rows = 0;
    for step in reader.deserialize() {
        let s: Step = step.with_context(|| format!("a bad line in {}", args.csv.display()))?;
        step_rows = step_rows.max(s.rows);
        anyhow::ensure!(s.secs > 0.0, "a step of {} took no time", s.variant);
        series
            .entry(s.variant)
            .or_default()
            .push((s.rows_before as f64 / 1e6, s.rows as f64 / s.secs / 1e3));
    }
    anyhow::ensure!(!series.is_empty(), "{} has no steps", args.csv.display());
    let x_max = series
        .values()
        .flatten()
        .map(|p| p.0)
        .fold(1.0, f64::max)
        .ceil();
    let y_max = series.values().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.15;

    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(&args.out, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Sink drain rate as the table grows ({}k-row steps)",
                step_rows / 1000
            ),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("rows already in the table (millions)")
        .y_desc("thousand rows per second")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    println!("wrote {}", args.out.display());
    Ok(())
}
