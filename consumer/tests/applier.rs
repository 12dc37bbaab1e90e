//! Batches of delta events applied to the real embedded store: duplicates
//! and shuffles change nothing, bad events become dead letters while the
//! rest applies, PQ events wait for their codebook.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use vecsync_consumer::applier::{Applier, DeadReason};
use vecsync_consumer::apply::{Payload as Fields, Record};
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::store::{Known, Page, Part, Store, StoreError, placed};
use vecsync_schemas::config::{CollectionConfig, Distance};
use vecsync_schemas::event::{Body, Delete, DeltaEvent, PayloadPatch, PointId, Upsert, VectorData};
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::payload::{Compression, Payload};
use vecsync_schemas::testing::{upsert, vector};
use vecsync_schemas::vector::{Encoding, PqCodebook, PqTrainer};

const DIM: usize = 8;

fn collections(encoding: Encoding) -> HashMap<String, CollectionConfig> {
    let docs = CollectionConfig {
        dimension: DIM as u32,
        distance: Distance::Dot,
        encoding,
        codebook_file: None,
        residency: Default::default(),
    };
    HashMap::from([("docs".to_owned(), docs)])
}

fn store(dir: &std::path::Path) -> EdgeStore {
    let store = EdgeStore::open(dir).unwrap();
    store.ensure_collection("docs", DIM, Distance::Dot).unwrap();
    store
}

fn digest(store: &EdgeStore) -> Digest {
    Digest::of(store, "docs").unwrap()
}

/// Writes from three regions to 40 points, with deletes among them.
fn stream() -> Vec<DeltaEvent> {
    let mut events = Vec::new();
    for (r, region) in ["us-east", "eu-west", "ap-south"].into_iter().enumerate() {
        for i in 0..60u64 {
            let id = (i * 7 + r as u64) % 40;
            let mut e = upsert(id, DIM, Encoding::Sq8);
            e.hlc = Hlc::new(1_000 + i * 3 + r as u64 % 2, r as u32, region);
            if i % 9 == 4 {
                e.body = Body::Delete(Delete {
                    collection: "docs".into(),
                    id: PointId::Num(id),
                });
            }
            events.push(e);
        }
    }
    events.sort_by(|a, b| a.hlc.cmp(&b.hlc));
    events
}

#[test]
fn duplicates_and_shuffles_leave_the_same_state() {
    let codebooks = HashMap::new();
    let collections = collections(Encoding::Sq8);
    let events = stream();

    let in_order = tempfile::tempdir().unwrap();
    let a = store(in_order.path());
    let outcome = Applier::new(&a, &collections, &codebooks)
        .apply_batch(&events)
        .unwrap();
    assert_eq!(
        outcome.changed as usize,
        events.len(),
        "in order, every event changes its point"
    );
    let once = digest(&a);
    // The same batch again: nothing changes.
    let again = Applier::new(&a, &collections, &codebooks)
        .apply_batch(&events)
        .unwrap();
    assert_eq!(again.unchanged as usize, events.len());
    assert_eq!(digest(&a), once);

    // Another region gets them shuffled, in small batches, some twice.
    let shuffled = tempfile::tempdir().unwrap();
    let b = store(shuffled.path());
    let mut order: Vec<DeltaEvent> = events.iter().rev().cloned().collect();
    order.extend(events.iter().step_by(5).cloned());
    order.rotate_left(77);
    for batch in order.chunks(13) {
        Applier::new(&b, &collections, &codebooks)
            .apply_batch(batch)
            .unwrap();
    }
    assert_eq!(digest(&b), once);
    assert!(
        once.points > 0 && once.points < 40,
        "some points deleted: {once}"
    );
}

