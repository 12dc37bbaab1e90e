//! The producer's Kafka clients, made by the one client layer
//! ([`vecsync_kafka`]), and the metadata it reads.

use crate::error::ProducerError;
use rdkafka::producer::{FutureProducer, Producer};
use std::time::Duration;
use vecsync_kafka::{Cluster, Fatal, Topic, Watch};
use vecsync_schemas::config::RegionConfig;

/// The producer, whose context keeps the fatal errors librdkafka reports
/// outside any call (a refused login or certificate).
pub type KafkaProducer = FutureProducer<Watch>;

/// The idempotent producer: acks from all replicas, no duplicates on retry,
/// Java-compatible partitioning so every region's topic co-partitions. With
/// it, where its context keeps the fatal errors it meets.
pub fn producer(
    config: &RegionConfig,
    cluster: &Cluster,
) -> Result<(KafkaProducer, Fatal), ProducerError> {
    let p = &config.producer;
    let (client_id, linger, timeout, queue) = (
        format!("vecsync-producer-{}", config.region),
        p.linger_ms.to_string(),
        p.message_timeout_ms.to_string(),
        p.queue_max_messages.to_string(),
    );
    let watch = Watch::new(cluster);
    let fatal = watch.fatal.clone();
    let producer = cluster
        .client(&[
            ("client.id", &client_id),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("partitioner", "murmur2_random"),
            ("compression.type", &p.compression),
            ("linger.ms", &linger),
            // Bounds a record batch, so that consumers' resume rewind
            // (consumer.resume_rewind_records) covers a whole batch.
            ("batch.num.messages", "1000"),
            ("message.timeout.ms", &timeout),
            ("queue.buffering.max.messages", &queue),
        ])?
        .create_with_context(watch)
        .map_err(|e| cluster.error("failed to create the producer", e))?;
    Ok((producer, fatal))
}

/// Creates the delta topic and the (compacted) codebook topic when they are
/// missing. Topics that exist are left as they are.
pub async fn ensure_topics(config: &RegionConfig, cluster: &Cluster) -> Result<(), ProducerError> {
    let k = &config.kafka;
    let topic = |name, partitions, compacted| Topic {
        name,
        partitions,
        replication_factor: k.replication_factor,
        compacted,
    };
    let names = config.delta_topics();
    let topics: Vec<Topic> = names
        .iter()
        .flat_map(|(deltas, codebooks)| {
            [
                topic(deltas, k.partitions, false),
                topic(codebooks, 1, true),
            ]
        })
        .collect();
    cluster.create_topics(&topics).await?;
    Ok(())
}

/// The number of partitions `topic` has, from the broker's metadata. A
/// topic just created may be missing from the metadata for a moment
/// (Apache Kafka answers CreateTopics before its metadata shows the
/// topic): it is asked again until `timeout` has passed, or until the
/// producer has met a fatal error (refused credentials), which is
/// returned at once.
pub async fn partition_count(
    producer: &KafkaProducer,
    fatal: &Fatal,
    cluster: &Cluster,
    topic: &str,
    timeout: Duration,
) -> Result<u32, ProducerError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (p, name) = (producer.clone(), topic.to_owned());
        let wait = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(Duration::from_secs(1));
        let metadata =
            tokio::task::spawn_blocking(move || p.client().fetch_metadata(Some(&name), wait))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let partitions = metadata.as_ref().map_or(0, |m| {
            m.topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len())
        });
        if partitions > 0 {
            return Ok(partitions as u32);
        }
        if let Some(e) = metadata
            .as_ref()
            .ok()
            .and_then(|m| vecsync_kafka::topic_refused(m, topic))
        {
            return Err(cluster
                .error(&format!("cannot use topic {topic}"), e)
                .into());
        }
        if let Some(fatal) = fatal.get() {
            return Err(ProducerError::Fatal(fatal));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(match metadata {
                Err(e) => cluster
                    .error(&format!("failed to read metadata of {topic}"), e)
                    .into(),
                // The broker answers and has no such topic: not something
                // waiting fixes.
                Ok(_) => ProducerError::Fatal(format!(
                    "Kafka cluster {}: topic {topic} does not exist (set kafka.create_topics = true or create it)",
                    cluster.brokers()
                )),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
