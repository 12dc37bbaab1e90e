//! Both stores against the real engine: the embedded one (qdrant-edge) and
//! the Qdrant server one (qdrant-client over gRPC to devkit's endpoint,
//! which serves qdrant-edge shards). Records survive a flush and reopen,
//! deletes become tombstones that refuse older upserts, a scan's digest
//! equals the digest of what was written, and expiry forgets what is old.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use qdrant_client::qdrant::vectors_config::Config as VectorsConfig;
use qdrant_client::qdrant::{
    CreateCollectionBuilder, Datatype, Distance as QdrantDistance, VectorParamsBuilder,
};
use serde_json::json;
use std::collections::HashMap;
use vecsync_consumer::applier::Applier;
use vecsync_consumer::apply::{Change, Effect, Record, State, apply};
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::edge::{EdgeStore, WalLimits};
use vecsync_consumer::store::server::ServerStore;
use vecsync_consumer::store::{Expired, Part, Pass, Store, StoreError, placed};
use vecsync_devkit::qdrant::QdrantEndpoint;
use vecsync_devkit::tls::TestCerts;
use vecsync_schemas::config::{
    CollectionConfig, Distance, ServerCollectionConfig, ServerQuantization, StoreBackend,
    StoreConfig, VectorDatatype,
};
use vecsync_schemas::event::{Body, Delete, DeltaEvent, PointId};
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::vector::Encoding;

fn h(ms: u64) -> Hlc {
    Hlc::new(ms, 0, "us-east")
}

fn upsert(i: u64) -> Change {
    Change::Upsert {
        vector: vec![i as f32, 0.5, -1.0],
        payload: Some(json!({"n": i, "tags": ["x"]}).as_object().cloned().unwrap()),
    }
}

/// A store under test, opened afresh on the same data each time: the
/// embedded store reopens its directory, the server is restarted on it.
struct Harness {
    // Declared first so it is dropped first: the endpoint flushes its
    // shards into `dir` when it closes.
    server: Option<(tokio::runtime::Runtime, Option<QdrantEndpoint>)>,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new(backend: StoreBackend) -> Self {
        let server = (backend == StoreBackend::Qdrant)
            .then(|| (tokio::runtime::Runtime::new().unwrap(), None));
        Self {
            dir: tempfile::tempdir().unwrap(),
            server,
        }
    }

    fn open(&mut self) -> Box<dyn Store> {
        self.open_with(VectorDatatype::default())
    }

    /// Opens the store creating collections that keep vectors as `datatype`.
    fn open_with(&mut self, datatype: VectorDatatype) -> Box<dyn Store> {
        let Some((runtime, endpoint)) = &mut self.server else {
            let store = EdgeStore::open(self.dir.path()).unwrap();
            return Box::new(store.with_vector_datatype(datatype));
        };
        if let Some(running) = endpoint.take() {
            runtime.block_on(running.stop());
        }
        let running = runtime
            .block_on(QdrantEndpoint::start(self.dir.path(), "127.0.0.1:0", None))
            .unwrap();
        let config = StoreConfig {
            vector_datatype: datatype,
            ..server_config(running.url())
        };
        *endpoint = Some(running);
        Box::new(ServerStore::connect(&config).unwrap())
    }
}

/// The store config of a worker on the Qdrant server at `url`.
fn server_config(url: String) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Qdrant,
        url,
        ..StoreConfig::default()
    }
}

/// Upserts of points `ids`, each a version of its own.
fn upserts(ids: std::ops::Range<u64>) -> Vec<(PointId, Hlc, Change)> {
    ids.map(|i| (PointId::Num(i), h(10 + i), upsert(i)))
        .collect()
}

/// Applies `changes` on top of what the store holds and writes the results,
/// as a worker does for one batch.
fn apply_batch(store: &dyn Store, changes: Vec<(PointId, Hlc, Change)>) -> Vec<Effect> {
    let ids: Vec<PointId> = changes.iter().map(|(id, _, _)| *id).collect();
    let mut held: HashMap<PointId, Record> = store.read("docs", &ids).unwrap();
    let mut effects = Vec::new();
    for (id, hlc, change) in changes {
        let (next, effect) = apply(held.remove(&id), hlc, change);
        held.insert(id, next.unwrap());
        effects.push(effect);
    }
    let writes: Vec<(PointId, Record)> = held.into_iter().collect();
    store.write("docs", &writes).unwrap();
    effects
}

#[test]
fn edge_records_survive_a_reopen_and_tombstones_refuse_older_upserts() {
    records_survive_a_reopen_and_tombstones_refuse_older_upserts(StoreBackend::Edge);
}

