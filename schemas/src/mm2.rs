//! MirrorMaker 2's own records, byte for byte, as the lag exporter reads
//! them (Kafka's protocol `Struct` layout: a `STRING` is a big-endian `i16`
//! length and UTF-8, integers are big-endian).
//!
//! - [`Heartbeat`]: what a flow's `MirrorHeartbeatConnector` writes to the
//!   target cluster's `heartbeats`, which flows out of that cluster mirror
//!   onwards as `<alias>.heartbeats`. Key: source and target aliases, two
//!   `STRING`s. Value: an `i16` version (0) and the emit time as an `i64`
//!   of Unix milliseconds. The test copier writes them too.
//! - [`OffsetSync`]: what a flow writes to
//!   `mm2-offset-syncs.<target>.internal` (on the source cluster by
//!   default) to map a source offset to its mirror's offset. Key: the
//!   source topic (`STRING`) and partition (`i32`). Value: the upstream and
//!   the downstream offset, two `i64`s.

/// The topic MirrorMaker 2 writes heartbeats to on a cluster.
pub const HEARTBEATS_TOPIC: &str = "heartbeats";

/// One heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub source_alias: String,
    pub target_alias: String,
    /// Emit time, Unix milliseconds.
    pub timestamp_ms: i64,
}

/// Why bytes are not a heartbeat or an offset sync.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeartbeatError {
    #[error("record {part} is truncated")]
    Truncated { part: &'static str },
    #[error("heartbeat value version {0} is unknown (only 0 is)")]
    Version(i16),
    #[error("alias or topic is not UTF-8")]
    NotUtf8,
}

impl Heartbeat {
    pub fn key(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.source_alias.len() + self.target_alias.len());
        put_string(&mut out, &self.source_alias);
        put_string(&mut out, &self.target_alias);
        out
    }

    pub fn value(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10);
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out
    }

    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self, HeartbeatError> {
        let (version, rest) = split_i16(value, "value")?;
        if version != 0 {
            return Err(HeartbeatError::Version(version));
        }
        let timestamp: [u8; 8] = rest
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or(HeartbeatError::Truncated { part: "value" })?;
        let (source_alias, rest) = split_string(key)?;
        let (target_alias, _) = split_string(rest)?;
        Ok(Self {
            source_alias,
            target_alias,
            timestamp_ms: i64::from_be_bytes(timestamp),
        })
    }
}

/// Where MirrorMaker 2's flow into `target` writes its offset syncs.
pub fn offset_syncs_topic(target_alias: &str) -> String {
    format!("mm2-offset-syncs.{target_alias}.internal")
}

/// One offset sync: source `topic`/`partition` at `upstream_offset` was
/// mirrored to `downstream_offset` of the mirror's same partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetSync {
    pub topic: String,
    pub partition: i32,
    pub upstream_offset: i64,
    pub downstream_offset: i64,
}

impl OffsetSync {
    pub fn key(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + self.topic.len());
        put_string(&mut out, &self.topic);
        out.extend_from_slice(&self.partition.to_be_bytes());
        out
    }

    pub fn value(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.upstream_offset.to_be_bytes());
        out.extend_from_slice(&self.downstream_offset.to_be_bytes());
        out
    }

    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self, HeartbeatError> {
        let (topic, rest) = split_string(key)?;
        let partition = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes)
            .ok_or(HeartbeatError::Truncated { part: "key" })?;
        let offset = |at: usize| {
            value
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(i64::from_be_bytes)
                .ok_or(HeartbeatError::Truncated { part: "value" })
        };
        Ok(Self {
            topic,
            partition,
            upstream_offset: offset(0)?,
            downstream_offset: offset(8)?,
        })
    }
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    let len = i16::try_from(text.len()).unwrap_or(i16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..len as usize]);
}

fn split_i16<'a>(b: &'a [u8], part: &'static str) -> Result<(i16, &'a [u8]), HeartbeatError> {
    match b {
        [hi, lo, rest @ ..] => Ok((i16::from_be_bytes([*hi, *lo]), rest)),
        _ => Err(HeartbeatError::Truncated { part }),
    }
}

fn split_string(b: &[u8]) -> Result<(String, &[u8]), HeartbeatError> {
    let (len, rest) = split_i16(b, "key")?;
    let len = usize::try_from(len).map_err(|_| HeartbeatError::Truncated { part: "key" })?;
    let text = rest
        .get(..len)
        .ok_or(HeartbeatError::Truncated { part: "key" })?;
    let text = std::str::from_utf8(text).map_err(|_| HeartbeatError::NotUtf8)?;
    Ok((text.to_owned(), &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_mirrormaker_does_and_decodes_back() {
        let hb = Heartbeat {
            source_alias: "us-east".into(),
            target_alias: "eu".into(),
            timestamp_ms: 1_700_000_000_123,
        };
        // Kafka's Struct layout: i16 length + bytes per STRING; i16 version
        // then i64 timestamp, all big-endian.
        assert_eq!(hb.key(), b"\x00\x07us-east\x00\x02eu");
        assert_eq!(hb.value(), [0, 0, 0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x7b]);
        assert_eq!(Heartbeat::decode(&hb.key(), &hb.value()), Ok(hb));
    }

    #[test]
    fn offset_syncs_encode_as_mirrormaker_does_and_decode_back() {
        let sync = OffsetSync {
            topic: "vecsync.deltas".into(),
            partition: 2,
            upstream_offset: 1_000,
            downstream_offset: 970,
        };
        let mut key = b"\x00\x0evecsync.deltas".to_vec();
        key.extend_from_slice(&[0, 0, 0, 2]);
        assert_eq!(sync.key(), key);
        assert_eq!(
            sync.value(),
            [0, 0, 0, 0, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0, 0, 0x03, 0xca]
        );
        assert_eq!(OffsetSync::decode(&sync.key(), &sync.value()), Ok(sync));
        assert_eq!(
            OffsetSync::decode(&key, &[0; 15]),
            Err(HeartbeatError::Truncated { part: "value" })
        );
        assert_eq!(
            OffsetSync::decode(&key[..17], &[0; 16]),
            Err(HeartbeatError::Truncated { part: "key" })
        );
        assert_eq!(
            offset_syncs_topic("eu-west"),
            "mm2-offset-syncs.eu-west.internal"
        );
    }

    #[test]
    fn bad_bytes_say_what_is_wrong() {
        let key = b"\x00\x01a\x00\x01b";
        assert_eq!(
            Heartbeat::decode(key, &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(HeartbeatError::Version(1))
        );
        assert_eq!(
            Heartbeat::decode(key, &[0, 0, 1]),
            Err(HeartbeatError::Truncated { part: "value" })
        );
        assert_eq!(
            Heartbeat::decode(b"\x00\x09ab", &[0; 10]),
            Err(HeartbeatError::Truncated { part: "key" })
        );
    }
}
