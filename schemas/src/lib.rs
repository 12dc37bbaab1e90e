//! The vecsync event contract: what travels between regions, and how.
//!
//! - [`event`]: the delta event (upsert, delete, payload patch, heartbeat);
//! - [`hlc`]: hybrid logical clock timestamps that totally order all events;
//! - [`vector`]: vector codecs (f32, f16, sq8, sq4, pq, binary, sparse deltas);
//! - [`payload`]: JSON payloads, lz4-compressed when large;
//! - [`config`]: a region's TOML config, shared by producers and consumers;
//! - [`npy`]: a streaming reader of NumPy `.npy` files;
//! - [`json`]: canonical JSON (keys sorted), for identities and digests;
//! - [`mutation`]: mutations as ingestion jobs send them in JSON;
//! - [`avro`] and [`wire`]: Avro bodies in Confluent's wire format, through a
//!   Schema Registry ([`registry`]).
//!
//! This crate does no IO but the registry client's requests and reading a
//! config file.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use vecsync_schemas::{event::*, hlc::HybridClock, registry::*, vector::*, wire::*};
//!
//! let registry = Arc::new(RegistryClient::new("http://127.0.0.1:8081", Duration::from_secs(5))?);
//! let encoder = Encoder::<DeltaEvent>::register(&registry, &value_subject("vecsync.deltas")).await?;
//! let clock = HybridClock::system("us-east");
//! let event = DeltaEvent {
//!     hlc: clock.now()?,
//!     body: Body::Delete(Delete { collection: "docs".into(), id: PointId::Num(7) }),
//! };
//! let bytes = encoder.encode(&event);
//! let decoded = Decoder::<DeltaEvent>::new(registry).decode(&bytes).await?;
//! assert_eq!(decoded, event);
//! # Ok(()) }
//! ```

pub mod avro;
pub mod config;
pub mod event;
pub mod hlc;
pub mod json;
pub mod mm2;
pub mod mutation;
pub mod npy;
pub mod payload;
pub mod quality;
pub mod registry;
#[doc(hidden)]
pub mod testing;
pub mod vector;
pub mod wire;
