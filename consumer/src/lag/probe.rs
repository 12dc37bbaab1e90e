//! Reading one cluster for the lag exporter: partition heads, committed
//! offsets and the timestamps of the records at both, and MirrorMaker 2's
//! offset syncs, tailed from one scan to the next.
//!
//! The head of a partition is found by reading its last records, not taken
//! from ListOffsets alone: tansu 0.6 answers ListOffsets with one past the
//! first offset of the last record batch. Reading from one before that
//! answer to the end gives the true head on tansu and on Kafka alike, at
//! the cost of one batch per partition and scan.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};
use vecsync_kafka::Cluster;
use vecsync_schemas::mm2::OffsetSync;

/// A partition of a topic.
pub type Partition = (String, i32);

/// Offset syncs of one source partition: (syncs topic, source topic,
/// partition).
pub type SyncsOf = (String, String, i32);

/// The end of a partition, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// One past the last record.
    pub offset: i64,
    /// The first offset still held.
    pub low: i64,
    /// Timestamp of the last record (Unix ms); `None` when empty.
    pub timestamp_ms: Option<i64>,
    /// Key and value of the last record.
    pub last: Option<(Vec<u8>, Vec<u8>)>,
}

/// Where a group stands on one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupLag {
    /// The committed offset; `None` when the group has committed nothing
    /// (its lag is then counted from the first record held).
    pub committed: Option<i64>,
    pub records: i64,
    pub seconds: f64,
}

/// What one scan of a cluster found.
#[derive(Debug, Default)]
pub struct ClusterScan {
    pub heads: BTreeMap<Partition, Head>,
    /// By (group, topic, partition).
    pub groups: BTreeMap<(String, String, i32), GroupLag>,
    /// Wanted topics the cluster does not have.
    pub missing_topics: BTreeSet<String>,
    /// The newest offset syncs by (syncs topic, source topic, partition),
    /// oldest first.
    pub offset_syncs: BTreeMap<SyncsOf, Vec<OffsetSync>>,
}

/// A long-lived reader of one cluster.
pub struct ClusterProbe {
    cluster: Cluster,
    /// The `group.id` of its readers ([`super::Plan::reader_group`]).
    reader_group: String,
    timeout: Duration,
    rewind: i64,
    reader: BaseConsumer,
    /// One handle per watched group, for its committed offsets.
    groups: HashMap<String, BaseConsumer>,
    /// Timestamps of records already looked up, by (partition, offset).
    timestamps: HashMap<(Partition, i64), i64>,
    syncs: SyncTail,
}

/// MirrorMaker 2's offset syncs topics, read on from where the last scan
/// stopped, keeping the newest syncs of every source partition.
#[derive(Default)]
struct SyncTail {
    reader: Option<BaseConsumer>,
    /// Next offset to read, per partition of a syncs topic.
    next: BTreeMap<Partition, i64>,
    kept: BTreeMap<SyncsOf, VecDeque<OffsetSync>>,
}

/// Offset syncs kept per source partition. MirrorMaker writes one at
/// least every `offset.lag.max` records (100), and the exporter needs the
/// newest below the mirror's head, which a few cover.
const SYNCS_KEPT: usize = 16;

impl std::fmt::Debug for ClusterProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterProbe")
            .field("brokers", &self.cluster.brokers())
            .finish_non_exhaustive()
    }
}

/// Cap of the timestamp cache; it is cleared when it grows past this.
const TIMESTAMP_CACHE: usize = 100_000;
/// A read that hears nothing for this long has reached the end.
const QUIET: Duration = Duration::from_millis(1_000);

impl ClusterProbe {
    pub fn new(
        cluster: &Cluster,
        reader_group: &str,
        timeout: Duration,
        rewind: u64,
    ) -> Result<Self, String> {
        Ok(Self {
            cluster: cluster.clone(),
            reader_group: reader_group.to_owned(),
            timeout,
            rewind: i64::try_from(rewind).unwrap_or(i64::MAX),
            reader: client(cluster, reader_group, timeout)?,
            groups: HashMap::new(),
            timestamps: HashMap::new(),
            syncs: SyncTail::default(),
        })
    }

