//! The worker's loop: records from the sources are decoded and merged in
//! HLC order through the reorder buffer; what it releases is applied in
//! batches, the next one filling while one is applied; ticks move the
//! flush, the watermarks and expiry on.

use super::*;

/// How often the loop moves the flush, the watermarks and expiry on.
const TICK: Duration = Duration::from_millis(10);

/// Everything the loop keeps between two steps.
pub(super) struct Replay<'a> {
    pub(super) consumer: &'a vecsync_schemas::config::ConsumerConfig,
    pub(super) region: &'a str,
    pub(super) sink: Sink,
    pub(super) decoder: Decoder<DeltaEvent>,
    pub(super) watermarks: Watermarks,
    pub(super) stopping: Stopping,
    pub(super) reorder: ReorderBuffer<Partition, Held>,
    pub(super) tracking: Tracking,
    pub(super) codebooks: Codebooks,
    /// Released by the reorder buffer, to apply in the next batch.
    pub(super) pending: Vec<Held>,
    /// The batch being applied on the blocking pool, if any.
    pub(super) applying: Option<InFlight>,
    /// PQ events whose codebook has not arrived, tried again when one
    /// does. At most `consumer.codebook_wait_max_events`: beyond, the loop
    /// reads no more records until codebooks come (their offsets stay
    /// uncommitted, so nothing is lost to a restart either).
    pub(super) waiting: Vec<Held>,
    pub(super) stats: Stats,
    pub(super) last_expiry: Instant,
    pub(super) expiry: Option<ExpiryRound>,
    /// The reorder counters as last reported to the metrics.
    pub(super) reported: crate::reorder::Counters,
}

impl<'a> Replay<'a> {
    pub(super) fn new(
        config: &'a RegionConfig,
        sink: Sink,
        decoder: Decoder<DeltaEvent>,
        watermarks: Watermarks,
        stopping: Stopping,
    ) -> Self {
        let c = &config.consumer;
        let mut reorder = ReorderBuffer::new(Bounds {
            max_events: c.reorder_max_events,
            max_bytes: c.reorder_max_bytes,
            idle_after_ms: c.idle_after_ms,
        });
        // Until a source's partitions are assigned, the source as a whole
        // holds the watermark: its first events may be older than any other's.
        for (index, source) in sink.sources.iter().enumerate() {
            reorder.add_source(unassigned(index, &source.topic), SystemClock.now_ms());
        }
        Self {
            consumer: c,
            region: &config.region,
            sink,
            decoder,
            watermarks,
            stopping,
            reorder,
            tracking: Tracking {
                offsets: Offsets::new(),
                progress: Progress::new(),
                unflushed: Vec::new(),
                flushing: None,
                flushed_at: Instant::now(),
                behind: false,
            },
            codebooks: Arc::default(),
            pending: Vec::new(),
            applying: None,
            waiting: Vec::new(),
            stats: Stats::default(),
            last_expiry: Instant::now(),
            expiry: None,
            reported: crate::reorder::Counters::default(),
        }
    }

