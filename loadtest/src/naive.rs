//! The pipeline a user would write from common examples, to measure
//! vecsync against on the same machine and the same parts: every point
//! sent as one Kafka message of JSON (the vector as a float array), with
//! librdkafka's default producer settings; every region consuming the
//! others' topics with automatic offset commits and writing each message
//! to its store as it arrives, one point per write. No ordering across
//! regions, no idempotence, no deletes or patches: upserts only, which
//! flatters it.
//!
//! It is driven like the load test: each region writes its share of an
//! open-loop load, then the run waits until every region has written every
//! other region's points.

use crate::bed::{Cluster, ClusterKind, start_clusters};
use crate::recorder::new_lag_histogram;
use crate::report::Percentiles;
use crate::run::Scenario;
use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::store::{Part, Store};
use vecsync_kafka::Cluster as KafkaCluster;
use vecsync_schemas::config::Distance;
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::{SystemClock, WallClock};

const TOPIC: &str = "points";
const COLLECTION: &str = "docs";

/// One message: what the examples send.
#[derive(Serialize, Deserialize)]
struct Point {
    id: u64,
    vector: Vec<f32>,
    payload: serde_json::Value,
    /// When it was sent, ms since the epoch, for the latency.
    sent_ms: u64,
}

/// What the naive pipeline did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NaiveReport {
    pub regions: usize,
    pub rate: u32,
    pub duration_s: u64,
    pub dimension: u32,
    /// Brokers and links, for people.
    pub setup: String,
    /// Points every region sent.
    pub produced: u64,
    /// Points written into remote stores.
    pub replicated: u64,
    /// Remote points written per second, from the start until the last.
    pub replicated_per_s: f64,
    pub bytes_per_event: f64,
    pub latency_ms: Percentiles,
    /// From the end of the load until every region had every point.
    pub drain_s: f64,
    pub complete: bool,
}

impl NaiveReport {
    pub fn markdown(&self) -> String {
        let l = &self.latency_ms;
        format!(
            "# The naive pipeline\n\n{} regions, {} points/s each for {} s, {}-d: JSON float arrays, \
             one message and one store write per point; {}.\n\n\
             | measure | figure |\n|---|---|\n\
             | produced | {} points per region |\n\
             | replicated | {} points, {:.0}/s |\n\
             | bytes on the wire | {:.0} B/event |\n\
             | latency p50, p99, max | {:.1}, {:.1}, {:.1} ms |\n\
             | drained after the load | {:.2} s |\n\
             | complete | {} |\n",
            self.regions,
            self.rate,
            self.duration_s,
            self.dimension,
            self.setup,
            self.produced,
            self.replicated,
            self.replicated_per_s,
            self.bytes_per_event,
            l.p50,
            l.p99,
            l.max,
            self.drain_s,
            self.complete
        )
    }
}