    /// Reads the plan's topic heads, where each of its groups stands on
    /// them, and its offset syncs topics. Any failure to reach the cluster
    /// is an error.
    pub fn scan(&mut self, plan: &super::ClusterPlan) -> Result<ClusterScan, String> {
        let metadata = self
            .reader
            .fetch_metadata(None, self.timeout)
            .map_err(|e| format!("metadata: {e}"))?;
        let mut scan = ClusterScan::default();
        let mut partitions: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        let mut sync_partitions = Vec::new();
        for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
            let ids = t.partitions().iter().map(|p| p.id());
            if plan.topics.contains(t.name()) {
                partitions.insert(t.name().to_owned(), ids.collect());
            } else if plan.offset_syncs.contains(t.name()) {
                sync_partitions.extend(ids.map(|p| (t.name().to_owned(), p)));
            }
        }
        scan.missing_topics = plan
            .topics
            .iter()
            .filter(|t| !partitions.contains_key(*t))
            .cloned()
            .collect();
        scan.offset_syncs = self.tail_syncs(sync_partitions)?;
        for (topic, ids) in &partitions {
            let mut wants = Vec::new();
            for &p in ids {
                let (low, high) = self
                    .reader
                    .fetch_watermarks(topic, p, self.timeout)
                    .map_err(|e| format!("offsets of {topic}/{p}: {e}"))?;
                let head = Head {
                    offset: high,
                    low,
                    timestamp_ms: None,
                    last: None,
                };
                if high > low {
                    wants.push(Want {
                        partition: (topic.clone(), p),
                        from: (high - 1).max(low),
                        at_least: None,
                    });
                }
                scan.heads.insert((topic.clone(), p), head);
            }
            for (partition, found) in self.read(&wants)? {
                if let Some(head) = scan.heads.get_mut(&partition) {
                    head.offset = head.offset.max(found.offset + 1);
                    head.timestamp_ms = Some(found.timestamp_ms);
                    head.last = Some((found.key, found.value));
                }
            }
        }
        for (group, group_topics) in &plan.groups {
            self.group_lag(&mut scan, group, group_topics)?;
        }
        if self.timestamps.len() > TIMESTAMP_CACHE {
            self.timestamps.clear();
        }
        Ok(scan)
    }

    /// Reads the offset syncs topics' `partitions` on to their current
    /// ends, and returns the syncs kept.
    fn tail_syncs(
        &mut self,
        partitions: Vec<Partition>,
    ) -> Result<BTreeMap<SyncsOf, Vec<OffsetSync>>, String> {
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let reader = match self.syncs.reader.take() {
            Some(r) => r,
            None => client(&self.cluster, &self.reader_group, self.timeout)?,
        };
        let read = Self::read_syncs(&mut self.syncs, &reader, &partitions, self.timeout);
        self.syncs.reader = Some(reader);
        read?;
        Ok(self
            .syncs
            .kept
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
            .collect())
    }

    fn read_syncs(
        tail: &mut SyncTail,
        reader: &BaseConsumer,
        partitions: &[Partition],
        timeout: Duration,
    ) -> Result<(), String> {
        if partitions.iter().any(|p| !tail.next.contains_key(p)) {
            let mut tpl = TopicPartitionList::new();
            for p in partitions {
                let next = *tail.next.entry(p.clone()).or_insert(0);
                tpl.add_partition_offset(&p.0, p.1, Offset::Offset(next))
                    .map_err(|e| e.to_string())?;
            }
            reader
                .assign(&tpl)
                .map_err(|e| format!("assign offset syncs: {e}"))?;
        }
        // Read each partition up to the end it has now.
        let mut ends = BTreeMap::new();
        for p in partitions {
            let (low, high) = reader
                .fetch_watermarks(&p.0, p.1, timeout)
                .map_err(|e| format!("offsets of {}/{}: {e}", p.0, p.1))?;
            let next = tail.next.entry(p.clone()).or_insert(0);
            *next = (*next).max(low);
            if *next < high {
                ends.insert(p.clone(), high);
            }
        }
        let deadline = Instant::now() + timeout;
        while !ends.is_empty() && Instant::now() < deadline {
            match reader.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let p = (m.topic().to_owned(), m.partition());
                    tail.next.insert(p.clone(), m.offset() + 1);
                    if ends.get(&p).is_some_and(|end| m.offset() + 1 >= *end) {
                        ends.remove(&p);
                    }
                    let (Some(key), Some(value)) = (m.key(), m.payload()) else {
                        continue;
                    };
                    // A record that is not a sync is no mapping; skip it.
                    let Ok(sync) = OffsetSync::decode(key, value) else {
                        continue;
                    };
                    let kept = tail
                        .kept
                        .entry((p.0, sync.topic.clone(), sync.partition))
                        .or_default();
                    if kept.len() == SYNCS_KEPT {
                        kept.pop_front();
                    }
                    kept.push_back(sync);
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => return Err(format!("reading offset syncs: {e}")),
            }
        }
        Ok(())
    }

    fn group_lag(
        &mut self,
        scan: &mut ClusterScan,
        group: &str,
        topics: &BTreeSet<String>,
    ) -> Result<(), String> {
        let mut tpl = TopicPartitionList::new();
        for (topic, p) in scan.heads.keys().filter(|(t, _)| topics.contains(t)) {
            tpl.add_partition(topic, *p);
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        if !self.groups.contains_key(group) {
            let handle = client(&self.cluster, group, self.timeout)?;
            self.groups.insert(group.to_owned(), handle);
        }
        let committed = self.groups[group]
            .committed_offsets(tpl, self.timeout)
            .map_err(|e| format!("committed offsets of group {group}: {e}"))?;
        // The offset each partition's lag counts from, and its head.
        let mut from: Vec<(Partition, Option<i64>, i64, Head)> = Vec::new();
        for e in committed.elements() {
            let partition = (e.topic().to_owned(), e.partition());
            let Some(head) = scan.heads.get(&partition) else {
                continue;
            };
            let committed = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            let start = committed.unwrap_or(head.low).max(head.low);
            from.push((partition, committed, start, head.clone()));
        }
        let lagging: Vec<(Partition, i64)> = from
            .iter()
            .filter(|(_, _, start, head)| *start < head.offset)
            .map(|(p, _, start, _)| (p.clone(), *start))
            .collect();
        let stamps = self.timestamps_at(&lagging)?;
        for (partition, committed, start, head) in from {
            let records = (head.offset - start).max(0);
            let seconds = match (records, head.timestamp_ms, stamps.get(&partition)) {
                (0, _, _) => 0.0,
                (_, Some(head_ts), Some(ts)) => (head_ts - ts).max(0) as f64 / 1000.0,
                _ => 0.0,
            };
            scan.groups.insert(
                (group.to_owned(), partition.0, partition.1),
                GroupLag {
                    committed,
                    records,
                    seconds,
                },
            );
        }
        Ok(())
    }

    /// The timestamp of the record at each (partition, offset), from the
    /// cache or read. A broker that skips the rest of a batch when a fetch
    /// starts inside it answers with a later record or none; such
    /// partitions are read again from `rewind` records before.
    fn timestamps_at(
        &mut self,
        at: &[(Partition, i64)],
    ) -> Result<HashMap<Partition, i64>, String> {
        let mut out = HashMap::new();
        let mut wants = Vec::new();
        for (partition, offset) in at {
            match self.timestamps.get(&(partition.clone(), *offset)) {
                Some(ts) => {
                    out.insert(partition.clone(), *ts);
                }
                None => wants.push(Want {
                    partition: partition.clone(),
                    from: *offset,
                    at_least: Some(*offset),
                }),
            }
        }
        let first = self.read(&wants)?;
        let mut again = Vec::new();
        for want in wants {
            match first.get(&want.partition) {
                Some(found) if found.offset == want.from => {
                    out.insert(want.partition, found.timestamp_ms);
                }
                _ => again.push(Want {
                    from: (want.from - self.rewind).max(0),
                    ..want
                }),
            }
        }
        for (partition, found) in self.read(&again)? {
            out.insert(partition, found.timestamp_ms);
        }
        for (partition, offset) in at {
            if let Some(ts) = out.get(partition) {
                self.timestamps.insert((partition.clone(), *offset), *ts);
            }
        }
        Ok(out)
    }

    /// Reads every wanted partition from its offset: to the end (the last
    /// record is returned), or up to the first record at or after
    /// `at_least` (that record is returned). Partitions of one topic at a
    /// time, since librdkafka reports the end of a partition by number only.
    fn read(&self, wants: &[Want]) -> Result<BTreeMap<Partition, Found>, String> {
        let mut out = BTreeMap::new();
        let mut by_topic: BTreeMap<&str, Vec<&Want>> = BTreeMap::new();
        for w in wants {
            by_topic.entry(&w.partition.0).or_default().push(w);
        }
        for (topic, wants) in by_topic {
            let mut tpl = TopicPartitionList::new();
            for w in &wants {
                tpl.add_partition_offset(topic, w.partition.1, Offset::Offset(w.from))
                    .map_err(|e| e.to_string())?;
            }
            self.reader
                .assign(&tpl)
                .map_err(|e| format!("assign {topic}: {e}"))?;
            let mut open: BTreeSet<i32> = wants.iter().map(|w| w.partition.1).collect();
            let deadline = Instant::now() + self.timeout;
            let mut heard = Instant::now();
            while !open.is_empty() && Instant::now() < deadline && heard.elapsed() < QUIET {
                match self.reader.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => {
                        heard = Instant::now();
                        let p = m.partition();
                        let Some(want) = wants.iter().find(|w| w.partition.1 == p) else {
                            continue;
                        };
                        if !open.contains(&p) || want.at_least.is_some_and(|o| m.offset() < o) {
                            continue;
                        }
                        out.insert(
                            want.partition.clone(),
                            Found {
                                offset: m.offset(),
                                timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                                key: m.key().unwrap_or_default().to_vec(),
                                value: m.payload().unwrap_or_default().to_vec(),
                            },
                        );
                        if want.at_least.is_some() {
                            open.remove(&p);
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        heard = Instant::now();
                        open.remove(&p);
                    }
                    Some(Err(e)) => {
                        let _ = self.reader.unassign();
                        return Err(format!("reading {topic}: {e}"));
                    }
                    None => {}
                }
            }
            let _ = self.reader.unassign();
        }
        Ok(out)
    }
}

#[derive(Debug, Clone)]
struct Want {
    partition: Partition,
    from: i64,
    /// Stop at the first record at or after this offset; `None`: read to
    /// the end.
    at_least: Option<i64>,
}

#[derive(Debug)]
struct Found {
    offset: i64,
    timestamp_ms: i64,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// A reader of `cluster` under `group`, or a handle on a watched group's
/// committed offsets; neither joins the group nor commits.
fn client(cluster: &Cluster, group: &str, timeout: Duration) -> Result<BaseConsumer, String> {
    let socket_timeout = timeout.as_millis().max(10).to_string();
    cluster
        .client(&[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("fetch.wait.max.ms", "10"),
            ("socket.timeout.ms", &socket_timeout),
        ])
        .map_err(|e| e.to_string())?
        .create()
        .map_err(|e| format!("client for {}: {e}", cluster.brokers()))
}
