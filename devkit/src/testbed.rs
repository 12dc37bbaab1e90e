//! A region to test against: a broker (tansu, or Apache Kafka), a
//! development registry and a config pointing at both, with topic names no
//! other test uses.

use crate::broker::{ReadRecord, Storage, Tansu, read_topic, unique_name};
use crate::kafka::Kafka;
use crate::registry::{DevRegistry, RunningRegistry};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vecsync_schemas::config::RegionConfig;
use vecsync_schemas::event::DeltaEvent;
use vecsync_schemas::registry::RegistryClient;
use vecsync_schemas::wire::Decoder;

/// The broker a test region runs on.
#[derive(Debug)]
pub enum Broker {
    Tansu(Tansu),
    Kafka(Kafka),
}

impl Broker {
    /// The secured listener of an Apache Kafka broker started with one.
    pub fn secure(&self) -> Option<&crate::kafka::SecureListener> {
        match self {
            Self::Tansu(_) => None,
            Self::Kafka(k) => k.secure(),
        }
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        match self {
            Self::Tansu(t) => t.brokers(),
            Self::Kafka(k) => k.brokers(),
        }
    }

    pub fn create_topic(&self, name: &str, partitions: u32) -> std::io::Result<()> {
        match self {
            Self::Tansu(t) => t.create_topic(name, partitions),
            Self::Kafka(k) => k.create_topic(name, partitions),
        }
    }

    /// Kills the broker, as a crash would.
    pub fn stop(&mut self) {
        match self {
            Self::Tansu(t) => t.stop(),
            Self::Kafka(k) => k.kill(),
        }
    }

    /// The broker's own log.
    pub fn log_path(&self) -> PathBuf {
        match self {
            Self::Tansu(t) => t.log_path().to_owned(),
            Self::Kafka(k) => k.log_path(),
        }
    }

    /// Starts it again on the same port and data (tansu keeps data only
    /// with SQLite storage).
    pub fn restart(&mut self) -> std::io::Result<()> {
        match self {
            Self::Tansu(t) => t.restart(),
            Self::Kafka(k) => {
                k.kill();
                k.start_again()
            }
        }
    }
}

/// One region's moving parts, stopped when dropped.
#[derive(Debug)]
pub struct TestRegion {
    pub broker: Broker,
    pub registry: RunningRegistry,
    pub config: RegionConfig,
}

impl TestRegion {
    /// Points the region's store at a Qdrant endpoint over the real
    /// engine serving the collections under `root`, as a region's workers
    /// share one Qdrant server in production. The endpoint serves until
    /// dropped.
    pub async fn serve_qdrant(
        &mut self,
        root: &std::path::Path,
    ) -> std::io::Result<crate::qdrant::QdrantEndpoint> {
        let endpoint = crate::qdrant::QdrantEndpoint::start(root, "127.0.0.1:0", None).await?;
        self.config.store.backend = vecsync_schemas::config::StoreBackend::Qdrant;
        self.config.store.url = endpoint.url();
        Ok(endpoint)
    }

    /// Starts an in-memory broker and a registry, and a config for region
    /// `us-east` with a collection `docs` of `dimension` vectors encoded as
    /// `encoding`. `extra` is TOML appended to the config (tables such as
    /// `[producer]` may be given in full). `None` when tansu is not installed
    /// and the user opted out of such tests (see [`Tansu::start`]).
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
        let broker = Broker::Tansu(Tansu::start_with(storage)?);
        Some(Self::start_on(broker, dimension, encoding, extra).await)
    }

    /// Like [`TestRegion::start`], on a single-node Apache Kafka broker.
    /// `None` when Kafka's jars are missing and the user opted out of such
    /// tests (see [`Kafka::start`]).
    pub async fn start_kafka(dimension: u32, encoding: &str, extra: &str) -> Option<Self> {
        let broker = tokio::task::spawn_blocking(Kafka::start)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Some(Self::start_on(Broker::Kafka(broker), dimension, encoding, extra).await)
    }

    /// Like [`TestRegion::start_kafka`], with the region's clients on the
    /// broker's `SASL_SSL` listener ([`Kafka::start_secured`]); the
    /// devkit's own helpers (`broker.create_topic`, [`TestRegion::read`])
    /// use its plaintext one.
    pub async fn start_kafka_secured(dimension: u32, encoding: &str, extra: &str) -> Option<Self> {
        Self::start_kafka_secured_with(dimension, encoding, extra, &[], false).await
    }

    /// Like [`TestRegion::start_kafka_secured`], with more SCRAM users and,
    /// with `acls`, the broker's authorizer ([`Kafka::start_secured_with`]).
    pub async fn start_kafka_secured_with(
        dimension: u32,
        encoding: &str,
        extra: &str,
        users: &[&str],
        acls: bool,
    ) -> Option<Self> {
        let users: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        let broker = tokio::task::spawn_blocking(move || {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            Kafka::start_secured_with(&users, acls)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        let secure = broker.secure()?.clone();
        let mut region = Self::start_on(Broker::Kafka(broker), dimension, encoding, extra).await;
        region.config.kafka.brokers = secure.brokers();
        region.config.kafka.security = secure.security();
        Some(region)
    }

    /// Like [`TestRegion::start`], on `broker`.
    pub async fn start_on(broker: Broker, dimension: u32, encoding: &str, extra: &str) -> Self {
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
fetch_wait_max_ms = {fetch_wait_max_ms}
[registry]
url = "{registry}"
[collections.docs]
dimension = {dimension}
distance = "cosine"
encoding = "{encoding}"
"#,
            brokers = broker.brokers(),
            registry = registry.url(),
            // tansu answers a fetch only when its wait runs out; Kafka
            // answers as soon as data arrives, and short waits only flood it.
            fetch_wait_max_ms = match broker {
                Broker::Tansu(_) => 5,
                Broker::Kafka(_) => 500,
            },
        );
        let config = RegionConfig::parse(&text, "test region", std::iter::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            broker,
            registry,
            config,
        }
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
            .unwrap_or_else(|e| {
                let log = self.broker.log_path();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                panic!(
                    "failed to read the topic back: {e}; the end of the broker's log ({}):\n{}",
                    log.display(),
                    lines[lines.len().saturating_sub(30)..].join("\n")
                )
            })
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