#[test]
fn server_records_survive_a_reopen_and_tombstones_refuse_older_upserts() {
    records_survive_a_reopen_and_tombstones_refuse_older_upserts(StoreBackend::Qdrant);
}

fn records_survive_a_reopen_and_tombstones_refuse_older_upserts(backend: StoreBackend) {
    let mut harness = Harness::new(backend);
    let store = harness.open();
    store.ensure_collection("docs", 3, Distance::Dot).unwrap();
    let uuid = PointId::Uuid("5c56c793-69f3-4fbf-87e6-c4bf54c28c26".parse().unwrap());
    let mut batch: Vec<(PointId, Hlc, Change)> = (0..20)
        .map(|i| (PointId::Num(i), h(10 + i), upsert(i)))
        .collect();
    batch.push((uuid, h(50), upsert(99)));
    batch.push((PointId::Num(3), h(60), Change::Delete));
    // A patch whose base has not arrived: parked, kept in the bookkeeping.
    batch.push((
        PointId::Num(4),
        h(70),
        Change::Patch {
            base: h(65),
            payload: json!({"late": true}).as_object().cloned().unwrap(),
        },
    ));
    let effects = apply_batch(store.as_ref(), batch);
    assert_eq!(effects.last(), Some(&Effect::Parked));
    store.flush().unwrap();
    drop(store);

    let store = harness.open();
    store.ensure_collection("docs", 3, Distance::Dot).unwrap();
    let held = store
        .read(
            "docs",
            &[
                PointId::Num(1),
                PointId::Num(3),
                PointId::Num(4),
                uuid,
                PointId::Num(999),
            ],
        )
        .unwrap();
    assert_eq!(held.len(), 4, "999 was never written");
    let (one, _) = held[&PointId::Num(1)].current();
    assert_eq!(one.version, h(11));
    let State::Live(content) = &one.state else {
        panic!()
    };
    assert_eq!(content.vector, [1.0, 0.5, -1.0]);
    assert_eq!(content.payload["n"], 1);
    assert_eq!(held[&PointId::Num(3)].current().0.state, State::Deleted);
    assert_eq!(
        held[&PointId::Num(4)].chain.len(),
        1,
        "the parked patch survived"
    );

    // An upsert older than the delete does not bring 3 back; a newer one does.
    let effects = apply_batch(store.as_ref(), vec![(PointId::Num(3), h(55), upsert(3))]);
    assert_eq!(effects, [Effect::Unchanged]);
    assert_eq!(
        store.read("docs", &[PointId::Num(3)]).unwrap()[&PointId::Num(3)]
            .current()
            .0
            .state,
        State::Deleted
    );
    apply_batch(store.as_ref(), vec![(PointId::Num(3), h(80), upsert(3))]);
    assert_eq!(
        store.read("docs", &[PointId::Num(3)]).unwrap()[&PointId::Num(3)]
            .current()
            .0
            .version,
        h(80)
    );

    // The scan sees the 21 live points, with the digest of their states.
    let scanned = Digest::of(store.as_ref(), "docs").unwrap();
    let ids: Vec<PointId> = (0..20).map(PointId::Num).chain([uuid]).collect();
    let mut expected = Digest::new();
    for (id, record) in store.read("docs", &ids).unwrap() {
        expected.add(&id, &record.current().0);
    }
    assert_eq!(scanned.points, 21);
    assert_eq!(scanned, expected);
}

#[test]
fn edge_vectors_are_kept_as_the_configured_datatype() {
    vectors_are_kept_as_the_configured_datatype(StoreBackend::Edge);
}

#[test]
fn server_vectors_are_kept_as_the_configured_datatype() {
    vectors_are_kept_as_the_configured_datatype(StoreBackend::Qdrant);
}