#[test]
fn bad_events_are_dead_letters_and_the_rest_applies() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let codebooks = HashMap::new();
    let collections = collections(Encoding::Sq8);
    let good = upsert(1, DIM, Encoding::Sq8);
    let mut unknown = upsert(2, DIM, Encoding::Sq8);
    let mut wrong_dim = upsert(3, DIM + 1, Encoding::Sq8);
    let mut bad_vector = upsert(4, DIM, Encoding::Sq8);
    let mut bad_payload = upsert(5, DIM, Encoding::Sq8);
    if let Body::Upsert(u) = &mut unknown.body {
        u.collection = "nope".into();
    }
    wrong_dim.hlc = Hlc::new(9, 0, "us-east");
    if let Body::Upsert(Upsert {
        vector: VectorData::Full(v),
        ..
    }) = &mut bad_vector.body
    {
        v.data.truncate(3);
    }
    if let Body::Upsert(u) = &mut bad_payload.body {
        u.payload = Some(Payload {
            compression: Compression::Lz4,
            data: vec![9, 9, 9],
        });
    }
    let heartbeat = DeltaEvent {
        hlc: Hlc::new(10, 0, "us-east"),
        body: Body::Heartbeat(vecsync_schemas::event::Heartbeat { interval_ms: 1000 }),
    };
    let batch = [good, unknown, wrong_dim, bad_vector, bad_payload, heartbeat];
    let outcome = Applier::new(&s, &collections, &codebooks)
        .apply_batch(&batch)
        .unwrap();
    let reasons: Vec<(usize, DeadReason)> =
        outcome.dead.iter().map(|(at, r, _)| (*at, *r)).collect();
    assert_eq!(
        reasons,
        [
            (1, DeadReason::UnknownCollection),
            (2, DeadReason::WrongDimension),
            (3, DeadReason::InvalidVector),
            (4, DeadReason::InvalidPayload)
        ]
    );
    assert!(
        outcome.dead[1]
            .2
            .contains("9 dimensions; collection docs has 8"),
        "{}",
        outcome.dead[1].2
    );
    assert_eq!((outcome.changed, outcome.heartbeats), (1, 1));
    assert_eq!(digest(&s).points, 1);

    // A patch of point 1 on a version older than its upsert can never apply:
    // dropped and counted, as a concurrent write that lost.
    let base = Hlc::new(5, 0, "eu-west");
    let orphan = DeltaEvent {
        hlc: Hlc::new(1_763_700_009_000, 0, "eu-west"),
        body: Body::PayloadPatch(PayloadPatch {
            collection: "docs".into(),
            id: PointId::Num(1),
            base_version: base,
            payload: Payload::from_json(serde_json::json!({"x": 1}).as_object().unwrap(), 1024)
                .unwrap(),
        }),
    };
    let before = digest(&s);
    let applier = Applier::new(&s, &collections, &codebooks);
    let outcome = applier.apply_batch(std::slice::from_ref(&orphan)).unwrap();
    assert!(
        outcome.dead.is_empty(),
        "a concurrent write won: {outcome:?}"
    );
    assert_eq!(outcome.superseded, HashMap::from([("docs".to_owned(), 1)]));
    assert_eq!(digest(&s), before);

    // A patch of point 7 parked for a base that has not come, then an
    // upsert newer than that base: the patch can never apply, and is
    // counted as it is dropped.
    let mut parked = orphan.clone();
    if let Body::PayloadPatch(p) = &mut parked.body {
        p.id = PointId::Num(7);
        p.base_version = Hlc::new(1_763_700_008_000, 0, "eu-west");
    }
    let mut newer = upsert(7, DIM, Encoding::Sq8);
    newer.hlc = Hlc::new(1_763_700_008_500, 0, "us-east");
    assert_eq!(applier.apply_batch(&[parked]).unwrap().parked, 1);
    let outcome = applier.apply_batch(&[newer]).unwrap();
    assert_eq!(outcome.superseded, HashMap::from([("docs".to_owned(), 1)]));
}

