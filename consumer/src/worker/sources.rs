//! The Kafka consumers of a worker's sources and how their partitions are
//! assigned, statically or by the group, and handed to the loop.

use super::*;

/// A client of a source's cluster, from the one client layer.
pub(super) fn client(
    config: &RegionConfig,
    source: &SourceConfig,
) -> Result<ClientConfig, WorkerError> {
    let wait = config.kafka.fetch_wait_max_ms.to_string();
    // A capped source reads ahead about a second's worth, so that the link
    // carries no more than the cap beyond one such burst.
    let cap = source.max_read_bytes_per_sec;
    let ahead = cap.map_or(config.consumer.fetch_queue_max_kbytes, |cap| {
        config
            .consumer
            .fetch_queue_max_kbytes
            .min((cap / 1024).max(1))
    });
    let fetch_bytes = cap.map(|_| (u64::from(ahead) * 1024).to_string());
    let ahead = ahead.to_string();
    let mut settings = vec![
        ("fetch.wait.max.ms", wait.as_str()),
        // Bounds the read-ahead: librdkafka fetches up to 64 MB otherwise.
        ("queued.max.messages.kbytes", &ahead),
    ];
    if let Some(bytes) = &fetch_bytes {
        settings.push(("max.partition.fetch.bytes", bytes));
    }
    Ok(Cluster::of_source(config, source).client(&settings)?)
}

/// The group consumer of one source: no auto-commit, range assignment so
/// partition i of every source lands on the same worker.
pub(super) fn source_consumer(
    config: &RegionConfig,
    source: &SourceConfig,
    context: SourceContext,
) -> Result<SourceConsumer, WorkerError> {
    let mut c = client(config, source)?;
    if let Some(id) = &config.consumer.instance_id {
        c.set("group.instance.id", id);
    }
    let consumer: SourceConsumer = c
        .set("group.id", config.group_id())
        .set("client.id", format!("vecsync-worker-{}", config.region))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .set(
            "session.timeout.ms",
            config.consumer.session_timeout_ms.to_string(),
        )
        // The loop polls all the time; a short poll interval bounds how long
        // a rebalance waits for a member that died (tansu waits for this,
        // not for the session timeout).
        .set(
            "max.poll.interval.ms",
            config.consumer.session_timeout_ms.to_string(),
        )
        .create_with_context(context)
        .map_err(kafka(format!(
            "failed to create a consumer for {}",
            source.topic
        )))?;
    if config.consumer.assignment == Assignment::Group {
        consumer
            .subscribe(&[&source.topic])
            .map_err(kafka(format!("failed to subscribe to {}", source.topic)))?;
    }
    Ok(consumer)
}

