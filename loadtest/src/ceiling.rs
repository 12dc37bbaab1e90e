//! The embedded store's own apply ceiling, measured in the same run as the
//! load: one store per region, each applying the load's own mix of events
//! (every region's upserts, deletes and patches, taken in turn, as a
//! region's worker applies its own writes and the others'), decoded,
//! through the worker's [`Applier`] in the worker's batches, flushed as a
//! worker flushes while behind, all at once on the same machine and with
//! nothing else running. What a region's pipeline applies per second
//! end to end is set against it.

use crate::bed::COLLECTION;
use crate::run::{Mix, Scenario};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use vecsync_consumer::applier::Applier;
use vecsync_consumer::store::Store;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_schemas::config::{
    CollectionConfig, Distance, VectorDatatype, default_flush_interval_behind_ms,
};
use vecsync_schemas::event::{DeltaEvent, PointId};
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::mutation::VectorCodec;

/// What the stores applied, alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ceiling {
    /// Stores applying at once: one per region.
    pub stores: usize,
    /// Events each applied.
    pub events_per_store: usize,
    /// Events applied per second, all stores together.
    pub applied_per_s: f64,
}

/// Applies `scenario.ceiling_events` events of the load's mix to a new
/// store per region, all at once, and measures the events applied per
/// second in all.
pub fn measure(scenario: &Scenario) -> anyhow::Result<Ceiling> {
    let collections = HashMap::from([(
        COLLECTION.to_owned(),
        CollectionConfig {
            dimension: scenario.dimension,
            distance: Distance::Cosine,
            encoding: scenario.encoding,
            codebook_file: None,
            residency: Default::default(),
        },
    )]);
    let n = scenario.ceiling_events;
    let dirs = (0..scenario.regions)
        .map(|_| tempfile::tempdir())
        .collect::<Result<Vec<_>, _>>()
        .context("cannot create a temporary directory")?;
    // Made before the clock starts: the worker gets its events decoded
    // from the wire, and the wire's part is measured by the load.
    let events = mixed(scenario)?;
    let started = Instant::now();
    let batch = scenario.apply_batch_events.max(1);
    std::thread::scope(|scope| {
        let runs: Vec<_> = dirs
            .iter()
            .map(|dir| {
                let (collections, events) = (&collections, &events);
                let datatype = scenario.vector_datatype;
                scope.spawn(move || apply_all(dir.path(), datatype, collections, events, batch))
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<anyhow::Result<Vec<()>>>()
    })?;
    Ok(Ceiling {
        stores: scenario.regions,
        events_per_store: n,
        applied_per_s: (n * scenario.regions) as f64 / started.elapsed().as_secs_f64(),
    })
}

fn apply_all(
    dir: &std::path::Path,
    datatype: VectorDatatype,
    collections: &HashMap<String, CollectionConfig>,
    events: &[DeltaEvent],
    batch: usize,
) -> anyhow::Result<()> {
    let store = EdgeStore::open(dir)?.with_vector_datatype(datatype);
    let config = &collections[COLLECTION];
    store.ensure_collection(COLLECTION, config.dimension as usize, config.distance)?;
    let codebooks = HashMap::new();
    let applier = Applier::new(&store, collections, &codebooks);
    // As often as a worker that is behind flushes by default.
    let flush_every = Duration::from_millis(default_flush_interval_behind_ms());
    let mut flushed = Instant::now();
    for chunk in events.chunks(batch) {
        applier.apply_batch(chunk)?;
        if flushed.elapsed() >= flush_every {
            store.flush()?;
            flushed = Instant::now();
        }
    }
    store.flush()?;
    Ok(())
}

/// `scenario.ceiling_events` events of the load's mix: every region's
/// mutations taken in turn, each stamped after the one before.
fn mixed(scenario: &Scenario) -> anyhow::Result<Vec<DeltaEvent>> {
    let regions = scenario.regions;
    let mut mixes: Vec<Mix> = (0..regions).map(|r| Mix::new(r, scenario)).collect();
    let mut versions = vec![HashMap::new(); regions];
    let codec = VectorCodec::Plain(scenario.encoding);
    (0..scenario.ceiling_events)
        .map(|i| {
            let r = i % regions;
            let mutation = mixes[r].next(&versions[r]);
            let hlc = Hlc::new(1_763_700_000_000 + i as u64, 0, format!("region-{r}"));
            let body = mutation
                .to_body(COLLECTION, scenario.dimension as usize, codec, usize::MAX)
                .map_err(|e| anyhow::anyhow!("a mutation of the mix: {e}"))?;
            if let PointId::Num(id) = mutation.id() {
                versions[r].insert(id, hlc.clone());
            }
            Ok(DeltaEvent { hlc, body })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vecsync_schemas::event::Body;

    #[test]
    fn the_ceiling_applies_the_loads_mix_from_every_region() {
        let scenario = Scenario {
            regions: 3,
            dimension: 8,
            ceiling_events: 3_000,
            ..Scenario::default()
        };
        let events = mixed(&scenario).unwrap();
        assert_eq!(events.len(), 3_000);
        let share = |kind: fn(&Body) -> bool| {
            events.iter().filter(|e| kind(&e.body)).count() as f64 / events.len() as f64
        };
        let upserts = share(|b| matches!(b, Body::Upsert(_)));
        let patches = share(|b| matches!(b, Body::PayloadPatch(_)));
        let deletes = share(|b| matches!(b, Body::Delete(_)));
        // 80/10/10, less the patches of points not written yet, which are
        // deletes.
        assert!((0.75..0.85).contains(&upserts), "{upserts}");
        assert!(patches > 0.0 && deletes >= 0.1, "{patches} {deletes}");
        let origins: std::collections::BTreeSet<&str> =
            events.iter().map(|e| e.hlc.origin.as_str()).collect();
        assert_eq!(origins.len(), 3, "{origins:?}");
        // Stamped in order, as a worker applies them.
        assert!(events.windows(2).all(|w| w[0].hlc < w[1].hlc));
    }
}
