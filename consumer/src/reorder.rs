//! Merges the events of several sources into HLC order through a bounded
//! buffer released by a watermark (DESIGN.md §3).
//!
//! Each source (a partition of a source topic) delivers events in roughly
//! ascending timestamp order, and heartbeats when it has nothing to say. The
//! watermark is the lowest timestamp every live source has passed: no live
//! source will, as far as it has told, deliver anything older. Events at or
//! below it are released in timestamp order.
//!
//! Three things keep the buffer from waiting forever, each counted:
//! - a source silent for longer than `idle_after_ms` is declared idle and
//!   stops holding the watermark back until it speaks again; once every
//!   source is idle, nothing holds the buffer back and all it holds goes
//!   (the last writes of a producer that stopped are not kept waiting for
//!   a heartbeat that will not come);
//! - when the buffer holds `max_events`, or `max_bytes` of records, the
//!   oldest event is released anyway (forced);
//! - an event older than what was already released (late: from a source that
//!   was idle, or from a second producer of the same partition) is released
//!   at once. Apply is by version, so order only matters for efficiency and
//!   for deltas, never for the final state.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use vecsync_schemas::hlc::Hlc;

/// Bounds of a reorder buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Events held at most; beyond it the oldest is released (forced).
    pub max_events: usize,
    /// Bytes held at most, as [`ReorderBuffer::push_sized`] counts them;
    /// beyond it the oldest is released (forced).
    pub max_bytes: usize,
    /// A source silent this long no longer holds the watermark back.
    pub idle_after_ms: u64,
}

/// What the buffer did that departs from strict timestamp order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events released before the watermark passed them (buffer full).
    pub forced: u64,
    /// Events that arrived older than what had been released.
    pub late: u64,
    /// Times a source was declared idle.
    pub idled: u64,
}

#[derive(Debug)]
struct Source {
    /// Highest timestamp the source has delivered (event or heartbeat).
    high: Option<Hlc>,
    /// When it last delivered anything, in ms.
    seen_ms: u64,
    idle: bool,
}

/// A reorder buffer over sources keyed by `K`, holding items `T`.
#[derive(Debug)]
pub struct ReorderBuffer<K, T> {
    bounds: Bounds,
    sources: HashMap<K, Source>,
    /// Ordered by timestamp, then arrival, so equal stamps keep their order.
    heap: BinaryHeap<Reverse<(Hlc, u64)>>,
    /// Each item with its size in bytes.
    items: HashMap<u64, (T, usize)>,
    /// The sizes of the items held.
    bytes: usize,
    next_seq: u64,
    /// Highest timestamp released so far.
    released: Option<Hlc>,
    counters: Counters,
}

