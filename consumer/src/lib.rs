//! Consumer workers: read a region's sources, merge them in HLC order, and
//! apply them to the region's vector store, idempotently.
//!
//! - [`reorder`]: the bounded reorder buffer and its watermark;
//! - [`apply`]: the apply rules, convergent in any order;
//! - [`applier`]: decoded events to store writes, batch by batch, with dead letters;
//! - [`bookkeeping`]: how a point's versions and parked deltas are kept in a store;
//! - [`digest`]: the order-independent state digest that proves two regions equal;
//! - [`store`]: the stores applied state lives in;
//! - [`offsets`]: which offsets may be committed;
//! - [`snapshot`]: snapshots of a store, to seed a region that joins late;
//! - [`worker`]: the loop from sources to store to commit.

pub mod api;
pub mod applier;
pub mod apply;
pub mod bookkeeping;
pub mod digest;
pub mod freshness;
pub mod lag;
mod metrics;
pub mod offsets;
pub mod ready;
pub mod reorder;
pub mod search;
pub mod snapshot;
pub mod store;
pub mod worker;