#[test]
fn pq_events_wait_for_their_codebook() {
    let data: Vec<f32> = (0..64).flat_map(|i| vector(DIM, i)).collect();
    let data = ndarray::Array2::from_shape_vec((64, DIM), data).unwrap();
    let trainer = PqTrainer {
        subspaces: 2,
        centroids: 16,
        iterations: 3,
        seed: 1,
    };
    let book: PqCodebook = trainer.train("docs", 1, data.view()).unwrap();
    let mut event = upsert(9, DIM, Encoding::Sq8);
    if let Body::Upsert(Upsert {
        vector: VectorData::Full(v),
        ..
    }) = &mut event.body
    {
        *v = book.encode(&vector(DIM, 9)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let collections = collections(Encoding::Pq);
    let none = HashMap::new();
    let outcome = Applier::new(&s, &collections, &none)
        .apply_batch(std::slice::from_ref(&event))
        .unwrap();
    assert_eq!((outcome.waiting, outcome.changed), (vec![0], 0));
    let books = HashMap::from([(book.id().to_owned(), book)]);
    let outcome = Applier::new(&s, &collections, &books)
        .apply_batch(&[event])
        .unwrap();
    assert_eq!(outcome.changed, 1);
    assert_eq!(digest(&s).points, 1);
}

/// Cosine collections: upserts from three regions to the same points with
/// payload patches on top of versions other regions supersede, so that some
/// points keep their history in bookkeeping and others do not, depending on
/// the order. Every order gives the same digest. (Vectors once came back
/// unit length from the engine but raw from bookkeeping.)
#[test]
fn cosine_points_are_the_same_whatever_path_their_vector_took() {
    let codebooks = HashMap::new();
    let mut collections = collections(Encoding::Sq8);
    collections.get_mut("docs").unwrap().distance = Distance::Cosine;
    let open = |dir: &std::path::Path| {
        let store = EdgeStore::open(dir).unwrap();
        store
            .ensure_collection("docs", DIM, Distance::Cosine)
            .unwrap();
        store
    };
    let patch = serde_json::json!({"reviewed": true});
    let mut events = Vec::new();
    for id in 0..30u64 {
        for (r, region) in ["us-east", "eu-west", "ap-south"].into_iter().enumerate() {
            let mut e = upsert(id * 3 + r as u64, DIM, Encoding::Sq8);
            let Body::Upsert(u) = &mut e.body else {
                unreachable!()
            };
            u.id = PointId::Num(id);
            e.hlc = Hlc::new(1_000 + id * 10 + r as u64, 0, region);
            let base = e.hlc.clone();
            events.push(e);
            // A patch from the next region on this region's version.
            let patcher = ["eu-west", "ap-south", "us-east"][r];
            events.push(DeltaEvent {
                hlc: Hlc::new(1_000 + id * 10 + r as u64 + 1 + (id % 3), 1, patcher),
                body: Body::PayloadPatch(vecsync_schemas::event::PayloadPatch {
                    collection: "docs".into(),
                    id: PointId::Num(id),
                    base_version: base,
                    payload: Payload::from_json(patch.as_object().unwrap(), 1 << 20).unwrap(),
                }),
            });
        }
    }
    events.sort_by(|a, b| a.hlc.cmp(&b.hlc));
    let mut digests = Vec::new();
    for rotation in [0, 17, 41, 63] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut order = events.clone();
        order.rotate_left(rotation);
        if rotation % 2 == 1 {
            order.reverse();
        }
        for batch in order.chunks(7) {
            Applier::new(&store, &collections, &codebooks)
                .apply_batch(batch)
                .unwrap();
        }
        digests.push(digest(&store));
    }
    assert!(digests[0].points == 30, "{}", digests[0]);
    for d in &digests[1..] {
        assert_eq!(d, &digests[0]);
    }
}

/// An embedded store seen through its [`Store`] seam, counting the points
/// it reads; with `index` false it keeps no version index, so every point
/// is read as before the index existed.
#[derive(Debug)]
struct Observed {
    inner: EdgeStore,
    index: bool,
    read: AtomicUsize,
}

impl Store for Observed {
    fn ensure_collection(&self, name: &str, dim: usize, d: Distance) -> Result<(), StoreError> {
        self.inner.ensure_collection(name, dim, d)
    }
    fn open_collection(&self, name: &str) -> Result<(), StoreError> {
        self.inner.open_collection(name)
    }
    fn get(
        &self,
        c: &str,
        part: Part,
        ids: &[PointId],
    ) -> Result<Vec<(PointId, Record)>, StoreError> {
        self.read.fetch_add(ids.len(), Ordering::Relaxed);
        self.inner.get(c, part, ids)
    }
    fn upsert(
        &self,
        c: &str,
        part: Part,
        points: Vec<(PointId, Vec<f32>, Fields)>,
    ) -> Result<(), StoreError> {
        self.inner.upsert(c, part, points)
    }
    fn delete(&self, c: &str, part: Part, ids: &[PointId]) -> Result<(), StoreError> {
        self.inner.delete(c, part, ids)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn known(&self, c: &str, ids: &[PointId]) -> Option<Vec<Known>> {
        if self.index {
            self.inner.known(c, ids)
        } else {
            None
        }
    }
    fn count(&self, c: &str) -> Result<usize, StoreError> {
        self.inner.count(c)
    }
    fn search_points(
        &self,
        c: &str,
        search: &vecsync_consumer::store::Search,
    ) -> Result<Vec<vecsync_consumer::store::Hit>, StoreError> {
        self.inner.search_points(c, search)
    }
    fn scan_page(
        &self,
        c: &str,
        part: Part,
        with_vectors: bool,
        from: Option<PointId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.inner.scan_page(c, part, with_vectors, from, limit)
    }
}

/// Every record of both parts, in id order.
fn records(store: &dyn Store) -> Vec<(Part, PointId, Record)> {
    let mut all = Vec::new();
    for part in [Part::Live, Part::Tombstones] {
        store
            .scan_records("docs", part, true, &mut |id, r| {
                all.push((part, id, r));
                Ok(())
            })
            .unwrap();
    }
    all
}

/// The embedded store's version index lets full writes skip the read of
/// the points they replace, and the store ends holding exactly what it
/// holds when every point is read: upserts, deletes and payload patches
/// from three regions, shuffled into small batches, some twice. Reopened,
/// the store indexes what it holds the same way.
#[test]
fn the_version_index_skips_reads_and_changes_nothing() {
    let (codebooks, collections) = (HashMap::new(), collections(Encoding::Sq8));
    let mut events = stream();
    // Patches on some of the writes, so that records carry chains too.
    let patch = serde_json::json!({"reviewed": true});
    for (n, e) in stream().into_iter().enumerate().filter(|(n, _)| n % 4 == 1) {
        let Some((_, id)) = e.target() else { continue };
        events.push(DeltaEvent {
            hlc: Hlc::new(e.hlc.wall_ms + 1 + n as u64 % 5, 7, "eu-west"),
            body: Body::PayloadPatch(PayloadPatch {
                collection: "docs".into(),
                id,
                base_version: e.hlc.clone(),
                payload: Payload::from_json(patch.as_object().unwrap(), 1 << 20).unwrap(),
            }),
        });
    }
    let mut order: Vec<DeltaEvent> = events.iter().rev().cloned().collect();
    order.extend(events.iter().step_by(3).cloned());
    order.rotate_left(101);

    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [indexed, reading] = [true, false].map(|index| Observed {
        inner: store(dirs[usize::from(!index)].path()),
        index,
        read: AtomicUsize::new(0),
    });
    for batch in order.chunks(11) {
        for s in [&indexed, &reading] {
            let mut batch = batch.to_vec();
            batch.sort_by(|a, b| a.hlc.cmp(&b.hlc));
            Applier::new(s, &collections, &codebooks)
                .apply_batch(&batch)
                .unwrap();
        }
    }
    assert_eq!(records(&indexed), records(&reading));
    let held = records(&indexed);
    assert!(
        held.iter().any(|(_, _, r)| !r.chain.is_empty()),
        "some chains"
    );
    assert!(
        held.iter().any(|(p, _, _)| *p == Part::Tombstones),
        "some tombstones"
    );
    let (with, without) = (
        indexed.read.load(Ordering::Relaxed),
        reading.read.load(Ordering::Relaxed),
    );
    assert!(
        with * 2 < without,
        "read {with} points with the index, {without} without"
    );

    let ids: Vec<PointId> = (0..40).map(PointId::Num).collect();
    let before = indexed.inner.known("docs", &ids).unwrap();
    drop(indexed);
    let reopened = store(dirs[0].path());
    assert_eq!(reopened.known("docs", &ids).unwrap(), before);
    assert!(before.iter().any(|k| matches!(k, Known::Simple { .. })));
}

/// A write that moves a point between the parts is two engine writes, and
/// the background flush may run between them: killed after that flush, a
/// worker restarts with the point in both parts and replays the write's
/// event, whose offset it never committed. The replay finishes the move,
/// although the event changes nothing: a deleted point does not stay
/// searchable, a revived one keeps no tombstone. With and without the
/// version index, and with the index rebuilt from disk as after a restart.
#[test]
fn a_move_between_the_parts_cut_short_is_finished_by_its_replay() {
    let (codebooks, collections) = (HashMap::new(), collections(Encoding::Sq8));
    let (deleted, revived) = (1, 2);
    let at = |ms: u64, body: Body| DeltaEvent {
        hlc: Hlc::new(1_000 + ms, 0, "us-east"),
        body,
    };
    let delete = |id: u64| {
        Body::Delete(Delete {
            collection: "docs".into(),
            id: PointId::Num(id),
        })
    };
    let write = |id: u64| upsert(id, DIM, Encoding::Sq8).body;
    // Point 1: written, then deleted. Point 2: deleted, then written again.
    let (deleting, reviving) = (at(20, delete(deleted)), at(20, write(revived)));
    let before = [at(10, write(deleted)), at(10, delete(revived))];
    let done = {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for batch in [&before[..], &[deleting.clone(), reviving.clone()]] {
            Applier::new(&s, &collections, &codebooks)
                .apply_batch(batch)
                .unwrap();
        }
        records(&s)
    };
    for index in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        Applier::new(&s, &collections, &codebooks)
            .apply_batch(&before)
            .unwrap();
        // The first half of each move, as the flush found it: the
        // tombstone of the delete written, the point not yet removed; the
        // revived point written, its tombstone not yet removed.
        let half = |event: &DeltaEvent| {
            let other = tempfile::tempdir().unwrap();
            let o = store(other.path());
            Applier::new(&o, &collections, &codebooks)
                .apply_batch(std::slice::from_ref(event))
                .unwrap();
            let id = event.target().unwrap().1;
            let (part, vector, payload) = placed(&o.read("docs", &[id]).unwrap()[&id]);
            s.upsert("docs", part, vec![(id, vector, payload)]).unwrap();
        };
        half(&deleting);
        half(&reviving);
        s.flush().unwrap();
        drop(s);
        let restarted = Observed {
            inner: store(dir.path()),
            index,
            read: AtomicUsize::new(0),
        };
        let both = [deleted, revived].map(PointId::Num);
        let split = restarted.read_held("docs", &both).unwrap().split;
        assert_eq!(split.len(), 2, "both points are in both parts");
        let outcome = Applier::new(&restarted, &collections, &codebooks)
            .apply_batch(&[deleting.clone(), reviving.clone()])
            .unwrap();
        assert_eq!(outcome.unchanged, 2, "the replayed events change nothing");
        assert_eq!(records(&restarted), done, "index {index}");
        assert_eq!(restarted.count("docs").unwrap(), 1);
    }
}
