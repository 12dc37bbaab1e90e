//! The worker's search (`POST /v1/collections/{collection}/points/search`)
//! on a running region, with each store backend: answers fresh at once,
//! fresh after waiting for a write made after the search was asked, and
//! stale once the wait runs out; hits equal the store's own answer to the
//! same query, filter included; bad requests get a 4xx that says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::sync::Arc;
use vecsync_consumer::api::{StoreAccess, store_routes};
use vecsync_consumer::apply::unit;
use vecsync_consumer::search::{ScoredPoint, SearchBody};
use vecsync_consumer::store::{self, Search, Store, StoreError};
use vecsync_consumer::worker;
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::StoreBackend;
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::testing::vector;

const DIM: usize = 8;

fn point(i: u64) -> Mutation {
    Mutation::Upsert {
        id: PointId::Num(i),
        vector: vector(DIM, i),
        payload: json!({"lang": if i.is_multiple_of(3) { "de" } else { "en" }, "n": i})
            .as_object()
            .cloned(),
    }
}

/// A version `ms` milliseconds from now, as if written by `origin`.
fn version_in(ms: u64, origin: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Hlc::new(now + ms, 0, origin).to_string()
}

struct Answer {
    status: u16,
    stale: Option<String>,
    watermark: Option<String>,
    body: String,
}

impl Answer {
    fn hits(&self) -> Vec<ScoredPoint> {
        let body: Value = serde_json::from_str(&self.body).unwrap();
        serde_json::from_value(body["result"].clone()).unwrap()
    }
}

