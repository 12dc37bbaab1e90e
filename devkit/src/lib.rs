//! What the vecsync demo and tests stand on.
//!
//! - [`registry`]: a development Schema Registry speaking the subset of
//!   Confluent's REST API that clients use. For development and tests only;
//!   production uses Confluent, Karapace, Apicurio or Redpanda.

pub mod registry;
