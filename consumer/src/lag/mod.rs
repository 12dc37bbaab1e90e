//! The lag exporter behind `vecsync lag`: consumer lag of the region's
//! workers (and other groups named in `[lag]`) per topic and partition, in
//! records and seconds; MirrorMaker 2 lag of every flow into the region's
//! cluster and the age of its newest mirrored heartbeat; and whether each
//! cluster could be reached. Served as Prometheus text on `lag.listen`.
//!
//! Seconds come from record timestamps: a group's lag is the head record's
//! timestamp minus that of the record at the committed offset; a mirror's
//! lag is the source head's timestamp minus the mirror head's (MirrorMaker
//! keeps record timestamps). A mirror's lag in records maps the mirror's
//! head back to a source offset through the offset syncs MirrorMaker
//! writes on the source cluster (`mm2-offset-syncs.<target>.internal`),
//! since mirror offsets drift from the source's after duplicates or
//! retention. A cluster that cannot be read is reported by
//! `vecsync_lag_cluster_up` = 0 and a log line, and its lag series are left
//! out for that scan, never reported as zero.

pub mod probe;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use probe::{ClusterProbe, ClusterScan, Partition};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, RwLock, mpsc};
use std::time::{Duration, Instant};
use vecsync_kafka::Cluster;
use vecsync_schemas::config::RegionConfig;
use vecsync_schemas::hlc::{SystemClock, WallClock};
use vecsync_schemas::mm2::{HEARTBEATS_TOPIC, Heartbeat, OffsetSync, offset_syncs_topic};

/// What one cluster is read for.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPlan {
    /// How to reach it: brokers, security, options.
    pub cluster: Cluster,
    /// Topics whose heads are read.
    pub topics: BTreeSet<String>,
    /// Consumer groups and the topics they read.
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// MirrorMaker 2 offset syncs topics, read to their ends.
    pub offset_syncs: BTreeSet<String>,
}

/// A MirrorMaker 2 flow from cluster `alias` into the region's cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorPlan {
    pub alias: String,
    pub topic: String,
    /// The mirror on the region's cluster: `<alias>.<topic>`, or `<topic>`
    /// under the identity policy.
    pub mirror_topic: String,
    /// `<alias>.heartbeats` on the region's cluster.
    pub heartbeats_topic: String,
    /// `mm2-offset-syncs.<target alias>.internal` on the source cluster.
    pub offset_syncs_topic: String,
}

/// Everything the exporter watches, by cluster name.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub region: String,
    /// The `group.id` of the exporter's own readers, which librdkafka needs
    /// to assign partitions (they never join or commit): under the region's
    /// group id, so that one prefixed ACL covers the workers and the
    /// exporter.
    pub reader_group: String,
    pub clusters: BTreeMap<String, ClusterPlan>,
    pub mirrors: Vec<MirrorPlan>,
    /// Sources given as topic patterns, which the exporter cannot expand;
    /// list their topics in `[[lag.groups]]`.
    pub patterns: Vec<String>,
}

impl Plan {
    /// The region's own workers over every source, the groups of
    /// `[[lag.groups]]`, and the flows of `[[lag.mirrors]]`. A cluster name
    /// given two sets of brokers is an error.
    pub fn new(config: &RegionConfig) -> Result<Self, String> {
        let mut plan = Plan {
            region: config.region.clone(),
            reader_group: format!("{}-lag", config.group_id()),
            clusters: BTreeMap::new(),
            mirrors: Vec::new(),
            patterns: Vec::new(),
        };
        let own = Cluster::of_region(config);
        let group = config.group_id();
        for source in config.sources() {
            if source.topic.starts_with('^') {
                plan.patterns.push(source.topic);
                continue;
            }
            let cluster = Cluster::of_source(config, &source);
            let name = if cluster.brokers() == own.brokers() {
                config.region.clone()
            } else {
                source.region.clone()
            };
            plan.watch_group(&name, &cluster, &group, &source.topic)?;
        }
        for (i, g) in config.lag.groups.iter().enumerate() {
            let cluster = Cluster::of_group(config, g, i);
            let name = g.cluster.clone().unwrap_or_else(|| config.region.clone());
            for topic in &g.topics {
                plan.watch_group(&name, &cluster, &g.group, topic)?;
            }
        }
        for (i, m) in config.lag.mirrors.iter().enumerate() {
            let topic = m
                .topic
                .clone()
                .unwrap_or_else(|| config.kafka.topic.clone());
            let target_alias = m.target_alias.as_deref().unwrap_or(&config.region);
            let mirror = MirrorPlan {
                mirror_topic: m.replication_policy.mirror_topic(&m.alias, &topic),
                heartbeats_topic: format!("{}.{HEARTBEATS_TOPIC}", m.alias),
                offset_syncs_topic: offset_syncs_topic(target_alias),
                alias: m.alias.clone(),
                topic: topic.clone(),
            };
            let source = plan.cluster(&m.alias, &Cluster::of_mirror(m, i))?;
            source.topics.insert(topic);
            source
                .offset_syncs
                .insert(mirror.offset_syncs_topic.clone());
            let target = plan.cluster(&config.region, &own)?;
            target.topics.insert(mirror.mirror_topic.clone());
            target.topics.insert(mirror.heartbeats_topic.clone());
            plan.mirrors.push(mirror);
        }
        Ok(plan)
    }

