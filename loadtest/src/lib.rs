//! Load and fault tests of vecsync (DESIGN.md §6), and what the demo stands
//! on:
//!
//! - [`bed`]: regions in one process on in-process Kafka clusters;
//! - [`recorder`]: replication lag and completeness read from vecsync's own
//!   metrics;
//! - [`run`]: the open-loop load test, with [`outage`]s (a worker stopped,
//!   the links cut);
//! - [`report`]: what it measured, second by second too, and [`charts`] of
//!   it;
//! - [`recall`]: recall@10 in the remote region for each encoding;
//! - [`ceiling`]: the embedded store's own apply rate, to set the
//!   pipeline's against;
//! - [`memory`]: where the process's resident memory is, by region;
//! - [`cores`]: how the machine's cores spent the run (user, kernel, disk,
//!   the host's steal, idle);
//! - [`naive`]: the pipeline a user would write from common examples, to
//!   compare against.

pub mod bed;
pub mod ceiling;
pub mod charts;
pub mod cores;
pub mod memory;
pub mod naive;
pub mod outage;
pub mod recall;
pub mod recorder;
pub mod report;
pub mod run;
