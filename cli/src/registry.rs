//! `vecsync registry`: the development Schema Registry.

use anyhow::Context;
use std::path::PathBuf;
use vecsync_devkit::registry::DevRegistry;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(
        long,
        default_value = "127.0.0.1:8081",
        env = "VECSYNC_REGISTRY_LISTEN"
    )]
    listen: String,
    /// JSON file that keeps subjects and ids across restarts (in memory if absent).
    #[arg(long, env = "VECSYNC_REGISTRY_DATA")]
    data: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let registry = match &args.data {
        Some(path) => DevRegistry::open(path).map_err(anyhow::Error::msg)?,
        None => DevRegistry::in_memory(),
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::warn!(
        listen = %listener.local_addr()?,
        data = ?args.data,
        "development schema registry: not for production (use Confluent, Karapace, Apicurio or Redpanda)"
    );
    axum::serve(listener, registry.router())
        .with_graceful_shutdown(crate::shutdown_signal())
        .await
        .context("registry server failed")?;
    tracing::info!("registry stopped");
    Ok(())
}