    /// Runs until a stop is asked for or the sources end, then drains what
    /// it holds within the drain timeout and commits.
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<(usize, Incoming)>,
        mut books: mpsc::Receiver<PqCodebook>,
    ) -> Result<Stats, WorkerError> {
        let c = self.consumer;
        let linger = Duration::from_millis(c.batch_max_wait_ms);
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = self.stopping.clone();
        let mut full = false;
        loop {
            let room = self.waiting.len() < c.codebook_wait_max_events;
            // While a batch is in flight the loop reads and decodes the
            // next one, but no further.
            let ahead = self.pending.len() < c.batch_max_events;
            if !room && !full {
                tracing::warn!(
                    waiting = self.waiting.len(),
                    "events waiting for their PQ codebook fill consumer.codebook_wait_max_events; \
                     reading no more records until codebooks arrive"
                );
            }
            full = !room;
            // A batch starts as soon as the store is free, or, with a
            // linger, once its first event has waited that long since its
            // release or it is full. What arrives while it is applied
            // forms the next.
            let wait = if self.pending.len() >= c.batch_max_events {
                Duration::ZERO
            } else {
                linger
            };
            let start_at = self
                .pending
                .first()
                .filter(|_| self.applying.is_none())
                .map(|h| h.raw.released_at + wait);
            if start_at.is_some_and(|at| at <= Instant::now()) {
                self.start_batch();
                continue;
            }
            tokio::select! {
                biased;
                () = stopping.asked() => break,
                landed = landed(&mut self.applying) => self.applied(landed).await?,
                Some(book) = books.recv() => self.codebook(book),
                message = rx.recv(), if room && ahead => {
                    let Some((index, incoming)) = message else { break };
                    self.incoming(index, incoming).await?;
                }
                _ = ticker.tick() => self.tick().await?,
                () = sleep_until(start_at), if start_at.is_some() => {}
            }
        }
        // Drain: everything the buffer holds goes to the store, then a
        // synchronous commit, all within the drain timeout. The stop was
        // asked already: the timeout bounds the retries.
        self.stopping = Stopping(watch::channel(false).1);
        let timeout = Duration::from_millis(c.drain_timeout_ms);
        match tokio::time::timeout(timeout, self.drain()).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!("drain timed out; what was not committed will be replayed"),
        }
        self.stats.reorder = self.reorder.counters();
        Ok(self.stats)
    }

    /// A codebook arrived: the events waiting for it go with the next batch.
    fn codebook(&mut self, book: PqCodebook) {
        tracing::info!(codebook = book.id(), "codebook received");
        Arc::make_mut(&mut self.codebooks).insert(book.id().to_owned(), book);
        self.pending.append(&mut self.waiting);
    }

    async fn incoming(&mut self, index: usize, incoming: Incoming) -> Result<(), WorkerError> {
        match incoming {
            Incoming::Record(record) => self.record(index, record).await,
            Incoming::Resume(partition, committed) => {
                self.tracking.offsets.resume(&partition, committed);
                // An assigned partition holds the watermark back from the
                // start, until it speaks or is declared idle: a quiet
                // origin must not let others' events pass it.
                self.reorder
                    .remove_source(&unassigned(partition.0, &partition.1));
                self.watermarks.cover(&partition.1, partition.2);
                self.reorder.add_source(partition, SystemClock.now_ms());
                Ok(())
            }
            Incoming::Fatal(why) => Err(vecsync_kafka::ClientError::Fatal(why).into()),
            Incoming::Revoke(partitions, done) => {
                self.drain().await?;
                // What still waits for a codebook is the next owner's.
                self.waiting
                    .retain(|h| !partitions.contains(&h.raw.partition));
                for p in &partitions {
                    self.tracking.offsets.forget(p);
                    self.tracking.progress.forget(p);
                    self.reorder.remove_source(p);
                    self.watermarks.uncover(&p.1, p.2);
                }
                self.stats.revocations += 1;
                let _ = done.send(());
                Ok(())
            }
        }
    }

    /// Decodes a record (a dead letter when it cannot be) and hands its
    /// event to the reorder buffer.
    async fn record(&mut self, index: usize, received: Received) -> Result<(), WorkerError> {
        let (partition, offset, bytes, key) = received;
        let read_at = Instant::now();
        self.tracking.offsets.received(&partition, offset);
        let event = loop {
            match self.decoder.decode(&bytes).await {
                Ok(event) => break event,
                Err(ref e) if let Some(refused) = e.refused() => {
                    return Err(refused.clone().into());
                }
                Err(e) if e.is_retriable() => {
                    tracing::warn!("registry unavailable, retrying in 1s: {e}");
                    self.stopping
                        .backoff(Duration::from_secs(1), "schema registry")
                        .await?;
                }
                Err(e) => {
                    let source = &self.sink.sources[index];
                    let (reason, detail) = (e.reason_label(), e.to_string());
                    self.sink
                        .dead_letters
                        .send(
                            source,
                            &partition,
                            offset,
                            key.as_deref(),
                            &bytes,
                            reason,
                            &detail,
                        )
                        .await?;
                    self.stats.dead_letters += 1;
                    self.tracking.offsets.done(&partition, offset);
                    return Ok(());
                }
            }
        };
        let now = SystemClock.now_ms();
        let source = &self.sink.sources[index];
        let origin = &source.region;
        // A heartbeat, or an event of a collection this region does not
        // replicate from the source: nothing to apply, but its timestamp
        // moves the watermark on.
        let nothing_to_apply = match event.target() {
            None => true,
            Some((collection, _)) if !source.replicates(collection) => {
                EventSkipped { origin, collection }.emit();
                self.stats.skipped += 1;
                true
            }
            Some(_) => false,
        };
        let released = if nothing_to_apply {
            self.tracking.offsets.done(&partition, offset);
            self.tracking.progress.seen(&partition, origin, &event.hlc);
            self.reorder.heartbeat(partition, event.hlc, now)
        } else {
            let hlc = event.hlc.clone();
            self.tracking.progress.held(&partition, origin, &hlc);
            let raw = Raw {
                partition: partition.clone(),
                offset,
                key,
                bytes,
                read_at,
                released_at: read_at,
            };
            let held = Held { raw, event };
            let size = held.size();
            self.reorder.push_sized(partition, hlc, held, size, now)
        };
        self.release(released);
        Ok(())
    }

    /// Moves the flush, the watermarks and expiry on.
    async fn tick(&mut self) -> Result<(), WorkerError> {
        if self.sink.flush_step(&mut self.tracking).await? {
            commit(
                &self.sink.consumers,
                &mut self.tracking.offsets,
                CommitMode::Async,
                &self.watermarks,
            )?;
        }
        let now = SystemClock.now_ms();
        let released = self.reorder.tick(now);
        self.release(released);
        let marks = self.tracking.progress.watermarks();
        WatermarkState {
            region: self.region,
            marks: &marks,
            now_ms: now,
        }
        .emit();
        self.watermarks.publish(marks);
        if self.expiry.is_none()
            && self.last_expiry.elapsed() >= Duration::from_millis(self.consumer.expiry_interval_ms)
        {
            let horizon = now.saturating_sub(self.consumer.tombstone_horizon_ms);
            self.expiry = Some(ExpiryRound::new(horizon, self.sink.collections.keys()));
        }
        // Expiry and a batch in flight would both change the store.
        if let Some(round) = &mut self.expiry
            && self.applying.is_none()
            && self.sink.expire_step(round).await
        {
            self.expiry = None;
            self.last_expiry = Instant::now();
        }
        Ok(())
    }

    /// What the reorder buffer released joins the next batch.
    pub(super) fn release(&mut self, released: Vec<(Hlc, Held)>) {
        if released.is_empty() {
            return;
        }
        let now = Instant::now();
        EventsWaited {
            stage: Waited::ForOrder,
            since: released.iter().map(|(_, h)| h.raw.read_at),
            until: now,
        }
        .emit();
        self.pending.extend(released.into_iter().map(|(_, mut h)| {
            h.raw.released_at = now;
            h
        }));
    }

    /// After a batch: the watermarks and the buffer's state go out.
    pub(super) fn batch_done(&mut self) {
        self.watermarks.publish(self.tracking.progress.watermarks());
        let counters = self.reorder.counters();
        ReorderState {
            buffered: self.reorder.len(),
            buffered_bytes: self.reorder.bytes(),
            uncommitted: self.tracking.offsets.held(),
            waiting_for_codebooks: self.waiting.len(),
            counters,
            before: self.reported,
        }
        .emit();
        self.reported = counters;
    }
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
