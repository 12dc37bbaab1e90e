//! Regions in one process: each with its own Kafka cluster (librdkafka's
//! in-process `MockCluster`), a producer, a consumer worker reading every
//! other region's cluster directly, and an embedded store in a temporary
//! directory; one development registry for all. What the demo and the
//! load test run on.
//!
//! Mirrored ([`BedSpec::mirrored`]), regions are connected as MirrorMaker 2
//! connects them in production: every flow reads the origin's cluster
//! across a [`WanLink`] (whose faults can be set) and writes
//! `<origin>.<topic>` on the region's own cluster, where its worker reads.
//! On Apache Kafka ([`ClusterKind::Kafka`]) that is real MirrorMaker 2,
//! one process per region running the flows into it, each origin's broker
//! serving a listener per link. On tansu it is devkit's copier, one per
//! flow. The mock cluster is never mirrored: it answers a fetch with one
//! record batch per partition, which a link's round trip turns into a
//! ceiling of a few dozen events per second.

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
use vecsync_devkit::broker::{Tansu, free_port};
use vecsync_devkit::kafka::{Kafka, LinkListener, MirrorMaker2, Mm2Cluster, mm2_properties};
use vecsync_devkit::mirror::{Mirror, MirrorSpec};
use vecsync_devkit::proxy::{LinkFaults, WanLink};
use vecsync_devkit::registry::{DevRegistry, RunningRegistry};
use vecsync_producer::Publisher;
use vecsync_schemas::config::{RegionConfig, VectorDatatype};
use vecsync_schemas::hlc::{Hlc, SystemClock, WallClock};
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
    /// How the stores keep vectors.
    pub vector_datatype: VectorDatatype,
    /// Regions are connected by MirrorMaker 2 (or copiers) over WAN
    /// links, instead of each worker reading the other clusters directly.
    pub mirrored: bool,
    /// What each region's cluster is.
    pub clusters: ClusterKind,
}

/// What runs each region's Kafka cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterKind {
    /// librdkafka's in-process mock cluster, which keeps at most 5 MB per
    /// partition; never mirrored (tansu is used then).
    #[default]
    Mock,
    /// A tansu broker (`memory://`) per region, with devkit's copiers
    /// between them when mirrored.
    Tansu,
    /// An Apache Kafka broker per region, with MirrorMaker 2 between them
    /// when mirrored.
    Kafka,
}

impl ClusterKind {
    /// What a bed mirrored or not runs on: mirroring needs a real broker.
    pub fn effective(self, mirrored: bool) -> Self {
        match self {
            Self::Mock if mirrored => Self::Tansu,
            other => other,
        }
    }

    /// The consumers' `fetch.wait.max.ms`: tansu answers a fetch only when
    /// the wait runs out, so it is kept low there; Kafka answers as soon
    /// as there is data, and a low wait floods it with fetches.
    pub fn fetch_wait_max_ms(self) -> u32 {
        match self {
            Self::Kafka => 100,
            Self::Mock | Self::Tansu => 5,
        }
    }

    /// For people: "a tansu broker".
    pub fn described(self) -> &'static str {
        match self {
            Self::Mock => "an in-process Kafka cluster",
            Self::Tansu => "a tansu broker",
            Self::Kafka => "an Apache Kafka broker",
        }
    }
}

impl std::str::FromStr for ClusterKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "mock" => Ok(Self::Mock),
            "tansu" => Ok(Self::Tansu),
            "kafka" => Ok(Self::Kafka),
            other => Err(format!("{other:?} is not a broker: mock, tansu or kafka")),
        }
    }
}

/// One flow of a mirrored bed: origin → region, across a link.
#[derive(Debug)]
pub struct Flow {
    pub origin: usize,
    pub region: usize,
    pub link: WanLink,
    /// The flow's copier on tansu; on Kafka, MirrorMaker 2 carries it.
    copier: Option<Mirror>,
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
    Kafka(Kafka),
}

