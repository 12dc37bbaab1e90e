//! `vecsync`: one binary with a subcommand per job.

mod consume;
mod demo;
mod inspect;
mod lag;
mod loadtest;
mod memory;
mod produce;
mod registry;
mod snapshot;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "vecsync",
    version,
    about = "Cross-region replication for vector search"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a DEVELOPMENT Schema Registry (Confluent REST API subset).
    ///
    /// For the demo, local walkthroughs and tests only: it runs in one process
    /// and keeps its data in at most one JSON file. In production point vecsync
    /// at Confluent Schema Registry, Karapace, Apicurio or Redpanda.
    Registry(registry::Args),
    /// Publish mutations: the HTTP ingest API, bulk loads from files, and
    /// PQ codebook training.
    Produce(produce::Args),
    /// Replay every source of the region into its store (a consumer worker).
    Consume(consume::Args),
    /// Look into a region's store: count, digest, or one point.
    Inspect(inspect::Args),
    /// Three regions in one process replicating to each other, with a live
    /// lag table, a convergence proof and the same query in every region.
    Demo(demo::Args),
    /// An open-loop load across regions in one process: replication
    /// latency per region pair, throughput, bytes on the wire, completeness.
    Loadtest(loadtest::Args),
    /// Take a snapshot of a running region's store, or seed a new region
    /// from one.
    Snapshot(snapshot::Args),
    /// Export consumer lag, MirrorMaker 2 lag and cluster reachability to
    /// Prometheus (the lag exporter).
    Lag(lag::Args),
}

/// glibc's allocator took 14% of a saturated worker's CPU; with mimalloc
/// the load test replicates 7% more (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    memory::tune();
    let cli = Cli::parse();
    // The demo prints its own progress; its parts only speak of trouble.
    let default_filter = match cli.command {
        Command::Demo(_) | Command::Loadtest(_) => "warn,qdrant_edge=error,librdkafka=error",
        _ => "info,qdrant_edge=error",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .init();
    match cli.command {
        Command::Registry(args) => registry::run(args).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Consume(args) => consume::run(args).await,
        Command::Inspect(args) => inspect::run(args),
        Command::Lag(args) => lag::run(args).await,
        Command::Snapshot(args) => snapshot::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Loadtest(args) => loadtest::run(args).await,
    }
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
