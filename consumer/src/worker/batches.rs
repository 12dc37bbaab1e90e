//! Applying batches: the events the reorder buffer releases go to the
//! store in batches on the blocking pool; dead letters and the replication
//! lag come out of each.

use super::*;

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

impl Replay<'_> {
    /// Applies everything held, the reorder buffer included, and commits
    /// synchronously: before a stop, or before partitions are revoked.
    pub(super) async fn drain(&mut self) -> Result<(), WorkerError> {
        self.pending
            .extend(self.reorder.drain().into_iter().map(|(_, h)| h));
        self.apply_and_commit(CommitMode::Sync).await
    }

    /// Applies what is pending in batches of at most `batch_max_events`,
    /// sets aside what waits for a codebook, and commits what that allows.
    pub(super) async fn apply_and_commit(&mut self, mode: CommitMode) -> Result<(), WorkerError> {
        let max = self.sink.batch_max_events;
        let mut rest = std::mem::take(&mut self.pending);
        self.tracking.behind = rest.len() >= max;
        while !rest.is_empty() {
            let later = rest.split_off(rest.len().min(max));
            let batch = std::mem::replace(&mut rest, later);
            let waiting = self.apply(batch).await?;
            self.waiting.extend(waiting);
            if !rest.is_empty() {
                self.sink.flush_step(&mut self.tracking).await;
            }
        }
        if matches!(mode, CommitMode::Sync) {
            self.sink.flush_all(&mut self.tracking).await;
        } else {
            self.sink.flush_step(&mut self.tracking).await;
        }
        commit(&self.sink.consumers, &mut self.tracking.offsets, mode)
    }

    /// Applies a batch, writes dead letters, and marks the records applied;
    /// they are done (committable) once flushed. Returns the events still
    /// waiting for a codebook.
    async fn apply(&mut self, mut batch: Vec<Held>) -> Result<Vec<Held>, WorkerError> {
        batch.sort_by(|a, b| a.event.hlc.cmp(&b.event.hlc));
        let started = Instant::now();
        // The events go to the blocking pool and come back, uncopied.
        let (mut events, records): (Vec<DeltaEvent>, Vec<Raw>) =
            batch.into_iter().map(|h| (h.event, h.raw)).unzip();
        let (outcome, visible_ms) = {
            // Retry store trouble with backoff: an outage is not a dead letter.
            let mut delay = Duration::from_millis(100);
            loop {
                let (store, collections, codebooks) = (
                    self.sink.store.clone(),
                    self.sink.collections.clone(),
                    self.codebooks.clone(),
                );
                let (back, result) = off_loop(move || {
                    let outcome = Applier::new(store.as_ref(), &collections, &codebooks)
                        .apply_batch(&events)
                        // Searchable from here on; durable after the next flush.
                        .map(|outcome| (outcome, SystemClock.now_ms()));
                    (events, outcome)
                })
                .await;
                events = back;
                match result {
                    Ok(done) => break done,
                    Err(
                        e @ (StoreError::UnknownCollection(_)
                        | StoreError::Mismatch { .. }
                        | StoreError::Refused { .. }),
                    ) => {
                        return Err(e.into());
                    }
                    Err(e) => {
                        tracing::warn!("store unavailable, retrying in {delay:?}: {e}");
                        self.stopping.backoff(delay, "store").await?;
                        delay = next_delay(delay);
                    }
                }
            }
        };
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
        let mut waiting = Vec::new();
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
                waiting.push(Held { raw, event });
            } else {
                self.tracking
                    .unflushed
                    .push((raw.partition.clone(), raw.offset));
                self.tracking.progress.done(&raw.partition, &event.hlc);
            }
        }
        Ok(waiting)
    }
}
