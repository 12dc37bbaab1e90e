//! The dead-letter topic on the region's cluster.

use super::*;

/// The dead-letter topic on this region's cluster.
pub(super) struct DeadLetters {
    pub(super) producer: FutureProducer,
    pub(super) topic: String,
}

impl DeadLetters {
    /// A producer for the dead-letter topic, which is created when missing
    /// (with `kafka.create_topics`).
    pub(super) async fn new(config: &RegionConfig) -> Result<Self, WorkerError> {
        let cluster = Cluster::of_region(config);
        let topic = &config.consumer.dead_letter_topic;
        if config.kafka.create_topics {
            cluster
                .create_topics(&[Topic {
                    name: topic,
                    partitions: 1,
                    replication_factor: config.kafka.replication_factor,
                    compacted: false,
                }])
                .await?;
        } else {
            cluster.verify_topics(&[topic]).await?;
        }
        let producer = cluster
            .client(&[("enable.idempotence", "true"), ("acks", "all")])?
            .create()
            .map_err(kafka("failed to create the dead-letter producer"))?;
        Ok(Self {
            producer,
            topic: topic.clone(),
        })
    }

    /// Writes one dead letter with headers naming where it came from and
    /// why, and waits for the broker's acknowledgement.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send(
        &self,
        source: &SourceConfig,
        partition: &Partition,
        offset: i64,
        key: Option<&[u8]>,
        value: &[u8],
        reason: &'static str,
        detail: &str,
    ) -> Result<(), WorkerError> {
        tracing::warn!(
            topic = partition.1,
            partition = partition.2,
            offset,
            reason,
            "dead letter: {detail}"
        );
        let offset_text = offset.to_string();
        let partition_text = partition.2.to_string();
        let headers = [
            ("vecsync.source.region", source.region.as_str()),
            ("vecsync.source.topic", partition.1.as_str()),
            ("vecsync.source.partition", &partition_text),
            ("vecsync.source.offset", &offset_text),
        ];
        self.produce(key, value, &headers, reason, detail).await
    }

    /// Writes a delta that expiry drops, whose original bytes are gone:
    /// as JSON ([`crate::bookkeeping::delta_json`], header
    /// `vecsync.format: json`), keyed by its point id, from the region its
    /// version names.
    pub(super) async fn send_never_applied(
        &self,
        collection: &str,
        dropped: &NeverApplied,
    ) -> Result<(), WorkerError> {
        let reason = "base_never_came";
        let base = dropped.change.base().map(ToString::to_string);
        let detail = format!(
            "the version it builds on, {}, never arrived before the tombstone horizon",
            base.as_deref().unwrap_or("none")
        );
        tracing::warn!(collection, id = %dropped.id, version = %dropped.version, reason, "dead letter: {detail}");
        let value = crate::bookkeeping::delta_json(
            collection,
            &dropped.id,
            &dropped.version,
            &dropped.change,
        )
        .to_string();
        let headers = [
            ("vecsync.source.region", dropped.version.origin.as_str()),
            ("vecsync.format", "json"),
        ];
        let key = dropped.id.key();
        self.produce(
            Some(key.as_bytes()),
            value.as_bytes(),
            &headers,
            reason,
            &detail,
        )
        .await
    }

    /// Writes one dead letter with `headers` and the reason's two, and
    /// waits for the broker's acknowledgement.
    async fn produce(
        &self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &str)],
        reason: &'static str,
        detail: &str,
    ) -> Result<(), WorkerError> {
        DeadLettered { reason }.emit();
        let headers = headers
            .iter()
            .chain(&[("vecsync.reason", reason), ("vecsync.detail", detail)])
            .fold(OwnedHeaders::new(), |all, &(key, value)| {
                all.insert(Header {
                    key,
                    value: Some(value),
                })
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(value)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| WorkerError::Kafka {
                what: format!("failed to write a dead letter to {}", self.topic),
                source: e,
            })
    }
}
