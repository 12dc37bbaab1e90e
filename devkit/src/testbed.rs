//! A region to test against: a tansu broker, a development registry and a
//! config pointing at both, with topic names no other test uses.

use crate::broker::{ReadRecord, Storage, Tansu, read_topic, unique_name};
use crate::registry::{DevRegistry, RunningRegistry};
use std::sync::Arc;
use std::time::Duration;
use vecsync_schemas::config::RegionConfig;
use vecsync_schemas::event::DeltaEvent;
use vecsync_schemas::registry::RegistryClient;
use vecsync_schemas::wire::Decoder;

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

/// Whether a record is one of the producer's partition heartbeats.
pub fn is_heartbeat(r: &ReadRecord) -> bool {
    r.key
        .as_deref()
        .is_some_and(|k| k.starts_with(b"__heartbeat."))
}

impl TestRegion {
    /// Reads `topic` from the start until `wanted` records for which `keep`
    /// holds have arrived, or `timeout` passes. To show that no more than
    /// some records arrive, ask for one more and give a short timeout.
    pub async fn read(
        &self,
        topic: &str,
        wanted: usize,
        timeout: Duration,
        keep: fn(&ReadRecord) -> bool,
    ) -> Vec<ReadRecord> {
        let brokers = self.broker.brokers();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || read_topic(&brokers, &topic, wanted, timeout, keep))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
            .unwrap_or_else(|e| panic!("failed to read the topic back: {e}"))
    }

    /// Decodes delta-topic records through the region's registry.
    pub async fn decode(&self, records: &[ReadRecord]) -> Vec<DeltaEvent> {
        let registry = RegistryClient::new(&self.registry.url(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
        let decoder = Decoder::<DeltaEvent>::new(Arc::new(registry));
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let event = decoder.decode(&r.value).await;
            out.push(
                event.unwrap_or_else(|e| panic!("record at {}@{}: {e}", r.partition, r.offset)),
            );
        }
        out
    }

    /// The events other than heartbeats on the delta topic, decoded:
    /// [`TestRegion::read`] then [`TestRegion::decode`].
    pub async fn events(&self, wanted: usize, timeout: Duration) -> Vec<DeltaEvent> {
        let records = self
            .read(&self.config.kafka.topic, wanted, timeout, |r| {
                !is_heartbeat(r)
            })
            .await;
        self.decode(&records).await
    }
}
