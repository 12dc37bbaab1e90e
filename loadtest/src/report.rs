//! What a load test measured, as JSON for machines and Markdown for
//! people; the charts are drawn from it ([`crate::charts`]).

use crate::run::Scenario;
use hdrhistogram::Histogram as Hdr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vecsync_schemas::vector::Encoding;

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
    pub fn of_micros(h: &Hdr<u64>) -> Self {
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

/// The catch-up after a fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatchUp {
    /// "worker stopped" or "links cut".
    pub fault: String,
    /// The regions cut off from the others' writes.
    pub region: String,
    pub paused_at_s: u64,
    pub paused_for_s: u64,
    /// Events from other regions waiting when the fault ended.
    pub backlog: u64,
    /// From the end of the fault until the backlog was handled.
    pub catch_up_s: f64,
    /// Backlog handled per second while catching up.
    pub events_per_s: f64,
    /// Events per second arriving for the cut-off regions from the others.
    pub ingest_per_s: f64,
}

/// One stage of the pipeline, from vecsync's own histograms: where the
/// time goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// The metric.
    pub metric: String,
    /// "ms" or "events".
    pub unit: String,
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// One process's peak resident memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessMemory {
    pub name: String,
    pub peak_rss_mb: f64,
}

/// When a fault was on, in seconds from the start of the load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    pub what: String,
    pub from_s: f64,
    pub to_s: f64,
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds from the start of the load to the end of this second.
    pub t_s: u64,
    /// Events produced in this second, all regions.
    pub produced: u64,
    /// Remote events handled in this second, all regions.
    pub replicated: u64,
    /// Every remote pair.
    pub pairs: Vec<PairSecond>,
}

/// One region pair in one second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairSecond {
    pub origin: String,
    pub region: String,
    /// Latency of the events that changed the store in this second; none
    /// when none did.
    pub latency_ms: Option<Percentiles>,
    /// How old the newest of `origin`'s writes the region has applied
    /// everything up to (its watermark) was at the end of the second.
    pub watermark_age_ms: Option<f64>,
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
    /// Events applied per second, all stores, each region's own included
    /// (every store applies every region's writes), over the same time.
    #[serde(default)]
    pub applied_per_s: f64,
    /// The stores' own apply ceiling, measured after the load.
    #[serde(default)]
    pub ceiling: Option<crate::ceiling::Ceiling>,
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
    /// Peak resident memory of every process of the run, MB.
    #[serde(default)]
    pub processes: Vec<ProcessMemory>,
    /// The vecsync process's memory by what backs it, at its largest
    /// sample (every second until everything was applied).
    #[serde(default)]
    pub memory: Option<crate::memory::MemoryAtPeak>,
    /// How the machine's cores spent the run, from the load's start until
    /// everything was applied.
    #[serde(default)]
    pub cores: Option<crate::cores::CoreShares>,
    /// The catch-up after the fault, when one was asked for and the
    /// backlog was handled before the end.
    pub catch_up: Option<CatchUp>,
    /// When faults were on.
    #[serde(default)]
    pub faults: Vec<FaultWindow>,
    /// Second by second.
    #[serde(default)]
    pub timeline: Vec<Second>,
    /// Where the time goes: the stages' percentiles.
    #[serde(default)]
    pub stages: Vec<Stage>,
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
             {:.0}% conflicting writes; each region with {} and an embedded store \
             keeping {} vectors, {}.\n\n",
            s.regions,
            s.rate,
            s.duration_s,
            s.dimension,
            s.encoding,
            s.conflict_share * 100.0,
            s.clusters().described(),
            s.vector_datatype,
            s.links_described()
        );
        if s.warmup_s > 0 {
            let _ = writeln!(
                out,
                "Measured after a warm-up of {} s of the same load, applied everywhere first.\n",
                s.warmup_s
            );
        }
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
        if let Some(c) = &self.cores {
            let _ = writeln!(
                out,
                "| the machine's {} cores, load and drain | {:.0}% user, {:.0}% kernel, \
                 {:.0}% waiting for the disk, {:.0}% taken by the host (steal), {:.0}% idle |",
                c.cores, c.user_pct, c.kernel_pct, c.iowait_pct, c.steal_pct, c.idle_pct
            );
        }
        if let Some(c) = &self.ceiling {
            let _ = writeln!(
                out,
                "\nAll stores applied {:.0} events/s end to end, each region's own included: \
                 {:.0}% of the {:.0} events/s the {} stores apply on their own \
                 ({} {}-d events of the load's mix each, in batches of {}, after the load).",
                self.applied_per_s,
                100.0 * self.applied_per_s / c.applied_per_s.max(1.0),
                c.applied_per_s,
                c.stores,
                c.events_per_store,
                s.dimension,
                s.apply_batch_events
            );
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                out,
                "\nThe vecsync process at its largest sample: {:.0} MB resident, of which \
                 {:.0} MB anonymous (every region's buffers, queues and engine heap) and \
                 {:.0} MB other files.\n\n\
                 | region | its store's files | with an equal share of the anonymous memory |\n\
                 |---|---|---|",
                m.total_mb, m.anonymous_mb, m.other_files_mb
            );
            for (region, store_mb) in &m.stores_mb {
                let _ = writeln!(
                    out,
                    "| {region} | {store_mb:.0} MB | {:.0} MB |",
                    m.region_mb(*store_mb)
                );
            }
        }
        if self.processes.len() > 1 {
            out.push_str("\n| process | peak resident memory |\n|---|---|\n");
            for p in &self.processes {
                let _ = writeln!(out, "| {} | {:.0} MB |", p.name, p.peak_rss_mb);
            }
        }
        if let Some(c) = &self.catch_up {
            let _ = writeln!(
                out,
                "\n{} ({}) at second {} for {} s. Then {} events were behind; \
                 they were applied in {:.2} s: {:.0} events/s, {:.1}× the {:.0} events/s arriving.",
                c.fault,
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
        if !self.stages.is_empty() {
            out.push_str(
                "\nWhere the time goes (vecsync's own histograms, all regions):\n\n\
                 | stage | count | p50 | p99 | max |\n|---|---|---|---|---|\n",
            );
            for st in &self.stages {
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {:.1} {u} | {:.1} {u} | {:.1} {u} |",
                    st.metric,
                    st.count,
                    st.p50,
                    st.p99,
                    st.max,
                    u = st.unit
                );
            }
        }
        if !self.timeline.is_empty() {
            out.push_str(&self.timeline_markdown());
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

impl Report {
    /// Second by second: throughput, the worst pair's p99 and watermark
    /// age, and the fault that was on.
    fn timeline_markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from(
            "\nSecond by second (the worst region pair):\n\n\
             | second | produced/s | replicated/s | p99 ms | watermark age ms | fault |\n\
             |---|---|---|---|---|---|\n",
        );
        for sec in &self.timeline {
            let p99 = sec
                .pairs
                .iter()
                .filter_map(|p| p.latency_ms.as_ref().map(|l| l.p99))
                .reduce(f64::max);
            let age = sec
                .pairs
                .iter()
                .filter_map(|p| p.watermark_age_ms)
                .reduce(f64::max);
            let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
            let t = sec.t_s as f64 - 0.5;
            let fault = self
                .faults
                .iter()
                .find(|f| f.from_s <= t && t < f.to_s)
                .map_or("", |f| f.what.as_str());
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {fault} |",
                sec.t_s,
                sec.produced,
                sec.replicated,
                show(p99),
                show(age)
            );
        }
        out
    }
}
