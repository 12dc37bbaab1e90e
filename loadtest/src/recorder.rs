//! What the demo and the load test read from vecsync's own metrics, in one
//! process running several regions: every replication lag observation per
//! (origin, region) into an HDR histogram, events handled per (origin,
//! region), and the producers' event and byte counts. A metrics recorder
//! for such a process only; production processes export Prometheus.

use hdrhistogram::Histogram as Hdr;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A region pair: (origin, region).
pub type Pair = (String, String);

/// The figures the recorder keeps.
#[derive(Debug, Default)]
pub struct Book {
    /// Replication lag in microseconds, by pair: since the start, and
    /// since the last [`Book::take_window`].
    lags: Mutex<BTreeMap<Pair, Hdr<u64>>>,
    window: Mutex<BTreeMap<Pair, Hdr<u64>>>,
    /// The stages an event goes through, by [`STAGES`] name: durations in
    /// microseconds, sizes as they are.
    stages: Mutex<BTreeMap<&'static str, Hdr<u64>>>,
    /// Events a region's workers handled from an origin (changed,
    /// unchanged or parked: each counts once).
    handled: Mutex<BTreeMap<Pair, u64>>,
    pub events: AtomicU64,
    pub bytes: AtomicU64,
}

impl Book {
    /// A copy of every pair's histogram so far.
    pub fn lags(&self) -> BTreeMap<Pair, Hdr<u64>> {
        self.lags.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The lags recorded since the last call, by pair; starts a new window.
    pub fn take_window(&self) -> BTreeMap<Pair, Hdr<u64>> {
        self.window
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }

    /// A copy of every stage's histogram so far.
    pub fn stages(&self) -> BTreeMap<&'static str, Hdr<u64>> {
        self.stages.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Events handled so far, by pair.
    pub fn handled(&self) -> BTreeMap<Pair, u64> {
        self.handled.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Forgets the lags, stages and events handled recorded so far (a
    /// warm-up's); the producers' running counts stay.
    pub fn forget(&self) {
        for map in [&self.lags, &self.window] {
            map.lock().map(|mut m| m.clear()).unwrap_or_default();
        }
        self.stages
            .lock()
            .map(|mut s| s.clear())
            .unwrap_or_default();
        self.handled
            .lock()
            .map(|mut h| h.clear())
            .unwrap_or_default();
    }

    /// Installs a recorder filling a new book as the process's recorder.
    pub fn install() -> anyhow::Result<Arc<Self>> {
        let book = Arc::new(Self::default());
        metrics::set_global_recorder(BookRecorder(book.clone()))
            .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
        Ok(book)
    }
}

#[derive(Debug)]
struct BookRecorder(Arc<Book>);

struct LagSlot {
    book: Arc<Book>,
    pair: Pair,
}

impl HistogramFn for LagSlot {
    fn record(&self, seconds: f64) {
        let micros = ((seconds.max(0.0) * 1e6) as u64).max(1);
        for lags in [&self.book.lags, &self.book.window] {
            if let Ok(mut lags) = lags.lock() {
                lags.entry(self.pair.clone())
                    .or_insert_with(new_lag_histogram)
                    .saturating_record(micros);
            }
        }
    }
}

/// A histogram for lags in microseconds: 1 µs to an hour, three
/// significant digits.
pub fn new_lag_histogram() -> Hdr<u64> {
    Hdr::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|e| unreachable!("valid bounds: {e}"))
}

/// The stage histograms kept: (metric, seconds rather than a count).
pub const STAGES: [(&str, bool); 6] = [
    ("vecsync_producer_batch_ack_seconds", true),
    ("vecsync_consumer_order_wait_seconds", true),
    ("vecsync_consumer_store_wait_seconds", true),
    ("vecsync_consumer_batch_events", false),
    ("vecsync_consumer_batch_apply_seconds", true),
    ("vecsync_consumer_flush_seconds", true),
];

struct StageSlot {
    book: Arc<Book>,
    name: &'static str,
    seconds: bool,
}

impl HistogramFn for StageSlot {
    fn record(&self, value: f64) {
        let value = if self.seconds { value * 1e6 } else { value };
        if let Ok(mut stages) = self.book.stages.lock() {
            stages
                .entry(self.name)
                .or_insert_with(new_lag_histogram)
                .saturating_record((value.max(0.0) as u64).max(1));
        }
    }
}

enum Tally {
    Events(Arc<Book>),
    Bytes(Arc<Book>),
    Handled(Arc<Book>, Pair),
}

impl CounterFn for Tally {
    fn increment(&self, value: u64) {
        match self {
            Tally::Events(b) => {
                b.events.fetch_add(value, Ordering::Relaxed);
            }
            Tally::Bytes(b) => {
                b.bytes.fetch_add(value, Ordering::Relaxed);
            }
            Tally::Handled(b, pair) => {
                if let Ok(mut h) = b.handled.lock() {
                    *h.entry(pair.clone()).or_default() += value;
                }
            }
        }
    }

    fn absolute(&self, _value: u64) {}
}

fn pair_of(key: &Key) -> Pair {
    let label = |name: &str| {
        key.labels()
            .find(|l| l.key() == name)
            .map(|l| l.value().to_owned())
            .unwrap_or_default()
    };
    (label("origin"), label("region"))
}

impl Recorder for BookRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let book = self.0.clone();
        match key.name() {
            "vecsync_producer_events_total" => Counter::from_arc(Arc::new(Tally::Events(book))),
            "vecsync_producer_event_bytes_total" => Counter::from_arc(Arc::new(Tally::Bytes(book))),
            "vecsync_consumer_events_total" => {
                Counter::from_arc(Arc::new(Tally::Handled(book, pair_of(key))))
            }
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == "vecsync_replication_lag_seconds" {
            return Histogram::from_arc(Arc::new(LagSlot {
                book: self.0.clone(),
                pair: pair_of(key),
            }));
        }
        match STAGES.iter().find(|(name, _)| *name == key.name()) {
            Some(&(name, seconds)) => Histogram::from_arc(Arc::new(StageSlot {
                book: self.0.clone(),
                name,
                seconds,
            })),
            None => Histogram::noop(),
        }
    }
}