/// `float16` rounds each component to half precision, `float32` keeps it;
/// a collection that exists keeps its datatype whatever the config says.
fn vectors_are_kept_as_the_configured_datatype(backend: StoreBackend) {
    // A float32 between two float16s, 1 and 1 + 1/1024, nearer 1.
    let x = 1.0 + 1.0 / 4096.0;
    let first_component = |store: &dyn Store, id: u64| -> f32 {
        let change = Change::Upsert {
            vector: vec![x, 0.5, -1.0],
            payload: None,
        };
        apply_batch(store, vec![(PointId::Num(id), h(10 + id), change)]);
        let held = store.read("docs", &[PointId::Num(id)]).unwrap();
        let State::Live(live) = &held[&PointId::Num(id)].current().0.state else {
            panic!("{id} is live")
        };
        live.vector[0]
    };
    for (datatype, kept) in [(VectorDatatype::Float32, x), (VectorDatatype::Float16, 1.0)] {
        let mut harness = Harness::new(backend);
        let store = harness.open_with(datatype);
        store.ensure_collection("docs", 3, Distance::Dot).unwrap();
        assert_eq!(first_component(&*store, 1), kept, "{datatype:?}");
        drop(store);

        let other = match datatype {
            VectorDatatype::Float32 => VectorDatatype::Float16,
            VectorDatatype::Float16 => VectorDatatype::Float32,
        };
        let store = harness.open_with(other);
        store.ensure_collection("docs", 3, Distance::Dot).unwrap();
        assert_eq!(first_component(&*store, 2), kept, "{datatype:?}, reopened");
    }
}

#[test]
fn edge_a_collection_of_another_shape_is_refused() {
    a_collection_of_another_shape_is_refused(StoreBackend::Edge);
}

#[test]
fn server_a_collection_of_another_shape_is_refused() {
    a_collection_of_another_shape_is_refused(StoreBackend::Qdrant);
}

fn a_collection_of_another_shape_is_refused(backend: StoreBackend) {
    let mut harness = Harness::new(backend);
    harness
        .open()
        .ensure_collection("docs", 3, Distance::Dot)
        .unwrap();
    let store = harness.open();
    let err = store
        .ensure_collection("docs", 4, Distance::Dot)
        .unwrap_err();
    assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
    assert!(matches!(
        store.read("other", &[PointId::Num(1)]).unwrap_err(),
        StoreError::UnknownCollection(_)
    ));
}

/// A collection a user created for cosine similarity the way Qdrant's
/// guides do is refused with how to create it instead.
#[test]
fn a_cosine_collection_made_beforehand_is_refused_with_how_to_make_it() {
    let mut harness = Harness::new(StoreBackend::Qdrant);
    let store = harness.open();
    let (runtime, endpoint) = harness.server.as_ref().unwrap();
    let client = qdrant_client::Qdrant::from_url(&endpoint.as_ref().unwrap().url())
        .skip_compatibility_check()
        .build()
        .unwrap();
    for (name, size) in [("docs", 3), ("docs.tombstones", 1)] {
        let request = CreateCollectionBuilder::new(name)
            .vectors_config(VectorParamsBuilder::new(size, QdrantDistance::Cosine));
        runtime.block_on(client.create_collection(request)).unwrap();
    }
    let err = store
        .ensure_collection("docs", 3, Distance::Cosine)
        .unwrap_err();
    assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("create it with distance Dot"),
        "{err}"
    );
}

/// `[store.collections.docs]` shapes both parts of the collection on the
/// server: shards and copies for both (every copy acknowledging a write),
/// vector storage and index settings for the live part.
#[test]
// Disk placement travels in the fields every server version reads.
#[allow(deprecated)]
fn a_collection_is_created_with_its_configured_server_settings() {
    let mut harness = Harness::new(StoreBackend::Qdrant);
    drop(harness.open());
    let (runtime, endpoint) = harness.server.as_ref().unwrap();
    let url = endpoint.as_ref().unwrap().url();
    let mut config = server_config(url.clone());
    let settings = ServerCollectionConfig {
        shard_number: Some(2),
        replication_factor: Some(3),
        write_consistency_factor: None,
        on_disk: Some(true),
        on_disk_payload: Some(true),
        hnsw_m: Some(32),
        hnsw_ef_construct: Some(200),
        quantization: Some(ServerQuantization::Scalar),
    };
    config.collections.insert("docs".into(), settings);
    config.vector_datatype = VectorDatatype::Float16;
    let store = ServerStore::connect(&config).unwrap();
    store
        .ensure_collection("docs", 3, Distance::Cosine)
        .unwrap();
    let client = qdrant_client::Qdrant::from_url(&url)
        .skip_compatibility_check()
        .build()
        .unwrap();
    let info = |name: &str| {
        let info = runtime.block_on(client.collection_info(name)).unwrap();
        info.result.unwrap().config.unwrap()
    };
    for name in ["docs", "docs.tombstones"] {
        let params = info(name).params.unwrap();
        assert_eq!(params.shard_number, 2, "{name}");
        assert_eq!(params.replication_factor, Some(3), "{name}");
        assert_eq!(params.write_consistency_factor, Some(3), "{name}");
    }
    let live = info("docs");
    let params = live.params.as_ref().unwrap();
    assert!(params.on_disk_payload);
    let Some(VectorsConfig::Params(vectors)) = params.vectors_config.clone().unwrap().config else {
        panic!("{params:?}")
    };
    assert_eq!(vectors.on_disk, Some(true));
    assert_eq!(vectors.datatype, Some(Datatype::Float16 as i32));
    let hnsw = live.hnsw_config.unwrap();
    assert_eq!((hnsw.m, hnsw.ef_construct), (Some(32), Some(200)));
    assert!(live.quantization_config.is_some());
    let tombstones = info("docs.tombstones");
    assert!(tombstones.hnsw_config.is_none() && tombstones.quantization_config.is_none());
    // Reads ask every copy, which the server accepts.
    apply_batch(&store, vec![(PointId::Num(1), h(5), upsert(1))]);
    assert_eq!(store.count("docs").unwrap(), 1);
}

