//! librdkafka settings and topic administration.

use crate::error::ProducerError;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, Producer};
use std::time::Duration;
use vecsync_schemas::config::RegionConfig;

/// How long admin and metadata calls may take.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings every client of the region shares: brokers, then the user's
/// pass-through options (security), which win.
pub fn base_config(config: &RegionConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.brokers);
    for (k, v) in &config.kafka.options {
        c.set(k, v);
    }
    c
}

/// The idempotent producer: acks from all replicas, no duplicates on retry,
/// Java-compatible partitioning so every region's topic co-partitions.
pub fn producer_config(config: &RegionConfig) -> ClientConfig {
    let p = &config.producer;
    let mut c = ClientConfig::new();
    c.set("client.id", format!("vecsync-producer-{}", config.region))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("compression.type", &p.compression)
        .set("linger.ms", p.linger_ms.to_string())
        // Bounds a record batch, so that consumers' resume rewind (consumer.
        // resume_rewind_records) covers a whole batch.
        .set("batch.num.messages", "1000")
        .set("message.timeout.ms", p.message_timeout_ms.to_string())
        .set(
            "queue.buffering.max.messages",
            p.queue_max_messages.to_string(),
        );
    // Pass-through options are applied last so that they win.
    for (k, v) in base_config(config).config_map() {
        c.set(k, v);
    }
    c
}

/// Creates the delta topic and the (compacted) codebook topic when they are
/// missing. Topics that exist are left as they are.
pub async fn ensure_topics(config: &RegionConfig) -> Result<(), ProducerError> {
    let k = &config.kafka;
    let admin: AdminClient<DefaultClientContext> = base_config(config)
        .create()
        .map_err(|e| ProducerError::kafka("failed to create an admin client", e))?;
    let replication = || TopicReplication::Fixed(i32::from(k.replication_factor));
    let partitions = i32::try_from(k.partitions).unwrap_or(i32::MAX);
    let topics = [
        NewTopic::new(&k.topic, partitions, replication()),
        NewTopic::new(&k.codebook_topic, 1, replication()).set("cleanup.policy", "compact"),
    ];
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|e| ProducerError::kafka("failed to create topics", e))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(ProducerError::kafka(
                    format!("failed to create topic {topic}"),
                    rdkafka::error::KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(())
}

/// The number of partitions `topic` has, from the broker's metadata. A
/// topic just created may be missing from the metadata for a moment
/// (Apache Kafka answers CreateTopics before its metadata shows the
/// topic): it is asked again until `timeout` has passed.
pub async fn partition_count(
    producer: &FutureProducer,
    topic: &str,
    timeout: Duration,
) -> Result<u32, ProducerError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let producer = producer.clone();
        let name = topic.to_owned();
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&name), wait)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        .map_err(|e| ProducerError::kafka(format!("failed to read metadata of {topic}"), e))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions > 0 {
            return Ok(partitions as u32);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProducerError::kafka(
                format!(
                    "topic {topic} does not exist (set kafka.create_topics = true or create it)"
                ),
                rdkafka::error::KafkaError::MetadataFetch(
                    RDKafkaErrorCode::UnknownTopicOrPartition,
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
