//! Regions in one process: each with its own Kafka cluster (librdkafka's
//! in-process `MockCluster`), a producer, a consumer worker reading every
//! other region's cluster directly, and an embedded store in a temporary
//! directory; one development registry for all. What the demo and the
//! load test run on.
//!
//! Mirrored ([`BedSpec::mirrored`]), regions are connected as MirrorMaker 2
//! connects them in production: a copier per flow reads the origin's
//! cluster across a [`WanLink`] (whose faults can be set) and writes
//! `<origin>.<topic>` on the region's own cluster, where its worker reads.
//! Each region's cluster is then a tansu broker: the mock cluster answers a
//! fetch with one record batch per partition, which a link's round trip
//! turns into a ceiling of a few dozen events per second.

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::worker::{self, RunningWorker};
use vecsync_devkit::broker::Tansu;
use vecsync_devkit::mirror::{Mirror, MirrorSpec};
use vecsync_devkit::proxy::{LinkFaults, WanLink};
use vecsync_devkit::registry::{DevRegistry, RunningRegistry};
use vecsync_producer::Publisher;
use vecsync_schemas::config::RegionConfig;
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::mm2::HEARTBEATS_TOPIC;
use vecsync_schemas::vector::Encoding;

/// Region names, in the order regions are added.
pub const NAMES: [&str; 6] = [
    "us-east",
    "eu-west",
    "ap-south",
    "sa-east",
    "af-south",
    "ca-central",
];
/// The one replicated collection.
pub const COLLECTION: &str = "docs";
const TOPIC: &str = "vecsync.deltas";
const CODEBOOKS: &str = "vecsync.codebooks";
const DEAD_LETTERS: &str = "vecsync.deadletters";

/// How the regions are set up.
#[derive(Debug, Clone)]
pub struct BedSpec {
    pub regions: usize,
    pub dimension: u32,
    pub encoding: Encoding,
    /// Heartbeats per partition: how long an event can wait for the
    /// watermark.
    pub heartbeat_interval_ms: u32,
    pub batch_max_events: usize,
    /// How often the workers flush their stores.
    pub flush_interval_ms: u64,
    /// Regions are connected by MirrorMaker-style copiers over WAN links,
    /// instead of each worker reading the other clusters directly.
    pub mirrored: bool,
    /// Each region's cluster is a tansu broker instead of librdkafka's mock
    /// cluster (always so when mirrored).
    pub tansu: bool,
}

/// One flow of a mirrored bed: origin → region, across a link.
#[derive(Debug)]
pub struct Flow {
    pub origin: usize,
    pub region: usize,
    pub link: WanLink,
    mirror: Mirror,
}

/// One running region.
pub struct Region {
    pub name: String,
    pub store: Arc<EdgeStore>,
    /// `None` while paused.
    worker: Option<RunningWorker>,
    config: RegionConfig,
    pub publisher: Arc<Publisher>,
    cluster: Cluster,
}

/// A region's Kafka cluster.
pub(crate) enum Cluster {
    Mock(MockCluster<'static, DefaultProducerContext>),
    Tansu(Tansu),
}

impl Cluster {
    pub(crate) fn start(tansu: bool) -> anyhow::Result<Self> {
        if !tansu {
            return Ok(Self::Mock(
                MockCluster::new(1).context("cannot start a mock Kafka cluster")?,
            ));
        }
        Tansu::start()
            .map(Self::Tansu)
            .context("tansu is not installed")
    }

    pub(crate) fn brokers(&self) -> String {
        match self {
            Self::Mock(c) => c.bootstrap_servers(),
            Self::Tansu(t) => t.brokers(),
        }
    }

    // The mock cluster has no CreateTopics, and the tansu broker does not
    // create topics on its own; every topic is made here.
    pub(crate) fn create_topic(&self, topic: &str, partitions: u32) -> anyhow::Result<()> {
        match self {
            Self::Mock(c) => c
                .create_topic(topic, i32::try_from(partitions)?, 1)
                .map_err(anyhow::Error::from),
            Self::Tansu(t) => t
                .create_topic(topic, partitions)
                .map_err(anyhow::Error::from),
        }
        .with_context(|| format!("cannot create {topic}"))
    }
}

impl Region {
    /// What the region's worker has applied, per origin (nothing while it
    /// is paused).
    pub fn marks(&self) -> BTreeMap<String, Hlc> {
        self.worker
            .as_ref()
            .map(|w| w.watermarks().current())
            .unwrap_or_default()
    }