/// Workers of a region starting together all ensure the collection on the
/// one server: whichever creates it, none fails, and a worker configured for
/// another shape is still refused.
#[test]
fn workers_starting_together_on_one_server_all_find_the_collection() {
    let mut harness = Harness::new(StoreBackend::Qdrant);
    let first = harness.open();
    let (_, endpoint) = harness.server.as_ref().unwrap();
    let config = server_config(endpoint.as_ref().unwrap().url());
    let stores: Vec<ServerStore> = (0..8)
        .map(|_| ServerStore::connect(&config).unwrap())
        .collect();
    let start = std::sync::Barrier::new(stores.len());
    std::thread::scope(|scope| {
        let ensuring: Vec<_> = stores
            .iter()
            .map(|store| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    store.ensure_collection("docs", 3, Distance::Dot)
                })
            })
            .collect();
        for (worker, ensured) in ensuring.into_iter().enumerate() {
            let ensured = ensured.join().unwrap();
            assert!(ensured.is_ok(), "worker {worker}: {ensured:?}");
        }
    });
    let err = first
        .ensure_collection("docs", 4, Distance::Dot)
        .unwrap_err();
    assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
}

#[test]
fn edge_expiry_forgets_old_tombstones_and_folds_old_chains() {
    expiry_forgets_old_tombstones_and_folds_old_chains(StoreBackend::Edge);
}

#[test]
fn server_expiry_forgets_old_tombstones_and_folds_old_chains() {
    expiry_forgets_old_tombstones_and_folds_old_chains(StoreBackend::Qdrant);
}

fn expiry_forgets_old_tombstones_and_folds_old_chains(backend: StoreBackend) {
    let mut harness = Harness::new(backend);
    let store = harness.open();
    store.ensure_collection("docs", 3, Distance::Dot).unwrap();
    apply_batch(
        store.as_ref(),
        vec![
            (PointId::Num(1), h(10), Change::Delete),
            (PointId::Num(2), h(100), Change::Delete),
            (PointId::Num(3), h(5), upsert(3)),
            // Waits for a base that never comes.
            (
                PointId::Num(3),
                h(20),
                Change::Patch {
                    base: h(15),
                    payload: json!({"x": 1}).as_object().cloned().unwrap(),
                },
            ),
        ],
    );
    let before = store.read("docs", &[PointId::Num(3)]).unwrap()[&PointId::Num(3)]
        .current()
        .0;
    let expired = store.expire("docs", &h(50)).unwrap();
    assert_eq!(
        (
            expired.tombstones_removed,
            expired.chains_compacted,
            expired.parked_dropped
        ),
        (1, 1, 1)
    );
    let held = store
        .read("docs", &[PointId::Num(1), PointId::Num(2), PointId::Num(3)])
        .unwrap();
    assert!(
        !held.contains_key(&PointId::Num(1)),
        "the old tombstone is gone"
    );
    assert_eq!(
        held[&PointId::Num(2)].current().0.state,
        State::Deleted,
        "the recent one stays"
    );
    assert!(held[&PointId::Num(3)].chain.is_empty());
    assert_eq!(
        held[&PointId::Num(3)].current().0,
        before,
        "folding changes no state"
    );
}

#[test]
fn edge_expiry_goes_a_page_at_a_time() {
    expiry_goes_a_page_at_a_time(StoreBackend::Edge);
}

#[test]
fn server_expiry_goes_a_page_at_a_time() {
    expiry_goes_a_page_at_a_time(StoreBackend::Qdrant);
}

