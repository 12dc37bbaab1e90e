//! `vecsync consume`: a consumer worker of one region, with `/metrics`,
//! `/healthz`, `/readyz` and `/v1/freshness` on `consumer.listen`.

use anyhow::Context;
use std::path::PathBuf;
use vecsync_consumer::freshness::Watermarks;
use vecsync_consumer::ready::Readiness;
use vecsync_consumer::{store, worker};
use vecsync_schemas::config::RegionConfig;

/// The arguments of a command that needs only the region's config.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The region's config file.
    #[arg(long, env = "VECSYNC_CONFIG")]
    pub config: PathBuf,
}

impl Args {
    pub fn load(&self) -> anyhow::Result<RegionConfig> {
        Ok(RegionConfig::load(&self.config)?)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.load()?;
    let metrics = vecsync_producer::metrics::prometheus();
    let store = store::open(&config.store).context("cannot open the store ([store])")?;
    let listener = tokio::net::TcpListener::bind(config.consumer.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (consumer.listen)",
                config.consumer.listen
            )
        })?;
    let watermarks = Watermarks::new();
    let readiness = Readiness::new();
    let access = vecsync_consumer::api::StoreAccess {
        store: store.clone(),
        config: std::sync::Arc::new(config.clone()),
        watermarks: watermarks.clone(),
    };
    let api = vecsync_consumer::api::router(watermarks.clone(), readiness.clone(), move || {
        metrics.render()
    })
    .merge(vecsync_consumer::api::store_routes(access));
    let tls = vecsync_serve::Tls::of(config.consumer.tls.as_ref(), "consumer.tls")?;
    tracing::info!(listen = %config.consumer.listen, tls = tls.is_some(), "consumer API listening");
    let server = tokio::spawn(vecsync_serve::serve(
        listener,
        tls,
        api,
        std::future::pending(),
    ));
    let result = worker::run(
        &config,
        store,
        watermarks,
        readiness,
        crate::shutdown_signal(),
    )
    .await;
    server.abort();
    let stats = result.with_context(|| format!("worker of region {} failed", config.region))?;
    let r = stats.reorder;
    println!(
        "applied {} events ({} unchanged, {} parked, {} dead letters) in {} batches, \
         {} rebalance drains; reorder buffer: {} released full, {} late, {} idle sources",
        stats.applied,
        stats.unchanged,
        stats.parked,
        stats.dead_letters,
        stats.batches,
        stats.revocations,
        r.forced,
        r.late,
        r.idled
    );
    Ok(())
}