/// A cluster per region, and, when linked, a link for every ordered pair
/// of regions (origin → region) with its copier not yet started.
pub(crate) async fn start_clusters(
    kind: ClusterKind,
    regions: usize,
    linked: bool,
) -> anyhow::Result<(Vec<Cluster>, Vec<Flow>)> {
    let pairs = || {
        (0..regions).flat_map(move |origin| {
            (0..regions)
                .filter(move |r| *r != origin)
                .map(move |region| (origin, region))
        })
    };
    let flow = |(origin, region), link| Flow {
        origin,
        region,
        link,
        copier: None,
    };
    let mut flows = Vec::new();
    let clusters = match kind {
        ClusterKind::Kafka => {
            // The links come first: each broker advertises them.
            let mut listeners = vec![Vec::new(); regions];
            for pair in pairs().filter(|_| linked) {
                let port = free_port()?;
                let link = WanLink::to_listener(port).await?;
                listeners[pair.0].push(LinkListener {
                    port,
                    advertised: link.faults().addr(),
                });
                flows.push(flow(pair, link));
            }
            let starting: Vec<_> = listeners
                .into_iter()
                .map(|l| tokio::task::spawn_blocking(move || Kafka::start_linked(&l)))
                .collect();
            let mut clusters = Vec::new();
            for s in starting {
                clusters.push(Cluster::Kafka(
                    s.await?.context("cannot start an Apache Kafka broker")?,
                ));
            }
            clusters
        }
        ClusterKind::Tansu | ClusterKind::Mock => {
            let mut clusters = Vec::new();
            for _ in 0..regions {
                clusters.push(match kind {
                    ClusterKind::Mock if !linked => Cluster::Mock(
                        MockCluster::new(1).context("cannot start a mock Kafka cluster")?,
                    ),
                    _ => Tansu::start()
                        .map(Cluster::Tansu)
                        .context("tansu is not installed")?,
                });
            }
            if linked {
                for pair in pairs() {
                    let link = WanLink::start(&clusters[pair.0].brokers())
                        .await
                        .with_context(|| format!("cannot start the link {pair:?}"))?
                        .context("WAN links on tansu need its Kafka proxy")?;
                    flows.push(flow(pair, link));
                }
            }
            clusters
        }
    };
    Ok((clusters, flows))
}

impl Cluster {
    pub(crate) fn brokers(&self) -> String {
        match self {
            Self::Mock(c) => c.bootstrap_servers(),
            Self::Tansu(t) => t.brokers(),
            Self::Kafka(k) => k.brokers(),
        }
    }

    // The mock cluster has no CreateTopics, and neither the tansu broker
    // nor the Kafka broker here creates topics on its own; every topic is
    // made here.
    pub(crate) fn create_topic(&self, topic: &str, partitions: u32) -> anyhow::Result<()> {
        match self {
            Self::Mock(c) => c
                .create_topic(topic, i32::try_from(partitions)?, 1)
                .map_err(anyhow::Error::from),
            Self::Tansu(t) => t
                .create_topic(topic, partitions)
                .map_err(anyhow::Error::from),
            Self::Kafka(k) => k
                .create_topic(topic, partitions)
                .map_err(anyhow::Error::from),
        }
        .with_context(|| format!("cannot create {topic}"))
    }

    /// The broker's process and what to call it, if it is one of its own.
    fn process(&self, region: &str) -> Option<(String, u32)> {
        match self {
            Self::Mock(_) => None,
            Self::Tansu(t) => Some((format!("tansu broker, {region}"), t.pid()?)),
            Self::Kafka(k) => Some((format!("Kafka broker, {region}"), k.pid()?)),
        }
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
    /// The directory of the region's embedded store.
    pub fn store_path(&self) -> &std::path::Path {
        &self.config.store.path
    }

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
    /// On Kafka: a MirrorMaker 2 per region, running the flows into it, in
    /// the regions' order.
    mirror_makers: Vec<MirrorMaker2>,
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
        let kind = spec.clusters.effective(spec.mirrored);
        let mirrored = spec.mirrored;
        let (clusters, mut flows) = start_clusters(kind, names.len(), mirrored).await?;
        for (cluster, name) in clusters.iter().zip(names) {
            let mut topics = vec![
                (TOPIC.to_owned(), 3),
                (CODEBOOKS.to_owned(), 1),
                (DEAD_LETTERS.to_owned(), 1),
            ];
            if mirrored {
                // The mirrors exist before the workers subscribe to them;
                // MirrorMaker 2 makes its own heartbeats topics.
                let mut mirrored_topics = vec![(TOPIC, 3), (CODEBOOKS, 1)];
                if kind == ClusterKind::Tansu {
                    topics.push((HEARTBEATS_TOPIC.to_owned(), 1));
                    mirrored_topics.push((HEARTBEATS_TOPIC, 1));
                }
                for origin in names.iter().filter(|o| *o != name) {
                    for (topic, partitions) in &mirrored_topics {
                        topics.push((format!("{origin}.{topic}"), *partitions));
                    }
                }
            }
            for (topic, partitions) in topics {
                cluster.create_topic(&topic, partitions)?;
            }
        }
        let brokers: Vec<String> = clusters.iter().map(Cluster::brokers).collect();
        let mirror_makers = match kind {
            ClusterKind::Kafka if mirrored => start_mirror_makers(names, &brokers, &flows)?,
            ClusterKind::Kafka => Vec::new(),
            _ => {
                start_copiers(names, &brokers, &mut flows).await?;
                Vec::new()
            }
        };
        let mut regions = Vec::new();
        for (i, cluster) in clusters.into_iter().enumerate() {
            let name = names[i];
            let mut sources = String::new();
            for (j, other) in names.iter().enumerate().filter(|(j, _)| *j != i) {
                let _ = if mirrored {
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
fetch_wait_max_ms = {fetch_wait_max_ms}
[registry]
url = "{registry}"
[producer]
linger_ms = 5
heartbeat_interval_ms = {heartbeat}
[consumer]
batch_max_events = {batch}
flush_interval_ms = {flush}
dead_letter_topic = "{DEAD_LETTERS}"
{sources}
[store]
path = "{store}"
vector_datatype = "{datatype}"
[collections.{COLLECTION}]
dimension = {dimension}
distance = "cosine"
encoding = "{encoding}"
"#,
                brokers = brokers[i],
                fetch_wait_max_ms = kind.fetch_wait_max_ms(),
                registry = registry.url(),
                heartbeat = spec.heartbeat_interval_ms,
                batch = spec.batch_max_events,
                flush = spec.flush_interval_ms,
                store = dir.path().join(name).display(),
                datatype = spec.vector_datatype,
                dimension = spec.dimension,
                encoding = spec.encoding,
            );
            // `VECSYNC__*` overrides apply to every region, as they do to
            // the components run on their own.
            let config = RegionConfig::parse(&text, name, std::env::vars())?;
            let store = Arc::new(EdgeStore::configured(&config.store)?);
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
            mirror_makers,
            _registry: registry,
            dir,
        })
    }

