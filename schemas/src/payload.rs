//! Point payloads: a JSON object, lz4-compressed inside the event when large.

use crate::vector::CodecError;
use std::borrow::Cow;

/// The payload key under which the consumer keeps each point's version,
/// anchor and delta chain (DESIGN.md §4). Reserved: a user's payload that
/// uses it is refused by the producer and dead-lettered by the consumer.
pub const RESERVED_KEY: &str = "_vecsync";

/// Payloads larger than this (uncompressed) are refused on both sides.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Default size above which payloads are compressed.
pub const DEFAULT_LZ4_THRESHOLD_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
}

/// A payload as it travels.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub compression: Compression,
    /// UTF-8 JSON; with LZ4, a 4-byte little-endian uncompressed size, then an lz4 block.
    pub data: Vec<u8>,
}

impl Payload {
    /// Serializes a JSON object (keys sorted), compressing it when it is larger than
    /// `lz4_threshold_bytes` and compression actually saves space.
    pub fn from_json(
        object: &serde_json::Map<String, serde_json::Value>,
        lz4_threshold_bytes: usize,
    ) -> Result<Self, CodecError> {
        // Canonical (sorted keys), so the same payload is the same bytes
        // whatever order its keys were built in.
        let json = crate::json::canonical_object(object).into_bytes();
        if json.len() > MAX_PAYLOAD_BYTES {
            return Err(CodecError::InvalidPayload(format!(
                "{} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}",
                json.len()
            )));
        }
        if json.len() > lz4_threshold_bytes {
            let packed = lz4_flex::compress_prepend_size(&json);
            if packed.len() < json.len() {
                return Ok(Self {
                    compression: Compression::Lz4,
                    data: packed,
                });
            }
        }
        Ok(Self {
            compression: Compression::None,
            data: json,
        })
    }

    /// The JSON text, decompressed if needed.
    pub fn json_bytes(&self) -> Result<Cow<'_, [u8]>, CodecError> {
        match self.compression {
            Compression::None => Ok(Cow::Borrowed(&self.data)),
            Compression::Lz4 => {
                let bad = |m: String| CodecError::InvalidPayload(m);
                let (size, block) = self
                    .data
                    .split_first_chunk::<4>()
                    .ok_or_else(|| bad("lz4 payload shorter than its size prefix".into()))?;
                let size = u32::from_le_bytes(*size) as usize;
                // Check the claimed size before allocating for it.
                if size > MAX_PAYLOAD_BYTES {
                    return Err(bad(format!(
                        "lz4 payload claims {size} bytes, over the limit of {MAX_PAYLOAD_BYTES}"
                    )));
                }
                let out = lz4_flex::decompress(block, size)
                    .map_err(|e| bad(format!("corrupt lz4 block: {e}")))?;
                Ok(Cow::Owned(out))
            }
        }
    }

    /// The payload as a JSON object.
    pub fn to_json(&self) -> Result<serde_json::Map<String, serde_json::Value>, CodecError> {
        serde_json::from_slice(&self.json_bytes()?)
            .map_err(|e| CodecError::InvalidPayload(format!("not a JSON object: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn object(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn small_payloads_stay_plain_and_large_ones_compress() {
        let small = object(json!({"title": "hello"}));
        let p = Payload::from_json(&small, 1024).unwrap();
        assert_eq!(p.compression, Compression::None);
        assert_eq!(p.to_json().unwrap(), small);

        let large = object(json!({"body": "lorem ipsum ".repeat(500)}));
        let p = Payload::from_json(&large, 1024).unwrap();
        assert_eq!(p.compression, Compression::Lz4);
        assert!(p.data.len() < 1000, "{} bytes", p.data.len());
        assert_eq!(p.to_json().unwrap(), large);
    }

    #[test]
    fn a_size_bomb_is_refused_before_allocating() {
        let mut data = u32::MAX.to_le_bytes().to_vec();
        data.extend_from_slice(&[0; 8]);
        let err = Payload {
            compression: Compression::Lz4,
            data,
        }
        .json_bytes()
        .unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    proptest! {
        #[test]
        fn arbitrary_lz4_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Payload { compression: Compression::Lz4, data }.to_json();
        }
    }
}