/// Steps of two records each come to what one whole pass does, so that a
/// worker can take them between batches.
fn expiry_goes_a_page_at_a_time(backend: StoreBackend) {
    let mut harness = Harness::new(backend);
    let store = harness.open();
    store.ensure_collection("docs", 3, Distance::Dot).unwrap();
    // Seven old tombstones and a recent one, and three live points each
    // with a patch waiting for a base that never comes.
    let mut changes: Vec<_> = (1..=7)
        .map(|i| (PointId::Num(i), h(10), Change::Delete))
        .collect();
    changes.push((PointId::Num(8), h(100), Change::Delete));
    for i in 20..23 {
        let patch = Change::Patch {
            base: h(15),
            payload: json!({"x": i}).as_object().cloned().unwrap(),
        };
        changes.push((PointId::Num(i), h(5), upsert(i)));
        changes.push((PointId::Num(i), h(20), patch));
    }
    apply_batch(store.as_ref(), changes);
    let (mut total, mut pass, mut steps) = (Expired::default(), Pass::default(), 0);
    while pass != Pass::Done {
        let (expired, next) = store.expire_page("docs", &h(50), pass, 2).unwrap();
        assert!(
            expired.tombstones_removed + expired.chains_compacted <= 2,
            "a page of two: {expired:?}"
        );
        total += expired;
        pass = next;
        steps += 1;
    }
    let expected = Expired {
        tombstones_removed: 7,
        chains_compacted: 3,
        parked_dropped: 3,
    };
    assert_eq!(total, expected);
    // Eight tombstones and three live records, two a page.
    assert!(steps >= 6, "{steps} steps");
    assert_eq!(store.expire("docs", &h(50)).unwrap(), Expired::default());
    let ids: Vec<PointId> = (1..=8).chain(20..23).map(PointId::Num).collect();
    let held = store.read("docs", &ids).unwrap();
    let mut kept: Vec<_> = held.keys().copied().collect();
    kept.sort_by_key(|id| id.to_string());
    assert_eq!(kept, [20, 21, 22, 8].map(PointId::Num));
    assert!(held.values().all(|r| r.chain.is_empty()));
}

#[test]
fn a_server_refuses_a_wrong_api_key_and_an_absent_server_is_worth_retrying() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = runtime
        .block_on(QdrantEndpoint::start(
            dir.path(),
            "127.0.0.1:0",
            Some("right".into()),
        ))
        .unwrap();
    let connect = |url: String, api_key: Option<&str>| {
        ServerStore::connect(&StoreConfig {
            backend: StoreBackend::Qdrant,
            url,
            api_key: api_key.map(str::to_owned),
            timeout_ms: 2_000,
            ..StoreConfig::default()
        })
        .unwrap()
    };
    connect(endpoint.url(), Some("right"))
        .ensure_collection("docs", 3, Distance::Dot)
        .unwrap();
    for key in [Some("wrong"), None] {
        let err = connect(endpoint.url(), key)
            .ensure_collection("docs", 3, Distance::Dot)
            .unwrap_err();
        assert!(matches!(err, StoreError::Refused { .. }), "{key:?}: {err}");
    }
    let url = endpoint.url();
    runtime.block_on(endpoint.stop());
    let err = connect(url, Some("right")).count("docs").unwrap_err();
    assert!(matches!(err, StoreError::Engine { .. }), "{err}");
}

/// A server whose certificate comes from a CA of its own: trusted through
/// `store.ca_file`, refused without it (the system's CAs do not know it),
/// and not worth retrying either way; the API key goes over TLS too.
#[test]
fn a_server_over_tls_is_reached_through_its_ca_file() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::make(dir.path(), "qdrant").unwrap();
    let endpoint = runtime
        .block_on(QdrantEndpoint::start_with(
            &dir.path().join("data"),
            "127.0.0.1:0",
            Some("right".into()),
            Some(&certs),
        ))
        .unwrap();
    assert!(endpoint.url().starts_with("https://"));
    let config = StoreConfig {
        backend: StoreBackend::Qdrant,
        url: endpoint.url(),
        api_key: Some("right".into()),
        ca_file: Some(certs.ca_file.clone()),
        timeout_ms: 2_000,
        ..StoreConfig::default()
    };
    let store = ServerStore::connect(&config).unwrap();
    store.ensure_collection("docs", 3, Distance::Dot).unwrap();
    let effects = apply_batch(&store, vec![(PointId::Num(1), h(10), upsert(1))]);
    assert_eq!(effects, [Effect::Changed]);
    assert_eq!(store.count("docs").unwrap(), 1);

    let untrusted = StoreConfig {
        ca_file: None,
        ..config.clone()
    };
    let err = ServerStore::connect(&untrusted)
        .unwrap()
        .count("docs")
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");

    let plain = StoreConfig {
        url: endpoint.url().replace("https://", "http://"),
        ..config
    };
    let err = ServerStore::connect(&plain)
        .unwrap()
        .count("docs")
        .unwrap_err();
    assert!(err.to_string().contains(&plain.url), "{err}");
    runtime.block_on(endpoint.stop());
}

