//! Producer throughput into a local tansu broker: 768-d events encoded sq8
//! through the publisher, against the same vectors sent as plain JSON float
//! arrays (what a naive pipeline sends), with the same idempotent lz4
//! producer settings, through the same broker in the same run.
//!
//! `cargo bench -p vecsync-producer --bench throughput [-- EVENTS]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::producer::FutureRecord;
use serde_json::json;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher, kafka};
use vecsync_schemas::event::PointId;
use vecsync_schemas::testing::vector;

const DIM: usize = 768;
const BATCH: usize = 500;
const IN_FLIGHT: usize = 4;

struct Run {
    name: &'static str,
    events: usize,
    bytes: u64,
    elapsed: Duration,
}

impl Run {
    fn row(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        format!(
            "| {} | {} | {:.0} | {:.0} | {:.1} |",
            self.name,
            self.events,
            self.events as f64 / secs,
            self.bytes as f64 / self.events as f64,
            self.bytes as f64 / secs / 1e6
        )
    }
}

fn batches(events: usize) -> Vec<Vec<Mutation>> {
    (0..events as u64)
        .map(|i| Mutation::Upsert {
            id: PointId::Num(i),
            vector: vector(DIM, i % 1000),
            payload: None,
        })
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(<[Mutation]>::to_vec)
        .collect()
}

async fn vecsync_sq8(region: &TestRegion, events: usize) -> Run {
    let publisher = Publisher::connect(&region.config).await.unwrap();
    // Warm up: the idempotent producer's id, the schema, the first batch.
    publisher.publish("docs", &batches(BATCH)[0]).await.unwrap();
    let work = batches(events);
    let started = Instant::now();
    let mut bytes = 0;
    let mut in_flight = VecDeque::new();
    for batch in &work {
        in_flight.push_back(publisher.submit("docs", batch).await.unwrap());
        if in_flight.len() >= IN_FLIGHT {
            bytes += in_flight
                .pop_front()
                .unwrap()
                .acknowledged()
                .await
                .unwrap()
                .bytes;
        }
    }
    for p in in_flight {
        bytes += p.acknowledged().await.unwrap().bytes;
    }
    Run {
        name: "vecsync, sq8 Avro",
        events,
        bytes,
        elapsed: started.elapsed(),
    }
}

/// Sends `events` records made by `encode` with a plain producer of the
/// publisher's settings, keeping as many in flight as the publisher does.
async fn plain(
    region: &TestRegion,
    name: &'static str,
    events: usize,
    encode: impl Fn(u64) -> (String, Vec<u8>),
) -> Run {
    let cluster = vecsync_kafka::Cluster::of_region(&region.config);
    let (producer, _) = kafka::producer(&region.config, &cluster).unwrap();
    let topic = format!("{}.{}", region.config.kafka.topic, name.len());
    region
        .broker
        .create_topic(&topic, region.config.kafka.partitions)
        .unwrap();
    let send = |events: usize| {
        let (producer, topic, encode) = (&producer, &topic, &encode);
        async move {
            let mut bytes = 0u64;
            let mut pending = VecDeque::new();
            for i in 0..events as u64 {
                let (key, value) = encode(i);
                bytes += value.len() as u64;
                let mut record = FutureRecord::to(topic).key(&key).payload(&value);
                // Wait while the queue is full, as the publisher does.
                let delivery = loop {
                    match producer.send_result(record) {
                        Ok(d) => break d,
                        Err((_, r)) => {
                            record = r;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                };
                pending.push_back(delivery);
                if pending.len() >= BATCH * IN_FLIGHT {
                    pending.pop_front().unwrap().await.unwrap().unwrap();
                }
            }
            for p in pending {
                p.await.unwrap().unwrap();
            }
            bytes
        }
    };
    send(BATCH).await;
    let started = Instant::now();
    let bytes = send(events).await;
    Run {
        name,
        events,
        bytes,
        elapsed: started.elapsed(),
    }
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let extra = "[producer]\nlinger_ms = 5\nheartbeat_interval_ms = 1000";
    let Some(region) = TestRegion::start(DIM as u32, "sq8", extra).await else {
        return;
    };
    let sq8 = vecsync_sq8(&region, events).await;
    let json = plain(&region, "naive, JSON float array", events, |i| {
        let v =
            json!({"collection": "docs", "id": i, "op": "upsert", "vector": vector(DIM, i % 1000)});
        (i.to_string(), serde_json::to_vec(&v).unwrap())
    })
    .await;
    // The broker's ceiling for records of the sq8 events' size: random
    // bytes (incompressible, different in every record), nothing to encode.
    let size = (sq8.bytes / sq8.events as u64) as usize;
    let raw = plain(&region, "raw random bytes, same size", events, |i| {
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let noise = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        (i.to_string(), noise)
    })
    .await;
    println!("| pipeline | events | events/s | bytes/event | MB/s |");
    println!("|---|---|---|---|---|");
    for run in [sq8, json, raw] {
        println!("{}", run.row());
    }
}