/// Static assignment: waits for `topic` to exist, then takes this worker's
/// share of its partitions (p mod count = index), resuming `rewind` records
/// before the group's committed offsets. Replaying a few records is
/// harmless (apply is idempotent) and needed on brokers that cannot fetch
/// from inside a record batch (tansu 0.6 skips the rest of the batch).
/// Returns the committed offset of each partition that has one. Partitions
/// added later are not picked up until a restart.
pub(super) async fn assign_static(
    consumer: &Arc<SourceConsumer>,
    topic: &str,
    index: u32,
    count: u32,
    rewind: u64,
) -> Result<Vec<(i32, i64)>, String> {
    let mut last_warning = None::<Instant>;
    loop {
        if let Some(why) = consumer.context().watch.fatal.get() {
            return Err(why);
        }
        let (c, t) = (consumer.clone(), topic.to_owned());
        let found = off_loop(move || {
            let metadata = c.fetch_metadata(Some(&t), Duration::from_secs(5))?;
            if let Some(refused) = vecsync_kafka::topic_refused(&metadata, &t) {
                return Err(refused);
            }
            let mut mine = TopicPartitionList::new();
            for mt in metadata.topics().iter().filter(|mt| mt.name() == t) {
                for p in mt.partitions().iter().map(|p| p.id()) {
                    if p as u32 % count == index {
                        mine.add_partition(&t, p);
                    }
                }
            }
            if mine.count() == 0 {
                return Ok(None);
            }
            let committed = c.committed_offsets(mine, Duration::from_secs(10))?;
            // Where each partition's log now starts, to see whether
            // retention removed records the group had not read.
            let mut starts = Vec::new();
            for e in committed.elements() {
                let (low, _) = c.fetch_watermarks(&t, e.partition(), Duration::from_secs(5))?;
                starts.push((e.partition(), low));
            }
            Ok::<_, rdkafka::error::KafkaError>(Some((committed, starts)))
        })
        .await;
        let why = match found {
            Ok(Some((committed, starts))) => {
                let (start, resumed) = rewound(&committed, rewind);
                // The series exists from the start, so that an alert sees
                // its first increase.
                RecordsLost { topic, count: 0 }.emit();
                for (partition, offset, lost) in lost_to_retention(&resumed, &starts) {
                    RecordsLost { topic, count: lost }.emit();
                    tracing::error!(
                        topic,
                        partition,
                        committed = offset,
                        lost,
                        "records this region never applied were deleted from the source \
                         (retention) before the worker read them; the region misses those \
                         writes: seed it from a snapshot of another region \
                         (vecsync snapshot)"
                    );
                }
                match consumer.assign(&start) {
                    Ok(()) => {
                        tracing::info!(topic, partitions = start.count(), ?resumed, "assigned");
                        return Ok(every_assigned(&start, &resumed)
                            .into_iter()
                            .map(|(_, p, c)| (p, c))
                            .collect());
                    }
                    Err(e) => format!("assignment failed: {e}"),
                }
            }
            Ok(None) => "the topic does not exist yet".to_owned(),
            Err(e) if vecsync_kafka::is_fatal(&e) => {
                let cluster = &consumer.context().watch.cluster;
                return Err(format!("Kafka cluster {cluster}: topic {topic}: {e}"));
            }
            Err(e) => e.to_string(),
        };
        if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
            tracing::warn!(topic, "waiting for the source: {why}");
            last_warning = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Where to start reading partitions whose group offsets are `committed`:
/// `rewind` records before each committed offset (see [`assign_static`]),
/// or the beginning when nothing is committed. Also returns each committed
/// offset found.
pub(super) fn rewound(
    committed: &TopicPartitionList,
    rewind: u64,
) -> (TopicPartitionList, Vec<(String, i32, i64)>) {
    let mut start = TopicPartitionList::new();
    let mut resumed = Vec::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(c) => {
                resumed.push((e.topic().to_owned(), e.partition(), c));
                Offset::Offset(c.saturating_sub(rewind as i64).max(0))
            }
            _ => Offset::Beginning,
        };
        if let Err(err) = start.add_partition_offset(e.topic(), e.partition(), offset) {
            tracing::warn!(
                topic = e.topic(),
                partition = e.partition(),
                "cannot assign: {err}"
            );
        }
    }
    (start, resumed)
}

/// Every partition of `start`, with its committed offset from `resumed`, or
/// -1 when the group has committed none: each is announced to the loop,
/// which holds the watermark for it from then on.
pub(super) fn every_assigned(
    start: &TopicPartitionList,
    resumed: &[(String, i32, i64)],
) -> Vec<(String, i32, i64)> {
    start
        .elements()
        .iter()
        .map(|e| {
            let committed = resumed
                .iter()
                .find(|(t, p, _)| t == e.topic() && *p == e.partition())
                .map_or(-1, |r| r.2);
            (e.topic().to_owned(), e.partition(), committed)
        })
        .collect()
}

/// Partitions whose committed offset lies before the start of their log:
/// (partition, committed offset, records lost). `resumed` holds (topic,
/// partition, committed offset); `starts` each partition's first offset. A
/// partition the group never committed counts from offset 0: a region
/// joining late has lost whatever its log no longer starts with.
pub(super) fn lost_to_retention(
    resumed: &[(String, i32, i64)],
    starts: &[(i32, i64)],
) -> Vec<(i32, i64, u64)> {
    starts
        .iter()
        .filter_map(|&(partition, low)| {
            let committed = resumed.iter().find(|r| r.1 == partition).map_or(0, |r| r.2);
            (low > committed).then(|| (partition, committed, (low - committed) as u64))
        })
        .collect()
}