/// qdrant-edge's flush panics when a write holds its WAL lock; the store
/// keeps the two apart shard by shard, so threads may write to both parts,
/// read, search and flush at once.
#[test]
fn edge_writes_reads_and_flushes_from_several_threads_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let store = &EdgeStore::open(dir.path()).unwrap();
    store.ensure_collection("docs", 8, Distance::Dot).unwrap();
    let writes = 3_000u64;
    std::thread::scope(|threads| {
        let flusher = threads.spawn(|| {
            for _ in 0..300 {
                store.flush().unwrap();
            }
        });
        let reader = threads.spawn(|| {
            for i in 0..300 {
                store.get("docs", Part::Live, &[PointId::Num(i)]).unwrap();
                store.search("docs", vec![1.0; 8], 5).unwrap();
            }
        });
        for part in [Part::Live, Part::Tombstones] {
            threads.spawn(move || {
                // The tombstones' shard holds one-dimensional vectors.
                let dimension = if part == Part::Live { 8 } else { 1 };
                for i in 0..writes {
                    let point = (
                        PointId::Num(i),
                        vec![1.0; dimension],
                        serde_json::Map::new(),
                    );
                    store.upsert("docs", part, vec![point]).unwrap();
                }
            });
        }
        flusher.join().expect("a flush panicked");
        reader.join().expect("a read panicked");
    });
    store.flush().unwrap();
    assert_eq!(store.count("docs").unwrap(), writes as usize);
    let tombstones = store.get(
        "docs",
        Part::Tombstones,
        &(0..writes).map(PointId::Num).collect::<Vec<_>>(),
    );
    assert_eq!(tombstones.unwrap().len(), writes as usize);
}

/// A flush syncs every file of every segment of a shard it flushes; one
/// with no write since the last flush (the tombstones' while nothing is
/// deleted) is left as it is, and one with a write is flushed.
#[test]
fn edge_a_flush_leaves_a_shard_with_no_new_writes_untouched() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = EdgeStore::open(dir.path()).unwrap();
    store.ensure_collection("docs", 3, Distance::Dot).unwrap();
    // Each file of a shard, with its inode and last change: the engine's
    // flush writes some of them anew.
    let files = |shard: &str| -> Vec<(std::path::PathBuf, u64, i64, i64)> {
        let mut found = Vec::new();
        let mut dirs = vec![dir.path().join(shard)];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::metadata(&path).unwrap();
                if meta.is_dir() {
                    dirs.push(path);
                } else {
                    found.push((path, meta.ino(), meta.mtime(), meta.mtime_nsec()));
                }
            }
        }
        found.sort();
        found
    };
    apply_batch(&store, upserts(0..10));
    store.flush().unwrap();

    apply_batch(&store, upserts(10..20));
    let (live, tombstones) = (files("docs"), files("docs.tombstones"));
    store.flush().unwrap();
    assert_ne!(files("docs"), live, "the written shard was not flushed");
    assert_eq!(files("docs.tombstones"), tombstones);

    let live = files("docs");
    store.flush().unwrap();
    assert_eq!(files("docs"), live, "nothing was written since");

    let deletes = (0..5).map(|i| (PointId::Num(i), h(100 + i), Change::Delete));
    apply_batch(&store, deletes.collect());
    let tombstones = files("docs.tombstones");
    store.flush().unwrap();
    assert_ne!(files("docs.tombstones"), tombstones);
}

/// A `float16` shard is handed each component already rounded, so its
/// write-ahead log (CBOR, which writes a float in 3 bytes when half
/// precision holds it exactly, else 5) takes about 3/5 of a `float32`
/// shard's for the same writes.
#[test]
fn edge_a_float16_shard_logs_each_component_in_fewer_bytes() {
    let closed_segments = |datatype: VectorDatatype| -> usize {
        let dir = tempfile::tempdir().unwrap();
        let store = EdgeStore::open(dir.path())
            .unwrap()
            .with_vector_datatype(datatype)
            .with_wal_limits(WalLimits {
                segment_bytes: 1 << 20,
                reclaim_bytes: u64::MAX,
            });
        store.ensure_collection("docs", 256, Distance::Dot).unwrap();
        for batch in 0..8u64 {
            let changes = (0..500)
                .map(|i| {
                    let id = batch * 500 + i;
                    // Sevenths: no float16 holds them exactly.
                    let vector = (0..256).map(|j| (id * 256 + j) as f32 / 7.0).collect();
                    let change = Change::Upsert {
                        vector,
                        payload: None,
                    };
                    (PointId::Num(id), h(10 + id), change)
                })
                .collect();
            apply_batch(&store, changes);
        }
        store.flush().unwrap();
        std::fs::read_dir(dir.path().join("docs").join("wal"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("closed-")
            })
            .count()
    };
    // 4,000 points of 256 components: about 5 MB of log at 5 bytes each.
    let (full, half) = (
        closed_segments(VectorDatatype::Float32),
        closed_segments(VectorDatatype::Float16),
    );
    assert!(full >= 4, "float32 closed {full} segments of 1 MiB");
    assert!(
        half * 4 <= full * 3,
        "float16 closed {half} segments, float32 {full}"
    );
}

