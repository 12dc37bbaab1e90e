//! Which offsets may be committed: per partition, the lowest offset still
//! held (in the reorder buffer, a batch not yet flushed, or waiting for a
//! codebook), or else the next one to read. Committing that much and no more
//! means a crash replays everything not yet durably applied (DESIGN.md §3).

use std::collections::{BTreeMap, BTreeSet};

/// A partition of a source: (source index, topic, partition).
pub type Partition = (usize, String, i32);

#[derive(Debug, Default)]
struct Progress {
    /// One past the highest offset received.
    next: i64,
    /// Offsets received and not yet done.
    held: BTreeSet<i64>,
    /// The offset last committed (or handed out to commit).
    committed: i64,
}

/// Tracks received and finished offsets of every partition.
#[derive(Debug, Default)]
pub struct Offsets {
    partitions: BTreeMap<Partition, Progress>,
}

impl Offsets {
    pub fn new() -> Self {
        Self::default()
    }

    /// The partition was assigned where the group had committed
    /// `committed`: commits never go below it, even while records before it
    /// are replayed.
    pub fn resume(&mut self, p: &Partition, committed: i64) {
        let progress = self.partitions.entry(p.clone()).or_default();
        progress.committed = progress.committed.max(committed);
    }

    /// A record at `offset` was received and is now held.
    pub fn received(&mut self, p: &Partition, offset: i64) {
        let progress = self.partitions.entry(p.clone()).or_default();
        progress.held.insert(offset);
        progress.next = progress.next.max(offset + 1);
    }

    /// The record at `offset` is durably done with (applied and flushed,
    /// dead-lettered, or a heartbeat).
    pub fn done(&mut self, p: &Partition, offset: i64) {
        if let Some(progress) = self.partitions.get_mut(p) {
            progress.held.remove(&offset);
        }
    }

    /// Forgets a partition (revoked): its held records are another
    /// worker's now.
    pub fn forget(&mut self, p: &Partition) {
        self.partitions.remove(p);
    }

    /// Offsets to commit, per partition, that moved since the last call:
    /// the first offset still held, or one past the last received.
    pub fn to_commit(&mut self) -> Vec<(Partition, i64)> {
        let mut out = Vec::new();
        for (p, progress) in &mut self.partitions {
            let safe = progress.held.first().copied().unwrap_or(progress.next);
            if safe > progress.committed {
                progress.committed = safe;
                out.push((p.clone(), safe));
            }
        }
        out
    }

    /// Records held, over all partitions.
    pub fn held(&self) -> usize {
        self.partitions.values().map(|p| p.held.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        (0, "us-east.vecsync.deltas".into(), n)
    }

    #[test]
    fn commits_stop_at_the_first_record_still_held() {
        let mut o = Offsets::new();
        for offset in 10..15 {
            o.received(&p(0), offset);
        }
        assert_eq!(o.to_commit(), [(p(0), 10)], "nothing done: resume at 10");
        assert!(o.to_commit().is_empty(), "nothing moved since");
        o.done(&p(0), 10);
        o.done(&p(0), 12);
        assert_eq!(
            o.to_commit(),
            [(p(0), 11)],
            "11 is still held; 12 must wait"
        );
        assert!(o.to_commit().is_empty(), "nothing moved since");
        o.done(&p(0), 11);
        o.done(&p(0), 13);
        o.done(&p(0), 14);
        assert_eq!(o.to_commit(), [(p(0), 15)]);
        assert_eq!(o.held(), 0);
    }

    #[test]
    fn replayed_records_never_move_the_commit_back() {
        let mut o = Offsets::new();
        o.resume(&p(0), 100);
        for offset in 90..100 {
            o.received(&p(0), offset);
            o.done(&p(0), offset);
        }
        assert!(o.to_commit().is_empty(), "still below the committed 100");
        o.received(&p(0), 100);
        o.done(&p(0), 100);
        assert_eq!(o.to_commit(), [(p(0), 101)]);
    }

    #[test]
    fn partitions_are_independent_and_can_be_forgotten() {
        let mut o = Offsets::new();
        o.received(&p(0), 0);
        o.received(&p(1), 7);
        o.done(&p(1), 7);
        assert_eq!(o.to_commit(), [(p(1), 8)]);
        o.forget(&p(0));
        assert_eq!(o.held(), 0);
        assert!(o.to_commit().is_empty());
    }
}
