//! MirrorMaker 2's heartbeat records, byte for byte: what its
//! `MirrorHeartbeatConnector` writes to `heartbeats` and every flow mirrors
//! downstream as `<alias>.heartbeats`. The lag exporter reads their age;
//! the test copier writes them.
//!
//! Key: the source and target cluster aliases, each a Kafka protocol
//! `STRING` (big-endian `i16` length, UTF-8). Value: a big-endian `i16`
//! version (0) and the emit time as a big-endian `i64` of Unix milliseconds.

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

/// Why bytes are not a heartbeat.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeartbeatError {
    #[error("heartbeat {part} is truncated")]
    Truncated { part: &'static str },
    #[error("heartbeat value version {0} is unknown (only 0 is)")]
    Version(i16),
    #[error("heartbeat alias is not UTF-8")]
    NotUtf8,
}

impl Heartbeat {
    pub fn key(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.source_alias.len() + self.target_alias.len());
        for alias in [&self.source_alias, &self.target_alias] {
            let len = i16::try_from(alias.len()).unwrap_or(i16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&alias.as_bytes()[..len as usize]);
        }
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