    /// The bed's processes besides this one (brokers, MirrorMaker 2s and
    /// tansu proxies), named, with their pids.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let brokers = self
            .regions
            .iter()
            .filter_map(|r| r.cluster.process(&r.name));
        let mirror_makers = self
            .mirror_makers
            .iter()
            .zip(&self.regions)
            .filter_map(|(m, r)| Some((format!("MirrorMaker 2, into {}", r.name), m.pid()?)));
        let links = self.flows.iter().filter_map(|f| {
            let name = format!(
                "tansu proxy, link {} → {}",
                self.regions[f.origin].name, self.regions[f.region].name
            );
            Some((name, f.link.pid()?))
        });
        brokers.chain(mirror_makers).chain(links).collect()
    }

    /// Waits until every region's worker has a fresh watermark for every
    /// region, less than a second old: heartbeats have gone end to end,
    /// producers hold their producer ids, workers their partitions, and
    /// MirrorMaker 2 has caught up with what was written while it started.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        const FRESH_MS: u64 = 1_000;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = SystemClock.now_ms();
            let missing: Vec<String> = self
                .regions
                .iter()
                .flat_map(|r| {
                    let marks = r.marks();
                    self.regions
                        .iter()
                        .filter(move |o| {
                            marks
                                .get(&o.name)
                                .is_none_or(|m| now.saturating_sub(m.wall_ms) > FRESH_MS)
                        })
                        .map(move |o| format!("{} in {}", o.name, r.name))
                })
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the regions were not up within {timeout:?}: no watermark within \
                     {FRESH_MS} ms of now for {}",
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
        for (mut m, r) in self.mirror_makers.into_iter().zip(&self.regions) {
            if let Some(status) = m.exited() {
                first_error.get_or_insert(anyhow::anyhow!(
                    "MirrorMaker 2 into {} exited during the run with {status}; its log:\n{}",
                    r.name,
                    m.log()
                ));
            }
        }
        for f in self.flows {
            if let Some(mut copier) = f.copier
                && let Err(e) = tokio::task::spawn_blocking(move || copier.stop()).await?
            {
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

/// Starts a copier on every flow.
async fn start_copiers(
    names: &[&str],
    brokers: &[String],
    flows: &mut [Flow],
) -> anyhow::Result<()> {
    for flow in flows {
        let (from, to) = (names[flow.origin], names[flow.region]);
        let spec = MirrorSpec {
            alias: from.to_owned(),
            target_alias: to.to_owned(),
            source_brokers: flow.link.brokers(),
            target_brokers: brokers[flow.region].clone(),
            topics: vec![TOPIC.to_owned(), CODEBOOKS.to_owned()],
            heartbeat_interval: Duration::from_secs(1),
        };
        let copier = tokio::task::spawn_blocking(move || Mirror::start(spec))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot start the copier {from} -> {to}: {e}"))?;
        flow.copier = Some(copier);
    }
    Ok(())
}

/// Starts a MirrorMaker 2 per region, running the flows into it: it
/// reaches the region's cluster directly and every origin's across the
/// flow's link.
fn start_mirror_makers(
    names: &[&str],
    brokers: &[String],
    flows: &[Flow],
) -> anyhow::Result<Vec<MirrorMaker2>> {
    let topics = format!(
        "{}|{}",
        TOPIC.replace('.', "\\."),
        CODEBOOKS.replace('.', "\\.")
    );
    names
        .iter()
        .enumerate()
        .map(|(region, name)| {
            let into = flows.iter().filter(|f| f.region == region);
            let mut clusters = vec![Mm2Cluster {
                alias: (*name).to_owned(),
                brokers: brokers[region].clone(),
            }];
            clusters.extend(into.clone().map(|f| Mm2Cluster {
                alias: names[f.origin].to_owned(),
                brokers: f.link.brokers(),
            }));
            let pairs: Vec<(&str, &str)> = into.map(|f| (names[f.origin], *name)).collect();
            let properties = mm2_properties(&clusters, &pairs, &topics);
            MirrorMaker2::start_into(&properties, name)
                .with_context(|| format!("cannot start MirrorMaker 2 into {name}"))
        })
        .collect()
}
