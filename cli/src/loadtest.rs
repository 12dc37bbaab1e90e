//! `vecsync loadtest`: an open-loop load across regions in one process,
//! with replication latency per region pair, throughput, bytes on the wire
//! and completeness, written as JSON and Markdown, with PNG charts.

use anyhow::{Context, bail};
use std::path::PathBuf;
use vecsync_loadtest::bed::ClusterKind;
use vecsync_loadtest::recorder::Book;
use vecsync_loadtest::run::{self, Scenario};
use vecsync_schemas::vector::Encoding;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A scenario file (TOML, the fields of the report's `scenario`); the
    /// flags override it. Without one: two regions at 2,000 768-d sq8
    /// events/s each for 30 s.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seconds of load.
    #[arg(long)]
    duration: Option<u64>,
    /// Events per second each region writes.
    #[arg(long)]
    rate: Option<u32>,
    /// Regions (2 to 6).
    #[arg(long)]
    regions: Option<usize>,
    /// Vector dimension.
    #[arg(long)]
    dimension: Option<u32>,
    /// Vector encoding on the wire: f32, f16, sq8, sq4 or binary.
    #[arg(long)]
    encoding: Option<Encoding>,
    /// Each region's cluster: mock (in-process), tansu, or kafka (Apache
    /// Kafka with MirrorMaker 2 between regions, unless the scenario says
    /// `mirrored = false`; needs Java and the jars).
    #[arg(long)]
    broker: Option<ClusterKind>,
    /// Also measure recall@10 in the remote region for each encoding, on
    /// the real-embedding fixture.
    #[arg(long)]
    recall: bool,
    /// Run the naive pipeline instead (JSON float arrays, one message and
    /// one store write per point), with the scenario's regions, rate,
    /// duration and dimension, for comparison; writes naive.json and
    /// naive.md.
    #[arg(long, conflicts_with = "recall")]
    naive: bool,
    /// Directory for report.json, report.md and the charts (PNG).
    #[arg(long, default_value = "loadtest-report")]
    report: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut scenario = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("{} is not a scenario", path.display()))?
        }
        None => Scenario::default(),
    };
    if let Some(v) = args.duration {
        scenario.duration_s = v;
    }
    if let Some(v) = args.rate {
        scenario.rate = v;
    }
    if let Some(v) = args.regions {
        scenario.regions = v;
    }
    if let Some(v) = args.dimension {
        scenario.dimension = v;
    }
    if let Some(v) = args.encoding {
        scenario.encoding = v;
    }
    if let Some(v) = args.broker {
        scenario.broker = v;
    }
    std::fs::create_dir_all(&args.report)
        .with_context(|| format!("cannot create {}", args.report.display()))?;
    if args.naive {
        return naive(&scenario, &args.report).await;
    }
    let book = Book::install()?;
    eprintln!(
        "load test: {} regions, {} events/s each for {} s, {}-d {}",
        scenario.regions, scenario.rate, scenario.duration_s, scenario.dimension, scenario.encoding
    );
    let mut report =
        until_stopped(run::run(&scenario, &book, |line| eprintln!("  {line}"))).await?;
    if args.recall {
        eprintln!("recall@10 per encoding on the real-embedding fixture");
        let encodings = [
            Encoding::F32,
            Encoding::F16,
            Encoding::Sq8,
            Encoding::Sq4,
            Encoding::Binary,
        ];
        report.recall = vecsync_loadtest::recall::recall(
            &encodings,
            200,
            report.scenario.vector_datatype,
            &book,
        )
        .await?;
    }
    std::fs::write(
        args.report.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let markdown = report.markdown();
    std::fs::write(args.report.join("report.md"), &markdown)?;
    println!("{markdown}");
    match vecsync_loadtest::charts::draw(&report, &args.report) {
        Ok(files) => {
            let names: Vec<String> = files
                .iter()
                .filter_map(|f| Some(f.file_name()?.to_string_lossy().into_owned()))
                .collect();
            println!("charts: {}", names.join(", "));
        }
        Err(e) => eprintln!("charts not drawn: {e:#}"),
    }
    println!("report written to {}", args.report.display());
    if !report.complete() {
        bail!("events are missing or the regions disagree; see the report");
    }
    Ok(())
}

async fn naive(scenario: &Scenario, dir: &std::path::Path) -> anyhow::Result<()> {
    eprintln!(
        "the naive pipeline: {} regions, {} points/s each for {} s, {}-d",
        scenario.regions, scenario.rate, scenario.duration_s, scenario.dimension
    );
    let report = until_stopped(vecsync_loadtest::naive::run(scenario, |line| {
        eprintln!("  {line}")
    }))
    .await?;
    std::fs::write(
        dir.join("naive.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let markdown = report.markdown();
    std::fs::write(dir.join("naive.md"), &markdown)?;
    println!("{markdown}");
    println!("report written to {}", dir.display());
    if !report.complete {
        bail!("the naive pipeline did not deliver every point in time; see the report");
    }
    Ok(())
}

/// Runs `work` until it ends or the process is asked to stop (Ctrl-C,
/// SIGTERM). Stopped, the work is dropped, and with it the regions: their
/// brokers, MirrorMaker 2s and proxies, which run as processes of their
/// own, are killed rather than left behind.
async fn until_stopped<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        result = work => result,
        () = crate::shutdown_signal() => bail!("interrupted; the load test's processes were stopped"),
    }
}
