//! Sample events shared by tests, fixtures and benchmarks.

use crate::avro::AvroRecord;
use crate::event::{
    Body, Delete, DeltaEvent, Heartbeat, PayloadPatch, PointId, Upsert, VectorData,
};
use crate::hlc::Hlc;
use crate::payload::Payload;
use crate::vector::{EncodedVector, Encoding, PqCodebook, PqTrainer, SparseDelta};
use serde_json::json;

/// A deterministic pseudo-random vector of `dim` values in [-1, 1).
pub fn vector(dim: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A small PQ codebook, version 1, for `collection`'s `dim`-d vectors (`dim`
/// a multiple of 4): 4 sub-spaces of 16 centroids trained on 64 [`vector`]s.
pub fn codebook(collection: &str, dim: usize) -> PqCodebook {
    let data: Vec<f32> = (0..64).flat_map(|i| vector(dim, i)).collect();
    let data = ndarray::Array2::from_shape_vec((64, dim), data)
        .unwrap_or_else(|e| panic!("sample data: {e}"));
    let trainer = PqTrainer {
        subspaces: 4,
        centroids: 16,
        iterations: 4,
        seed: 1,
    };
    trainer
        .train(collection, 1, data.view())
        .unwrap_or_else(|e| panic!("sample codebook: {e}"))
}

/// Writes `book` as a codebook file `<id>.pqcb` in `dir`; its path, for a
/// collection's `codebook_file`.
pub fn write_codebook(book: &PqCodebook, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join(format!("{}.pqcb", book.id()));
    let mut bytes = Vec::new();
    book.write_avro(&mut bytes);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

fn payload(v: serde_json::Value, lz4_threshold: usize) -> Payload {
    let object = v.as_object().cloned().unwrap_or_default();
    Payload::from_json(&object, lz4_threshold).unwrap_or_else(|e| panic!("sample payload: {e}"))
}

/// An upsert of `vector` to point 123456 of `docs`, without payload.
pub fn upsert_of(vector: EncodedVector) -> DeltaEvent {
    DeltaEvent {
        hlc: Hlc::new(1_763_700_000_000, 0, "us-east"),
        body: Body::Upsert(Upsert {
            collection: "docs".into(),
            id: PointId::Num(123_456),
            vector: VectorData::Full(vector),
            payload: None,
        }),
    }
}

/// An upsert of a `dim`-dimensional vector with `encoding` (not PQ).
pub fn upsert(id: u64, dim: usize, encoding: Encoding) -> DeltaEvent {
    let v = EncodedVector::encode(encoding, &vector(dim, id))
        .unwrap_or_else(|e| panic!("sample vector: {e}"));
    DeltaEvent {
        hlc: Hlc::new(1_763_700_000_000 + id, 0, "us-east"),
        body: Body::Upsert(Upsert {
            collection: "docs".into(),
            id: PointId::Num(id),
            vector: VectorData::Full(v),
            payload: Some(payload(
                json!({"title": format!("doc {id}"), "lang": "en"}),
                1024,
            )),
        }),
    }
}

/// One event of every kind and shape the schema allows, two of them with
/// producer ids (`u64::MAX` among them); with every producer 0 they are the
/// events the v1 fixture holds.
pub fn sample_events() -> Vec<DeltaEvent> {
    let uuid = PointId::Uuid(uuid::Uuid::from_u128(
        0x5c56_c793_69f3_4fbf_87e6_c4bf_54c2_8c26,
    ));
    let mut pq = EncodedVector::encode(Encoding::Sq8, &[0.0; 4]).unwrap_or_else(|e| panic!("{e}"));
    pq.encoding = Encoding::Pq;
    pq.codebook_id = Some("docs@1".into());
    vec![
        upsert(7, 8, Encoding::Sq8),
        DeltaEvent {
            hlc: Hlc::new(1_763_700_000_100, 3, "eu-west").of_producer(0x5eed_0000_0000_0001),
            body: Body::Upsert(Upsert {
                collection: "docs".into(),
                id: uuid,
                vector: VectorData::Full(pq),
                payload: Some(payload(json!({"body": "lorem ipsum ".repeat(200)}), 1024)),
            }),
        },
        DeltaEvent {
            hlc: Hlc::new(1_763_700_000_200, u32::MAX, "ap-south"),
            body: Body::Upsert(Upsert {
                collection: "docs".into(),
                id: PointId::Num(u64::MAX),
                vector: VectorData::Sparse(SparseDelta {
                    base_version: Hlc::new(1_763_700_000_150, 1, "us-east"),
                    dim: 8,
                    indices: vec![1, 5],
                    values: vec![0.5, -0.25],
                }),
                payload: None,
            }),
        },
        DeltaEvent {
            hlc: Hlc::new(1_763_700_000_300, 0, "us-east"),
            body: Body::Delete(Delete {
                collection: "docs".into(),
                id: PointId::Num(7),
            }),
        },
        DeltaEvent {
            hlc: Hlc::new(1_763_700_000_400, 1, "us-east").of_producer(u64::MAX),
            body: Body::PayloadPatch(PayloadPatch {
                collection: "docs".into(),
                id: uuid,
                base_version: Hlc::new(1_763_700_000_100, 3, "eu-west")
                    .of_producer(0x5eed_0000_0000_0001),
                payload: payload(json!({"reviewed": true}), 1024),
            }),
        },
        DeltaEvent {
            hlc: Hlc::new(1_763_700_000_500, 0, "us-east"),
            body: Body::Heartbeat(Heartbeat { interval_ms: 1_000 }),
        },
    ]
}
