//! Every metric the consumer reports, each named in one place. Emitted once
//! per batch, not per event. The binary installs the Prometheus recorder.

use crate::reorder::Counters;
use metrics::{counter, gauge, histogram};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use vecsync_schemas::hlc::Hlc;

/// End-to-end replication lag of one event that changed the store: apply
/// time minus the event's HLC wall time.
pub(crate) struct ReplicationLag<'a> {
    pub origin: &'a str,
    pub region: &'a str,
    pub seconds: f64,
}

impl ReplicationLag<'_> {
    pub fn emit(&self) {
        histogram!("vecsync_replication_lag_seconds", "origin" => self.origin.to_owned(), "region" => self.region.to_owned())
            .record(self.seconds);
    }
}

/// The applied watermark of every origin, and its age, which keeps rising
/// while nothing arrives from it. Emitted on every tick of the loop.
pub(crate) struct WatermarkState<'a> {
    pub region: &'a str,
    pub marks: &'a BTreeMap<String, Hlc>,
    pub now_ms: u64,
}

impl WatermarkState<'_> {
    pub fn emit(&self) {
        for (origin, mark) in self.marks {
            let labels = [
                ("origin", origin.clone()),
                ("region", self.region.to_owned()),
            ];
            gauge!("vecsync_watermark_age_seconds", &labels)
                .set(self.now_ms.saturating_sub(mark.wall_ms) as f64 / 1000.0);
            gauge!("vecsync_applied_watermark_timestamp_seconds", &labels)
                .set(mark.wall_ms as f64 / 1000.0);
        }
    }
}

/// A batch applied and flushed.
pub(crate) struct BatchApplied<'a> {
    pub region: &'a str,
    /// Events by (origin, operation, result).
    pub by_op: &'a HashMap<(String, &'static str, &'static str), u64>,
    pub events: usize,
    /// Applying, until searchable.
    pub elapsed: Duration,
}

impl BatchApplied<'_> {
    pub fn emit(&self) {
        for ((origin, op, result), n) in self.by_op {
            let labels = [
                ("origin", origin.clone()),
                ("region", self.region.to_owned()),
                ("op", (*op).to_owned()),
                ("result", (*result).to_owned()),
            ];
            counter!("vecsync_consumer_events_total", &labels).increment(*n);
        }
        histogram!("vecsync_consumer_batch_events").record(self.events as f64);
        histogram!("vecsync_consumer_batch_apply_seconds").record(self.elapsed.as_secs_f64());
    }
}

/// What events wait for in the worker.
pub(crate) enum Waited {
    /// From the read until the reorder buffer releases them.
    ForOrder,
    /// From the release until their batch starts: for the store to be
    /// free, or for a PQ codebook.
    ForStore,
}

/// Events leave a wait: how long each spent in it.
pub(crate) struct EventsWaited<I> {
    pub stage: Waited,
    pub since: I,
    pub until: Instant,
}

impl<I: Iterator<Item = Instant>> EventsWaited<I> {
    pub fn emit(self) {
        let waited = histogram!(match self.stage {
            Waited::ForOrder => "vecsync_consumer_order_wait_seconds",
            Waited::ForStore => "vecsync_consumer_store_wait_seconds",
        });
        for at in self.since {
            waited.record(self.until.saturating_duration_since(at).as_secs_f64());
        }
    }
}

/// A store flush: what was applied before it is durable.
pub(crate) struct Flushed {
    pub took: Duration,
}

impl Flushed {
    pub fn emit(&self) {
        histogram!("vecsync_consumer_flush_seconds").record(self.took.as_secs_f64());
    }
}

/// Every reason an event is dead-lettered for: undecodable records
/// (`DecodeError::reason_label`) and events that cannot apply
/// (`DeadReason`).
pub(crate) const DEAD_LETTER_REASONS: [&str; 9] = [
    "bad_framing",
    "malformed",
    "invalid_value",
    "unknown_schema",
    "unknown_collection",
    "wrong_dimension",
    "invalid_vector",
    "invalid_payload",
    "reserved_key",
];

