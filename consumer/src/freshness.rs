//! How fresh a region's store is, per origin region (DESIGN.md §3, bounded
//! staleness): the applied watermark of an origin is the timestamp before
//! which every event received from it has been applied.
//!
//! Per partition, the worker knows the newest timestamp it has seen (events
//! and heartbeats) and the timestamps of events received but not applied
//! yet. A partition is applied up to its oldest unapplied event, or up to
//! the newest timestamp seen when nothing waits; an origin is applied up to
//! the lowest of its partitions. When an origin falls silent (a cut link, a
//! stopped region) its watermark stops and its age keeps rising.

use crate::offsets::Partition;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use vecsync_schemas::hlc::Hlc;

#[derive(Debug, Default)]
struct PartitionProgress {
    origin: String,
    seen: Option<Hlc>,
    /// Unapplied events by timestamp (a count, for equal timestamps).
    held: BTreeMap<Hlc, usize>,
}

impl PartitionProgress {
    fn applied_up_to(&self) -> Option<&Hlc> {
        self.held.keys().next().or(self.seen.as_ref())
    }
}

/// What has been applied, per partition.
#[derive(Debug, Default)]
pub struct Progress {
    partitions: HashMap<Partition, PartitionProgress>,
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    fn partition(&mut self, p: &Partition, origin: &str) -> &mut PartitionProgress {
        let progress = self.partitions.entry(p.clone()).or_default();
        if progress.origin.is_empty() {
            origin.clone_into(&mut progress.origin);
        }
        progress
    }

    /// An event from `origin` was received and waits to be applied.
    pub fn held(&mut self, p: &Partition, origin: &str, hlc: &Hlc) {
        let progress = self.partition(p, origin);
        *progress.held.entry(hlc.clone()).or_default() += 1;
        if progress.seen.as_ref().is_none_or(|s| s < hlc) {
            progress.seen = Some(hlc.clone());
        }
    }

    /// A heartbeat: nothing before `hlc` is still to come from this
    /// partition's writers (as far as their clocks go).
    pub fn seen(&mut self, p: &Partition, origin: &str, hlc: &Hlc) {
        let progress = self.partition(p, origin);
        if progress.seen.as_ref().is_none_or(|s| s < hlc) {
            progress.seen = Some(hlc.clone());
        }
    }

    /// A held event is done with: applied, or dead-lettered.
    pub fn done(&mut self, p: &Partition, hlc: &Hlc) {
        let Some(progress) = self.partitions.get_mut(p) else {
            return;
        };
        if let Some(n) = progress.held.get_mut(hlc) {
            *n -= 1;
            if *n == 0 {
                progress.held.remove(hlc);
            }
        }
    }

    /// Forgets a revoked partition.
    pub fn forget(&mut self, p: &Partition) {
        self.partitions.remove(p);
    }

    /// Per origin, the timestamp up to which everything received is applied.
    pub fn watermarks(&self) -> BTreeMap<String, Hlc> {
        let mut out: BTreeMap<String, Hlc> = BTreeMap::new();
        for progress in self.partitions.values() {
            let Some(upto) = progress.applied_up_to() else {
                continue;
            };
            match out.get_mut(&progress.origin) {
                Some(low) if *low <= *upto => {}
                Some(low) => *low = upto.clone(),
                None => {
                    out.insert(progress.origin.clone(), upto.clone());
                }
            }
        }
        out
    }
}

/// The worker's applied watermarks, shared with its API: the worker
/// publishes, readers look or wait.
#[derive(Debug, Clone)]
pub struct Watermarks {
    tx: Arc<watch::Sender<BTreeMap<String, Hlc>>>,
    /// The partitions this worker reads, as `topic/partition`: with
    /// several workers per region, each answers for its own.
    covers: Arc<Mutex<BTreeSet<String>>>,
    /// The offset last committed per partition (`topic/partition`).
    committed: Arc<Mutex<BTreeMap<String, i64>>>,
}

impl Default for Watermarks {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(BTreeMap::new()).0),
            covers: Arc::default(),
            committed: Arc::default(),
        }
    }
}

