//! The load test: regions on the [`crate::bed`], an open-loop load (events
//! are scheduled by the clock, not by the system's answers, so queueing
//! shows up as latency instead of slowing the load), then a wait for every
//! region to apply everything, and a [`Report`].
//!
//! Replication latency is what each remote worker measures: the time an
//! event changed its store minus the event's HLC wall time, which the
//! producer stamps inside the publish call. How far publish calls fell
//! behind their schedule is reported beside it.

use crate::bed::{Bed, BedSpec, COLLECTION};
use crate::recorder::Book;
use anyhow::bail;
use hdrhistogram::Histogram as Hdr;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::vector::Encoding;

/// What the load test runs. Every field has a default: the scenario with
/// no config is two regions at 2,000 768-d sq8 events/s each for 30 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    pub regions: usize,
    /// Events per second each region writes.
    pub rate: u32,
    pub duration_s: u64,
    pub dimension: u32,
    pub encoding: Encoding,
    /// Shares of upserts, deletes and payload patches (normalized).
    pub upsert_share: f64,
    pub delete_share: f64,
    pub patch_share: f64,
    /// Share of writes to ids every region writes (conflicting writes); the
    /// rest go to ids only their region writes.
    pub conflict_share: f64,
    /// Ids every region writes to.
    pub shared_ids: u64,
    /// Events per publish call, at most.
    pub batch_events: usize,
    /// Events per store batch in the workers, at most.
    pub apply_batch_events: usize,
    pub heartbeat_interval_ms: u32,
    /// Longest wait, after the load stops, for every region to apply
    /// everything.
    pub converge_timeout_s: u64,
    /// The worker of region `pause_region` (counted from 0) is stopped
    /// `pause_at_s` seconds into the load for `pause_for_s` seconds (0: never),
    /// and its catch-up is measured.
    pub pause_region: usize,
    pub pause_at_s: u64,
    pub pause_for_s: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            regions: 2,
            rate: 2_000,
            duration_s: 30,
            dimension: 768,
            encoding: Encoding::Sq8,
            upsert_share: 0.8,
            delete_share: 0.1,
            patch_share: 0.1,
            conflict_share: 0.1,
            shared_ids: 1_000,
            batch_events: 100,
            apply_batch_events: 1_000,
            heartbeat_interval_ms: 20,
            converge_timeout_s: 120,
            pause_region: 1,
            pause_at_s: 0,
            pause_for_s: 0,
        }
    }
}

impl Scenario {
    /// What is wrong with the scenario, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut check = |ok: bool, what: &str| {
            if !ok {
                p.push(what.to_owned());
            }
        };
        check((2..=6).contains(&self.regions), "regions: 2 to 6");
        check(self.rate > 0, "rate: must be positive");
        check(self.duration_s > 0, "duration_s: must be positive");
        check(
            (1..=65_536).contains(&self.dimension),
            "dimension: 1 to 65536",
        );
        check(
            self.encoding != Encoding::Pq,
            "encoding: pq needs a codebook; use f32, f16, sq8, sq4 or binary",
        );
        let shares = [self.upsert_share, self.delete_share, self.patch_share];
        check(
            shares.iter().all(|s| *s >= 0.0) && shares.iter().sum::<f64>() > 0.0,
            "upsert_share, delete_share, patch_share: not negative, not all zero",
        );
        check(
            (0.0..=1.0).contains(&self.conflict_share),
            "conflict_share: 0 to 1",
        );
        check(self.shared_ids > 0, "shared_ids: must be positive");
        check(self.batch_events > 0, "batch_events: must be positive");
        check(
            self.apply_batch_events > 0,
            "apply_batch_events: must be positive",
        );
        check(
            self.heartbeat_interval_ms > 0,
            "heartbeat_interval_ms: must be positive",
        );
        check(
            self.pause_for_s == 0 || self.pause_region < self.regions,
            "pause_region: one of the regions, counted from 0",
        );
        check(
            self.pause_at_s + self.pause_for_s <= self.duration_s,
            "pause_at_s, pause_for_s: the pause must end within duration_s",
        );
        p
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of_micros(h: &Hdr<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// One region pair's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairReport {
    pub origin: String,
    pub region: String,
    /// Events from `origin` the region's workers handled (applied,
    /// superseded or parked: each once).
    pub handled: u64,
    /// Events `origin` produced that the region did not handle.
    pub missing: u64,
    /// Events handled more than once (re-read after a restart; harmless).
    pub duplicates: u64,
    /// Replication latency of the events that changed the store.
    pub latency_ms: Percentiles,
}

