//! Draws what the producer's data looks like, from a run's JSON lines and the users files
//! it drew from (`scripts/data-figures.sh` makes both and calls this): amounts per
//! category, transactions per hour of day, currencies per country, transactions per month.
//! Writes SVGs (text: the committed images diff and need no font library) and prints the
//! figures behind them.
//!
//!   cargo run -p bench --bin plot_data -- --transactions tx.jsonl --users data/users --out docs/img

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{Datelike, Timelike};
use clap::Parser;
use plotters::prelude::*;
use txn_model::generator::{CATEGORIES, CURRENCIES};

#[derive(Parser)]
struct Args {
    /// The producer's output: one transaction (the message's JSON) per line.
    #[arg(long)]
    transactions: PathBuf,
    /// The users file or directory the run drew from (for each user's country).
    #[arg(long)]
    users: PathBuf,
    /// The directory to write the images to.
    #[arg(long, default_value = "docs/img")]
    out: PathBuf,
}

const BLUE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const ORANGE: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const COLORS: [RGBColor; 7] = [
    BLUE,
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    ORANGE,
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x7f, 0x7f, 0x7f),
];

type Plot = Result<(), Box<dyn std::error::Error>>;

/// One image: its file name and what draws it.
type Figure<'a> = (&'static str, &'a dyn Fn(&std::path::Path) -> Plot);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let users = txn_model::load_users(&args.users)?;
    let country: HashMap<uuid::Uuid, String> = users
        .ids
        .iter()
        .zip(&users.attributes)
        .map(|(id, a)| (*id, a.country.clone().unwrap_or_else(|| "none".into())))
        .collect();
    let file = std::fs::File::open(&args.transactions)
        .with_context(|| format!("cannot read {}", args.transactions.display()))?;
    let mut amounts: Vec<Vec<f64>> = vec![Vec::new(); CATEGORIES.len()];
    let mut hours = [0u64; 24];
    let mut weekdays = [0u64; 7];
    let mut currencies: BTreeMap<String, [u64; CURRENCIES.len()]> = BTreeMap::new();
    let mut months: BTreeMap<(i32, u32), u64> = BTreeMap::new();
    let mut n = 0u64;
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let t = txn_model::Transaction::from_json(line.as_bytes())
            .with_context(|| format!("not a transaction: {line}"))?;
        n += 1;
        let c = CURRENCIES
            .iter()
            .position(|c| c.code == t.currency)
            .context("a currency outside the mix")?;
        let k = CATEGORIES
            .iter()
            .position(|k| k.name == t.category)
            .context("a category outside the table")?;
        amounts[k].push(f64::try_from(t.amount)? / CURRENCIES[c].per_usd);
        // the user's local time (standard time of its country)
        let home = country
            .get(&t.user_id)
            .context("a user outside the users files")?;
        let offset = txn_model::profile::utc_offset(home);
        let local = t.timestamp + chrono::Duration::hours(i64::from(offset));
        hours[local.hour() as usize] += 1;
        weekdays[local.weekday().num_days_from_monday() as usize] += 1;
        currencies
            .entry(home.clone())
            .or_insert([0; CURRENCIES.len()])[c] += 1;
        *months
            .entry((t.timestamp.year(), t.timestamp.month()))
            .or_default() += 1;
    }
    anyhow::ensure!(
        n > 0,
        "{} holds no transaction",
        args.transactions.display()
    );
    std::fs::create_dir_all(&args.out)?;
    println!("{n} transactions, {} users", users.ids.len());
    let plots: [Figure<'_>; 4] = [
        ("data-amounts.svg", &|p| {
            draw_amounts(p, &mut amounts.clone())
        }),
        ("data-hours.svg", &|p| draw_hours(p, &hours, &weekdays)),
        ("data-currencies.svg", &|p| draw_currencies(p, &currencies)),
        ("data-months.svg", &|p| draw_months(p, &months)),
    ];
    for (name, plot) in plots {
        let path = args.out.join(name);
        plot(&path).map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The bar an axis position `x` stands on (bars at 0, 1, 2, …), when it is one to label
/// (every `every`th).
fn bar_index(x: f64, every: usize) -> Option<usize> {
    let i = x.round();
    ((x - i).abs() < 0.01 && i >= 0.0 && (i as usize).is_multiple_of(every)).then_some(i as usize)
}

/// The label of the bar at `x` (empty between bars and on unlabelled ones).
fn label(labels: &[impl ToString], x: f64, every: usize) -> String {
    bar_index(x, every)
        .and_then(|i| labels.get(i))
        .map_or(String::new(), ToString::to_string)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Per category, the amounts (in USD) as a box: 25th to 75th percentile, the median, and
/// whiskers from the 5th to the 95th, on a log scale.
fn draw_amounts(path: &std::path::Path, amounts: &mut [Vec<f64>]) -> Plot {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Amount per category (USD; box: 25th-75th percentile, line: median, whiskers: 5th-95th)", ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..CATEGORIES.len() as f64 - 0.5, (0.5f64..3000.0).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(CATEGORIES.len())
        .x_label_formatter(&|x| {
            bar_index(*x, 1)
                .and_then(|i| CATEGORIES.get(i))
                .map_or(String::new(), |c| c.name.replace('_', " "))
        })
        .y_desc("USD")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    println!("amounts (USD): category p5 / p25 / median / p75 / p95");
    for (i, a) in amounts.iter_mut().enumerate() {
        if a.is_empty() {
            continue;
        }
        a.sort_by(f64::total_cmp);
        let q: Vec<f64> = [0.05, 0.25, 0.5, 0.75, 0.95]
            .iter()
            .map(|q| quantile(a, *q))
            .collect();
        println!(
            "  {:<16} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            CATEGORIES[i].name, q[0], q[1], q[2], q[3], q[4]
        );
        let x = i as f64;
        chart.draw_series([
            Rectangle::new([(x - 0.3, q[1]), (x + 0.3, q[3])], BLUE.mix(0.35).filled()),
            Rectangle::new([(x - 0.3, q[1]), (x + 0.3, q[3])], BLUE.stroke_width(1)),
        ])?;
        chart.draw_series([
            PathElement::new(
                vec![(x - 0.3, q[2]), (x + 0.3, q[2])],
                BLACK.stroke_width(2),
            ),
            PathElement::new(vec![(x, q[0]), (x, q[1])], BLUE.stroke_width(1)),
            PathElement::new(vec![(x, q[3]), (x, q[4])], BLUE.stroke_width(1)),
            PathElement::new(
                vec![(x - 0.12, q[0]), (x + 0.12, q[0])],
                BLUE.stroke_width(1),
            ),
            PathElement::new(
                vec![(x - 0.12, q[4]), (x + 0.12, q[4])],
                BLUE.stroke_width(1),
            ),
        ])?;
    }
    root.present()?;
    Ok(())
}

/// The share of the transactions in each hour of the day and on each day of the week, in
/// the users' local time.
fn draw_hours(path: &std::path::Path, hours: &[u64; 24], weekdays: &[u64; 7]) -> Plot {
    let root = SVGBackend::new(path, (900, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(640);
    println!("hour of day (local), % of transactions:");
    let hour_labels: Vec<String> = (0..24).map(|h| format!("{h:02}")).collect();
    bars(
        &left,
        "Per hour of the users' local day",
        hours,
        &hour_labels,
        3,
    )?;
    println!(
        "day of week (local), % of transactions (days in the range differ by at most one of each):"
    );
    let days: Vec<String> = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        .map(String::from)
        .to_vec();
    bars(&right, "Per local day of week", weekdays, &days, 1)?;
    root.present()?;
    Ok(())
}

/// Bars of each count's share of the total, labelled every `every`th bar.
fn bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    counts: &[u64],
    labels: &[String],
    every: usize,
) -> Plot
where
    DB::ErrorType: 'static,
{
    let total = counts.iter().sum::<u64>().max(1) as f64;
    let shares: Vec<f64> = counts.iter().map(|c| *c as f64 / total * 100.0).collect();
    let top = shares.iter().fold(1.0f64, |a, b| a.max(*b)) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(46)
        .build_cartesian_2d(-0.5f64..counts.len() as f64 - 0.5, 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(counts.len())
        .x_label_formatter(&|x| label(labels, *x, every))
        .y_label_formatter(&|y| format!("{y:.0} %"))
        .draw()?;
    for (i, s) in shares.iter().enumerate() {
        println!("  {:<4} {s:>5.2}", labels[i]);
        let x = i as f64;
        chart.draw_series([Rectangle::new(
            [(x - 0.38, 0.0), (x + 0.38, *s)],
            BLUE.filled(),
        )])?;
    }
    Ok(())
}

/// For each user country, the currencies its users paid in (stacked shares).
fn draw_currencies(path: &std::path::Path, by_country: &BTreeMap<String, [u64; 7]>) -> Plot {
    let countries: Vec<&String> = by_country.keys().collect();
    let root = SVGBackend::new(path, (900, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Currencies paid in, per user country", ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .right_y_label_area_size(10)
        .build_cartesian_2d(-0.5f64..countries.len() as f64 + 1.5, 0.0f64..100.0)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(countries.len() + 2)
        .x_label_formatter(&|x| label(&countries, *x, 1))
        .y_label_formatter(&|y| format!("{y:.0} %"))
        .draw()?;
    println!("currency per country (% of the country's transactions):");
    for (i, (country, counts)) in by_country.iter().enumerate() {
        let total = counts.iter().sum::<u64>().max(1) as f64;
        let mut base = 0.0;
        let mut line = format!("  {country:<4} n={total:<7}");
        for (c, count) in counts.iter().enumerate() {
            let share = *count as f64 / total * 100.0;
            if share > 0.0 {
                line += &format!(" {} {share:.1}", CURRENCIES[c].code.as_str());
            }
            let x = i as f64;
            chart.draw_series([Rectangle::new(
                [(x - 0.35, base), (x + 0.35, base + share)],
                COLORS[c].filled(),
            )])?;
            base += share;
        }
        println!("{line}");
    }
    // the legend: one swatch per currency, right of the bars
    for (c, mix) in CURRENCIES.iter().enumerate() {
        let y = 95.0 - c as f64 * 8.0;
        let x = countries.len() as f64 + 0.1;
        chart.draw_series([Rectangle::new(
            [(x, y - 3.0), (x + 0.3, y + 3.0)],
            COLORS[c].filled(),
        )])?;
        chart.draw_series([Text::new(
            mix.code.as_str().to_owned(),
            (x + 0.45, y + 2.5),
            ("sans-serif", 14),
        )])?;
    }
    root.present()?;
    Ok(())
}

/// Transactions per month: the volume grows as users register.
fn draw_months(path: &std::path::Path, months: &BTreeMap<(i32, u32), u64>) -> Plot {
    let labels: Vec<String> = months.keys().map(|(y, m)| format!("{y}-{m:02}")).collect();
    let top = months.values().copied().max().unwrap_or(1) as f64 * 1.15;
    let root = SVGBackend::new(path, (900, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Transactions per month (the user base grows each month)",
            ("sans-serif", 18),
        )
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..labels.len() as f64 - 0.5, 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(labels.len())
        .x_label_formatter(&|x| label(&labels, *x, 1))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    println!("transactions per month:");
    for (i, ((y, m), count)) in months.iter().enumerate() {
        println!("  {y}-{m:02} {count}");
        let x = i as f64;
        chart.draw_series([Rectangle::new(
            [(x - 0.35, 0.0), (x + 0.35, *count as f64)],
            BLUE.filled(),
        )])?;
    }
    root.present()?;
    Ok(())
}
