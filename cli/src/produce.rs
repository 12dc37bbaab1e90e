//! `vecsync produce`: publish mutations (HTTP ingest API, files) and train
//! PQ codebooks.

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_producer::file::{LoadOptions, Progress, load};
use vecsync_producer::{Publisher, http, metrics};
use vecsync_schemas::avro::AvroRecord;
use vecsync_schemas::config::RegionConfig;
use vecsync_schemas::npy;
use vecsync_schemas::vector::PqTrainer;

/// How long queued events may take to be acknowledged at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve the HTTP ingest API for ingestion jobs.
    Serve {
        /// The region's config file.
        #[arg(long, env = "VECSYNC_CONFIG")]
        config: PathBuf,
    },
    /// Load a JSON Lines or .npy file into a collection.
    ///
    /// JSONL: one Qdrant-style point per line, {"id": 7, "vector": [...],
    /// "payload": {...}}, or {"id": 7, "delete": true}. NumPy: a 2-d float
    /// array with ids from --ids or --id-start. A resume point beside the
    /// input lets a second run after a crash or Ctrl-C carry on.
    File(FileArgs),
    /// Train a PQ codebook on sample vectors (.npy) for a collection
    /// configured with `encoding = "pq"`.
    TrainCodebook(TrainArgs),
}

#[derive(Debug, clap::Args)]
struct FileArgs {
    /// The region's config file.
    #[arg(long, env = "VECSYNC_CONFIG")]
    config: PathBuf,
    /// Collection to load into.
    #[arg(long)]
    collection: String,
    /// Input file: .jsonl, .ndjson or .npy.
    #[arg(long)]
    input: PathBuf,
    /// .npy input: ids, one per row (text, one per line, or a 1-d integer .npy).
    #[arg(long, conflicts_with = "id_start")]
    ids: Option<PathBuf>,
    /// .npy input: ids count up from this one.
    #[arg(long)]
    id_start: Option<u64>,
    /// Points per batch.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Batches awaiting the broker's acknowledgement at once.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Skip invalid lines (each logged with its line number) instead of
    /// stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
    /// Ignore an existing resume point and start from the beginning.
    #[arg(long)]
    restart: bool,
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// Sample vectors: a 2-d float .npy.
    #[arg(long)]
    input: PathBuf,
    /// Collection the codebook is for.
    #[arg(long)]
    collection: String,
    /// Codebook version; events name the codebook as <collection>@<version>.
    #[arg(long, default_value_t = 1)]
    version: u32,
    /// Sub-spaces; the dimension must be a multiple of it.
    #[arg(long, default_value_t = 96)]
    subspaces: usize,
    /// Centroids per sub-space (at most 256).
    #[arg(long, default_value_t = 256)]
    centroids: usize,
    /// k-means iterations.
    #[arg(long, default_value_t = 12)]
    iterations: usize,
    /// Train on at most this many vectors from the start of the file.
    #[arg(long, default_value_t = 20_000)]
    sample: usize,
    /// Where to write the codebook (the collection's `codebook_file`).
    #[arg(long)]
    out: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Serve { config } => serve(&config).await,
        Command::File(args) => file(args).await,
        Command::TrainCodebook(args) => train(args),
    }
}

async fn connect(config: &Path) -> anyhow::Result<(RegionConfig, Publisher)> {
    let config = RegionConfig::load(config)?;
    let publisher = Publisher::connect(&config).await.with_context(|| {
        format!(
            "cannot start publishing for region {} (brokers {}, registry {})",
            config.region, config.kafka.brokers, config.registry.url
        )
    })?;
    Ok((config, publisher))
}

async fn serve(config: &Path) -> anyhow::Result<()> {
    let metrics = metrics::prometheus();
    let (config, publisher) = connect(config).await?;
    let publisher = Arc::new(publisher);
    http::serve(
        publisher.clone(),
        &config.ingest,
        metrics,
        crate::shutdown_signal(),
    )
    .await
    .with_context(|| format!("ingest API on {} failed", config.ingest.listen))?;
    tracing::info!("ingest API stopped; waiting for queued events");
    match Arc::try_unwrap(publisher) {
        Ok(publisher) => publisher.close(DRAIN_TIMEOUT).await?,
        Err(_) => tracing::warn!("requests still hold the publisher; not waiting"),
    }
    Ok(())
}