    fn cluster(&mut self, name: &str, cluster: &Cluster) -> Result<&mut ClusterPlan, String> {
        let c = self
            .clusters
            .entry(name.to_owned())
            .or_insert_with(|| ClusterPlan {
                cluster: cluster.clone(),
                topics: BTreeSet::new(),
                groups: BTreeMap::new(),
                offset_syncs: BTreeSet::new(),
            });
        if c.cluster.brokers() != cluster.brokers() {
            return Err(format!(
                "cluster {name} is named for two sets of brokers: {} and {}",
                c.cluster.brokers(),
                cluster.brokers()
            ));
        }
        Ok(c)
    }

    fn watch_group(
        &mut self,
        cluster: &str,
        kafka: &Cluster,
        group: &str,
        topic: &str,
    ) -> Result<(), String> {
        let c = self.cluster(cluster, kafka)?;
        c.topics.insert(topic.to_owned());
        c.groups
            .entry(group.to_owned())
            .or_default()
            .insert(topic.to_owned());
        Ok(())
    }
}

/// Lag of one MirrorMaker 2 flow on one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorLag {
    pub source: String,
    pub topic: String,
    pub partition: i32,
    /// Source records not yet mirrored: the source head minus the source
    /// offset the mirror's head maps to through MirrorMaker's newest
    /// offset sync below it (the heads' difference before any sync).
    pub records: i64,
    /// Source head timestamp minus mirror head timestamp; `None` while the
    /// mirror is empty.
    pub seconds: Option<f64>,
}

/// One scan of every cluster.
#[derive(Debug, Default)]
pub struct Report {
    pub region: String,
    /// Cluster name → `Err(reason)` when it could not be read.
    pub clusters: BTreeMap<String, Result<(), String>>,
    /// (cluster, group, topic, partition) → lag.
    pub consumer: BTreeMap<(String, String, String, i32), probe::GroupLag>,
    pub mirrors: Vec<MirrorLag>,
    /// Source alias → age of the newest mirrored heartbeat, seconds.
    pub heartbeat_age: BTreeMap<String, f64>,
    pub scan_seconds: f64,
    /// When the scan ended, Unix ms.
    pub at_ms: u64,
}

impl Report {
    /// Prometheus text exposition of the report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let region = &self.region;
        family(
            &mut out,
            "vecsync_lag_cluster_up",
            "Whether the lag exporter could read the cluster in its last scan (1) or not (0).",
            "gauge",
            self.clusters
                .iter()
                .map(|(c, r)| (labels(&[("cluster", c)]), if r.is_ok() { 1.0 } else { 0.0 })),
        );
        let rows = |f: fn(&probe::GroupLag) -> f64| {
            self.consumer.iter().map(move |((c, g, t, p), lag)| {
                let p = p.to_string();
                (
                    labels(&[
                        ("cluster", c),
                        ("group", g),
                        ("topic", t),
                        ("partition", &p),
                    ]),
                    f(lag),
                )
            })
        };
        family(
            &mut out,
            "vecsync_consumer_lag_records",
            "Records between a consumer group's committed offset and the partition's head.",
            "gauge",
            rows(|l| l.records as f64),
        );
        family(
            &mut out,
            "vecsync_consumer_lag_seconds",
            "Head record timestamp minus the timestamp of the record at the committed offset.",
            "gauge",
            rows(|l| l.seconds),
        );
        let mirror_labels = |m: &MirrorLag| {
            let p = m.partition.to_string();
            labels(&[
                ("source", &m.source),
                ("target", region),
                ("topic", &m.topic),
                ("partition", &p),
            ])
        };
        family(
            &mut out,
            "vecsync_mirror_lag_records",
            "Records between a source topic's head and its MirrorMaker 2 mirror's head.",
            "gauge",
            self.mirrors
                .iter()
                .map(|m| (mirror_labels(m), m.records as f64)),
        );
        family(
            &mut out,
            "vecsync_mirror_lag_seconds",
            "Source head record timestamp minus the mirror head record timestamp.",
            "gauge",
            self.mirrors
                .iter()
                .filter_map(|m| m.seconds.map(|s| (mirror_labels(m), s))),
        );
        family(
            &mut out,
            "vecsync_mirror_heartbeat_age_seconds",
            "Age of the newest MirrorMaker 2 heartbeat mirrored from the source cluster.",
            "gauge",
            self.heartbeat_age
                .iter()
                .map(|(s, age)| (labels(&[("source", s), ("target", region)]), *age)),
        );
        family(
            &mut out,
            "vecsync_lag_scan_seconds",
            "How long the last scan of every cluster took.",
            "gauge",
            std::iter::once((String::new(), self.scan_seconds)),
        );
        family(
            &mut out,
            "vecsync_lag_last_scan_timestamp_seconds",
            "When the last scan ended, Unix seconds.",
            "gauge",
            std::iter::once((String::new(), self.at_ms as f64 / 1000.0)),
        );
        out
    }
}

