//! `vecsync inspect`: look into a region's store: count, digest, one point.

use anyhow::{Context, bail};
use serde_json::json;
use std::path::PathBuf;
use vecsync_consumer::apply::State;
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store;
use vecsync_schemas::config::{RegionConfig, StoreBackend, StoreConfig};
use vecsync_schemas::event::PointId;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The region's config file (the store its `[store]` section names is
    /// inspected).
    #[arg(
        long,
        env = "VECSYNC_CONFIG",
        required_unless_present = "store",
        conflicts_with = "store"
    )]
    config: Option<PathBuf>,
    /// The store instead of a config: the embedded store's directory, or a
    /// Qdrant server's gRPC URL (`http://…` or `https://…`).
    #[arg(long, value_name = "PATH_OR_URL")]
    store: Option<String>,
    /// API key of the Qdrant server given by `--store`.
    #[arg(long, env = "VECSYNC_STORE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Collection to inspect.
    #[arg(long)]
    collection: String,
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Live points (tombstones not counted).
    Count,
    /// The order-independent state digest: equal digests, equal data.
    Digest,
    /// One point: version, state, vector, payload and parked changes, as JSON.
    Get {
        /// Point id: an unsigned integer or a UUID.
        id: String,
    },
}

/// The store config that `--config` or `--store` names.
fn store_config(args: &Args) -> anyhow::Result<StoreConfig> {
    let mut store = match (&args.config, &args.store) {
        (Some(config), _) => RegionConfig::load(config)?.store,
        (None, Some(store)) if store.starts_with("http://") || store.starts_with("https://") => {
            StoreConfig {
                backend: StoreBackend::Qdrant,
                url: store.clone(),
                ..StoreConfig::default()
            }
        }
        (None, Some(store)) => StoreConfig {
            path: store.into(),
            ..StoreConfig::default()
        },
        (None, None) => bail!("give --config or --store"),
    };
    if args.api_key.is_some() {
        store.api_key.clone_from(&args.api_key);
    }
    if store.backend == StoreBackend::Edge && !store.path.is_dir() {
        bail!("store directory {} does not exist", store.path.display());
    }
    Ok(store)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = store_config(&args)?;
    let place = match config.backend {
        StoreBackend::Edge => config.path.display().to_string(),
        StoreBackend::Qdrant => config.url.clone(),
    };
    let store = store::open(&config).with_context(|| format!("store {place}"))?;
    store
        .open_collection(&args.collection)
        .with_context(|| format!("store {place}"))?;
    let store = store.as_ref();
    match args.what {
        What::Count => println!("{}", store.count(&args.collection)?),
        What::Digest => {
            println!("{}", Digest::of(store, &args.collection)?);
        }
        What::Get { id } => {
            let id: PointId = id.parse().map_err(anyhow::Error::msg)?;
            let held = store.read(&args.collection, &[id])?;
            let Some(record) = held.get(&id) else {
                bail!("point {id} is not in collection {}", args.collection);
            };
            let (now, parked) = record.current();
            let (state, vector, payload) = match now.state {
                State::Live(c) => ("live", json!(c.vector), json!(c.payload)),
                State::Deleted => ("deleted", json!(null), json!(null)),
            };
            let out = json!({
                "id": id.to_string(),
                "version": now.version.to_string(),
                "state": state,
                "vector": vector,
                "payload": payload,
                "parked": parked,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