/// qdrant-edge never trims its write-ahead log; the store lets the log go
/// after a flush once it passes its limit, and loses nothing doing so.
#[test]
fn edge_the_write_ahead_log_stays_within_its_limit_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let limits = WalLimits {
        segment_bytes: 1 << 20,
        reclaim_bytes: 2 << 20,
    };
    let open = || EdgeStore::open(dir.path()).unwrap().with_wal_limits(limits);
    let store = open();
    store.ensure_collection("docs", 256, Distance::Dot).unwrap();
    let log_bytes = || -> u64 {
        ["docs", "docs.tombstones"]
            .iter()
            .flat_map(|shard| std::fs::read_dir(dir.path().join(shard).join("wal")).unwrap())
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    // 256 floats are about 1.3 KB of log a point: 40 batches of 400
    // points write about 20 MB of it.
    let mut largest = 0;
    for batch in 0..40u64 {
        let mut changes: Vec<(PointId, Hlc, Change)> = (0..400)
            .map(|i| {
                let id = batch * 400 + i;
                let change = Change::Upsert {
                    vector: vec![id as f32; 256],
                    payload: Some(json!({"n": id}).as_object().cloned().unwrap()),
                };
                (PointId::Num(id), h(10 + id), change)
            })
            .collect();
        // Every tenth point of the batch before is deleted: a tombstone.
        if batch > 0 {
            changes.extend((0..40).map(|i| {
                let id = (batch - 1) * 400 + i * 10;
                (PointId::Num(id), h(100_000 + id), Change::Delete)
            }));
        }
        apply_batch(&store, changes);
        store.flush().unwrap();
        largest = largest.max(log_bytes());
    }
    // At most the limit and a batch in closed segments, and each shard's
    // two open segments (preallocated): 8 MiB. Without letting go it
    // would be the whole 20 MB.
    assert!(largest <= 8 << 20, "the log reached {largest} bytes");

    let live = 40 * 400 - 39 * 40;
    let digest = Digest::of(&store, "docs").unwrap();
    assert_eq!(digest.points, live);
    let held = store
        .read(
            "docs",
            &[PointId::Num(7), PointId::Num(10), PointId::Num(15_999)],
        )
        .unwrap();
    let State::Live(seven) = &held[&PointId::Num(7)].current().0.state else {
        panic!("7 is live")
    };
    assert_eq!(seven.vector, vec![7.0; 256]);
    assert_eq!(held[&PointId::Num(10)].current().0.state, State::Deleted);
    assert_eq!(
        store.search("docs", vec![1.0; 256], 1).unwrap()[0].0,
        PointId::Num(15_999)
    );
    drop(store);

    let store = open();
    store.open_collection("docs").unwrap();
    assert_eq!(Digest::of(&store, "docs").unwrap(), digest);
}

#[test]
fn edge_a_point_left_in_both_parts_is_set_right_by_its_replay() {
    a_point_left_in_both_parts_is_set_right_by_its_replay(StoreBackend::Edge);
}

#[test]
fn server_a_point_left_in_both_parts_is_set_right_by_its_replay() {
    a_point_left_in_both_parts_is_set_right_by_its_replay(StoreBackend::Qdrant);
}

