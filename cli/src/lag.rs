//! `vecsync lag`: the lag exporter of one region, serving `/metrics`,
//! `/healthz` and `/readyz` on `lag.listen`.

use anyhow::Context;

pub use crate::consume::Args;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.load()?;
    let listen = config.lag.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (lag.listen)"))?;
    let running = vecsync_consumer::lag::spawn(&config)
        .map_err(anyhow::Error::msg)
        .context("cannot start the lag exporter ([lag])")?;
    let router = running.router();
    let tls = vecsync_serve::Tls::of(config.lag.tls.as_ref(), "lag.tls")?;
    tracing::info!(%listen, tls = tls.is_some(), interval_ms = config.lag.interval_ms, "lag exporter listening");
    vecsync_serve::serve(listener, tls, router, crate::shutdown_signal())
        .await
        .context("the lag exporter's server failed")?;
    tokio::task::spawn_blocking(move || running.stop()).await?;
    Ok(())
}
