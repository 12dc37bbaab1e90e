//! Where applied state lives (DESIGN.md §4).
//!
//! - [`edge`]: Qdrant's engine in-process (`qdrant-edge`), the embedded
//!   default.

pub mod edge;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine refused or failed an operation; retry with backoff.
    #[error("store collection {collection}: {message}")]
    Engine { collection: String, message: String },
    /// A collection was used before `ensure_collection`.
    #[error("store has no collection {0:?}")]
    UnknownCollection(String),
    /// The stored collection does not match the config.
    #[error("store collection {collection}: {reason}")]
    Mismatch { collection: String, reason: String },
    /// A stored point's bookkeeping cannot be read.
    #[error("store collection {collection}, point {id}: unreadable bookkeeping: {reason}")]
    Corrupt {
        collection: String,
        id: String,
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn engine(collection: &str, message: impl Into<String>) -> Self {
        Self::Engine {
            collection: collection.to_owned(),
            message: message.into(),
        }
    }
}