/// One origin's freshness.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OriginFreshness {
    pub origin: String,
    /// Everything from this origin stamped before this is applied.
    pub applied_up_to: String,
    /// Milliseconds between that timestamp and now.
    pub age_ms: u64,
}

/// The answer to "is this store fresh enough?".
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Freshness {
    /// Every origin asked about is within the staleness asked for (always
    /// true when none was asked for and every origin has a watermark).
    pub fresh: bool,
    /// How long the answer waited for catch-up (0 when it did not wait).
    pub waited_ms: u64,
    pub origins: Vec<OriginFreshness>,
    /// Origins asked about that have no watermark yet (nothing received).
    pub unknown: Vec<String>,
    /// The partitions (`topic/partition`) whose events this answer covers:
    /// those assigned to this worker. With several workers per region, a
    /// write is covered by the worker reading its key's partition.
    pub partitions: Vec<String>,
}

impl Watermarks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes the watermarks if they changed.
    pub fn publish(&self, now: BTreeMap<String, Hlc>) {
        self.tx.send_if_modified(|held| {
            if *held == now {
                return false;
            }
            *held = now;
            true
        });
    }

    /// The worker reads `partition` of `topic` from now on.
    pub fn cover(&self, topic: &str, partition: i32) {
        self.covered().insert(format!("{topic}/{partition}"));
    }

    /// The worker no longer reads `partition` of `topic`.
    pub fn uncover(&self, topic: &str, partition: i32) {
        let key = format!("{topic}/{partition}");
        self.covered().remove(&key);
        lock(&self.committed).remove(&key);
    }

    /// The worker committed `offset` for `partition` of `topic`.
    pub fn committed_to(&self, topic: &str, partition: i32, offset: i64) {
        lock(&self.committed).insert(format!("{topic}/{partition}"), offset);
    }

    /// The offsets last committed, per partition (`topic/partition`).
    pub fn committed(&self) -> BTreeMap<String, i64> {
        lock(&self.committed).clone()
    }

    fn covered(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        lock(&self.covers)
    }

    /// The watermarks now.
    pub fn current(&self) -> BTreeMap<String, Hlc> {
        self.tx.borrow().clone()
    }

    /// How fresh the store is for what `ask` names. When not fresh enough,
    /// waits up to `wait` for catch-up before answering stale.
    pub async fn freshness(
        &self,
        ask: &Ask,
        wait: Duration,
        now_ms: impl Fn() -> u64,
    ) -> Freshness {
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        let mut rx = self.tx.subscribe();
        let mut waited = false;
        loop {
            let answer = judge(&rx.borrow_and_update(), ask, now_ms());
            if answer.fresh || tokio::time::Instant::now() >= deadline {
                return Freshness {
                    partitions: self.covered().iter().cloned().collect(),
                    waited_ms: if waited {
                        started.elapsed().as_millis() as u64
                    } else {
                        0
                    },
                    ..answer
                };
            }
            waited = true;
            // Re-judge when the watermarks move, and now and then anyway
            // (age grows with time alone).
            let step = tokio::time::Instant::now() + Duration::from_millis(50);
            let _ = tokio::time::timeout_at(step.min(deadline), rx.changed()).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a freshness question asks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ask {
    /// The origins asked about: every known one when empty (and no `after`).
    pub origins: Vec<String>,
    /// Fresh only when each origin's watermark is at most this old.
    pub max_staleness_ms: Option<u64>,
    /// Fresh only when these versions (as a write returned them) are
    /// applied: each origin's watermark is past its version. Read-your-writes
    /// across regions.
    pub after: Vec<Hlc>,
}

fn judge(marks: &BTreeMap<String, Hlc>, ask: &Ask, now_ms: u64) -> Freshness {
    let mut asked: Vec<String> = ask.origins.clone();
    for v in &ask.after {
        if !asked.contains(&v.origin) {
            asked.push(v.origin.clone());
        }
    }
    if asked.is_empty() {
        asked = marks.keys().cloned().collect();
    }
    let mut out = Freshness {
        fresh: !asked.is_empty(),
        waited_ms: 0,
        origins: Vec::new(),
        unknown: Vec::new(),
        partitions: Vec::new(),
    };
    for origin in asked {
        let Some(mark) = marks.get(&origin) else {
            out.fresh = false;
            out.unknown.push(origin);
            continue;
        };
        let age_ms = now_ms.saturating_sub(mark.wall_ms);
        if ask.max_staleness_ms.is_some_and(|max| age_ms > max) {
            out.fresh = false;
        }
        // Past the version, not at it: an event at the watermark itself may
        // still be held.
        if ask.after.iter().any(|v| v.origin == origin && mark <= v) {
            out.fresh = false;
        }
        out.origins.push(OriginFreshness {
            origin,
            applied_up_to: mark.to_string(),
            age_ms,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(ms: u64, origin: &str) -> Hlc {
        Hlc::new(ms, 0, origin)
    }

    fn p(n: i32) -> Partition {
        (0, "t".into(), n)
    }

    #[test]
    fn an_origin_is_applied_up_to_its_oldest_unapplied_event_in_any_partition() {
        let mut progress = Progress::new();
        progress.held(&p(0), "us-east", &h(100, "us-east"));
        progress.held(&p(0), "us-east", &h(120, "us-east"));
        progress.seen(&p(1), "us-east", &h(150, "us-east"));
        progress.seen(&p(2), "eu-west", &h(90, "eu-west"));
        let marks = progress.watermarks();
        assert_eq!(marks["us-east"], h(100, "us-east"));
        assert_eq!(marks["eu-west"], h(90, "eu-west"));

        progress.done(&p(0), &h(100, "us-east"));
        assert_eq!(progress.watermarks()["us-east"], h(120, "us-east"));
        progress.done(&p(0), &h(120, "us-east"));
        // Partition 0 has applied all it saw (120); partition 1 is at 150.
        assert_eq!(progress.watermarks()["us-east"], h(120, "us-east"));
        progress.seen(&p(0), "us-east", &h(200, "us-east"));
        assert_eq!(progress.watermarks()["us-east"], h(150, "us-east"));
        progress.forget(&p(1));
        assert_eq!(progress.watermarks()["us-east"], h(200, "us-east"));
    }

    #[test]
    fn equal_timestamps_are_counted() {
        let mut progress = Progress::new();
        progress.held(&p(0), "a", &h(10, "a"));
        progress.held(&p(0), "a", &h(10, "a"));
        progress.done(&p(0), &h(10, "a"));
        progress.seen(&p(0), "a", &h(50, "a"));
        assert_eq!(progress.watermarks()["a"], h(10, "a"), "one is still held");
        progress.done(&p(0), &h(10, "a"));
        assert_eq!(progress.watermarks()["a"], h(50, "a"));
    }

    #[test]
    fn judging_freshness() {
        let marks = BTreeMap::from([
            ("a".to_owned(), h(1_000, "a")),
            ("b".to_owned(), h(900, "b")),
        ]);
        let ask = |origins: &[&str], max_staleness_ms, after: &[Hlc]| Ask {
            origins: origins.iter().map(|o| o.to_string()).collect(),
            max_staleness_ms,
            after: after.to_vec(),
        };
        let all = judge(&marks, &ask(&[], Some(150), &[]), 1_100);
        assert!(!all.fresh, "b is 200 ms behind");
        assert_eq!(all.origins[1].age_ms, 200);
        assert!(judge(&marks, &ask(&["a"], Some(150), &[]), 1_100).fresh);
        let unknown = judge(&marks, &ask(&["c"], None, &[]), 1_100);
        assert!(!unknown.fresh);
        assert_eq!(unknown.unknown, ["c"]);
        assert!(
            judge(&marks, &ask(&[], None, &[]), 5_000).fresh,
            "no bound asked for"
        );
        assert!(
            !judge(&BTreeMap::new(), &ask(&[], None, &[]), 0).fresh,
            "nothing known"
        );
        // A version is applied once the watermark is past it.
        let past = judge(&marks, &ask(&[], None, &[h(999, "a")]), 1_100);
        assert!(past.fresh);
        assert_eq!(past.origins.len(), 1, "only the origin of the version");
        assert!(!judge(&marks, &ask(&[], None, &[h(1_000, "a")]), 1_100).fresh);
        assert!(!judge(&marks, &ask(&[], None, &[h(10, "c")]), 1_100).fresh);
    }
}