    /// Stops the region's worker, as an outage or a deploy would; its
    /// commits stay where they were.
    pub async fn pause(&mut self) -> anyhow::Result<()> {
        if let Some(w) = self.worker.take() {
            w.stop().await?;
        }
        Ok(())
    }

    /// Starts the region's worker again; it resumes from its commits.
    pub fn resume(&mut self) {
        if self.worker.is_none() {
            self.worker = Some(worker::spawn(self.config.clone(), self.store.clone()));
        }
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("brokers", &self.cluster.brokers())
            .finish_non_exhaustive()
    }
}

/// Every region, with the registry and the directory they stand on.
#[derive(Debug)]
pub struct Bed {
    pub regions: Vec<Region>,
    /// Mirrored only: every flow between two regions.
    pub flows: Vec<Flow>,
    _registry: RunningRegistry,
    dir: tempfile::TempDir,
}

impl Bed {
    pub async fn start(spec: &BedSpec) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let registry = DevRegistry::in_memory()
            .spawn("127.0.0.1:0")
            .await
            .context("cannot start the development registry")?;
        let names = &NAMES[..spec.regions.min(NAMES.len())];
        let mut clusters = Vec::new();
        for name in names {
            let cluster = Cluster::start(spec.tansu || spec.mirrored)?;
            let mut topics = vec![
                (TOPIC.to_owned(), 3),
                (CODEBOOKS.to_owned(), 1),
                (DEAD_LETTERS.to_owned(), 1),
            ];
            if spec.mirrored {
                topics.push((HEARTBEATS_TOPIC.to_owned(), 1));
                for origin in names.iter().filter(|o| *o != name) {
                    for (topic, partitions) in [(TOPIC, 3), (CODEBOOKS, 1), (HEARTBEATS_TOPIC, 1)] {
                        topics.push((format!("{origin}.{topic}"), partitions));
                    }
                }
            }
            for (topic, partitions) in topics {
                cluster.create_topic(&topic, partitions)?;
            }
            clusters.push(cluster);
        }
        let brokers: Vec<String> = clusters.iter().map(Cluster::brokers).collect();
        let flows = if spec.mirrored {
            connect(names, &brokers).await?
        } else {
            Vec::new()
        };
        let mut regions = Vec::new();
        for (i, cluster) in clusters.into_iter().enumerate() {
            let name = names[i];
            let mut sources = String::new();
            for (j, other) in names.iter().enumerate().filter(|(j, _)| *j != i) {
                let _ = if spec.mirrored {
                    write!(
                        sources,
                        "[[consumer.sources]]\nregion = \"{other}\"\ntopic = \"{other}.{TOPIC}\"\n\
                         codebook_topic = \"{other}.{CODEBOOKS}\"\n"
                    )
                } else {
                    write!(
                        sources,
                        "[[consumer.sources]]\nregion = \"{other}\"\nbrokers = \"{}\"\ntopic = \"{TOPIC}\"\n",
                        brokers[j]
                    )
                };
            }
            let text = format!(
                r#"
region = "{name}"
[kafka]
brokers = "{brokers}"
topic = "{TOPIC}"
codebook_topic = "{CODEBOOKS}"
partitions = 3
create_topics = false
fetch_wait_max_ms = 5
[registry]
url = "{registry}"
[producer]
linger_ms = 5
heartbeat_interval_ms = {heartbeat}
[consumer]
batch_max_wait_ms = 10
batch_max_events = {batch}
flush_interval_ms = {flush}
dead_letter_topic = "{DEAD_LETTERS}"
{sources}
[store]
path = "{store}"
[collections.{COLLECTION}]
dimension = {dimension}
distance = "cosine"
encoding = "{encoding}"
"#,
                brokers = brokers[i],
                registry = registry.url(),
                heartbeat = spec.heartbeat_interval_ms,
                batch = spec.batch_max_events,
                flush = spec.flush_interval_ms,
                store = dir.path().join(name).display(),
                dimension = spec.dimension,
                encoding = spec.encoding,
            );
            let config = RegionConfig::parse(&text, name, std::iter::empty())?;
            let store = Arc::new(EdgeStore::open(&config.store.path)?);
            let publisher = Arc::new(
                Publisher::connect(&config)
                    .await
                    .with_context(|| format!("cannot start {name}'s producer"))?,
            );
            let worker = Some(worker::spawn(config.clone(), store.clone()));
            regions.push(Region {
                name: name.to_owned(),
                store,
                worker,
                config,
                publisher,
                cluster,
            });
        }
        Ok(Self {
            regions,
            flows,
            _registry: registry,
            dir,
        })
    }

