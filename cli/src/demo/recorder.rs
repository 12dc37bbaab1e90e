//! What the demo reads from vecsync's own metrics: every replication lag
//! observation per (origin, region), and the producers' event and byte
//! counts. A metrics recorder installed for the demo's process only.

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Replication lag samples in seconds, by (origin, region).
pub type LagSamples = BTreeMap<(String, String), Vec<f64>>;

/// The figures the recorder keeps, shared with the demo.
#[derive(Debug, Default)]
pub struct Book {
    lags: Mutex<LagSamples>,
    pub events: AtomicU64,
    pub bytes: AtomicU64,
}

impl Book {
    /// A copy of every sample so far.
    pub fn lags(&self) -> LagSamples {
        self.lags.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct DemoRecorder(pub Arc<Book>);

struct LagSlot {
    book: Arc<Book>,
    pair: (String, String),
}

impl HistogramFn for LagSlot {
    fn record(&self, value: f64) {
        if let Ok(mut lags) = self.book.lags.lock() {
            lags.entry(self.pair.clone()).or_default().push(value);
        }
    }
}

enum Tally {
    Events(Arc<Book>),
    Bytes(Arc<Book>),
}

impl CounterFn for Tally {
    fn increment(&self, value: u64) {
        match self {
            Tally::Events(b) => b.events.fetch_add(value, Ordering::Relaxed),
            Tally::Bytes(b) => b.bytes.fetch_add(value, Ordering::Relaxed),
        };
    }

    fn absolute(&self, _value: u64) {}
}

impl Recorder for DemoRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let book = self.0.clone();
        match key.name() {
            "vecsync_producer_events_total" => Counter::from_arc(Arc::new(Tally::Events(book))),
            "vecsync_producer_event_bytes_total" => Counter::from_arc(Arc::new(Tally::Bytes(book))),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() != "vecsync_replication_lag_seconds" {
            return Histogram::noop();
        }
        let label = |name: &str| {
            key.labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
                .unwrap_or_default()
        };
        Histogram::from_arc(Arc::new(LagSlot {
            book: self.0.clone(),
            pair: (label("origin"), label("region")),
        }))
    }
}
