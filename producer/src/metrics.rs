//! Every metric the producer reports, each named in exactly one place.
//! Emitted once per batch, not per event.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;
use vecsync_schemas::event::Operation;

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_batch_events".into()),
                        &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0],
                    )
                })
                .unwrap_or_else(|e| unreachable!("the bucket lists are not empty: {e}"));
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding
            // application's); the handle then renders only vecsync's view.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows nothing");
            }
            handle
        })
        .clone()
}

/// Every label value of the error counters, so that each series exists
/// (at zero) before its first error: `rate()` and `increase()` then see the
/// first one, and dashboards show zero rather than nothing.
pub(crate) fn init_error_counters() {
    for reason in ["timeout", "queue_full", "too_large", "fatal", "broker"] {
        counter!("vecsync_producer_send_failures_total", "reason" => reason).increment(0);
    }
    for reason in ["unknown_collection", "invalid", "reserved_key"] {
        counter!("vecsync_producer_rejected_total", "reason" => reason).increment(0);
    }
    counter!("vecsync_producer_backpressure_waits_total").increment(0);
}

/// A batch the broker acknowledged.
pub(crate) struct BatchSent<'a> {
    pub collection: &'a str,
    pub op_counts: [(Operation, u64); 3],
    pub bytes: u64,
    pub elapsed: Duration,
}

impl BatchSent<'_> {
    pub fn emit(&self) {
        for (op, n) in self.op_counts {
            if n > 0 {
                counter!("vecsync_producer_events_total", "collection" => self.collection.to_owned(), "op" => op.as_str())
                    .increment(n);
            }
        }
        counter!("vecsync_producer_event_bytes_total").increment(self.bytes);
        histogram!("vecsync_producer_batch_ack_seconds").record(self.elapsed.as_secs_f64());
        tracing::debug!(
            collection = self.collection,
            bytes = self.bytes,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "batch acknowledged"
        );
    }
}

/// Events the broker did not acknowledge.
pub(crate) struct SendFailed {
    pub failed: usize,
    pub reason: &'static str,
}

impl SendFailed {
    pub fn emit(&self, detail: &dyn std::fmt::Display) {
        counter!("vecsync_producer_send_failures_total", "reason" => self.reason)
            .increment(self.failed as u64);
        tracing::warn!(
            failed = self.failed,
            reason = self.reason,
            "events not acknowledged: {detail}"
        );
    }
}

/// A mutation refused before sending.
pub(crate) struct Rejected {
    pub reason: &'static str,
}

impl Rejected {
    pub fn emit(&self) {
        counter!("vecsync_producer_rejected_total", "reason" => self.reason).increment(1);
    }
}

/// The local queue was full and a sender waited.
pub(crate) struct QueueFull;

impl QueueFull {
    pub fn emit(&self) {
        counter!("vecsync_producer_backpressure_waits_total").increment(1);
    }
}

/// Events handed to librdkafka and not yet acknowledged by the broker.
pub(crate) struct QueueDepth {
    pub messages: i32,
}

impl QueueDepth {
    pub fn emit(&self) {
        gauge!("vecsync_producer_queue_messages").set(f64::from(self.messages));
    }
}

/// Heartbeats acknowledged on every partition.
pub(crate) struct HeartbeatsSent {
    pub partitions: u32,
}

impl HeartbeatsSent {
    pub fn emit(&self) {
        counter!("vecsync_producer_heartbeats_total").increment(u64::from(self.partitions));
    }
}

/// A PQ codebook written to the codebook topic.
pub(crate) struct CodebookPublished<'a> {
    pub id: &'a str,
}

impl CodebookPublished<'_> {
    pub fn emit(&self) {
        counter!("vecsync_producer_codebooks_published_total").increment(1);
        tracing::info!(codebook = self.id, "codebook published");
    }
}

/// One answered request of the ingest API.
pub(crate) struct IngestRequest {
    pub route: &'static str,
    pub status: u16,
}

impl IngestRequest {
    pub fn emit(&self) {
        let class = match self.status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        counter!("vecsync_ingest_requests_total", "route" => self.route, "status" => class)
            .increment(1);
    }
}
