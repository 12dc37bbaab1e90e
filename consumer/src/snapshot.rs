//! Snapshots of a region's store, to seed a region that joins late
//! (README, "Bootstrapping a new region").
//!
//! A snapshot is a stream of JSON lines:
//! 1. a [`Header`]: the region it was taken in, when, each origin's applied
//!    watermark and each source partition's committed offset when it began,
//!    and the shape of every collection;
//! 2. one line per stored record, live point or tombstone, with its
//!    bookkeeping (versions and parked deltas) and its vector in base64
//!    (little-endian `f32`), exactly as the store keeps it;
//! 3. a last line with the number of records: a snapshot without it was cut
//!    short, and restoring it is refused.
//!
//! It is taken while the worker goes on applying (`GET /v1/snapshot`). The
//! watermarks are read before the first record, so every event stamped
//! before them is in the snapshot, or superseded there by a newer one;
//! events applied during the scan may be in it or not. Restoring positions
//! each source at its origin's watermark less a margin ([`plan_positions`]),
//! by record timestamp because offsets differ between clusters and mirrors,
//! so every event the snapshot may lack is replayed; replaying what it has
//! is harmless, as apply is idempotent and older versions lose.

use crate::apply::{Payload, Record};
use crate::store::{Part, SCAN_PAGE, Store, StoreError, stored_point, stored_record};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::Duration;
use vecsync_kafka::{ClientError, Cluster};
use vecsync_schemas::config::{Distance, RegionConfig, SourceConfig};
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;

/// The snapshot format this build writes and reads.
pub const FORMAT: u32 = 1;

/// What a snapshot says of itself, on its first line.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    /// The format version, [`FORMAT`].
    pub vecsync_snapshot: u32,
    /// The region whose store it is.
    pub region: String,
    /// When it began, in milliseconds since the epoch.
    pub taken_at_ms: u64,
    /// Per origin region, the version (HLC) before which every event had
    /// been applied when it began.
    pub watermarks: BTreeMap<String, String>,
    /// Per source partition (`topic/partition`), the offset the worker had
    /// committed when it began: where the taking region itself would go on.
    pub committed: BTreeMap<String, i64>,
    /// The collections it holds.
    pub collections: Vec<Shape>,
}

/// A collection's vectors.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    pub name: String,
    pub dimension: u32,
    pub distance: Distance,
}

/// A line after the header.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    /// One stored record: a live point has a vector, a tombstone none.
    Point {
        collection: String,
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vector: Option<String>,
        payload: Payload,
    },
    /// The last line: how many records came before it.
    End { points: u64 },
}

/// Why a snapshot could not be taken or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("snapshot: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot line {line}: {reason}")]
    Malformed { line: u64, reason: String },
    #[error(
        "the snapshot is cut short after {points} records (its last line is missing); \
         take it again"
    )]
    Truncated { points: u64 },
    #[error("collection {collection}: the snapshot holds {snapshot}, the config says {config}")]
    Mismatch {
        collection: String,
        snapshot: String,
        config: String,
    },
    #[error(
        "store collection {0} already holds records: a snapshot is restored into a new \
         region's empty store (remove the store directory, or the collection and \
         {0}.tombstones on the Qdrant server, and run again)"
    )]
    NotEmpty(String),
    #[error(transparent)]
    Kafka(#[from] ClientError),
    #[error(
        "source {topic} partition {partition}: the snapshot is older than what the topic \
         keeps (its log starts at offset {log_start} with records newer than {from_ms} ms), \
         so events the snapshot lacks may be gone; take a newer snapshot"
    )]
    TooOld {
        topic: String,
        partition: i32,
        log_start: i64,
        from_ms: u64,
    },
    #[error("source topic {0} does not exist")]
    NoTopic(String),
    #[error("source {0}: a topic pattern cannot be positioned; name the topic")]
    Pattern(String),
}

impl Header {
    /// The header of a snapshot of `config`'s region beginning now.
    pub fn new(
        config: &RegionConfig,
        taken_at_ms: u64,
        watermarks: &BTreeMap<String, Hlc>,
        committed: BTreeMap<String, i64>,
    ) -> Self {
        Self {
            vecsync_snapshot: FORMAT,
            region: config.region.clone(),
            taken_at_ms,
            watermarks: watermarks
                .iter()
                .map(|(origin, hlc)| (origin.clone(), hlc.to_string()))
                .collect(),
            committed,
            collections: config
                .collections
                .iter()
                .map(|(name, c)| Shape {
                    name: name.clone(),
                    dimension: c.dimension,
                    distance: c.distance,
                })
                .collect(),
        }
    }

    /// The watermark of `origin`, if the snapshot has one.
    fn watermark(&self, origin: &str) -> Result<Option<Hlc>, SnapshotError> {
        self.watermarks
            .get(origin)
            .map(|v| {
                v.parse().map_err(|reason| SnapshotError::Malformed {
                    line: 1,
                    reason: format!("watermarks.{origin}: {reason}"),
                })
            })
            .transpose()
    }
}