/// A worker killed between the two writes of a delete (its tombstone
/// written, the point not yet removed) replays the delete, which changes
/// nothing; the applier still removes the live half.
fn a_point_left_in_both_parts_is_set_right_by_its_replay(backend: StoreBackend) {
    let mut harness = Harness::new(backend);
    let store = harness.open();
    store.ensure_collection("docs", 3, Distance::Dot).unwrap();
    let id = PointId::Num(1);
    apply_batch(store.as_ref(), vec![(id, h(10), upsert(1))]);
    let (tombstone, _) = apply(None, h(20), Change::Delete);
    let (part, vector, payload) = placed(&tombstone.unwrap());
    store
        .upsert("docs", part, vec![(id, vector, payload)])
        .unwrap();
    store.flush().unwrap();
    drop(store);

    let store = harness.open();
    store.ensure_collection("docs", 3, Distance::Dot).unwrap();
    assert_eq!(store.read_held("docs", &[id]).unwrap().split.len(), 1);
    let docs = CollectionConfig {
        dimension: 3,
        distance: Distance::Dot,
        encoding: Encoding::F32,
        codebook_file: None,
        residency: Default::default(),
    };
    let collections = HashMap::from([("docs".to_owned(), docs)]);
    let replayed = DeltaEvent {
        hlc: h(20),
        body: Body::Delete(Delete {
            collection: "docs".into(),
            id,
        }),
    };
    let outcome = Applier::new(store.as_ref(), &collections, &HashMap::new())
        .apply_batch(&[replayed])
        .unwrap();
    assert_eq!(outcome.unchanged, 1, "the replayed delete changes nothing");
    assert_eq!(store.count("docs").unwrap(), 0, "the point is gone");
    let held = store.read_held("docs", &[id]).unwrap();
    assert!(held.split.is_empty());
    assert_eq!(held.records[&id].current().0.state, State::Deleted);
}

/// Whether `r` says the store lost collection `docs`, for `cause`.
fn lost_for(r: Result<(), StoreError>, cause: &str) -> bool {
    matches!(r, Err(StoreError::Lost { collection, message })
        if collection == "docs" && message.contains(cause))
}

/// qdrant-edge panics when its flush meets an I/O error. The store answers
/// an error instead, and goes on answering it: what the engine held since
/// its last flush may be gone, and a later flush that succeeded would not
/// bring it back.
#[test]
fn edge_a_failed_flush_is_an_error_every_later_use_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = EdgeStore::open(dir.path()).unwrap();
    store.ensure_collection("docs", 3, Distance::Dot).unwrap();
    apply_batch(&store, upserts(0..10));
    store.flush().unwrap();
    apply_batch(&store, upserts(10..20));
    // The live shard's segments go, as files do on a failing disk.
    std::fs::remove_dir_all(dir.path().join("docs/segments")).unwrap();

    let lost = |r| lost_for(r, "No such file");
    let failed = store.flush();
    let said = format!("{failed:?}");
    assert!(lost(failed), "{said}");
    assert!(lost(store.flush()), "a second flush");
    let (record, _) = apply(None, h(100), upsert(100));
    let written = store.write("docs", &[(PointId::Num(100), record.unwrap())]);
    assert!(lost(written), "a write");
    let read = store.read("docs", &[PointId::Num(1)]).map(|_| ());
    assert!(lost(read), "a read");
    // Its engine was let go of: closing the store does not flush it again.
    drop(store);
}

/// A write that meets an I/O error leaves qdrant-edge refusing every later
/// write until the shard is loaded again, so the store answers as it does
/// for a failed flush, from the first such error on.
#[test]
fn edge_a_failed_write_is_an_error_every_later_use_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = EdgeStore::open(dir.path())
        .unwrap()
        .with_wal_limits(WalLimits {
            segment_bytes: 64 << 10,
            reclaim_bytes: u64::MAX,
        });
    store.ensure_collection("docs", 3, Distance::Dot).unwrap();
    apply_batch(&store, upserts(0..10));
    store.flush().unwrap();
    // The live shard's log goes, as files do on a failing disk: the
    // engine fails once it moves on to its next log segment.
    std::fs::remove_dir_all(dir.path().join("docs/wal")).unwrap();

    let lost = |r| lost_for(r, "Can't write WAL");
    let mut written = Ok(());
    for from in (100..100_000).step_by(100) {
        let writes: Vec<(PointId, Record)> = upserts(from..from + 100)
            .into_iter()
            .map(|(id, hlc, change)| (id, apply(None, hlc, change).0.unwrap()))
            .collect();
        written = store.write("docs", &writes);
        if written.is_err() {
            break;
        }
    }
    let said = format!("{written:?}");
    assert!(lost(written), "{said}");
    let (record, _) = apply(None, h(10), upsert(1));
    let again = store.write("docs", &[(PointId::Num(1), record.unwrap())]);
    assert!(lost(again), "a second write");
    assert!(lost(store.flush()), "a flush");
    let read = store.read("docs", &[PointId::Num(1)]).map(|_| ());
    assert!(lost(read), "a read");
}