/// A paused worker's catch-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatchUp {
    pub region: String,
    pub paused_at_s: u64,
    pub paused_for_s: u64,
    /// Events from other regions waiting for the worker when it resumed.
    pub backlog: u64,
    /// From the resume until the backlog was handled.
    pub catch_up_s: f64,
    /// Backlog handled per second while catching up.
    pub events_per_s: f64,
    /// Events per second arriving for the region from the others.
    pub ingest_per_s: f64,
}

/// What a load test measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: Scenario,
    /// Events each region produced (acknowledged by its cluster).
    pub produced: BTreeMap<String, u64>,
    pub pairs: Vec<PairReport>,
    /// Events produced per second, all regions, over the load.
    pub produced_per_s: f64,
    /// Remote events handled per second, all regions, from the start until
    /// everything was applied.
    pub replicated_per_s: f64,
    pub bytes_per_event: f64,
    pub bytes_per_s: f64,
    /// The latest a publish call started after its scheduled time, ms.
    pub behind_schedule_max_ms: f64,
    /// From the end of the load until every region had applied everything.
    pub drain_s: f64,
    pub converged: bool,
    /// Every region holds the same state digest.
    pub digests_equal: bool,
    /// Peak resident memory of the process running every region, MB.
    pub peak_rss_mb: f64,
    /// The paused worker's catch-up, when a pause was asked for and the
    /// backlog was handled before the end.
    pub catch_up: Option<CatchUp>,
    /// Recall@10 in the remote region per encoding, when measured.
    #[serde(default)]
    pub recall: Vec<crate::recall::RecallRow>,
}

impl Report {
    /// Every pair has latencies and nothing missing, and the regions agree.
    pub fn complete(&self) -> bool {
        self.converged
            && self.digests_equal
            && self
                .pairs
                .iter()
                .all(|p| p.missing == 0 && (p.origin == p.region || p.latency_ms.count > 0))
    }

    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let s = &self.scenario;
        let mut out = format!(
            "# vecsync load test\n\n{} regions, {} events/s each for {} s, {}-d {}, \
             {:.0}% conflicting writes; regions on in-process Kafka clusters with embedded stores.\n\n",
            s.regions,
            s.rate,
            s.duration_s,
            s.dimension,
            s.encoding,
            s.conflict_share * 100.0
        );
        out.push_str("| origin → region | handled | missing | again | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for p in self.pairs.iter().filter(|p| p.origin != p.region) {
            let l = &p.latency_ms;
            let _ = writeln!(
                out,
                "| {} → {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                p.origin,
                p.region,
                p.handled,
                p.missing,
                p.duplicates,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max
            );
        }
        let _ = write!(
            out,
            "\n| measure | figure |\n|---|---|\n\
             | produced | {:.0} events/s |\n\
             | replicated | {:.0} events/s |\n\
             | bytes on the wire | {:.0} B/event, {:.0} B/s |\n\
             | publish calls behind schedule, at most | {:.1} ms |\n\
             | drained after the load | {:.2} s |\n\
             | converged, digests equal | {}, {} |\n\
             | peak resident memory (all regions) | {:.0} MB |\n",
            self.produced_per_s,
            self.replicated_per_s,
            self.bytes_per_event,
            self.bytes_per_s,
            self.behind_schedule_max_ms,
            self.drain_s,
            self.converged,
            self.digests_equal,
            self.peak_rss_mb
        );
        if let Some(c) = &self.catch_up {
            let _ = writeln!(
                out,
                "\nThe worker of {} was stopped at second {} for {} s. On restart it was {} events behind \
                 and caught up in {:.2} s: {:.0} events/s, {:.1}× the {:.0} events/s arriving for it.",
                c.region,
                c.paused_at_s,
                c.paused_for_s,
                c.backlog,
                c.catch_up_s,
                c.events_per_s,
                c.events_per_s / c.ingest_per_s.max(1.0),
                c.ingest_per_s
            );
        }
        if !self.recall.is_empty() {
            out.push_str(
                "\nSearch quality in the remote region (real-embedding fixture, 384-d, \
                 recall@10 against exact f32 search at the origin):\n\n\
                 | encoding | recall@10 | bytes/event | of f32 |\n|---|---|---|---|\n",
            );
            let f32_bytes = self
                .recall
                .iter()
                .find(|r| r.encoding == Encoding::F32)
                .map(|r| r.bytes_per_event);
            for r in &self.recall {
                let share = f32_bytes.map_or("-".to_owned(), |f| {
                    format!("{:.1}%", 100.0 * r.bytes_per_event / f)
                });
                let _ = writeln!(
                    out,
                    "| {} | {:.4} | {:.0} | {share} |",
                    r.encoding, r.recall_at_10, r.bytes_per_event
                );
            }
        }
        out
    }
}