impl<K: Eq + Hash + Clone, T> ReorderBuffer<K, T> {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            sources: HashMap::new(),
            heap: BinaryHeap::new(),
            items: HashMap::new(),
            bytes: 0,
            next_seq: 0,
            released: None,
            counters: Counters::default(),
        }
    }

    /// Registers a source before it has delivered anything, so that the
    /// watermark waits for it (until it is idle too long).
    pub fn add_source(&mut self, key: K, now_ms: u64) {
        self.sources.entry(key).or_insert(Source {
            high: None,
            seen_ms: now_ms,
            idle: false,
        });
    }

    /// Forgets a source (its partition was revoked).
    pub fn remove_source(&mut self, key: &K) {
        self.sources.remove(key);
    }

    /// Takes an event. Returns the events to apply now, in order: those the
    /// watermark has passed, and a late or forced one.
    pub fn push(&mut self, key: K, hlc: Hlc, item: T, now_ms: u64) -> Vec<(Hlc, T)> {
        self.push_sized(key, hlc, item, 0, now_ms)
    }

    /// [`ReorderBuffer::push`] of an item of `bytes` bytes, counted against
    /// [`Bounds::max_bytes`].
    pub fn push_sized(
        &mut self,
        key: K,
        hlc: Hlc,
        item: T,
        bytes: usize,
        now_ms: u64,
    ) -> Vec<(Hlc, T)> {
        self.saw(key, &hlc, now_ms);
        if self.released.as_ref().is_some_and(|r| hlc < *r) {
            self.counters.late += 1;
            let mut out = vec![(hlc, item)];
            out.extend(self.release(now_ms));
            return out;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse((hlc, seq)));
        self.items.insert(seq, (item, bytes));
        self.bytes += bytes;
        let mut out = Vec::new();
        while self.heap.len() > self.bounds.max_events || self.bytes > self.bounds.max_bytes {
            self.counters.forced += 1;
            out.extend(self.pop());
        }
        out.extend(self.release(now_ms));
        out
    }

    /// Takes a heartbeat: the source has passed `hlc`.
    pub fn heartbeat(&mut self, key: K, hlc: Hlc, now_ms: u64) -> Vec<(Hlc, T)> {
        self.saw(key, &hlc, now_ms);
        self.release(now_ms)
    }

    /// Releases what the passage of time allows (sources going idle).
    pub fn tick(&mut self, now_ms: u64) -> Vec<(Hlc, T)> {
        self.release(now_ms)
    }

    /// Everything still held, in order (at shutdown, or when every source
    /// has ended).
    pub fn drain(&mut self) -> Vec<(Hlc, T)> {
        let mut out = Vec::with_capacity(self.heap.len());
        while let Some(e) = self.pop() {
            out.push(e);
        }
        self.give_back_room();
        out
    }

    /// The lowest timestamp every live source has passed, if any source is
    /// live and every live source has delivered something. With every
    /// source idle, the highest timestamp any has delivered: every event
    /// held is at or below it.
    pub fn watermark(&mut self, now_ms: u64) -> Option<Hlc> {
        let mut low: Option<&Hlc> = None;
        let mut live = 0;
        for s in self.sources.values_mut() {
            let silent = now_ms.saturating_sub(s.seen_ms) > self.bounds.idle_after_ms;
            if silent && !s.idle {
                s.idle = true;
                self.counters.idled += 1;
            }
            if s.idle {
                continue;
            }
            live += 1;
            match &s.high {
                None => return None,
                Some(h) => {
                    if low.is_none_or(|l| h < l) {
                        low = Some(h);
                    }
                }
            }
        }
        if live == 0 {
            return self
                .sources
                .values()
                .filter_map(|s| s.high.as_ref())
                .max()
                .cloned();
        }
        low.cloned()
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Bytes held, as [`ReorderBuffer::push_sized`] counted them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Sources currently idle.
    pub fn idle_sources(&self) -> usize {
        self.sources.values().filter(|s| s.idle).count()
    }

    fn saw(&mut self, key: K, hlc: &Hlc, now_ms: u64) {
        let s = self.sources.entry(key).or_insert(Source {
            high: None,
            seen_ms: now_ms,
            idle: false,
        });
        s.seen_ms = now_ms;
        s.idle = false;
        if s.high.as_ref().is_none_or(|h| hlc > h) {
            s.high = Some(hlc.clone());
        }
    }

    fn release(&mut self, now_ms: u64) -> Vec<(Hlc, T)> {
        let Some(mark) = self.watermark(now_ms) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while self.heap.peek().is_some_and(|Reverse((h, _))| *h <= mark) {
            out.extend(self.pop());
        }
        self.give_back_room();
        out
    }

    /// Lets go of the room a larger moment (a catch-up's backlog) left:
    /// once three quarters of it stand empty, it keeps twice what it
    /// holds. Shrinking that late rehashes rarely, and the room stays
    /// within four times what is held (above a floor).
    fn give_back_room(&mut self) {
        const FLOOR: usize = 1_024;
        let held = self.items.len();
        if self.items.capacity() > FLOOR && held < self.items.capacity() / 4 {
            let room = (held * 2).max(FLOOR);
            self.items.shrink_to(room);
            self.heap.shrink_to(room);
        }
    }

    fn pop(&mut self) -> Option<(Hlc, T)> {
        let Reverse((hlc, seq)) = self.heap.pop()?;
        let (item, bytes) = self.items.remove(&seq)?;
        self.bytes -= bytes;
        if self.released.as_ref().is_none_or(|r| hlc > *r) {
            self.released = Some(hlc.clone());
        }
        Some((hlc, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOUNDS: Bounds = Bounds {
        max_events: 1_000,
        max_bytes: usize::MAX,
        idle_after_ms: 5_000,
    };

    fn h(ms: u64, region: &str) -> Hlc {
        Hlc::new(ms, 0, region)
    }

    #[test]
    fn lets_go_of_a_backlogs_room_once_it_has_drained() {
        let mut b = ReorderBuffer::new(Bounds {
            max_events: 100_000,
            ..BOUNDS
        });
        b.add_source("us", 0);
        b.add_source("eu", 0);
        // eu says nothing: a backlog of us's events waits for it.
        for ms in 0..20_000 {
            assert!(b.push("us", h(ms, "us"), ms, 0).is_empty());
        }
        assert!(b.items.capacity() >= 20_000 && b.heap.capacity() >= 20_000);
        let out = b.heartbeat("eu", h(20_000, "eu"), 1);
        assert_eq!(out.len(), 20_000);
        assert!(
            b.items.capacity() < 4_096 && b.heap.capacity() < 4_096,
            "still holding room for {} and {} events",
            b.items.capacity(),
            b.heap.capacity()
        );
        // It grows again as it needs.
        for ms in 20_001..30_000 {
            assert!(b.push("us", h(ms, "us"), ms, 1).is_empty());
        }
        assert_eq!(b.drain().len(), 9_999);
        assert!(b.items.capacity() < 4_096);
    }

    #[test]
    fn holds_events_until_every_source_has_passed_them() {
        let mut b = ReorderBuffer::new(BOUNDS);
        b.add_source("us", 0);
        b.add_source("eu", 0);
        assert!(
            b.push("us", h(10, "us"), "u10", 0).is_empty(),
            "eu has said nothing yet"
        );
        assert!(b.push("us", h(30, "us"), "u30", 0).is_empty());
        let out = b.push("eu", h(20, "eu"), "e20", 0);
        assert_eq!(
            out.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
            ["u10", "e20"]
        );
        // An eu heartbeat past 30 lets u30 go.
        let out = b.heartbeat("eu", h(31, "eu"), 1);
        assert_eq!(out.iter().map(|(_, t)| *t).collect::<Vec<_>>(), ["u30"]);
        assert_eq!(b.counters(), Counters::default());
    }

    #[test]
    fn an_idle_source_stops_holding_the_watermark_and_late_events_pass_at_once() {
        let mut b = ReorderBuffer::new(BOUNDS);
        b.add_source("us", 0);
        b.add_source("eu", 0);
        assert!(b.push("us", h(10, "us"), "u10", 1_000).is_empty());
        assert!(b.tick(5_000).is_empty(), "eu is not idle yet");
        let out = b.tick(5_001);
        assert_eq!(out.len(), 1, "eu silent past the bound");
        assert_eq!((b.counters().idled, b.idle_sources()), (1, 1));
        // eu comes back with something older than what was released.
        let out = b.push("eu", h(5, "eu"), "e5", 5_002);
        assert_eq!(out.iter().map(|(_, t)| *t).collect::<Vec<_>>(), ["e5"]);
        assert_eq!((b.counters().late, b.idle_sources()), (1, 0));
    }

    #[test]
    fn once_every_source_is_idle_everything_held_is_released() {
        let mut b = ReorderBuffer::new(BOUNDS);
        b.add_source("us", 0);
        b.add_source("eu", 0);
        // The last writes of both, at once: eu's last is older than us's.
        assert!(b.push("us", h(10, "us"), "u10", 1_000).is_empty());
        let out = b.push("eu", h(5, "eu"), "e5", 1_000);
        assert_eq!(out.iter().map(|(_, t)| *t).collect::<Vec<_>>(), ["e5"]);
        assert!(b.push("us", h(20, "us"), "u20", 1_000).is_empty());
        assert!(b.tick(6_000).is_empty(), "neither is idle yet");
        let out = b.tick(6_001);
        assert_eq!(
            out.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
            ["u10", "u20"],
            "the producer stopped: its last writes are not held for ever"
        );
        assert_eq!(b.idle_sources(), 2);
        assert!(b.is_empty());
    }

    #[test]
    fn a_buffer_full_of_bytes_releases_its_oldest() {
        let mut b = ReorderBuffer::new(Bounds {
            max_bytes: 100,
            ..BOUNDS
        });
        b.add_source("eu", 0);
        assert!(b.push_sized("us", h(3, "us"), 3, 60, 0).is_empty());
        assert!(b.push_sized("us", h(1, "us"), 1, 40, 0).is_empty());
        assert_eq!(b.bytes(), 100);
        let out = b.push_sized("us", h(2, "us"), 2, 50, 0);
        assert_eq!(out.iter().map(|(_, t)| *t).collect::<Vec<_>>(), [1, 2]);
        assert_eq!((b.bytes(), b.len(), b.counters().forced), (60, 1, 2));
        assert_eq!(b.drain().len(), 1);
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn a_full_buffer_releases_its_oldest() {
        let mut b = ReorderBuffer::new(Bounds {
            max_events: 2,
            ..BOUNDS
        });
        b.add_source("eu", 0);
        assert!(b.push("us", h(3, "us"), 3, 0).is_empty());
        assert!(b.push("us", h(1, "us"), 1, 0).is_empty());
        let out = b.push("us", h(2, "us"), 2, 0);
        assert_eq!(out.iter().map(|(_, t)| *t).collect::<Vec<_>>(), [1]);
        assert_eq!(b.counters().forced, 1);
        assert_eq!(
            b.drain().iter().map(|(_, t)| *t).collect::<Vec<_>>(),
            [2, 3]
        );
    }

    proptest! {
        /// Sources deliver ascending timestamps, interleaved at random: the
        /// buffer releases every event exactly once, in timestamp order.
        #[test]
        fn releases_every_event_once_in_timestamp_order(
            steps in proptest::collection::vec((0usize..3, 1u64..5), 1..300),
        ) {
            let regions = ["us", "eu", "ap"];
            let mut b = ReorderBuffer::new(BOUNDS);
            for r in regions {
                b.add_source(r, 0);
            }
            let mut clock = [0u64; 3];
            let mut out = Vec::new();
            for (n, (source, step)) in steps.iter().enumerate() {
                clock[*source] += step;
                let hlc = h(clock[*source], regions[*source]);
                out.extend(b.push(regions[*source], hlc, n, 0));
            }
            // Every source ends with a heartbeat far ahead.
            for r in regions {
                out.extend(b.heartbeat(r, h(u64::MAX, r), 0));
            }
            let stamps: Vec<&Hlc> = out.iter().map(|(h, _)| h).collect();
            prop_assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "out of order");
            let mut ids: Vec<usize> = out.iter().map(|(_, n)| *n).collect();
            ids.sort_unstable();
            prop_assert_eq!(ids, (0..steps.len()).collect::<Vec<_>>());
            prop_assert_eq!(b.counters(), Counters::default());
            prop_assert!(b.is_empty());
        }
    }
}