/// Runs the naive pipeline as the scenario says: its regions, rate,
/// duration and dimension, on tansu brokers or mock clusters, and across
/// WAN links with the scenario's delay and bandwidth when it has links
/// (each region then reads the others directly across them). Upserts only;
/// the scenario's mix, encoding and faults do not apply. Waits up to
/// `converge_timeout_s` after the load for every point to land.
pub async fn run(scenario: &Scenario, progress: impl Fn(&str)) -> anyhow::Result<NaiveReport> {
    anyhow::ensure!(
        scenario.warmup_s == 0,
        "warmup_s: the naive pipeline has no warm-up; set it to 0 to compare the two alike"
    );
    let (regions, rate, duration_s, dimension) = (
        scenario.regions,
        scenario.rate,
        scenario.duration_s,
        scenario.dimension,
    );
    let links = scenario.is_mirrored().then(|| scenario.links());
    let kind = scenario.clusters();
    let drain_timeout_s = scenario.converge_timeout_s;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    // Links stay up until the end.
    let (clusters, wan) = start_clusters(kind, regions, links.is_some()).await?;
    for cluster in &clusters {
        cluster.create_topic(TOPIC, 3)?;
    }
    let brokers: Vec<String> = clusters.iter().map(Cluster::brokers).collect();
    let applied = Arc::new(AtomicU64::new(0));
    let lags = Arc::new(std::sync::Mutex::new(new_lag_histogram()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut consumers = JoinSet::new();
    for r in 0..regions {
        let store = Arc::new(EdgeStore::open(&dir.path().join(r.to_string()))?);
        store.ensure_collection(COLLECTION, dimension as usize, Distance::Dot)?;
        for (o, broker) in brokers.iter().enumerate().filter(|(o, _)| *o != r) {
            // Across its own link, when there are links.
            let source = match (links, wan.iter().find(|f| f.origin == o && f.region == r)) {
                (Some(faults), Some(flow)) => {
                    flow.link.faults().set(faults);
                    flow.link.brokers()
                }
                _ => broker.clone(),
            };
            let (group, wait) = (
                format!("naive-{r}-from-{o}"),
                kind.fetch_wait_max_ms().to_string(),
            );
            let consumer: StreamConsumer = KafkaCluster::plain(&source)
                .client(&[
                    ("group.id", group.as_str()),
                    ("auto.offset.reset", "earliest"),
                    // vecsync's own setting, so that both wait alike.
                    ("fetch.wait.max.ms", &wait),
                ])?
                .create()?;
            consumer.subscribe(&[TOPIC])?;
            let (store, applied, lags, stop) =
                (store.clone(), applied.clone(), lags.clone(), stop.clone());
            consumers.spawn(async move {
                let consumed = async {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(Ok(m)) =
                            tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await
                        else {
                            continue;
                        };
                        let point: Point = serde_json::from_slice(m.payload().unwrap_or_default())?;
                        let payload = match point.payload {
                            serde_json::Value::Object(map) => map,
                            _ => serde_json::Map::new(),
                        };
                        // The write blocks; the links' proxies run on this
                        // runtime and must go on meanwhile.
                        tokio::task::block_in_place(|| {
                            store.upsert(
                                COLLECTION,
                                Part::Live,
                                vec![(PointId::Num(point.id), point.vector, payload)],
                            )
                        })?;
                        let lag_ms = SystemClock.now_ms().saturating_sub(point.sent_ms);
                        if let Ok(mut h) = lags.lock() {
                            h.saturating_record((lag_ms * 1000).max(1));
                        }
                        applied.fetch_add(1, Ordering::Relaxed);
                    }
                    anyhow::Ok(())
                }
                .await;
                // Closing a consumer waits for its broker, reached across a
                // link through this runtime: it must not hold a runtime thread.
                tokio::task::spawn_blocking(move || drop(consumer)).await?;
                consumed
            });
        }
    }

    let started = Instant::now();
    let load = Duration::from_secs(duration_s);
    let bytes = Arc::new(AtomicU64::new(0));
    let mut producers = JoinSet::new();
    for (r, broker) in brokers.iter().enumerate() {
        let producer: FutureProducer = KafkaCluster::plain(broker).client(&[])?.create()?;
        let bytes = bytes.clone();
        producers.spawn(async move {
            let mut rng = StdRng::seed_from_u64(r as u64 + 1);
            let mut deliveries = JoinSet::new();
            let mut sent = 0u64;
            let mut ticks = tokio::time::interval(Duration::from_millis(5));
            loop {
                ticks.tick().await;
                let elapsed = started.elapsed().min(load);
                let due = (elapsed.as_secs_f64() * f64::from(rate)) as u64;
                while sent < due {
                    let point = Point {
                        id: r as u64 * 1_000_000_000 + sent,
                        vector: (0..dimension)
                            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
                            .collect(),
                        payload: serde_json::json!({ "region": r, "seq": sent }),
                        sent_ms: SystemClock.now_ms(),
                    };
                    let json = serde_json::to_vec(&point)?;
                    bytes.fetch_add(json.len() as u64, Ordering::Relaxed);
                    let key = point.id.to_string();
                    let mut record = FutureRecord::to(TOPIC).key(&key).payload(&json);
                    loop {
                        match producer.send_result(record) {
                            Ok(delivery) => {
                                deliveries.spawn(delivery);
                                break;
                            }
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                r,
                            )) => {
                                // Room comes back as deliveries complete.
                                record = r;
                                match deliveries.join_next().await {
                                    Some(done) => delivered(done)?,
                                    None => tokio::task::yield_now().await,
                                }
                            }
                            Err((e, _)) => anyhow::bail!("a point was not sent: {e}"),
                        }
                    }
                    sent += 1;
                }
                while let Some(done) = deliveries.try_join_next() {
                    delivered(done)?;
                }
                if elapsed >= load {
                    break;
                }
            }
            while let Some(done) = deliveries.join_next().await {
                delivered(done)?;
            }
            anyhow::Ok(sent)
        });
    }
    let mut produced = 0;
    let mut lines = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    while !producers.is_empty() {
        tokio::select! {
            Some(done) = producers.join_next() => produced += done??,
            Some(done) = consumers.join_next() => stopped_early(done)?,
            _ = lines.tick() => progress(&format!(
                "t={:.0}s replicated {}",
                started.elapsed().as_secs_f64(),
                applied.load(Ordering::Relaxed)
            )),
        }
    }
    let mut last_line = Instant::now();
    let per_region = produced / regions as u64;
    let load_end = Instant::now();
    let wanted = produced * (regions as u64 - 1);
    let deadline = load_end + Duration::from_secs(drain_timeout_s);
    while applied.load(Ordering::Relaxed) < wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(done) = consumers.try_join_next() {
            stopped_early(done)?;
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            progress(&format!(
                "draining: replicated {} of {wanted}",
                applied.load(Ordering::Relaxed)
            ));
        }
    }
    let done = Instant::now();
    stop.store(true, Ordering::Relaxed);
    while let Some(c) = consumers.join_next().await {
        c??;
    }
    let replicated = applied.load(Ordering::Relaxed);
    let latency_ms = lags
        .lock()
        .map(|h| Percentiles::of_micros(&h))
        .map_err(|_| anyhow::anyhow!("the latency histogram was poisoned"))?;
    Ok(NaiveReport {
        regions,
        rate,
        duration_s,
        dimension,
        setup: format!(
            "{}, {}",
            match kind {
                ClusterKind::Mock => "in-process Kafka clusters",
                ClusterKind::Tansu => "tansu brokers",
                ClusterKind::Kafka => "Apache Kafka brokers",
            },
            match links {
                Some(l) => format!(
                    "each region reading the others across links with {} ms one-way delay{}",
                    l.delay.as_millis(),
                    l.bytes_per_sec
                        .map(|b| format!(" and {} kB/s each way", b / 1000))
                        .unwrap_or_default()
                ),
                None => "each region reading the others directly".to_owned(),
            }
        ),
        produced: per_region,
        replicated,
        replicated_per_s: replicated as f64 / (done - started).as_secs_f64(),
        bytes_per_event: bytes.load(Ordering::Relaxed) as f64 / produced.max(1) as f64,
        latency_ms,
        drain_s: (done - load_end).as_secs_f64(),
        complete: replicated >= wanted,
    })
}

/// A consumer that stopped before the run ended: its error, or one.
fn stopped_early(joined: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    joined??;
    anyhow::bail!("a consumer stopped before the run ended")
}

/// A delivery's outcome as an error, if it failed.
fn delivered<Canceled>(
    joined: Result<Result<OwnedDeliveryResult, Canceled>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match joined? {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => anyhow::bail!("a point was not delivered: {e}"),
        Err(_) => anyhow::bail!("the producer went away before a delivery report"),
    }
}
