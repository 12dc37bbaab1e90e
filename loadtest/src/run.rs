//! The load test: regions on the [`crate::bed`], an open-loop load (events
//! are scheduled by the clock, not by the system's answers, so queueing
//! shows up as latency instead of slowing the load), then a wait for every
//! region to apply everything, and a [`Report`].
//!
//! Replication latency is what each remote worker measures: the time an
//! event changed its store minus the event's HLC wall time, which the
//! producer stamps inside the publish call. How far publish calls fell
//! behind their schedule is reported beside it.

use crate::bed::{Bed, BedSpec, COLLECTION, ClusterKind};
use crate::outage::{Fault, Outage};
use crate::recorder::{Book, STAGES, new_lag_histogram};
use crate::report::{PairReport, PairSecond, Percentiles, ProcessMemory, Report, Second, Stage};
use anyhow::bail;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use vecsync_devkit::proxy::LinkFaults;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::VectorDatatype;
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::{Hlc, SystemClock, WallClock};
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
    /// How often the workers flush their stores (and may then commit).
    pub flush_interval_ms: u64,
    /// How the stores keep vectors (`store.vector_datatype`): float16 by
    /// default here, where the wire's sq8 carries less than it rounds away.
    pub vector_datatype: VectorDatatype,
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
    /// Regions are connected as MirrorMaker 2 connects them: each flow
    /// reads the origin's cluster across a WAN link. Implied by the link
    /// settings below; with `broker = "kafka"` unless set to `false`, when
    /// every worker reads the other regions' brokers directly, as the
    /// naive pipeline does.
    pub mirrored: Option<bool>,
    /// Each region's cluster: `"mock"`, librdkafka's in-process mock
    /// cluster, which keeps at most 5 MB per partition (tansu when
    /// mirrored); `"tansu"`, a tansu broker, with devkit's copiers between
    /// regions; `"kafka"`, an Apache Kafka broker, with MirrorMaker 2.
    pub broker: ClusterKind,
    /// One-way delay on every link, ms.
    pub link_delay_ms: u64,
    /// Bytes per second each way on every link (0: unlimited).
    pub link_bytes_per_s: u64,
    /// Every link is cut `cut_at_s` seconds into the load for `cut_for_s`
    /// seconds (0: never), and the catch-up is measured.
    pub cut_at_s: u64,
    pub cut_for_s: u64,
    /// Seconds of the same load before the measured one, applied and then
    /// forgotten (0: none): brokers that have run for a while have
    /// compiled their hot code (the JVM's JIT), which a bed started for
    /// the run has not.
    pub warmup_s: u64,
    /// After the load, each region's store applies this many events of
    /// the load's mix on its own, all at once: the store's apply ceiling
    /// ([`crate::ceiling`]).
    /// 0: not measured.
    pub ceiling_events: usize,
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
            flush_interval_ms: 100,
            vector_datatype: VectorDatatype::Float16,
            heartbeat_interval_ms: 20,
            converge_timeout_s: 120,
            pause_region: 1,
            pause_at_s: 0,
            pause_for_s: 0,
            mirrored: None,
            broker: ClusterKind::Mock,
            link_delay_ms: 0,
            link_bytes_per_s: 0,
            cut_at_s: 0,
            cut_for_s: 0,
            warmup_s: 0,
            ceiling_events: 30_000,
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
        check(
            self.cut_at_s + self.cut_for_s <= self.duration_s,
            "cut_at_s, cut_for_s: the cut must end within duration_s",
        );
        check(
            self.pause_for_s == 0 || self.cut_for_s == 0,
            "pause_for_s, cut_for_s: one fault at a time",
        );
        check(
            self.mirrored != Some(false) || !self.linked(),
            "mirrored: links (link_delay_ms, link_bytes_per_s, cut_for_s) need mirrored regions",
        );
        p
    }

    /// Whether any link setting is made.
    fn linked(&self) -> bool {
        self.link_delay_ms > 0 || self.link_bytes_per_s > 0 || self.cut_for_s > 0
    }

    /// Regions connected by MirrorMaker 2 or copiers across links.
    pub fn is_mirrored(&self) -> bool {
        self.mirrored.unwrap_or(self.broker == ClusterKind::Kafka) || self.linked()
    }

    /// What each region's cluster runs on.
    pub fn clusters(&self) -> ClusterKind {
        self.broker.effective(self.is_mirrored())
    }

    /// What the links are, for people.
    pub fn links_described(&self) -> String {
        if !self.is_mirrored() {
            return "each worker reading the other clusters directly".to_owned();
        }
        let mut out = format!(
            "connected by {} across links with {} ms one-way delay",
            match self.clusters() {
                ClusterKind::Kafka => "MirrorMaker 2",
                _ => "MirrorMaker-style copiers",
            },
            self.link_delay_ms
        );
        if self.link_bytes_per_s > 0 {
            out += &format!(" and {} kB/s each way", self.link_bytes_per_s / 1000);
        }
        out
    }

    /// The links' faults outside a cut.
    pub fn links(&self) -> LinkFaults {
        LinkFaults {
            delay: Duration::from_millis(self.link_delay_ms),
            bytes_per_sec: (self.link_bytes_per_s > 0).then_some(self.link_bytes_per_s),
            cut: false,
        }
    }

    /// The fault asked for, if any.
    fn outage(&self, bed: &Bed) -> Option<Outage> {
        let (fault, at, length) = if self.pause_for_s > 0 {
            (
                Fault::Pause(self.pause_region),
                self.pause_at_s,
                self.pause_for_s,
            )
        } else if self.cut_for_s > 0 {
            (Fault::Cut, self.cut_at_s, self.cut_for_s)
        } else {
            return None;
        };
        Some(Outage::new(
            fault,
            Duration::from_secs(at),
            Duration::from_secs(length),
            self.links(),
            f64::from(self.rate),
            bed,
        ))
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
        flush_interval_ms: scenario.flush_interval_ms,
        vector_datatype: scenario.vector_datatype,
        mirrored: scenario.is_mirrored(),
        clusters: scenario.broker,
    })
    .await?;
    let mut bed = bed;
    bed.set_links(scenario.links());
    // The load starts once every region sees every other's heartbeats, so
    // that start-up (producer ids, partition assignment) is not measured.
    // MirrorMaker 2 takes a while to start its connectors.
    bed.wait_ready(Duration::from_secs(120)).await?;
    let result = async {
        warm_up(scenario, &mut bed, book, &progress).await?;
        measure(scenario, &mut bed, book, &progress).await
    }
    .await;
    bed.stop().await?;
    let mut report = result?;
    if scenario.ceiling_events > 0 {
        progress("measuring the stores' own apply ceiling");
        let scenario = scenario.clone();
        report.ceiling =
            Some(tokio::task::spawn_blocking(move || crate::ceiling::measure(&scenario)).await??);
    }
    Ok(report)
}