    /// The bed's processes besides this one (tansu brokers and proxies),
    /// named, with their pids.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let brokers = self.regions.iter().filter_map(|r| match &r.cluster {
            Cluster::Tansu(t) => Some((format!("tansu broker, {}", r.name), t.pid()?)),
            Cluster::Mock(_) => None,
        });
        let links = self.flows.iter().map(|f| {
            let name = format!(
                "tansu proxy, link {} → {}",
                self.regions[f.origin].name, self.regions[f.region].name
            );
            (name, f.link.pid())
        });
        brokers.chain(links).collect()
    }

    /// Waits until every region's worker has a watermark for every region:
    /// heartbeats have gone end to end, producers hold their producer ids
    /// and workers their partitions.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let missing: Vec<String> = self
                .regions
                .iter()
                .flat_map(|r| {
                    let marks = r.marks();
                    self.regions
                        .iter()
                        .filter(move |o| !marks.contains_key(&o.name))
                        .map(move |o| format!("{} in {}", o.name, r.name))
                })
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the regions were not up within {timeout:?}: no watermark yet for {}",
                    missing.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sets the faults of every link (mirrored only).
    pub fn set_links(&self, faults: LinkFaults) {
        for f in &self.flows {
            f.link.faults().set(faults);
        }
    }

    /// Each region's state digest (DESIGN.md §3), with its name.
    pub fn digests(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.regions
            .iter()
            .map(|r| {
                let digest = Digest::of(r.store.as_ref(), COLLECTION)?;
                Ok((r.name.clone(), digest.to_string()))
            })
            .collect()
    }

    /// Stops every worker and producer, then the clusters, then removes
    /// the stores' directory; the first failure is returned after all of
    /// it.
    pub async fn stop(self) -> anyhow::Result<()> {
        let mut clusters = Vec::new();
        let mut first_error = None;
        for mut f in self.flows {
            if let Err(e) = tokio::task::spawn_blocking(move || f.mirror.stop()).await? {
                first_error.get_or_insert(anyhow::anyhow!("copier: {e}"));
            }
        }
        for r in self.regions {
            let stopped = match r.worker {
                Some(w) => w.stop().await.map(drop).map_err(anyhow::Error::from),
                None => Ok(()),
            };
            let closed = match Arc::try_unwrap(r.publisher) {
                Ok(p) => p
                    .close(Duration::from_secs(5))
                    .await
                    .map_err(anyhow::Error::from),
                Err(_) => Ok(()),
            };
            if let Err(e) = stopped.and(closed) {
                first_error.get_or_insert(e);
            }
            drop(r.store);
            clusters.push(r.cluster);
        }
        // librdkafka closes the workers' consumers on their own threads.
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(clusters);
        drop(self.dir);
        first_error.map_or(Ok(()), Err)
    }
}

/// Starts a link and a copier for every ordered pair of regions.
async fn connect(names: &[&str], brokers: &[String]) -> anyhow::Result<Vec<Flow>> {
    let mut flows = Vec::new();
    for (origin, from) in names.iter().enumerate() {
        for (region, to) in names.iter().enumerate().filter(|(r, _)| *r != origin) {
            let link = WanLink::start(&brokers[origin])
                .await
                .with_context(|| format!("cannot start the link {from} -> {to}"))?
                .context("WAN links need tansu, for its Kafka proxy")?;
            let spec = MirrorSpec {
                alias: (*from).to_owned(),
                target_alias: (*to).to_owned(),
                source_brokers: link.brokers(),
                target_brokers: brokers[region].clone(),
                topics: vec![TOPIC.to_owned(), CODEBOOKS.to_owned()],
                heartbeat_interval: Duration::from_secs(1),
            };
            let mirror = tokio::task::spawn_blocking(move || Mirror::start(spec))
                .await?
                .map_err(|e| anyhow::anyhow!("cannot start the copier {from} -> {to}: {e}"))?;
            flows.push(Flow {
                origin,
                region,
                link,
                mirror,
            });
        }
    }
    Ok(flows)
}
