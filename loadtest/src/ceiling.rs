//! The embedded store's own apply ceiling, measured in the same run as the
//! load: one store per region, each applying decoded upserts of new points
//! through the worker's [`Applier`] in the worker's batches, flushed as a
//! worker flushes while behind, all at once on the same machine and with
//! nothing else running. What a region's pipeline applies per second
//! end to end is set against it.

use crate::run::Scenario;
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
use vecsync_schemas::event::DeltaEvent;
use vecsync_schemas::testing::upsert;

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

/// Applies `scenario.ceiling_events` upserts to a new store per region, all
/// at once, and measures the events applied per second in all.
pub fn measure(scenario: &Scenario) -> anyhow::Result<Ceiling> {
    let dimension = scenario.dimension as usize;
    let collections = HashMap::from([(
        "docs".to_owned(),
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
    let events: Vec<Vec<DeltaEvent>> = (0..scenario.regions as u64)
        .map(|r| {
            (0..n as u64)
                .map(|i| upsert(r * 1_000_000_000 + i, dimension, scenario.encoding))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let batch = scenario.apply_batch_events.max(1);
    std::thread::scope(|scope| {
        let runs: Vec<_> = dirs
            .iter()
            .zip(&events)
            .map(|(dir, events)| {
                let collections = &collections;
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
    let config = &collections["docs"];
    store.ensure_collection("docs", config.dimension as usize, config.distance)?;
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
