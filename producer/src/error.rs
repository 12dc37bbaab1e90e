//! What can go wrong while publishing.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use vecsync_schemas::hlc::HlcError;
use vecsync_schemas::registry::RegistryError;

/// Why a publish (or connecting the publisher) failed.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The config cannot be used (see `RegionConfig::problems`).
    #[error("invalid config: {0}")]
    Config(String),
    /// The collection is not in the region's config.
    #[error("unknown collection {0:?}")]
    UnknownCollection(String),
    /// One mutation of a batch is invalid; nothing of the batch was sent.
    #[error("point {index} (id {id}): {reason}")]
    Invalid {
        /// Position of the mutation in its batch.
        index: usize,
        id: String,
        reason: String,
    },
    /// A mutation's payload uses the key vecsync keeps its bookkeeping
    /// under ([`vecsync_schemas::payload::RESERVED_KEY`]); nothing of the
    /// batch was sent.
    #[error(
        "point {index} (id {id}): the payload key {key:?} is reserved for vecsync's bookkeeping"
    )]
    ReservedKey {
        /// Position of the mutation in its batch.
        index: usize,
        id: String,
        key: &'static str,
    },
    #[error(transparent)]
    Clock(#[from] HlcError),
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    /// The broker did not accept or acknowledge events. Some events of the
    /// batch may have been written; publishing the batch again is safe, since
    /// consumers apply by version.
    #[error("{failed} of {total} events were not acknowledged by the broker: {first}")]
    Delivery {
        failed: usize,
        total: usize,
        first: KafkaError,
    },
    /// A Kafka client or admin call failed, or a client could not be made
    /// from the config.
    #[error(transparent)]
    Kafka(#[from] vecsync_kafka::ClientError),
    /// The cluster refused the credentials, the certificate or a permission,
    /// or lacks the topic: an operator must act (see
    /// [`vecsync_kafka::is_fatal`]).
    #[error("{0}")]
    Fatal(String),
    #[error("codebook {path}: {reason}")]
    Codebook { path: String, reason: String },
    /// Recording a batch's run of versions before sending it failed (see
    /// [`crate::publisher::Run::Recorded`]), or a recorded run cannot be
    /// sent again; nothing of the batch was sent.
    #[error("recording the batch's versions: {0}")]
    Record(std::io::Error),
    /// The publisher is closing and takes no more events.
    #[error("the publisher is shut down")]
    Closed,
}

impl ProducerError {
    /// For a mutation the publisher refuses: its position in the batch and
    /// why, without the point's prefix.
    pub fn refused_mutation(&self) -> Option<(usize, String)> {
        match self {
            Self::Invalid { index, reason, .. } => Some((*index, reason.clone())),
            Self::ReservedKey { index, key, .. } => Some((
                *index,
                format!("the payload key {key:?} is reserved for vecsync's bookkeeping"),
            )),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (broker or registry trouble),
    /// as opposed to a request that will never be accepted.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Delivery { first, .. } => !vecsync_kafka::is_fatal(first),
            Self::Kafka(e) => e.is_retriable(),
            Self::Closed => true,
            Self::Registry(e) => e.is_retriable(),
            Self::UnknownCollection(_)
            | Self::Invalid { .. }
            | Self::ReservedKey { .. }
            | Self::Config(_)
            | Self::Fatal(_)
            | Self::Clock(_)
            | Self::Record(_)
            | Self::Codebook { .. } => false,
        }
    }
}

/// A small fixed set of labels for Kafka errors, for metrics.
pub(crate) fn error_label(e: &KafkaError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut) => "timeout",
        Some(RDKafkaErrorCode::QueueFull) => "queue_full",
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => "too_large",
        Some(RDKafkaErrorCode::Fatal) => "fatal",
        _ => "broker",
    }
}