/// What to tell an operator when a source topic deletes records sooner
/// than the tombstone horizon: a region that falls that far behind (or
/// joins later) loses writes, and a delete may be forgotten before every
/// region has seen the writes it overrides. `None` when retention covers
/// the horizon or keeps everything. Topic patterns are not checked.
pub async fn short_retention(
    cluster: &Cluster,
    topic: &str,
    horizon_ms: u64,
) -> Result<Option<String>, vecsync_kafka::ClientError> {
    if topic.starts_with('^') {
        return Ok(None);
    }
    Ok(cluster
        .retention_ms(topic)
        .await?
        .filter(|&retention| retention < horizon_ms)
        .map(|retention| {
            format!(
                "source topic {topic} keeps records for {retention} ms (retention.ms), \
                 less than consumer.tombstone_horizon_ms ({horizon_ms} ms): a worker stopped \
                 longer than that, or a region joining later, misses writes; raise the \
                 topic's retention.ms or seed from a snapshot"
            )
        }))
}

/// Logs [`short_retention`]'s warning for a source, off the start path.
pub(super) fn warn_on_short_retention(cluster: Cluster, topic: String, horizon_ms: u64) {
    tokio::spawn(async move {
        match short_retention(&cluster, &topic, horizon_ms).await {
            Ok(Some(warning)) => tracing::warn!(topic, "{warning}"),
            Ok(None) => {}
            Err(e) => tracing::info!(
                topic,
                "retention not checked: cannot read the topic config: {e}"
            ),
        }
    });
}

pub(super) type SourceConsumer = StreamConsumer<SourceContext>;

/// The consumer context of a source. In group mode it handles rebalances:
/// an assignment resumes a little before the committed offsets (as static
/// assignment does) and tells the loop where the group stood; a revocation
/// asks the loop to apply and synchronously commit everything it holds and
/// waits for that, up to the drain timeout, before the partitions go.
/// librdkafka calls it inside the source stream's poll, on an executor
/// thread, so it blocks through `block_in_place` (group mode needs the
/// multi-threaded runtime). Its messages travel with the records, so the
/// loop has handled every record received before a revocation when it
/// drains.
pub(super) struct SourceContext {
    pub(super) index: usize,
    pub(super) tx: mpsc::Sender<(usize, Incoming)>,
    pub(super) rewind: u64,
    pub(super) drain_timeout: Duration,
    pub(super) readiness: Readiness,
    /// What librdkafka reports outside any call, fatal errors kept.
    pub(super) watch: Watch,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.error(error, reason);
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        tokio::task::block_in_place(|| match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                tracing::warn!(source = self.index, "rebalance failed: {other:?}");
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(source = self.index, "unassign failed: {e}");
                }
            }
        });
    }
}

impl SourceContext {
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let (start, resumed) =
            match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(committed) => rewound(&committed, self.rewind),
                Err(e) => {
                    tracing::warn!(
                        source = self.index,
                        "cannot read committed offsets, resuming at them without a rewind: {e}"
                    );
                    (tpl.clone(), Vec::new())
                }
            };
        for (topic, partition, committed) in &every_assigned(&start, &resumed) {
            let resume = Incoming::Resume((self.index, topic.clone(), *partition), *committed);
            if self.tx.blocking_send((self.index, resume)).is_err() {
                return;
            }
        }
        match consumer.assign(&start) {
            Ok(()) => {
                self.readiness.assigned(self.index, true);
                tracing::info!(
                    source = self.index,
                    partitions = start.count(),
                    ?resumed,
                    "partitions assigned"
                );
            }
            Err(e) => tracing::warn!(source = self.index, "assignment failed: {e}"),
        }
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions: Vec<Partition> = tpl
            .elements()
            .iter()
            .map(|e| (self.index, e.topic().to_owned(), e.partition()))
            .collect();
        let (done, drained) = std::sync::mpsc::sync_channel(1);
        let revoke = Incoming::Revoke(partitions.clone(), done);
        if self.tx.blocking_send((self.index, revoke)).is_ok() {
            match drained.recv_timeout(self.drain_timeout) {
                Ok(()) => tracing::info!(
                    source = self.index,
                    ?partitions,
                    "partitions revoked after a drain and commit"
                ),
                Err(_) => tracing::warn!(
                    source = self.index,
                    ?partitions,
                    "partitions revoked before the drain finished; their uncommitted records will be replayed by their next owner"
                ),
            }
        }
        self.readiness.assigned(self.index, false);
        if let Err(e) = consumer.unassign() {
            tracing::warn!(source = self.index, "unassign failed: {e}");
        }
    }
}

