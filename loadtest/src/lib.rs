//! Load and fault tests of vecsync (DESIGN.md §6), and what the demo stands
//! on:
//!
//! - [`bed`]: regions in one process on in-process Kafka clusters;
//! - [`recorder`]: replication lag and completeness read from vecsync's own
//!   metrics;
//! - [`run`]: the open-loop load test and its [`run::Report`];
//! - [`recall`]: recall@10 in the remote region for each encoding.

pub mod bed;
pub mod recall;
pub mod recorder;
pub mod run;
