//! Consumer workers: read a region's sources, merge them in HLC order, and
//! apply them to the region's vector store, idempotently.
//!
//! - [`reorder`]: the bounded reorder buffer and its watermark;
//! - [`apply`]: the apply rules, convergent in any order;
//! - [`digest`]: the order-independent state digest that proves two regions equal.

pub mod apply;
pub mod digest;
pub mod reorder;