/// The reorder buffer's key for a source none of whose partitions is
/// assigned yet.
pub(super) fn unassigned(index: usize, topic: &str) -> Partition {
    (index, topic.to_owned(), -1)
}

/// A record as the loop needs it: partition, offset, value and key.
pub(super) type Received = (Partition, i64, Vec<u8>, Option<Vec<u8>>);

/// What the source tasks hand the loop.
pub(super) enum Incoming {
    Record(Received),
    /// A partition assigned at this committed offset (-1: none committed).
    Resume(Partition, i64),
    /// The group takes these partitions away once the loop has drained,
    /// committed and answered.
    Revoke(Vec<Partition>, std::sync::mpsc::SyncSender<()>),
    /// The source's cluster refused the worker (see [`WorkerError::Client`]).
    Fatal(String),
}

/// Hands a source's records to the worker loop. Errors such as a topic that
/// does not exist yet are logged and waited out.
pub(super) async fn forward(
    index: usize,
    consumer: Arc<SourceConsumer>,
    assign: Option<(String, u32, u32, u64)>,
    tx: mpsc::Sender<(usize, Incoming)>,
    readiness: Readiness,
    rate: Option<TokenBucket>,
) {
    let fatal = consumer.context().watch.fatal.clone();
    let stop = |why: String| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((index, Incoming::Fatal(why))).await;
        }
    };
    if let Some((topic, worker, workers, rewind)) = assign {
        let assigned = match assign_static(&consumer, &topic, worker, workers, rewind).await {
            Ok(assigned) => assigned,
            Err(why) => return stop(why).await,
        };
        for (partition, committed) in assigned {
            let resume = Incoming::Resume((index, topic.clone(), partition), committed);
            if tx.send((index, resume)).await.is_err() {
                return;
            }
        }
        readiness.assigned(index, true);
    }
    let mut last_warning = None::<Instant>;
    let mut check = tokio::time::interval(FATAL_CHECK);
    loop {
        // A refused login or certificate shows only in the client's error
        // callback; the consumer just hears nothing.
        let received = tokio::select! {
            received = consumer.recv() => received,
            _ = check.tick() => match fatal.get() {
                Some(why) => return stop(why).await,
                None => continue,
            },
        };
        let item = match received {
            Ok(m) => (
                (index, m.topic().to_owned(), m.partition()),
                m.offset(),
                m.payload().unwrap_or_default().to_vec(),
                m.key().map(<[u8]>::to_vec),
            ),
            Err(e) if vecsync_kafka::is_fatal(&e) => {
                let cluster = &consumer.context().watch.cluster;
                return stop(format!("Kafka cluster {cluster}: {e}")).await;
            }
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    tracing::warn!(source = index, "waiting for the source: {e}");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if let Some(bucket) = &rate {
            let bytes = item.2.len() + item.3.as_ref().map_or(0, Vec::len);
            if bucket
                .acquire(u32::try_from(bytes).unwrap_or(u32::MAX))
                .await
            {
                ReadThrottled { topic: &item.0.1 }.emit();
            }
        }
        if tx.send((index, Incoming::Record(item))).await.is_err() {
            return;
        }
    }
}

/// How often a source's forwarder looks for a fatal error of its client.
pub(super) const FATAL_CHECK: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_before_the_log_start_are_counted_as_lost() {
        let resumed = vec![
            ("t".to_owned(), 0, 100),
            ("t".to_owned(), 1, 500),
            ("t".to_owned(), 2, 40),
        ];
        // Partition 0's log now starts at 350; 1 and 2 still hold their
        // committed records.
        let starts = [(0, 350), (1, 500), (2, 0)];
        assert_eq!(lost_to_retention(&resumed, &starts), [(0, 100, 250)]);
        assert!(lost_to_retention(&resumed, &[]).is_empty());
        // Partition 3 was never read by the group, and its log starts at 70.
        assert_eq!(
            lost_to_retention(&resumed, &[(3, 70), (4, 0)]),
            [(3, 0, 70)]
        );
    }
}