/// Runs `scenario.warmup_s` seconds of the load, without faults, until
/// every region has applied it, and forgets what the book recorded of it.
async fn warm_up(
    scenario: &Scenario,
    bed: &mut Bed,
    book: &Arc<Book>,
    progress: &impl Fn(&str),
) -> anyhow::Result<()> {
    if scenario.warmup_s == 0 {
        return Ok(());
    }
    let warm = Scenario {
        duration_s: scenario.warmup_s,
        pause_for_s: 0,
        cut_for_s: 0,
        ..scenario.clone()
    };
    let report = measure(&warm, bed, book, |line| {
        progress(&format!("warming up: {line}"))
    })
    .await?;
    if !report.converged {
        bail!(
            "the warm-up was not applied everywhere within {} s (converge_timeout_s)",
            scenario.converge_timeout_s
        );
    }
    book.forget();
    Ok(())
}

async fn measure(
    scenario: &Scenario,
    bed: &mut Bed,
    book: &Arc<Book>,
    progress: impl Fn(&str),
) -> anyhow::Result<Report> {
    let bytes_before = book.bytes.load(Ordering::Relaxed);
    let events_before = book.events.load(Ordering::Relaxed);
    let sampler = crate::memory::Sampler::start(
        bed.regions
            .iter()
            .map(|r| (r.name.clone(), r.store_path().to_owned()))
            .collect(),
    );
    let cpu_before = crate::cores::CpuTimes::now();
    let started = Instant::now();
    let load = Duration::from_secs(scenario.duration_s);
    let mut writers = JoinSet::new();
    // Events each region's cluster has acknowledged so far.
    let acked: Vec<Arc<AtomicU64>> = bed.regions.iter().map(|_| Arc::default()).collect();
    for (i, r) in bed.regions.iter().enumerate() {
        let (scenario, publisher, name) = (scenario.clone(), r.publisher.clone(), r.name.clone());
        let acked = acked[i].clone();
        writers.spawn(async move {
            let out = generate(i, &scenario, publisher, started, load, &acked).await;
            (name, out)
        });
    }
    let mut last_line = Instant::now();
    let mut outage = scenario.outage(bed);
    let mut timeline = Timeline::new(book, started);
    while Instant::now() < started + load {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(o) = &mut outage
            && let Some(line) = o.step(bed, book, &acked, started.elapsed()).await?
        {
            progress(&line);
        }
        timeline.sample(bed, book);
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
        if let Some(o) = &mut outage
            && let Some(line) = o.step(bed, book, &acked, started.elapsed()).await?
        {
            progress(&line);
        }
        timeline.sample(bed, book);
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
    let cores = crate::cores::CpuTimes::now()
        .zip(cpu_before)
        .and_then(|(now, before)| now.since(&before));
    let digests = bed.digests()?;
    let digests_equal = digests.windows(2).all(|w| w[0].1 == w[1].1);

    let lags = book.lags();
    let handled = book.handled();
    let mut pairs = Vec::new();
    let (mut remote_handled, mut all_handled) = (0, 0);
    for origin in &bed.regions {
        for region in &bed.regions {
            let key = (origin.name.clone(), region.name.clone());
            let h = handled.get(&key).copied().unwrap_or(0);
            if origin.name != region.name {
                remote_handled += h;
            }
            all_handled += h;
            let empty = new_lag_histogram();
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
        applied_per_s: all_handled as f64 / (done - started).as_secs_f64(),
        ceiling: None,
        bytes_per_event: bytes as f64 / events.max(1) as f64,
        bytes_per_s: bytes as f64 / (load_end - started).as_secs_f64(),
        behind_schedule_max_ms: behind_ms,
        drain_s: (done - load_end).as_secs_f64(),
        converged,
        digests_equal,
        peak_rss_mb: peak_rss_mb("self"),
        memory: sampler.finish(),
        cores,
        processes: processes(bed),
        faults: outage.iter().map(Outage::window).collect(),
        catch_up: outage.and_then(|o| o.result),
        timeline: timeline.seconds,
        stages: stages(book),
        recall: Vec::new(),
    })
}

/// The run second by second: at each second's end, the lags recorded in
/// it, the counts, and every region's watermark age.
struct Timeline {
    started: Instant,
    seconds: Vec<Second>,
    events: u64,
    replicated: u64,
}

impl Timeline {
    fn new(book: &Book, started: Instant) -> Self {
        book.take_window();
        Self {
            started,
            seconds: Vec::new(),
            events: book.events.load(Ordering::Relaxed),
            replicated: remote_handled(book),
        }
    }

    /// Closes the second that has ended, if one has.
    fn sample(&mut self, bed: &Bed, book: &Book) {
        let t_s = self.seconds.len() as u64 + 1;
        if self.started.elapsed() < Duration::from_secs(t_s) {
            return;
        }
        let window = book.take_window();
        let now_ms = SystemClock.now_ms();
        let mut pairs = Vec::new();
        for region in &bed.regions {
            let marks = region.marks();
            for origin in bed.regions.iter().filter(|o| o.name != region.name) {
                let pair = (origin.name.clone(), region.name.clone());
                pairs.push(PairSecond {
                    latency_ms: window.get(&pair).map(Percentiles::of_micros),
                    watermark_age_ms: marks
                        .get(&origin.name)
                        .map(|m| now_ms.saturating_sub(m.wall_ms) as f64),
                    origin: pair.0,
                    region: pair.1,
                });
            }
        }
        let events = book.events.load(Ordering::Relaxed);
        let replicated = remote_handled(book);
        self.seconds.push(Second {
            t_s,
            produced: events - self.events,
            replicated: replicated - self.replicated,
            pairs,
        });
        (self.events, self.replicated) = (events, replicated);
    }
}

/// The stage histograms, in milliseconds or events.
fn stages(book: &Book) -> Vec<Stage> {
    let recorded = book.stages();
    STAGES
        .iter()
        .filter_map(|&(metric, seconds)| {
            let h = recorded.get(metric)?;
            let scale = if seconds { 1000.0 } else { 1.0 };
            let at = |q: f64| h.value_at_quantile(q) as f64 / scale;
            Some(Stage {
                metric: metric.to_owned(),
                unit: if seconds { "ms" } else { "events" }.to_owned(),
                count: h.len(),
                p50: at(0.5),
                p99: at(0.99),
                max: h.max() as f64 / scale,
            })
        })
        .collect()
}

/// Events the regions handled from the others so far.
fn remote_handled(book: &Book) -> u64 {
    book.handled()
        .iter()
        .filter(|((o, r), _)| o != r)
        .map(|(_, n)| n)
        .sum()
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

/// The mutations one region writes, mixed as the scenario says: upserts,
/// deletes and payload patches, to ids of the region's own or to ids every
/// region writes.
pub(crate) struct Mix<'a> {
    scenario: &'a Scenario,
    rng: StdRng,
    private_base: u64,
    private_next: u64,
}

impl<'a> Mix<'a> {
    /// Region `index`'s mix, the same in every run.
    pub(crate) fn new(index: usize, scenario: &'a Scenario) -> Self {
        Self {
            scenario,
            rng: StdRng::seed_from_u64(index as u64 + 1),
            private_base: 1_000_000_000 * (index as u64 + 1),
            private_next: 0,
        }
    }

    /// The next mutation. A patch builds on the version its point was
    /// last written at, in `versions`; a point not written yet is deleted
    /// instead.
    pub(crate) fn next(&mut self, versions: &HashMap<u64, Hlc>) -> Mutation {
        let s = self.scenario;
        let rng = &mut self.rng;
        let id = if rng.random::<f64>() < s.conflict_share {
            rng.random_range(0..s.shared_ids)
        } else {
            self.private_next += 1;
            self.private_base + rng.random_range(0..self.private_next.min(100_000))
        };
        let roll = rng.random::<f64>() * (s.upsert_share + s.delete_share + s.patch_share);
        let point = PointId::Num(id);
        if roll < s.upsert_share {
            return Mutation::Upsert {
                id: point,
                vector: (0..s.dimension)
                    .map(|_| rng.random::<f32>() * 2.0 - 1.0)
                    .collect(),
                payload: None,
            };
        }
        match versions.get(&id) {
            Some(base) if roll >= s.upsert_share + s.delete_share => Mutation::PatchPayload {
                id: point,
                base_version: base.clone(),
                payload: serde_json::Map::from_iter([(
                    "reviewed".to_owned(),
                    serde_json::Value::Bool(true),
                )]),
            },
            _ => Mutation::Delete { id: point },
        }
    }
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
    acked: &AtomicU64,
) -> anyhow::Result<Generated> {
    let mut mix = Mix::new(index, scenario);
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
        acked.fetch_add(written.len() as u64, Ordering::Relaxed);
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
                batch.push(mix.next(&versions));
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

/// Peak resident memory of this process and of the bed's others, by name.
fn processes(bed: &Bed) -> Vec<ProcessMemory> {
    let this = ("vecsync, every region".to_owned(), "self".to_owned());
    let others = bed
        .processes()
        .into_iter()
        .map(|(n, pid)| (n, pid.to_string()));
    std::iter::once(this)
        .chain(others)
        .map(|(name, pid)| ProcessMemory {
            name,
            peak_rss_mb: peak_rss_mb(&pid),
        })
        .collect()
}

/// Peak resident memory of a process (`self` or a pid), from
/// `/proc/<pid>/status` (0 where there is none).
fn peak_rss_mb(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_regions_are_mirrored_unless_told_not_to_and_links_need_mirroring() {
        let kafka = Scenario {
            broker: ClusterKind::Kafka,
            ..Scenario::default()
        };
        assert!(kafka.is_mirrored());
        assert_eq!(kafka.clusters(), ClusterKind::Kafka);
        let direct = Scenario {
            mirrored: Some(false),
            ..kafka.clone()
        };
        assert!(!direct.is_mirrored());
        assert!(direct.problems().is_empty(), "{:?}", direct.problems());
        assert!(
            direct
                .links_described()
                .contains("reading the other clusters directly")
        );

        // Unset on the mock cluster: mirrored only when a link is asked for,
        // which then runs on tansu.
        assert!(!Scenario::default().is_mirrored());
        let delayed = Scenario {
            link_delay_ms: 80,
            ..Scenario::default()
        };
        assert!(delayed.is_mirrored());
        assert_eq!(delayed.clusters(), ClusterKind::Tansu);

        let contradicted = Scenario {
            mirrored: Some(false),
            ..delayed
        };
        let problems = contradicted.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("mirrored:"), "{problems:?}");
    }
}