fn family(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    rows: impl Iterator<Item = (String, f64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in rows {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Scans the plan's clusters, each on its own thread, and keeps one
/// reader per cluster between scans.
pub struct Exporter {
    plan: Plan,
    probes: BTreeMap<String, ClusterProbe>,
    /// Last known state per cluster, to log only changes.
    up: BTreeMap<String, bool>,
    missing: BTreeSet<(String, String)>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    pub fn new(plan: Plan, timeout: Duration, rewind_records: u64) -> Result<Self, String> {
        for p in &plan.patterns {
            tracing::warn!(topic = %p, "lag of a topic pattern is not tracked; list its topics in [[lag.groups]]");
        }
        let mut probes = BTreeMap::new();
        for (name, c) in &plan.clusters {
            probes.insert(
                name.clone(),
                ClusterProbe::new(&c.cluster, &plan.reader_group, timeout, rewind_records)?,
            );
        }
        Ok(Self {
            plan,
            probes,
            up: BTreeMap::new(),
            missing: BTreeSet::new(),
        })
    }

    /// Reads every cluster once. Blocking: up to the timeout per cluster,
    /// clusters in parallel.
    pub fn scan(&mut self) -> Report {
        let started = Instant::now();
        let plan = &self.plan;
        let scans: BTreeMap<String, Result<ClusterScan, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .probes
                .iter_mut()
                .map(|(name, probe)| {
                    let c = &plan.clusters[name];
                    (name.clone(), s.spawn(move || probe.scan(c)))
                })
                .collect();
            handles
                .into_iter()
                .map(|(name, h)| {
                    let r = h.join().unwrap_or_else(|_| Err("the scan panicked".into()));
                    (name, r)
                })
                .collect()
        });
        for (name, scan) in &scans {
            self.log_state(name, scan);
        }
        let plan = &self.plan;
        let now_ms = SystemClock.now_ms();
        let mut report = Report {
            region: plan.region.clone(),
            at_ms: now_ms,
            ..Report::default()
        };
        for (name, scan) in &scans {
            report.clusters.insert(
                name.clone(),
                scan.as_ref().map(|_| ()).map_err(Clone::clone),
            );
            if let Ok(scan) = scan {
                for ((g, t, p), lag) in &scan.groups {
                    report
                        .consumer
                        .insert((name.clone(), g.clone(), t.clone(), *p), lag.clone());
                }
            }
        }
        let target = scans.get(&plan.region).and_then(|s| s.as_ref().ok());
        for m in &plan.mirrors {
            let Some(target) = target else { continue };
            let beats = target
                .heads
                .iter()
                .filter(|((t, _), _)| *t == m.heartbeats_topic)
                .filter_map(|(_, h)| h.last.as_ref())
                .filter_map(|(k, v)| Heartbeat::decode(k, v).ok())
                .map(|hb| hb.timestamp_ms)
                .max();
            if let Some(ts) = beats {
                let age = (now_ms as i64 - ts).max(0) as f64 / 1000.0;
                report.heartbeat_age.insert(m.alias.clone(), age);
            }
            let Some(Ok(source)) = scans.get(&m.alias) else {
                continue;
            };
            report.mirrors.extend(mirror_lag(m, source, target));
        }
        report.scan_seconds = started.elapsed().as_secs_f64();
        report
    }

    fn log_state(&mut self, name: &str, scan: &Result<ClusterScan, String>) {
        let brokers = self.plan.clusters[name].cluster.brokers();
        let was = self.up.insert(name.to_owned(), scan.is_ok());
        match (scan, was) {
            (Err(e), Some(true) | None) => {
                tracing::warn!(cluster = %name, %brokers, error = %e, "cluster unreachable; its lag is unknown until it answers");
            }
            (Ok(_), Some(false)) => {
                tracing::info!(cluster = %name, %brokers, "cluster reachable again")
            }
            _ => {}
        }
        if let Ok(scan) = scan {
            for t in &scan.missing_topics {
                if self.missing.insert((name.to_owned(), t.clone())) {
                    tracing::warn!(cluster = %name, topic = %t, "topic does not exist (yet); no lag for it");
                }
            }
            self.missing
                .retain(|(c, t)| c != name || scan.missing_topics.contains(t));
        }
    }
}

fn mirror_lag(m: &MirrorPlan, source: &ClusterScan, target: &ClusterScan) -> Vec<MirrorLag> {
    let mut out = Vec::new();
    for ((topic, p), head) in &source.heads {
        if *topic != m.topic {
            continue;
        }
        let key: Partition = (m.mirror_topic.clone(), *p);
        let Some(mirror) = target.heads.get(&key) else {
            continue;
        };
        let syncs = source
            .offset_syncs
            .get(&(m.offset_syncs_topic.clone(), topic.clone(), *p))
            .map(|s| s.as_slice())
            .unwrap_or_default();
        let mirrored = mirrored_up_to(syncs, mirror.offset);
        let records = (head.offset - mirrored).max(0);
        let seconds = match (head.timestamp_ms, mirror.timestamp_ms) {
            (Some(src), Some(dst)) => Some((src - dst).max(0) as f64 / 1000.0),
            _ => None,
        };
        out.push(MirrorLag {
            source: m.alias.clone(),
            topic: m.topic.clone(),
            partition: *p,
            records,
            seconds,
        });
    }
    out
}

/// The source offset up to which a mirror whose head is `mirror_head` has
/// copied: from the newest offset sync below the head, counting the
/// mirror's records after it one for one. With no such sync, offsets are
/// taken as equal, as they are for a new flow before its first sync.
pub fn mirrored_up_to(syncs: &[OffsetSync], mirror_head: i64) -> i64 {
    syncs
        .iter()
        .filter(|s| s.downstream_offset < mirror_head)
        .max_by_key(|s| s.downstream_offset)
        .map_or(mirror_head, |s| {
            s.upstream_offset + (mirror_head - s.downstream_offset)
        })
}

/// The latest rendered report; `None` before the first scan ends.
pub type Page = Arc<RwLock<Option<String>>>;

/// A running exporter: scans every `lag.interval_ms` on its own thread.
#[derive(Debug)]
pub struct Running {
    page: Page,
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Starts the exporter of a region's config.
pub fn spawn(config: &RegionConfig) -> Result<Running, String> {
    let plan = Plan::new(config)?;
    let lag = &config.lag;
    refuse_fatal(&plan, Duration::from_millis(lag.timeout_ms))?;
    let mut exporter = Exporter::new(
        plan,
        Duration::from_millis(lag.timeout_ms),
        lag.rewind_records,
    )?;
    let interval = Duration::from_millis(lag.interval_ms);
    let page: Page = Arc::new(RwLock::new(None));
    let (stop, stopped) = mpsc::channel::<()>();
    let shared = page.clone();
    let thread = std::thread::Builder::new()
        .name("vecsync-lag".into())
        .spawn(move || {
            loop {
                let report = exporter.scan();
                if let Ok(mut p) = shared.write() {
                    *p = Some(report.render());
                }
                let rest = interval.saturating_sub(Duration::from_secs_f64(report.scan_seconds));
                match stopped.recv_timeout(rest) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
        })
        .map_err(|e| format!("cannot start the lag thread: {e}"))?;
    Ok(Running { page, stop, thread })
}

/// Checks every cluster of the plan at once ([`Cluster::check`]): one that
/// refuses the credentials, the certificate or a permission stops the
/// exporter before it starts; one that does not answer is reported
/// unreachable by the scans, as when it goes away later.
fn refuse_fatal(plan: &Plan, timeout: Duration) -> Result<(), String> {
    std::thread::scope(|scope| {
        let checks: Vec<_> = plan
            .clusters
            .values()
            .map(|c| scope.spawn(move || c.cluster.check(timeout)))
            .collect();
        for check in checks {
            match check.join() {
                Ok(Err(e)) if !e.is_retriable() => return Err(e.to_string()),
                Ok(_) => {}
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(())
    })
}

/// The lag exporter's OpenAPI document, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi/lag.json");

impl Running {
    /// `/metrics` (the last report), `/healthz`, `/readyz` (ready once
    /// the first scan has ended) and `/openapi.json` ([`OPENAPI`]).
    pub fn router(&self) -> Router {
        let metrics = self.page.clone();
        let ready = self.page.clone();
        Router::new()
            .route(
                "/metrics",
                get(move || {
                    let page = metrics.read().ok().and_then(|p| p.clone());
                    std::future::ready(page.unwrap_or_default())
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/openapi.json", vecsync_serve::openapi(OPENAPI))
            .route(
                "/readyz",
                get(move || {
                    let done = ready.read().map(|p| p.is_some()).unwrap_or(false);
                    std::future::ready(if done {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "first scan not finished\n")
                    })
                }),
            )
    }

    /// Stops scanning; waits for a scan under way to end.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests;
