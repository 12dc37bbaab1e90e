//! `vecsync consume`: a consumer worker of one region.

use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::worker;
use vecsync_schemas::config::RegionConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The region's config file.
    #[arg(long, env = "VECSYNC_CONFIG")]
    config: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = RegionConfig::load(&args.config)?;
    let store = EdgeStore::open(&config.store.path)
        .with_context(|| format!("cannot open the store at {}", config.store.path.display()))?;
    let stats = worker::run(&config, Arc::new(store), crate::shutdown_signal())
        .await
        .with_context(|| format!("worker of region {} failed", config.region))?;
    let r = stats.reorder;
    println!(
        "applied {} events ({} unchanged, {} parked, {} dead letters) in {} batches; \
         reorder buffer: {} released full, {} late, {} idle sources",
        stats.applied,
        stats.unchanged,
        stats.parked,
        stats.dead_letters,
        stats.batches,
        r.forced,
        r.late,
        r.idled
    );
    Ok(())
}
