//! Faults during the load: a region's worker stopped for a while, or every
//! WAN link cut for a while; then the catch-up, measured from the moment it
//! ends until the regions it cut off have applied what the others had
//! applied by then.

use crate::bed::Bed;
use crate::recorder::Book;
use crate::report::{CatchUp, FaultWindow};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vecsync_devkit::proxy::LinkFaults;
use vecsync_schemas::hlc::Hlc;

/// What is done to the regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The worker of this region (counted from 0) is stopped, as an outage
    /// or a deploy would stop it; its commits stay.
    Pause(usize),
    /// Every link between regions is cut; each region goes on writing.
    Cut,
}

/// Per (region, origin), the watermark the region must pass to have
/// caught up.
type Targets = BTreeMap<(usize, String), Hlc>;

/// One fault, from waiting for it to its measured catch-up.
#[derive(Debug)]
pub struct Outage {
    fault: Fault,
    at: Duration,
    until: Duration,
    /// The links' faults outside the cut.
    links: LinkFaults,
    /// The regions the fault keeps from the others' writes, and their
    /// names for people.
    cut_off: Vec<usize>,
    names: String,
    active: bool,
    /// At the end of the fault: the targets (what each origin had applied
    /// by then), the backlog, and when it ended.
    ended: Option<(Targets, u64, Instant)>,
    ingest_per_s: f64,
    pub result: Option<CatchUp>,
}

impl Outage {
    /// `rate`: events per second each region writes.
    pub fn new(
        fault: Fault,
        at: Duration,
        length: Duration,
        links: LinkFaults,
        rate: f64,
        bed: &Bed,
    ) -> Self {
        let cut_off: Vec<usize> = match fault {
            Fault::Pause(r) => vec![r],
            Fault::Cut => (0..bed.regions.len()).collect(),
        };
        let names: Vec<&str> = cut_off
            .iter()
            .map(|r| bed.regions[*r].name.as_str())
            .collect();
        Self {
            fault,
            at,
            until: at + length,
            links,
            names: names.join(", "),
            ingest_per_s: rate * (bed.regions.len() - 1) as f64 * cut_off.len() as f64,
            cut_off,
            active: false,
            ended: None,
            result: None,
        }
    }

    /// When the fault was on, for the report's charts.
    pub fn window(&self) -> FaultWindow {
        FaultWindow {
            what: self.describe_on(),
            from_s: self.at.as_secs_f64(),
            to_s: self.until.as_secs_f64(),
        }
    }

    fn describe_on(&self) -> String {
        match self.fault {
            Fault::Pause(_) => "worker stopped".to_owned(),
            Fault::Cut => "links cut".to_owned(),
        }
    }

    /// Moves the fault on at time `t` of the load; says what it did.
    /// `acked`: events each region's cluster has acknowledged so far.
    pub async fn step(
        &mut self,
        bed: &mut Bed,
        book: &Book,
        acked: &[Arc<AtomicU64>],
        t: Duration,
    ) -> anyhow::Result<Option<String>> {
        let names = &self.names;
        if !self.active && self.ended.is_none() && t >= self.at {
            match self.fault {
                Fault::Pause(r) => bed.regions[r].pause().await?,
                Fault::Cut => bed.set_links(LinkFaults {
                    cut: true,
                    ..self.links
                }),
            }
            self.active = true;
            return Ok(Some(format!(
                "t={}s {} ({names})",
                t.as_secs(),
                self.describe_on()
            )));
        }
        if self.active && t >= self.until {
            // Everything the others have written so far and the region
            // has not handled is the backlog.
            let handled = book.handled();
            let mut targets = BTreeMap::new();
            let mut backlog = 0;
            for &r in &self.cut_off {
                let name = &bed.regions[r].name;
                for (o, origin) in bed
                    .regions
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.name != *name)
                {
                    let done = handled.get(&(origin.name.clone(), name.clone())).copied();
                    backlog += acked[o]
                        .load(Ordering::Relaxed)
                        .saturating_sub(done.unwrap_or(0));
                    if let Some(mark) = origin.marks().get(&origin.name) {
                        targets.insert((r, origin.name.clone()), mark.clone());
                    }
                }
            }
            match self.fault {
                Fault::Pause(r) => bed.regions[r].resume(),
                Fault::Cut => bed.set_links(self.links),
            }
            self.active = false;
            self.ended = Some((targets, backlog, Instant::now()));
            return Ok(Some(format!(
                "t={}s fault over ({names}), {backlog} events behind",
                t.as_secs()
            )));
        }
        if let Some((targets, backlog, since)) = &self.ended
            && self.result.is_none()
        {
            let marks: Vec<_> = bed.regions.iter().map(|r| r.marks()).collect();
            let done = targets
                .iter()
                .all(|((r, o), target)| marks[*r].get(o).is_some_and(|m| m >= target));
            if done {
                let catch_up_s = since.elapsed().as_secs_f64();
                self.result = Some(CatchUp {
                    fault: self.describe_on(),
                    region: names.clone(),
                    paused_at_s: self.at.as_secs(),
                    paused_for_s: (self.until - self.at).as_secs(),
                    backlog: *backlog,
                    catch_up_s,
                    events_per_s: *backlog as f64 / catch_up_s.max(0.001),
                    ingest_per_s: self.ingest_per_s,
                });
                return Ok(Some(format!("{names} caught up in {catch_up_s:.2} s")));
            }
        }
        Ok(None)
    }
}