async fn ask(url: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().post(url).json(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let answer = request.send().await.unwrap();
    let header = |name: &str| {
        answer
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Answer {
        status: answer.status().as_u16(),
        stale: header("stale-result"),
        watermark: header("applied-watermark"),
        body: answer.text().await.unwrap(),
    }
}

/// The store's own answer to the search `body` asks.
async fn direct(store: &Arc<dyn Store>, body: &Value) -> Result<Vec<ScoredPoint>, StoreError> {
    let body: SearchBody = serde_json::from_value(body.clone()).unwrap();
    let search = Search {
        vector: unit(body.vector),
        limit: body.limit,
        with_payload: body.with_payload,
        filter: body.filter,
    };
    let store = store.clone();
    let hits = tokio::task::spawn_blocking(move || store.search_points("docs", &search))
        .await
        .unwrap()?;
    Ok(hits.into_iter().map(ScoredPoint::from).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_answers_fresh_or_says_stale_in_an_embedded_store() {
    search_answers_fresh_or_says_stale(StoreBackend::Edge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_answers_fresh_or_says_stale_in_a_qdrant_server() {
    search_answers_fresh_or_says_stale(StoreBackend::Qdrant).await;
}

async fn search_answers_fresh_or_says_stale(backend: StoreBackend) {
    let extra = "[producer]\nheartbeat_interval_ms = 100";
    let Some(mut region) = TestRegion::start(DIM as u32, "f32", extra).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    region.config.store.path = dir.path().join("store");
    let endpoint = match backend {
        StoreBackend::Qdrant => Some(
            region
                .serve_qdrant(&dir.path().join("qdrant"))
                .await
                .unwrap(),
        ),
        StoreBackend::Edge => None,
    };
    let config = region.config.clone();
    let publisher = Publisher::connect(&config).await.unwrap();
    let store = store::open(&config.store).unwrap();
    let running = worker::spawn(config.clone(), store.clone());
    let access = StoreAccess {
        store: store.clone(),
        config: Arc::new(config.clone()),
        watermarks: running.watermarks().clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, store_routes(access)).await });
    let url = format!("{base}/v1/collections/docs/points/search");

    let points: Vec<Mutation> = (0..300).map(point).collect();
    let versions = publisher.publish("docs", &points).await.unwrap();
    let last = versions.last().unwrap().to_string();
    let query = json!({"vector": vector(DIM, 7), "limit": 20, "with_payload": true});

    // Read-your-writes: waits until the last write is applied.
    let answer = ask(&url, &query, &[("x-required-version", &last)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.stale.as_deref(), Some("false"));
    let watermark = answer.watermark.clone().unwrap();
    assert!(watermark.starts_with("us-east="), "{watermark}");
    let mark: Hlc = watermark["us-east=".len()..].parse().unwrap();
    assert!(mark > versions.last().unwrap().clone(), "{mark} {last}");
    let hits = answer.hits();
    assert_eq!(hits.len(), 20);
    assert_eq!(hits, direct(&store, &query).await.unwrap());
    assert_eq!(hits[0].id, json!(7), "the query's own point is nearest");
    assert!(hits.iter().all(|h| {
        let p = h.payload.as_ref().unwrap();
        p.contains_key("lang") && !p.keys().any(|k| k.starts_with("_vecsync"))
    }));

    // Fresh at once, with a filter: the same hits as the store's.
    let filtered = json!({"vector": vector(DIM, 7), "limit": 300, "with_payload": true, "filter": {
        "must": [{"key": "lang", "match": {"value": "de"}}, {"key": "n", "range": {"gte": 30, "lt": 240}}],
        "should": [{"key": "n", "match": {"any": [33, 36, 39, 150, 151]}}, {"key": "n", "range": {"gt": 200}}],
        "must_not": [{"key": "n", "match": {"value": 36}}]
    }});
    let answer = ask(&url, &filtered, &[("x-required-freshness", "10s")]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.stale.as_deref(), Some("false"));
    let hits = answer.hits();
    let mut ids: Vec<u64> = hits.iter().map(|h| h.id.as_u64().unwrap()).collect();
    ids.sort_unstable();
    // de: multiples of 3; 30 ≤ n < 240; 33, 39 or 150, or above 200; not 36.
    let expected: Vec<u64> = (30..240)
        .filter(|&n: &u64| n.is_multiple_of(3) && (matches!(n, 33 | 39 | 150) || n > 200))
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(hits, direct(&store, &filtered).await.unwrap());

    // Fresh after waiting: asked for a version two seconds ahead, before the
    // write below exists, the answer comes once the watermark passes it,
    // and so holds that write.
    let ahead = version_in(2_000, "us-east");
    let late = json!({"vector": vector(DIM, 999), "limit": 1, "with_payload": true});
    let waiting = tokio::spawn({
        let (url, late) = (url.clone(), late.clone());
        async move { ask(&url, &late, &[("x-required-version", &ahead)]).await }
    });
    publisher.publish("docs", &[point(999)]).await.unwrap();
    let answer = waiting.await.unwrap();
    assert_eq!(answer.stale.as_deref(), Some("false"), "{}", answer.body);
    assert_eq!(answer.hits()[0].id, json!(999));

    // Stale after the deadline: a version an hour ahead is not applied
    // within 300 ms; the answer says so and still has the hits.
    let far = version_in(3_600_000, "us-east");
    let answer = ask(
        &format!("{url}?wait_ms=300"),
        &query,
        &[("x-required-version", &far)],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.stale.as_deref(), Some("true"));
    assert_eq!(answer.hits().len(), 20);

    // Bad requests say what is wrong.
    for (body, headers, status, says) in [
        (json!({"vector": [1.0]}), vec![], 400, "dimensions"),
        (
            query.clone(),
            vec![("x-required-freshness", "soon")],
            400,
            "X-Required-Freshness",
        ),
        (
            query.clone(),
            vec![("x-required-version", "v1")],
            400,
            "X-Required-Version",
        ),
        (
            json!({"vector": vector(DIM, 1), "filter": {"must": [{"key": "n"}]}}),
            vec![],
            400,
            "match or range",
        ),
    ] {
        let answer = ask(&url, &body, &headers).await;
        assert_eq!(answer.status, status, "{body} {headers:?}: {}", answer.body);
        assert!(answer.body.contains(says), "{}", answer.body);
    }
    let answer = ask(
        &format!("{base}/v1/collections/nope/points/search"),
        &query,
        &[],
    )
    .await;
    assert_eq!(answer.status, 404);
    assert!(answer.body.contains("nope"), "{}", answer.body);

    server.abort();
    let _ = server.await;
    running.stop().await.unwrap();
    drop(store);
    if let Some(endpoint) = endpoint {
        endpoint.stop().await;
    }
}