fn write_line(out: &mut dyn Write, line: &impl serde::Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

/// Writes a snapshot of `store` with `header` to `out`, and returns the
/// number of records written.
pub fn write(
    store: &dyn Store,
    header: &Header,
    out: &mut dyn Write,
) -> Result<u64, SnapshotError> {
    write_line(out, header)?;
    let mut points = 0;
    for shape in &header.collections {
        for part in [Part::Live, Part::Tombstones] {
            let mut from = None;
            loop {
                let (page, next) = store.scan_page(&shape.name, part, true, from, SCAN_PAGE)?;
                for (id, record) in page {
                    let (vector, payload) = stored_point(&record);
                    let line = Line::Point {
                        collection: shape.name.clone(),
                        id: id.to_string(),
                        vector: vector.map(|v| encode_vector(&v)),
                        payload,
                    };
                    write_line(out, &line)?;
                    points += 1;
                }
                match next {
                    Some(next) => from = Some(next),
                    None => break,
                }
            }
        }
    }
    write_line(out, &Line::End { points })?;
    out.flush()?;
    Ok(points)
}

fn encode_vector(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    BASE64.encode(bytes)
}

fn decode_vector(text: &str) -> Result<Vec<f32>, String> {
    let bytes = BASE64.decode(text).map_err(|e| format!("vector: {e}"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!(
            "vector: {} bytes is not a whole number of f32",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// What [`load`] restored.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub header: Header,
    /// Records written to the store.
    pub points: u64,
    /// Records of collections the region's config does not have, by
    /// collection: not restored.
    pub skipped: BTreeMap<String, u64>,
}

/// Reads the header of a snapshot.
pub fn read_header(input: &mut dyn BufRead) -> Result<Header, SnapshotError> {
    let mut first = String::new();
    input.read_line(&mut first)?;
    let malformed = |reason: String| SnapshotError::Malformed { line: 1, reason };
    if first.trim().is_empty() {
        return Err(malformed("empty: no header".into()));
    }
    let header: Header = serde_json::from_str(&first).map_err(|e| malformed(e.to_string()))?;
    if header.vecsync_snapshot != FORMAT {
        return Err(malformed(format!(
            "format {} (this build reads format {FORMAT})",
            header.vecsync_snapshot
        )));
    }
    Ok(header)
}

/// Restores the snapshot `input` into `store`, which must hold nothing of
/// the region's collections yet: creates `config`'s collections (checking
/// that the snapshot's have the same shape), writes every record, flushes,
/// and calls `progress` with the count every 10,000 records.
pub fn load(
    store: &dyn Store,
    config: &RegionConfig,
    input: &mut dyn BufRead,
    progress: &mut dyn FnMut(u64),
) -> Result<Loaded, SnapshotError> {
    let header = read_header(input)?;
    for (name, c) in &config.collections {
        if let Some(shape) = header.collections.iter().find(|s| s.name == *name)
            && (shape.dimension, shape.distance) != (c.dimension, c.distance)
        {
            return Err(SnapshotError::Mismatch {
                collection: name.clone(),
                snapshot: format!("{}-d {:?} vectors", shape.dimension, shape.distance),
                config: format!("{}-d {:?}", c.dimension, c.distance),
            });
        }
        store.ensure_collection(name, c.dimension as usize, c.distance)?;
        let empty = [Part::Live, Part::Tombstones].into_iter().try_fold(
            true,
            |empty, part| -> Result<bool, StoreError> {
                Ok(empty && store.scan_page(name, part, false, None, 1)?.0.is_empty())
            },
        )?;
        if !empty {
            return Err(SnapshotError::NotEmpty(name.clone()));
        }
    }
    let mut loaded = Loaded {
        header,
        points: 0,
        skipped: BTreeMap::new(),
    };
    let mut batch: (String, Vec<(PointId, Record)>) = (String::new(), Vec::new());
    let mut text = String::new();
    for number in 2u64.. {
        text.clear();
        let seen = loaded.points + loaded.skipped.values().sum::<u64>();
        if input.read_line(&mut text)? == 0 {
            return Err(SnapshotError::Truncated { points: seen });
        }
        let malformed = |reason: String| SnapshotError::Malformed {
            line: number,
            reason,
        };
        let line: Line = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        let (collection, id, vector, payload) = match line {
            Line::End { points } => {
                if points != seen {
                    return Err(malformed(format!(
                        "the snapshot says {points} records, {seen} came"
                    )));
                }
                break;
            }
            Line::Point {
                collection,
                id,
                vector,
                payload,
            } => (collection, id, vector, payload),
        };
        if !config.collections.contains_key(&collection) {
            *loaded.skipped.entry(collection).or_default() += 1;
            continue;
        }
        let id: PointId = id.parse().map_err(malformed)?;
        let vector = vector.as_deref().map(decode_vector).transpose();
        let record = stored_record(&collection, &id, payload, vector.map_err(malformed)?)?;
        if batch.0 != collection || batch.1.len() >= SCAN_PAGE {
            store.write(&batch.0, &std::mem::take(&mut batch.1))?;
            batch.0 = collection;
        }
        batch.1.push((id, record));
        loaded.points += 1;
        if loaded.points.is_multiple_of(10_000) {
            progress(loaded.points);
        }
    }
    if !batch.1.is_empty() {
        store.write(&batch.0, &batch.1)?;
    }
    store.flush()?;
    Ok(loaded)
}

/// Where one source of the restoring region goes on reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Positions {
    pub source: SourceConfig,
    /// The record timestamp it reads from: its origin's watermark in the
    /// snapshot less the margin. `None` when the snapshot has no watermark
    /// of its origin: it is read from its first retained record.
    pub from_ms: Option<u64>,
    /// Per partition, the offset of the first record at or after
    /// `from_ms` (empty when `from_ms` is `None`).
    pub partitions: Vec<(i32, i64)>,
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

fn group_client(config: &RegionConfig, source: &SourceConfig) -> Result<BaseConsumer, ClientError> {
    let cluster = Cluster::of_source(config, source);
    cluster
        .client(&[("enable.auto.commit", "false")])?
        .set("group.id", config.group_id())
        .create()
        .map_err(|e| cluster.error("failed to create a consumer", e))
}

/// Works out where each of `config`'s sources goes on after restoring a
/// snapshot with `header`: per partition, the first record stamped at or
/// after its origin's watermark less `margin_ms` (Kafka's offsetsForTimes).
/// A partition whose log starts there, having deleted older records, may
/// have deleted some the snapshot lacks: that is an error. Blocking.
pub fn plan_positions(
    config: &RegionConfig,
    header: &Header,
    margin_ms: u64,
) -> Result<Vec<Positions>, SnapshotError> {
    let mut out = Vec::new();
    for source in config.sources() {
        let Some(mark) = header.watermark(&source.region)? else {
            out.push(Positions {
                source,
                from_ms: None,
                partitions: Vec::new(),
            });
            continue;
        };
        if source.topic.starts_with('^') {
            return Err(SnapshotError::Pattern(source.topic));
        }
        let from_ms = mark.wall_ms.saturating_sub(margin_ms);
        let cluster = &Cluster::of_source(config, &source);
        let kafka = |what: &str| {
            let what = format!("{what} of {}", source.topic);
            move |e| SnapshotError::Kafka(cluster.error(&what, e))
        };
        let consumer = group_client(config, &source)?;
        let metadata = consumer
            .fetch_metadata(Some(&source.topic), KAFKA_TIMEOUT)
            .map_err(kafka("failed to read the partitions"))?;
        let mut asked = TopicPartitionList::new();
        for t in metadata
            .topics()
            .iter()
            .filter(|t| t.name() == source.topic)
        {
            for p in t.partitions() {
                asked
                    .add_partition_offset(&source.topic, p.id(), Offset::Offset(from_ms as i64))
                    .map_err(kafka("bad partition"))?;
            }
        }
        if asked.count() == 0 {
            return Err(SnapshotError::NoTopic(source.topic));
        }
        let found = consumer
            .offsets_for_times(asked, KAFKA_TIMEOUT)
            .map_err(kafka("failed to find offsets by time"))?;
        let mut partitions = Vec::new();
        for e in found.elements() {
            let (low, high) = consumer
                .fetch_watermarks(&source.topic, e.partition(), KAFKA_TIMEOUT)
                .map_err(kafka("failed to read the offsets"))?;
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                // No record that new yet: from the end.
                _ => high,
            };
            if offset == low && low > 0 {
                return Err(SnapshotError::TooOld {
                    topic: source.topic.clone(),
                    partition: e.partition(),
                    log_start: low,
                    from_ms,
                });
            }
            partitions.push((e.partition(), offset));
        }
        partitions.sort_unstable();
        out.push(Positions {
            source,
            from_ms: Some(from_ms),
            partitions,
        });
    }
    Ok(out)
}

/// Commits `positions` as the offsets of `config`'s consumer group, so that
/// its workers start there. Blocking.
pub fn commit_positions(
    config: &RegionConfig,
    positions: &[Positions],
) -> Result<(), SnapshotError> {
    for p in positions.iter().filter(|p| !p.partitions.is_empty()) {
        let cluster = Cluster::of_source(config, &p.source);
        let mut list = TopicPartitionList::new();
        for (partition, offset) in &p.partitions {
            list.add_partition_offset(&p.source.topic, *partition, Offset::Offset(*offset))
                .map_err(|e| cluster.error("bad partition", e))?;
        }
        group_client(config, &p.source)?
            .commit(&list, CommitMode::Sync)
            .map_err(|e| cluster.error(&format!("failed to commit to {}", p.source.topic), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_travel_exactly() {
        let v = vec![0.1f32, -3.5e-8, f32::MAX, 0.0, 1.0 / 3.0];
        assert_eq!(decode_vector(&encode_vector(&v)).unwrap(), v);
        assert!(decode_vector("AAA=").unwrap_err().contains("whole number"));
        assert!(decode_vector("not base64!").is_err());
    }
}
