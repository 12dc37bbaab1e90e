//! What the vecsync demo and tests stand on.
//!
//! - [`registry`]: a development Schema Registry speaking the subset of
//!   Confluent's REST API that clients use. For development and tests only;
//!   production uses Confluent, Karapace, Apicurio or Redpanda.
//! - [`kafka`]: Apache Kafka (a single-node KRaft broker) and MirrorMaker 2
//!   from their jars, what the paths users depend on are tested against.
//! - [`broker`]: a lighter Kafka-protocol broker (tansu) started on a free
//!   loopback port, topics, unique names, and reading a topic back.
//! - [`testbed`]: a broker, a registry and a region config to test against.
//! - [`qdrant`]: a Qdrant gRPC endpoint over the real engine (`qdrant-edge`)
//!   for testing the `qdrant-client` store.
//! - [`mirror`]: a MirrorMaker 2 stand-in that copies topics between
//!   clusters with their timestamps and emits MirrorMaker's heartbeats.
//! - [`prometheus`]: a real Prometheus server for the dashboard tests.
//! - [`proxy`]: a TCP proxy adding WAN delay, a bandwidth cap and cuts.

pub mod broker;
pub mod kafka;
pub mod mirror;
pub mod openapi;
pub mod prometheus;
pub mod proxy;
pub mod qdrant;
pub mod registry;
pub mod testbed;
pub mod tls;
