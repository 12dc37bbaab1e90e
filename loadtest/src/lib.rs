//! Load and fault tests of vecsync (DESIGN.md §6), and what the demo stands
//! on:
//!
//! - [`bed`]: regions in one process on in-process Kafka clusters;
//! - [`recorder`]: replication lag and completeness read from vecsync's own
//!   metrics.

pub mod bed;
pub mod recorder;