async fn file(args: FileArgs) -> anyhow::Result<()> {
    let (_, publisher) = connect(&args.config).await?;
    let options = LoadOptions {
        collection: args.collection,
        input: args.input,
        ids: args.ids,
        id_start: args.id_start,
        batch_size: args.batch_size,
        in_flight: args.in_flight,
        skip_invalid: args.skip_invalid,
        restart: args.restart,
    };
    let mut report = ProgressReport::new();
    let result = load(&publisher, &options, crate::shutdown_signal(), |p| {
        report.update(p)
    })
    .await;
    report.finish();
    publisher.close(DRAIN_TIMEOUT).await?;
    let summary = result?;
    let p = &summary.progress;
    let secs = summary.elapsed.as_secs_f64().max(1e-3);
    let this_run = p.events - summary.resumed_from_events;
    println!(
        "{} {this_run} events from {} ({} skipped{}): {} MB read, {} MB published in {secs:.1} s ({:.0} events/s)",
        if summary.interrupted {
            "interrupted after"
        } else {
            "loaded"
        },
        options.input.display(),
        p.skipped,
        if summary.resumed_from_events > 0 {
            format!(
                ", resumed after {} earlier events",
                summary.resumed_from_events
            )
        } else {
            String::new()
        },
        mb(p.input_bytes_done),
        mb(p.published_bytes),
        this_run as f64 / secs,
    );
    if summary.interrupted {
        println!(
            "run the same command again to resume from {}",
            options.resume_path().display()
        );
    }
    Ok(())
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// A progress bar on a terminal; a log line every 10 s otherwise.
struct ProgressReport {
    bar: Option<ProgressBar>,
    started: Instant,
    last_log: Instant,
}

impl ProgressReport {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {msg} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Self {
            bar,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    fn update(&mut self, p: &Progress) {
        let rate = p.events as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        match &self.bar {
            Some(bar) => {
                bar.set_length(p.input_bytes_total);
                bar.set_position(p.input_bytes_done);
                bar.set_message(format!("{} events, {rate:.0}/s", p.events));
            }
            None if self.last_log.elapsed() >= Duration::from_secs(10) => {
                self.last_log = Instant::now();
                tracing::info!(
                    events = p.events,
                    skipped = p.skipped,
                    done_pct = (100 * p.input_bytes_done / p.input_bytes_total.max(1)),
                    events_per_sec = rate as u64,
                    "loading"
                );
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("cannot open {}", args.input.display()))?;
    let mut r = BufReader::new(file);
    let header = npy::read_header(&mut r).with_context(|| args.input.display().to_string())?;
    let rows = usize::try_from(header.rows)?.min(args.sample);
    if rows < args.centroids {
        bail!(
            "{rows} sample vectors for {} centroids; give more vectors or fewer centroids",
            args.centroids
        );
    }
    let (mut buf, mut row) = (Vec::new(), Vec::new());
    let mut data = Vec::with_capacity(rows * header.cols);
    for _ in 0..rows {
        npy::read_f32_row(&mut r, &header, &mut buf, &mut row)
            .with_context(|| args.input.display().to_string())?;
        data.extend_from_slice(&row);
    }
    let data = ndarray::Array2::from_shape_vec((rows, header.cols), data)?;
    let trainer = PqTrainer {
        subspaces: args.subspaces,
        centroids: args.centroids,
        iterations: args.iterations,
        seed: PqTrainer::default().seed,
    };
    let started = Instant::now();
    let book = trainer.train(&args.collection, args.version, data.view())?;
    let mut bytes = Vec::new();
    book.write_avro(&mut bytes);
    std::fs::write(&args.out, &bytes)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "trained codebook {} ({} sub-spaces × {} centroids) on {rows} vectors in {:.1} s: {}",
        book.id(),
        args.subspaces,
        args.centroids,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
