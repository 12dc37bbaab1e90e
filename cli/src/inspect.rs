//! `vecsync inspect`: look into a region's store: count, digest, one point.

use anyhow::{Context, bail};
use serde_json::json;
use std::path::PathBuf;
use vecsync_consumer::apply::State;
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_schemas::config::RegionConfig;
use vecsync_schemas::event::PointId;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The region's config file (its `store.path` is inspected).
    #[arg(
        long,
        env = "VECSYNC_CONFIG",
        required_unless_present = "store",
        conflicts_with = "store"
    )]
    config: Option<PathBuf>,
    /// The embedded store's directory, instead of a config.
    #[arg(long)]
    store: Option<PathBuf>,
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

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = match (&args.config, &args.store) {
        (Some(config), _) => RegionConfig::load(config)?.store.path,
        (None, Some(store)) => store.clone(),
        (None, None) => bail!("give --config or --store"),
    };
    if !root.is_dir() {
        bail!("store directory {} does not exist", root.display());
    }
    let store = EdgeStore::open(&root)?;
    store
        .open_collection(&args.collection)
        .with_context(|| format!("store {}", root.display()))?;
    match args.what {
        What::Count => println!("{}", store.count(&args.collection)?),
        What::Digest => {
            let mut digest = Digest::new();
            store.scan(&args.collection, |id, v| digest.add(&id, &v))?;
            println!("{digest}");
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