/// Runs a scenario; `progress` is called about once a second with a line.
pub async fn run(
    scenario: &Scenario,
    book: &Arc<Book>,
    progress: impl Fn(&str),
) -> anyhow::Result<Report> {
    let problems = scenario.problems();
    if !problems.is_empty() {
        bail!("the scenario is invalid:\n  - {}", problems.join("\n  - "));
    }
    let bed = Bed::start(&BedSpec {
        regions: scenario.regions,
        dimension: scenario.dimension,
        encoding: scenario.encoding,
        heartbeat_interval_ms: scenario.heartbeat_interval_ms,
        batch_max_events: scenario.apply_batch_events,
    })
    .await?;
    let mut bed = bed;
    let result = measure(scenario, &mut bed, book, progress).await;
    bed.stop().await?;
    result
}

async fn measure(
    scenario: &Scenario,
    bed: &mut Bed,
    book: &Arc<Book>,
    progress: impl Fn(&str),
) -> anyhow::Result<Report> {
    let bytes_before = book.bytes.load(Ordering::Relaxed);
    let events_before = book.events.load(Ordering::Relaxed);
    let started = Instant::now();
    let load = Duration::from_secs(scenario.duration_s);
    let mut writers = JoinSet::new();
    for (i, r) in bed.regions.iter().enumerate() {
        let (scenario, publisher, name) = (scenario.clone(), r.publisher.clone(), r.name.clone());
        writers.spawn(async move {
            let out = generate(i, &scenario, publisher, started, load).await;
            (name, out)
        });
    }
    let mut last_line = Instant::now();
    let mut pause = (scenario.pause_for_s > 0).then(|| Pause::new(scenario, bed));
    while Instant::now() < started + load {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(p) = &mut pause
            && let Some(line) = p.step(bed, book, started.elapsed()).await?
        {
            progress(&line);
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            progress(&progress_line(book, started, events_before));
        }
    }
    let mut produced = BTreeMap::new();
    let mut newest: BTreeMap<String, Hlc> = BTreeMap::new();
    let mut behind_ms: f64 = 0.0;
    while let Some(joined) = writers.join_next().await {
        let (name, out) = joined?;
        let out = out?;
        produced.insert(name.clone(), out.produced);
        behind_ms = behind_ms.max(out.behind_max.as_secs_f64() * 1000.0);
        if let Some(hlc) = out.newest {
            newest.insert(name, hlc);
        }
    }
    let load_end = Instant::now();

    // Everything applied: every region's watermark is past every origin's
    // last write, and each region has handled every event.
    let deadline = load_end + Duration::from_secs(scenario.converge_timeout_s);
    let converged = loop {
        let caught_up = bed.regions.iter().all(|r| {
            let marks = r.marks();
            newest
                .iter()
                .all(|(origin, hlc)| marks.get(origin).is_some_and(|m| m > hlc))
        });
        let handled = book.handled();
        let all_handled = bed.regions.iter().all(|r| {
            produced.iter().all(|(origin, n)| {
                handled
                    .get(&(origin.clone(), r.name.clone()))
                    .copied()
                    .unwrap_or(0)
                    >= *n
            })
        });
        if let Some(p) = &mut pause {
            p.step(bed, book, started.elapsed()).await?;
        }
        if caught_up && all_handled {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            progress(&format!(
                "draining: {}",
                progress_line(book, started, events_before)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let done = Instant::now();
    let digests = bed.digests()?;
    let digests_equal = digests.windows(2).all(|w| w[0].1 == w[1].1);

    let lags = book.lags();
    let handled = book.handled();
    let mut pairs = Vec::new();
    let mut remote_handled = 0;
    for origin in &bed.regions {
        for region in &bed.regions {
            let key = (origin.name.clone(), region.name.clone());
            let h = handled.get(&key).copied().unwrap_or(0);
            if origin.name != region.name {
                remote_handled += h;
            }
            let empty = Hdr::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
            pairs.push(PairReport {
                origin: key.0.clone(),
                region: key.1.clone(),
                handled: h,
                missing: produced.get(&key.0).copied().unwrap_or(0).saturating_sub(h),
                duplicates: h.saturating_sub(produced.get(&key.0).copied().unwrap_or(0)),
                latency_ms: Percentiles::of_micros(lags.get(&key).unwrap_or(&empty)),
            });
        }
    }
    let events = book.events.load(Ordering::Relaxed) - events_before;
    let bytes = book.bytes.load(Ordering::Relaxed) - bytes_before;
    let total: u64 = produced.values().sum();
    Ok(Report {
        scenario: scenario.clone(),
        produced,
        pairs,
        produced_per_s: total as f64 / (load_end - started).as_secs_f64(),
        replicated_per_s: remote_handled as f64 / (done - started).as_secs_f64(),
        bytes_per_event: bytes as f64 / events.max(1) as f64,
        bytes_per_s: bytes as f64 / (load_end - started).as_secs_f64(),
        behind_schedule_max_ms: behind_ms,
        drain_s: (done - load_end).as_secs_f64(),
        converged,
        digests_equal,
        peak_rss_mb: peak_rss_mb(),
        catch_up: pause.and_then(|p| p.result),
        recall: Vec::new(),
    })
}

/// Where a paused worker is: waiting to pause, paused, catching up, done.
struct Pause {
    region: usize,
    at: Duration,
    until: Duration,
    /// At the resume: per origin, the watermark the region must pass to
    /// have caught up (what the origin itself had applied by then); the
    /// backlog; and when it resumed.
    resumed: Option<(BTreeMap<String, Hlc>, u64, Instant)>,
    paused: bool,
    ingest_per_s: f64,
    result: Option<CatchUp>,
}

impl Pause {
    fn new(scenario: &Scenario, bed: &Bed) -> Self {
        Self {
            region: scenario.pause_region,
            at: Duration::from_secs(scenario.pause_at_s),
            until: Duration::from_secs(scenario.pause_at_s + scenario.pause_for_s),
            resumed: None,
            paused: false,
            ingest_per_s: f64::from(scenario.rate) * (bed.regions.len() - 1) as f64,
            result: None,
        }
    }

    /// Moves the pause on at time `t` of the load; says what it did.
    async fn step(
        &mut self,
        bed: &mut Bed,
        book: &Book,
        t: Duration,
    ) -> anyhow::Result<Option<String>> {
        let name = bed.regions[self.region].name.clone();
        if !self.paused && self.resumed.is_none() && t >= self.at {
            bed.regions[self.region].pause().await?;
            self.paused = true;
            return Ok(Some(format!("t={}s worker of {name} stopped", t.as_secs())));
        }
        if self.paused && t >= self.until {
            // Everything the others have written so far is the backlog;
            // their own workers' counts say how much that is.
            let handled = book.handled();
            let count = |o: &str, r: &str| {
                handled
                    .get(&(o.to_owned(), r.to_owned()))
                    .copied()
                    .unwrap_or(0)
            };
            let mut targets = BTreeMap::new();
            let mut backlog = 0;
            for o in bed.regions.iter().filter(|o| o.name != name) {
                backlog += count(&o.name, &o.name).saturating_sub(count(&o.name, &name));
                if let Some(mark) = o.marks().get(&o.name) {
                    targets.insert(o.name.clone(), mark.clone());
                }
            }
            bed.regions[self.region].resume();
            self.paused = false;
            self.resumed = Some((targets, backlog, Instant::now()));
            return Ok(Some(format!(
                "t={}s worker of {name} restarted, {backlog} events behind",
                t.as_secs()
            )));
        }
        if let Some((targets, backlog, since)) = &self.resumed
            && self.result.is_none()
        {
            let marks = bed.regions[self.region].marks();
            let done = targets
                .iter()
                .all(|(o, target)| marks.get(o).is_some_and(|m| m >= target));
            if done {
                let catch_up_s = since.elapsed().as_secs_f64();
                self.result = Some(CatchUp {
                    region: name.clone(),
                    paused_at_s: self.at.as_secs(),
                    paused_for_s: (self.until - self.at).as_secs(),
                    backlog: *backlog,
                    catch_up_s,
                    events_per_s: *backlog as f64 / catch_up_s.max(0.001),
                    ingest_per_s: self.ingest_per_s,
                });
                return Ok(Some(format!(
                    "worker of {name} caught up in {catch_up_s:.2} s"
                )));
            }
        }
        Ok(None)
    }
}

fn progress_line(book: &Book, started: Instant, events_before: u64) -> String {
    let elapsed = started.elapsed().as_secs_f64();
    let produced = book.events.load(Ordering::Relaxed) - events_before;
    let lags = book.lags();
    let worst = lags
        .iter()
        .filter(|((o, r), _)| o != r)
        .map(|(_, h)| h.value_at_quantile(0.99) as f64 / 1000.0)
        .fold(0.0, f64::max);
    format!(
        "t={elapsed:.0}s produced {produced} ({:.0}/s), worst pair p99 {worst:.1} ms",
        produced as f64 / elapsed.max(0.001)
    )
}

/// What one publish call wrote: (id, version) of each event, and how far
/// behind its schedule the call started.
type Written = anyhow::Result<(Vec<(u64, Hlc)>, Duration)>;

struct Generated {
    produced: u64,
    newest: Option<Hlc>,
    behind_max: Duration,
}

/// One region's open-loop load: event n is due at `n / rate` seconds; each
/// tick publishes what is due in batches, without waiting for earlier
/// batches to be acknowledged.
async fn generate(
    index: usize,
    scenario: &Scenario,
    publisher: Arc<Publisher>,
    started: Instant,
    load: Duration,
) -> anyhow::Result<Generated> {
    let mut rng = StdRng::seed_from_u64(index as u64 + 1);
    let shares = [
        scenario.upsert_share,
        scenario.delete_share,
        scenario.patch_share,
    ];
    let total_share: f64 = shares.iter().sum();
    let private_base = 1_000_000_000 * (index as u64 + 1);
    let mut private_next = 0u64;
    let mut versions: HashMap<u64, Hlc> = HashMap::new();
    let mut scheduled = 0u64;
    let mut in_flight: JoinSet<Written> = JoinSet::new();
    let mut out = Generated {
        produced: 0,
        newest: None,
        behind_max: Duration::ZERO,
    };
    let mut settle = |done: Written, versions: &mut HashMap<u64, Hlc>| -> anyhow::Result<()> {
        let (written, behind) = done?;
        out.produced += written.len() as u64;
        out.behind_max = out.behind_max.max(behind);
        for (id, hlc) in written {
            if out.newest.as_ref().is_none_or(|n| hlc > *n) {
                out.newest = Some(hlc.clone());
            }
            versions.insert(id, hlc);
        }
        Ok(())
    };
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let elapsed = started.elapsed().min(load);
        let due = (elapsed.as_secs_f64() * f64::from(scenario.rate)) as u64;
        while scheduled < due {
            let n = (due - scheduled).min(scenario.batch_events as u64);
            let due_at =
                started + Duration::from_secs_f64(scheduled as f64 / f64::from(scenario.rate));
            let mut batch = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let id = if rng.random::<f64>() < scenario.conflict_share {
                    rng.random_range(0..scenario.shared_ids)
                } else {
                    private_next += 1;
                    private_base + rng.random_range(0..private_next.min(100_000))
                };
                let roll = rng.random::<f64>() * total_share;
                let m = if roll < shares[0] {
                    Mutation::Upsert {
                        id: PointId::Num(id),
                        vector: (0..scenario.dimension)
                            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
                            .collect(),
                        payload: None,
                    }
                } else if roll < shares[0] + shares[1] {
                    Mutation::Delete {
                        id: PointId::Num(id),
                    }
                } else {
                    match versions.get(&id) {
                        Some(base) => Mutation::PatchPayload {
                            id: PointId::Num(id),
                            base_version: base.clone(),
                            payload: serde_json::Map::from_iter([(
                                "reviewed".to_owned(),
                                serde_json::Value::Bool(true),
                            )]),
                        },
                        None => Mutation::Delete {
                            id: PointId::Num(id),
                        },
                    }
                };
                batch.push(m);
            }
            scheduled += n;
            let publisher = publisher.clone();
            in_flight.spawn(async move {
                let behind = Instant::now().saturating_duration_since(due_at);
                let versions = publisher.publish(COLLECTION, &batch).await?;
                let ids = batch.iter().filter_map(|m| match m.id() {
                    PointId::Num(id) => Some(id),
                    PointId::Uuid(_) => None,
                });
                Ok((ids.zip(versions).collect(), behind))
            });
        }
        while let Some(done) = in_flight.try_join_next() {
            settle(done?, &mut versions)?;
        }
        if elapsed >= load {
            break;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        settle(done?, &mut versions)?;
    }
    Ok(out)
}

/// Peak resident memory of this process, from `/proc/self/status` (0 where
/// there is none).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