/// Creates every dead-letter series at zero, so that `increase()` sees the
/// first dead letter and dashboards show zero rather than nothing.
pub(crate) fn init_dead_letter_counters() {
    for reason in DEAD_LETTER_REASONS {
        counter!("vecsync_consumer_dead_letters_total", "reason" => reason).increment(0);
    }
}

/// Records of a source deleted (by retention) before this region read them.
pub(crate) struct RecordsLost<'a> {
    pub topic: &'a str,
    pub count: u64,
}

impl RecordsLost<'_> {
    pub fn emit(&self) {
        counter!("vecsync_consumer_records_lost_total", "topic" => self.topic.to_owned())
            .increment(self.count);
    }
}

/// Deltas (payload patches, sparse deltas) dropped because they can never
/// apply: `base_never_came` (expiry: the version they build on never
/// reached this region before the horizon) or `base_superseded` (a full
/// write newer than their base is there, whichever arrived first).
pub(crate) struct DeltasDropped<'a> {
    pub collection: &'a str,
    pub reason: &'static str,
    pub count: u64,
}

impl DeltasDropped<'_> {
    pub fn emit(&self) {
        let labels = [
            ("collection", self.collection.to_owned()),
            ("reason", self.reason.to_owned()),
        ];
        counter!("vecsync_consumer_deltas_dropped_total", &labels).increment(self.count);
    }
}

/// An event of a collection the region does not replicate from its source.
pub(crate) struct EventSkipped<'a> {
    pub origin: &'a str,
    pub collection: &'a str,
}

impl EventSkipped<'_> {
    pub fn emit(&self) {
        let labels = [
            ("origin", self.origin.to_owned()),
            ("collection", self.collection.to_owned()),
        ];
        counter!("vecsync_consumer_skipped_events_total", &labels).increment(1);
    }
}

/// A record of a source with `max_read_bytes_per_sec` that waited for the
/// cap before it was read.
pub(crate) struct ReadThrottled<'a> {
    pub topic: &'a str,
}

impl ReadThrottled<'_> {
    pub fn emit(&self) {
        self.counter().increment(1);
    }

    /// The series exists from the start, at zero, for every capped source:
    /// a dashboard shows that the cap is there and has held nothing back.
    pub fn start(&self) {
        self.counter().increment(0);
    }

    fn counter(&self) -> metrics::Counter {
        counter!("vecsync_consumer_read_throttled_total", "topic" => self.topic.to_owned())
    }
}

/// An event written to the dead-letter topic.
pub(crate) struct DeadLettered {
    pub reason: &'static str,
}

impl DeadLettered {
    pub fn emit(&self) {
        counter!("vecsync_consumer_dead_letters_total", "reason" => self.reason).increment(1);
    }
}

/// The reorder buffer's state after a batch: how much it holds, and what it
/// did out of strict order since the last report.
pub(crate) struct ReorderState {
    pub buffered: usize,
    pub buffered_bytes: usize,
    pub uncommitted: usize,
    pub waiting_for_codebooks: usize,
    pub counters: Counters,
    pub before: Counters,
}

impl ReorderState {
    pub fn emit(&self) {
        gauge!("vecsync_consumer_reorder_buffered_events").set(self.buffered as f64);
        gauge!("vecsync_consumer_reorder_buffered_bytes").set(self.buffered_bytes as f64);
        gauge!("vecsync_consumer_uncommitted_records").set(self.uncommitted as f64);
        gauge!("vecsync_consumer_waiting_for_codebook_events")
            .set(self.waiting_for_codebooks as f64);
        let (now, was) = (self.counters, self.before);
        counter!("vecsync_consumer_reorder_forced_total").increment(now.forced - was.forced);
        counter!("vecsync_consumer_reorder_late_total").increment(now.late - was.late);
        counter!("vecsync_consumer_sources_idled_total").increment(now.idled - was.idled);
    }
}
