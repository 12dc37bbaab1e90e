//! Flush and commit: applied records become durable in the background
//! flush, and only then are their offsets committed.

use super::*;

/// What the loop knows of each partition: offsets to commit, and how far
/// each origin is applied.
pub(super) struct Tracking {
    pub(super) offsets: Offsets,
    pub(super) progress: Progress,
    /// Records applied (searchable) but not yet flushed: done, and so
    /// committable, after a flush that starts after them.
    pub(super) unflushed: Vec<(Partition, i64)>,
    /// The flush under way, in the background while batches go on being
    /// applied, with the records it makes durable.
    pub(super) flushing: Option<(Flush, Vec<(Partition, i64)>)>,
    /// When the last flush started.
    pub(super) flushed_at: Instant,
    /// Whether the last batches came full: the worker is behind, and
    /// flushes at `flush_interval_behind`.
    pub(super) behind: bool,
}

/// A store flush running on the blocking pool; how long it took.
pub(super) type Flush = tokio::task::JoinHandle<Result<Duration, StoreError>>;

impl Sink {
    /// Moves the background flush on: collects a finished one, and starts
    /// the next when applied records have waited `flush_interval` (or
    /// `flush_interval_behind`). True when records became durable (a
    /// commit is worth making).
    pub(super) async fn flush_step(&self, tracking: &mut Tracking) -> Result<bool, WorkerError> {
        let finished = tracking
            .flushing
            .as_ref()
            .is_some_and(|(f, _)| f.is_finished());
        let mut durable = false;
        if finished {
            durable = self.finish_flush(tracking).await?;
        }
        let interval = if tracking.behind {
            self.flush_interval_behind
        } else {
            self.flush_interval
        };
        if tracking.flushing.is_none()
            && !tracking.unflushed.is_empty()
            && tracking.flushed_at.elapsed() >= interval
        {
            self.start_flush(tracking);
        }
        Ok(durable)
    }

    pub(super) fn start_flush(&self, tracking: &mut Tracking) {
        let store = self.store.clone();
        let flush = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            store.flush().map(|()| started.elapsed())
        });
        tracking.flushing = Some((flush, std::mem::take(&mut tracking.unflushed)));
        tracking.flushed_at = Instant::now();
    }

    /// Waits for the flush under way: its records become done. A failure
    /// is logged and they wait for the next flush, unless the store lost
    /// what it held ([`StoreError::Lost`]): the worker stops, committing
    /// none of them. True when it succeeded.
    pub(super) async fn finish_flush(&self, tracking: &mut Tracking) -> Result<bool, WorkerError> {
        let Some((flush, records)) = tracking.flushing.take() else {
            return Ok(false);
        };
        let result = flush
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        match result {
            Ok(took) => {
                Flushed { took }.emit();
                for (partition, offset) in records {
                    tracking.offsets.done(&partition, offset);
                }
                Ok(true)
            }
            Err(e @ StoreError::Lost { .. }) => Err(e.into()),
            Err(e) => {
                tracing::warn!("store flush failed, will try again: {e}");
                tracking.unflushed.splice(0..0, records);
                Ok(false)
            }
        }
    }

    /// Flushes everything applied so far and waits for it, before a
    /// synchronous commit.
    pub(super) async fn flush_all(&self, tracking: &mut Tracking) -> Result<(), WorkerError> {
        self.finish_flush(tracking).await?;
        if !tracking.unflushed.is_empty() {
            self.start_flush(tracking);
            self.finish_flush(tracking).await?;
        }
        Ok(())
    }
}

/// Commits what the offsets allow, per source consumer, and tells
/// `watermarks` what it committed.
pub(super) fn commit(
    consumers: &[Arc<SourceConsumer>],
    offsets: &mut Offsets,
    mode: CommitMode,
    watermarks: &Watermarks,
) -> Result<(), WorkerError> {
    let mut lists: HashMap<usize, TopicPartitionList> = HashMap::new();
    for ((source, topic, partition), offset) in offsets.to_commit() {
        watermarks.committed_to(&topic, partition, offset);
        let list = lists.entry(source).or_default();
        list.add_partition_offset(&topic, partition, Offset::Offset(offset))
            .map_err(kafka("failed to build the commit"))?;
    }
    for (source, list) in lists {
        if let Err(e) = consumers[source].commit(&list, mode) {
            // A failed commit loses nothing: the records are replayed.
            tracing::warn!("commit failed: {e}");
        }
    }
    Ok(())
}
