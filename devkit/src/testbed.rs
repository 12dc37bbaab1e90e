//! A region to test against: a tansu broker, a development registry and a
//! config pointing at both, with topic names no other test uses.

use crate::broker::{Storage, Tansu, unique_name};
use crate::registry::{DevRegistry, RunningRegistry};
use vecsync_schemas::config::RegionConfig;

/// One region's moving parts, stopped when dropped.
#[derive(Debug)]
pub struct TestRegion {
    pub broker: Tansu,
    pub registry: RunningRegistry,
    pub config: RegionConfig,
}

impl TestRegion {
    /// Starts an in-memory broker and a registry, and a config for region
    /// `us-east` with a collection `docs` of `dimension` vectors encoded as
    /// `encoding`. `extra` is TOML appended to the config (tables such as
    /// `[producer]` may be given in full). `None` when tansu is not installed
    /// outside CI (see [`Tansu::start`]).
    pub async fn start(dimension: u32, encoding: &str, extra: &str) -> Option<Self> {
        Self::start_with(Storage::Memory, dimension, encoding, extra).await
    }

    /// Like [`TestRegion::start`], with the broker's storage given.
    pub async fn start_with(
        storage: Storage,
        dimension: u32,
        encoding: &str,
        extra: &str,
    ) -> Option<Self> {
        let broker = Tansu::start_with(storage)?;
        let registry = DevRegistry::in_memory()
            .spawn("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("failed to start the development registry: {e}"));
        let topic = unique_name("vecsync.deltas");
        let text = format!(
            r#"
region = "us-east"
{extra}
[kafka]
brokers = "{brokers}"
topic = "{topic}"
codebook_topic = "{topic}.codebooks"
partitions = 3
fetch_wait_max_ms = 5
[registry]
url = "{registry}"
[collections.docs]
dimension = {dimension}
distance = "cosine"
encoding = "{encoding}"
"#,
            brokers = broker.brokers(),
            registry = registry.url(),
        );
        let config = RegionConfig::parse(&text, "test region", std::iter::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        Some(Self {
            broker,
            registry,
            config,
        })
    }
}
