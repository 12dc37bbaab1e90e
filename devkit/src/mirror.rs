//! A stand-in for MirrorMaker 2, for tests only (it cannot run here): copies
//! topics from a source cluster to `<alias>.<topic>` on a target cluster,
//! partition for partition, keeping each record's key, value, headers and
//! timestamp, and emits MirrorMaker's heartbeats into the source's
//! `heartbeats` topic, which it mirrors too. Not for production: it keeps no
//! offsets, so a new copier starts from the beginning.
//!
//! The topics must exist: `heartbeats` on the source, and `<alias>.<topic>`
//! (with as many partitions as the source topic) on the target for every
//! topic copied, `heartbeats` included.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vecsync_schemas::hlc::{SystemClock, WallClock};
use vecsync_schemas::mm2::{HEARTBEATS_TOPIC, Heartbeat};

/// One flow, `alias` → `target_alias`.
#[derive(Debug, Clone)]
pub struct MirrorSpec {
    /// MirrorMaker's alias of the source cluster: the mirrors' prefix.
    pub alias: String,
    pub target_alias: String,
    pub source_brokers: String,
    pub target_brokers: String,
    /// Topics copied besides `heartbeats`.
    pub topics: Vec<String>,
    pub heartbeat_interval: Duration,
}

/// A running copier; stopped when dropped.
#[derive(Debug)]
pub struct Mirror {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    copied: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Mirror {
    pub fn start(spec: MirrorSpec) -> Result<Self, String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &spec.source_brokers)
            .set("group.id", crate::broker::unique_name("vecsync-mirror"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create()
            .map_err(|e| e.to_string())?;
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &spec.target_brokers)
            .set("linger.ms", "5")
            .create()
            .map_err(|e| e.to_string())?;
        let heartbeats: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &spec.source_brokers)
            .create()
            .map_err(|e| e.to_string())?;
        let mut assignment = TopicPartitionList::new();
        let mut topics = spec.topics.clone();
        topics.push(HEARTBEATS_TOPIC.to_owned());
        for topic in &topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .map_err(|e| format!("metadata of {topic}: {e}"))?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    assignment
                        .add_partition_offset(topic, p.id(), Offset::Beginning)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        consumer.assign(&assignment).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let copied = Arc::new(AtomicU64::new(0));
        let (s, p, c) = (stop.clone(), paused.clone(), copied.clone());
        let thread =
            std::thread::spawn(move || copy(&spec, &consumer, &producer, &heartbeats, &s, &p, &c));
        Ok(Self {
            stop,
            paused,
            copied,
            thread: Some(thread),
        })
    }

    /// Stops copying and emitting heartbeats, as a halted MirrorMaker would.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Records copied so far, heartbeats included.
    pub fn copied(&self) -> u64 {
        self.copied.load(Ordering::SeqCst)
    }

    /// Stops the copier and returns its error, if it failed.
    pub fn stop(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("the copier panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn copy(
    spec: &MirrorSpec,
    consumer: &BaseConsumer,
    producer: &BaseProducer,
    heartbeats: &BaseProducer,
    stop: &AtomicBool,
    paused: &AtomicBool,
    copied: &AtomicU64,
) -> Result<(), String> {
    let mut next_beat = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        producer.poll(Duration::ZERO);
        heartbeats.poll(Duration::ZERO);
        if paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if Instant::now() >= next_beat {
            next_beat += spec.heartbeat_interval;
            let beat = Heartbeat {
                source_alias: spec.alias.clone(),
                target_alias: spec.target_alias.clone(),
                timestamp_ms: SystemClock.now_ms() as i64,
            };
            let (key, value) = (beat.key(), beat.value());
            let record = BaseRecord::to(HEARTBEATS_TOPIC).key(&key).payload(&value);
            heartbeats
                .send(record)
                .map_err(|(e, _)| format!("heartbeat: {e}"))?;
        }
        let Some(message) = consumer.poll(Duration::from_millis(20)) else {
            continue;
        };
        // A failed read (a cut link, a broker away) is retried, as
        // MirrorMaker retries.
        let Ok(m) = message else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let topic = format!("{}.{}", spec.alias, m.topic());
        let mut headers = OwnedHeaders::new();
        if let Some(hs) = m.headers() {
            for h in hs.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let mut record = BaseRecord::to(&topic)
            .partition(m.partition())
            .payload(m.payload().unwrap_or_default())
            .headers(headers);
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        if let Some(ts) = m.timestamp().to_millis() {
            record = record.timestamp(ts);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    producer.poll(Duration::from_millis(50));
                    record = r;
                }
                Err((e, _)) => return Err(format!("writing {topic}: {e}")),
            }
        }
        copied.fetch_add(1, Ordering::SeqCst);
    }
    let _ = producer.flush(Duration::from_secs(5));
    let _ = heartbeats.flush(Duration::from_secs(5));
    Ok(())
}
