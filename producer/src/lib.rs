//! Publish vector mutations as quantized Avro delta events.
//!
//! An ingestion job embeds a [`Publisher`]: each mutation is stamped with
//! the region's hybrid logical clock, its vector encoded with the
//! collection's encoding, framed through the Schema Registry, keyed by point
//! id and sent with librdkafka's idempotent producer. A publish returns when
//! the broker has acknowledged every event, with the version each point got.
//! Jobs in other languages use the HTTP ingest API ([`http`]) or the file
//! loader ([`file`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use vecsync_producer::{Mutation, Publisher};
//! use vecsync_schemas::{config::RegionConfig, event::PointId};
//!
//! let config = RegionConfig::load("examples/local/us-east.toml".as_ref())?;
//! let publisher = Publisher::connect(&config).await?;
//! let versions = publisher
//!     .publish("docs", &[Mutation::Upsert { id: PointId::Num(7), vector: vec![0.1; 384], payload: None }])
//!     .await?;
//! println!("point 7 is now at version {}", versions[0]);
//! publisher.close(std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```

pub mod error;
pub mod file;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod partition;
pub mod publisher;

pub use error::ProducerError;
pub use publisher::{Mutation, Pending, Published, Publisher, Run};
