//! PQ codebooks: every source's codebook topic read from the start, outside
//! the group.

use super::*;

/// The PQ codebooks received, by id; shared with the batch being applied
/// on the blocking pool, and copied only when one arrives meanwhile.
pub(super) type Codebooks = Arc<HashMap<String, PqCodebook>>;

/// A consumer that reads a source's whole codebook topic, outside the group:
/// assigned its partitions by hand ([`read_codebooks`]), never subscribed,
/// so that it joins no group and has no rebalance to wait for when dropped.
/// Its `group.id` starts with the region's, so that one prefixed ACL on the
/// region's group id covers it.
pub(super) fn codebook_consumer(
    config: &RegionConfig,
    source: &SourceConfig,
) -> Result<StreamConsumer, WorkerError> {
    client(config, source)?
        // Never joined: librdkafka needs it to assign partitions.
        .set("group.id", format!("{}-codebooks", config.group_id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(kafka(format!(
            "failed to create a consumer for {}",
            source.codebook_topic
        )))
}

/// How often a codebook topic is looked for (and, once there, for
/// partitions added to it).
pub(super) const CODEBOOK_TOPIC_CHECK: Duration = Duration::from_secs(1);

/// Reads every codebook of `topic` from the start, and any written later,
/// into `tx`. The topic may not exist yet (no PQ collection has trained a
/// codebook): its partitions are assigned once it appears.
pub(super) async fn read_codebooks(
    consumer: StreamConsumer,
    topic: String,
    registry: Arc<RegistryClient>,
    tx: mpsc::Sender<PqCodebook>,
) {
    let consumer = Arc::new(consumer);
    let decoder = Decoder::<PqCodebook>::new(registry);
    let mut check = tokio::time::interval(CODEBOOK_TOPIC_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut assigned = 0;
    loop {
        tokio::select! {
            _ = check.tick() => {
                let (c, t) = (consumer.clone(), topic.clone());
                match off_loop(move || assign_new_partitions(&c, &t, assigned)).await {
                    Ok(count) => assigned = count,
                    Err(e) => tracing::debug!("codebook topic {topic}: {e}"),
                }
            }
            received = consumer.recv(), if assigned > 0 => match received {
                Ok(m) => match decoder.decode(m.payload().unwrap_or_default()).await {
                    Ok(book) => {
                        if tx.send(book).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!("unreadable codebook at offset {}: {e}", m.offset()),
                },
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            },
        }
    }
}

/// Assigns `consumer` the partitions of `topic` past the first `assigned`
/// (from their beginning), keeping where the others have come to. Returns
/// how many it now reads.
pub(super) fn assign_new_partitions(
    consumer: &StreamConsumer,
    topic: &str,
    assigned: usize,
) -> Result<usize, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let count = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .sum::<usize>();
    if count <= assigned {
        return Ok(assigned);
    }
    let mut list = if assigned == 0 {
        TopicPartitionList::new()
    } else {
        consumer.position()?
    };
    for p in assigned..count {
        list.add_partition_offset(topic, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    Ok(count)
}
