//! Applying batches: the events the reorder buffer releases go to the
//! store in batches on the blocking pool, one in flight while the loop
//! reads on; dead letters and the replication lag come out of each.

use super::*;
use crate::applier::Outcome;

/// Where batches go: the store, the dead-letter topic, and the commits.
pub(super) struct Sink {
    pub(super) store: Arc<dyn Store>,
    pub(super) collections: Arc<HashMap<String, CollectionConfig>>,
    pub(super) dead_letters: DeadLetters,
    pub(super) sources: Vec<SourceConfig>,
    pub(super) region: String,
    pub(super) consumers: Vec<Arc<SourceConsumer>>,
    /// Longest an applied record waits for the flush that lets it commit.
    pub(super) flush_interval: Duration,
    /// The same while the worker is behind.
    pub(super) flush_interval_behind: Duration,
    /// Events per store batch, at most, however many the reorder buffer
    /// released at once.
    pub(super) batch_max_events: usize,
}

/// A batch on its way to the store and back. One is in flight at a time,
/// so that batches reach the store in the order the reorder buffer released
/// them; the loop goes on reading and decoding meanwhile.
pub(super) struct Batch {
    events: Vec<DeltaEvent>,
    records: Vec<Raw>,
    started: Instant,
    /// How long to wait before the next try, should this one fail.
    delay: Duration,
}

/// A batch's outcome, and when its changes became searchable.
type Applied = (Outcome, u64);

/// A batch back from the blocking pool, with what came of it.
pub(super) type Landed = (Batch, Result<Applied, StoreError>);

/// The batch being applied on the blocking pool.
pub(super) type InFlight = tokio::task::JoinHandle<Landed>;

/// Resolves when the batch in flight is done with, and clears it (pending
/// for ever when there is none).
pub(super) async fn landed(applying: &mut Option<InFlight>) -> Landed {
    let Some(task) = applying else {
        return std::future::pending().await;
    };
    let landed = task
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    *applying = None;
    landed
}

impl Replay<'_> {
    /// Applies everything held, the reorder buffer included, and commits
    /// synchronously: before a stop, or before partitions are revoked.
    pub(super) async fn drain(&mut self) -> Result<(), WorkerError> {
        let held = self.reorder.drain();
        self.release(held);
        loop {
            if self.applying.is_none() {
                if self.pending.is_empty() {
                    break;
                }
                self.start_batch();
            }
            let landed = landed(&mut self.applying).await;
            self.applied(landed).await?;
        }
        self.sink.flush_all(&mut self.tracking).await?;
        commit(
            &self.sink.consumers,
            &mut self.tracking.offsets,
            CommitMode::Sync,
            &self.watermarks,
        )
    }

    /// Sends the next batch of at most `batch_max_events` of what is
    /// pending to the blocking pool. There must be none in flight.
    pub(super) fn start_batch(&mut self) {
        debug_assert!(self.applying.is_none(), "one batch in flight at a time");
        let max = self.sink.batch_max_events;
        self.tracking.behind = self.pending.len() >= max;
        let rest = self.pending.split_off(self.pending.len().min(max));
        let mut batch = std::mem::replace(&mut self.pending, rest);
        batch.sort_by(|a, b| a.event.hlc.cmp(&b.event.hlc));
        let (events, records): (Vec<DeltaEvent>, Vec<Raw>) =
            batch.into_iter().map(|h| (h.event, h.raw)).unzip();
        let started = Instant::now();
        EventsWaited {
            stage: Waited::ForStore,
            since: records.iter().map(|r| r.released_at),
            until: started,
        }
        .emit();
        self.applying = Some(self.spawn_apply(Batch {
            events,
            records,
            started,
            delay: Duration::from_millis(100),
        }));
    }

    /// Applies `batch` on the blocking pool; it comes back uncopied.
    fn spawn_apply(&self, batch: Batch) -> InFlight {
        let (store, collections, codebooks) = (
            self.sink.store.clone(),
            self.sink.collections.clone(),
            self.codebooks.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let outcome = Applier::new(store.as_ref(), &collections, &codebooks)
                .apply_batch(&batch.events)
                // Searchable from here on; durable after the next flush.
                .map(|outcome| (outcome, SystemClock.now_ms()));
            (batch, outcome)
        })
    }

    /// The batch in flight is done with: store trouble is retried with
    /// backoff (an outage is not a dead letter); an applied batch's dead
    /// letters are written, its records marked applied (committable once
    /// flushed), and what the flush allows is committed.
    pub(super) async fn applied(&mut self, (mut batch, result): Landed) -> Result<(), WorkerError> {
        let (outcome, visible_ms) = match result {
            Ok(done) => done,
            Err(
                e @ (StoreError::UnknownCollection(_)
                | StoreError::Mismatch { .. }
                | StoreError::Refused { .. }
                | StoreError::Lost { .. }),
            ) => return Err(e.into()),
            Err(e) => {
                tracing::warn!("store unavailable, retrying in {:?}: {e}", batch.delay);
                self.stopping.backoff(batch.delay, "store").await?;
                batch.delay = next_delay(batch.delay);
                self.applying = Some(self.spawn_apply(batch));
                return Ok(());
            }
        };
        let Batch {
            events,
            records,
            started,
            ..
        } = batch;
        self.stats.batches += 1;
        BatchApplied {
            region: self.sink.region.as_str(),
            by_op: &outcome.by_op,
            events: events.len(),
            elapsed: started.elapsed(),
        }
        .emit();
        tracing::debug!(
            events = events.len(),
            changed = outcome.changed,
            unchanged = outcome.unchanged,
            parked = outcome.parked,
            "batch applied"
        );
        self.stats.applied += outcome.changed;
        self.stats.unchanged += outcome.unchanged;
        self.stats.parked += outcome.parked;
        for (collection, count) in &outcome.superseded {
            DeltasDropped {
                collection,
                reason: "base_superseded",
                count: *count,
            }
            .emit();
        }
        for (at, reason, detail) in &outcome.dead {
            let held = &records[*at];
            let source = &self.sink.sources[held.partition.0];
            self.sink
                .dead_letters
                .send(
                    source,
                    &held.partition,
                    held.offset,
                    held.key.as_deref(),
                    &held.bytes,
                    reason.as_str(),
                    detail,
                )
                .await?;
            self.stats.dead_letters += 1;
        }
        let mut is_waiting = vec![false; events.len()];
        for at in &outcome.waiting {
            is_waiting[*at] = true;
        }
        for at in &outcome.changed_at {
            ReplicationLag {
                origin: &self.sink.sources[records[*at].partition.0].region,
                region: self.sink.region.as_str(),
                seconds: visible_ms.saturating_sub(events[*at].hlc.wall_ms) as f64 / 1000.0,
            }
            .emit();
        }
        for ((raw, event), wait) in records.into_iter().zip(events).zip(is_waiting) {
            if wait {
                self.waiting.push(Held { raw, event });
            } else {
                self.tracking
                    .unflushed
                    .push((raw.partition.clone(), raw.offset));
                self.tracking.progress.done(&raw.partition, &event.hlc);
            }
        }
        self.sink.flush_step(&mut self.tracking).await?;
        commit(
            &self.sink.consumers,
            &mut self.tracking.offsets,
            CommitMode::Async,
            &self.watermarks,
        )?;
        self.batch_done();
        Ok(())
    }
}
