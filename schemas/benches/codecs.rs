//! Encode and decode of one delta event, per encoding and dimension.
//!
//! "encode" is what a producer does per mutation: quantize the f32 vector,
//! build the event and frame it (Confluent header + Avro body) into a reused
//! buffer. "decode" is what a consumer does: split the frame, read the Avro
//! body and decode the vector back to f32.
//!
//!     cargo bench -p vecsync-schemas --bench codecs

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array2;
use std::hint::black_box;
use vecsync_schemas::avro::AvroRecord;
use vecsync_schemas::event::{Body, DeltaEvent, VectorData};
use vecsync_schemas::testing::{upsert_of, vector};
use vecsync_schemas::vector::{EncodedVector, Encoding, PqCodebook, PqTrainer};
use vecsync_schemas::wire::{Encoder, split_header};

fn codebook(dim: usize) -> PqCodebook {
    let n = 512;
    let data: Vec<f32> = (0..n).flat_map(|i| vector(dim, i as u64)).collect();
    let data = Array2::from_shape_vec((n, dim), data).unwrap_or_else(|e| panic!("{e}"));
    let trainer = PqTrainer {
        subspaces: dim / 8,
        centroids: 256,
        iterations: 2,
        seed: 1,
    };
    trainer
        .train("bench", 1, data.view())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let framer = Encoder::<DeltaEvent>::with_id(1);
    for dim in [384, 768, 1536] {
        let v = vector(dim, 42);
        let book = codebook(dim);
        let mut group = c.benchmark_group(format!("event_{dim}d"));
        group.throughput(Throughput::Elements(1));
        for encoding in Encoding::ALL {
            let encode = |v: &[f32]| match encoding {
                Encoding::Pq => book.encode(v),
                e => EncodedVector::encode(e, v),
            };
            let mut ev = upsert_of(encode(&v).unwrap_or_else(|e| panic!("{e}")));
            let mut buf = Vec::with_capacity(8 * 1024);
            group.bench_function(BenchmarkId::new("encode", encoding), |b| {
                b.iter(|| {
                    let Body::Upsert(u) = &mut ev.body else {
                        unreachable!()
                    };
                    let VectorData::Full(e) = &mut u.vector else {
                        unreachable!()
                    };
                    if encoding == Encoding::Pq {
                        *e = book.encode(black_box(&v)).unwrap_or_else(|e| panic!("{e}"));
                    } else {
                        e.encode_from(encoding, black_box(&v))
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                    buf.clear();
                    framer.encode_into(&ev, &mut buf);
                    black_box(buf.len())
                })
            });
            let framed = framer.encode(&ev);
            let mut out = Vec::with_capacity(dim);
            group.bench_function(BenchmarkId::new("decode", encoding), |b| {
                b.iter(|| {
                    let (_, body) =
                        split_header(black_box(&framed)).unwrap_or_else(|e| panic!("{e}"));
                    let ev = DeltaEvent::read_avro(body).unwrap_or_else(|e| panic!("{e}"));
                    let Body::Upsert(u) = ev.body else {
                        unreachable!()
                    };
                    let VectorData::Full(e) = u.vector else {
                        unreachable!()
                    };
                    e.decode_into(Some(&book), &mut out)
                        .unwrap_or_else(|e| panic!("{e}"));
                    black_box(out.len())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
