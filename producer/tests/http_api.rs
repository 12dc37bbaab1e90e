//! The HTTP ingest API against a real broker and registry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use vecsync_devkit::broker::free_port;
use vecsync_devkit::testbed::TestRegion;
use vecsync_devkit::tls::TestCerts;
use vecsync_producer::{Publisher, http, metrics};
use vecsync_schemas::config::{IngestToken, ListenerTls};
use vecsync_schemas::event::{Body, VectorData};
use vecsync_schemas::hlc::Hlc;

const TOKEN: &str = "t0ken";

struct Api {
    region: TestRegion,
    url: String,
    client: reqwest::Client,
}

impl Api {
    async fn start(extra: &str) -> Option<Self> {
        let extra = format!("[ingest]\nbearer_token = \"{TOKEN}\"\n{extra}");
        let region = TestRegion::start(4, "f32", &extra).await?;
        let publisher = Arc::new(Publisher::connect(&region.config).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = http::router(publisher, &region.config.ingest, metrics::prometheus()).unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Some(Self {
            region,
            url,
            client: reqwest::Client::new(),
        })
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

#[tokio::test]
async fn mutations_are_answered_with_versions_after_the_broker_acknowledged_them() {
    let Some(api) = Api::start("").await else {
        return;
    };
    let uuid = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26";
    let body = json!({"points": [
        {"id": 7, "vector": [0.1, 0.2, 0.3, 0.4], "payload": {"lang": "en"}},
        {"id": uuid, "vector": [1.0, 0.0, -1.0, 0.5]}
    ]});
    let (status, answer) = api
        .post("/v1/collections/docs/points", body.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let versions = answer["versions"].as_array().unwrap();
    assert_eq!(versions[0]["id"], 7);
    assert_eq!(versions[1]["id"], uuid);
    let v7 = versions[0]["version"].as_str().unwrap().to_owned();
    let parsed: Hlc = v7.parse().unwrap();
    assert_eq!(parsed.origin, "us-east", "{v7}");
    assert_ne!(parsed.producer, 0, "the version names its producer: {v7}");

    let patch = json!({"points": [{"id": 7, "base_version": v7, "payload": {"lang": "fr"}}]});
    let (status, answer) = api
        .post("/v1/collections/docs/points/payload", patch.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = api
        .post(
            "/v1/collections/docs/points/delete",
            json!({"points": [uuid]}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let deleted_at = answer["versions"][0]["version"]
        .as_str()
        .unwrap()
        .to_owned();

    // Answered means acknowledged: all four events are on the topic.
    let events = api.region.events(4, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 4);
    let by_version = |v: &str| events.iter().find(|e| e.hlc.to_string() == v).unwrap();
    let Body::Upsert(u) = &by_version(&v7).body else {
        panic!()
    };
    let VectorData::Full(vector) = &u.vector else {
        panic!()
    };
    assert_eq!(
        vector.decode(None).unwrap(),
        [0.1, 0.2, 0.3, 0.4],
        "f32 is lossless"
    );
    assert_eq!(u.payload.as_ref().unwrap().to_json().unwrap()["lang"], "en");
    let patched = events.iter().find_map(|e| match &e.body {
        Body::PayloadPatch(p) => Some(p),
        _ => None,
    });
    assert_eq!(patched.unwrap().base_version.to_string(), v7);
    assert!(matches!(&by_version(&deleted_at).body, Body::Delete(d) if d.id.to_string() == uuid));
}

#[tokio::test]
async fn bad_requests_get_a_4xx_that_names_the_problem_and_send_nothing() {
    let Some(api) = Api::start("max_body_bytes = 2048\nmax_points_per_request = 3").await else {
        return;
    };
    let points = "/v1/collections/docs/points";
    let cases: Vec<(&str, &str, String, StatusCode, &str)> = vec![
        (
            "unknown collection",
            "/v1/collections/nope/points",
            json!({"points": [{"id": 1, "vector": [0, 0, 0, 0]}]}).to_string(),
            StatusCode::NOT_FOUND,
            "unknown collection \"nope\"",
        ),
        (
            "wrong dimension",
            points,
            json!({"points": [{"id": 1, "vector": [0, 0, 0, 0]}, {"id": 8, "vector": [1, 2, 3]}]})
                .to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "point 1 (id 8): vector has 3 dimensions; collection docs has 4",
        ),
        (
            "NaN",
            points,
            r#"{"points": [{"id": 1, "vector": [0, NaN, 0, 0]}]}"#.into(),
            StatusCode::BAD_REQUEST,
            "must be finite",
        ),
        (
            "overflows f32",
            points,
            r#"{"points": [{"id": 1, "vector": [0, 1e39, 0, 0]}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "non-finite value inf at dimension 1",
        ),
        (
            "negative id",
            points,
            json!({"points": [{"id": -1, "vector": [0, 0, 0, 0]}]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "point 0: id -1 is neither",
        ),
        (
            "text id",
            "/v1/collections/docs/points/delete",
            json!({"points": [3, "abc"]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "point 1: id \"abc\" is neither",
        ),
        (
            "fractional id",
            points,
            json!({"points": [{"id": 1.5, "vector": [0, 0, 0, 0]}]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "id 1.5 is neither",
        ),
        (
            "no points",
            points,
            json!({"points": []}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "\"points\" is empty",
        ),
        (
            "too many points",
            "/v1/collections/docs/points/delete",
            json!({"points": [1, 2, 3, 4]}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "4 points in one request; the limit is 3",
        ),
        (
            "body too large",
            points,
            format!(
                r#"{{"points": [{{"id": 1, "vector": [0, 0, 0, 0], "payload": {{"x": "{}"}}}}]}}"#,
                "a".repeat(4000)
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "ingest.max_body_bytes is 2048",
        ),
        (
            "bad base version",
            "/v1/collections/docs/points/payload",
            json!({"points": [{"id": 1, "base_version": "yesterday", "payload": {}}]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "point 0 (id 1): version \"yesterday\" is not of the form",
        ),
        (
            "reserved payload key",
            points,
            json!({"points": [{"id": 1, "vector": [0, 0, 0, 0]}, {"id": 8, "vector": [0, 0, 0, 0], "payload": {"_vecsync": {"v": "x"}}}]})
                .to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "point 1 (id 8): the payload key \"_vecsync\" is reserved",
        ),
        (
            "reserved key in a patch",
            "/v1/collections/docs/points/payload",
            json!({"points": [{"id": 3, "base_version": "1795298965179.0@us-east", "payload": {"_vecsync": 1}}]})
                .to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "point 0 (id 3): the payload key \"_vecsync\" is reserved",
        ),
        (
            "not JSON",
            points,
            "{\"points\": [".into(),
            StatusCode::BAD_REQUEST,
            "invalid request body",
        ),
        (
            "unknown field",
            points,
            json!({"points": [{"id": 1, "vector": [0, 0, 0, 0], "paylod": {}}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "unknown field `paylod`",
        ),
    ];
    for (name, path, body, status, message) in cases {
        let (got, answer) = api.post(path, body).await;
        assert_eq!(got, status, "{name}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{name}: {error:?} should say {message:?}"
        );
    }
    for token in [None, Some("wrong")] {
        let mut r = api.client.post(format!("{}{points}", api.url)).body("{}");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "token {token:?}");
    }
    // None of it reached the topic.
    assert!(
        api.region
            .events(1, Duration::from_secs(3))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let Some(mut api) = Api::start("").await else {
        return;
    };
    assert_eq!(api.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(
        api.get("/readyz").await,
        (StatusCode::OK, "ready\n".to_owned())
    );
    let body = json!({"points": [{"id": 1, "vector": [0, 0, 0, 1]}]}).to_string();
    assert_eq!(
        api.post("/v1/collections/docs/points", body).await.0,
        StatusCode::OK
    );
    let (status, text) = api.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        r#"vecsync_ingest_requests_total{route="upsert",status="2xx"} 1"#,
        r#"vecsync_producer_events_total{collection="docs",op="upsert"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    api.region.broker.stop();
    let (status, text) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("broker"), "{text}");
}

/// Over HTTPS, with `[[ingest.tokens]]`: each token writes only its
/// collections (403 naming the token and the collection otherwise), a
/// missing or unknown token is 401, the health check needs none, and a
/// client that does not trust the listener's CA gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_over_https() {
    let notes = "[collections.notes]\ndimension = 4\ndistance = \"cosine\"\nencoding = \"f32\"\n";
    let Some(mut region) = TestRegion::start(4, "f32", notes).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::make(dir.path(), "ingest").unwrap();
    let secret = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path
    };
    let ingest = &mut region.config.ingest;
    ingest.listen = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    ingest.tls = Some(ListenerTls {
        cert_file: certs.cert_file.clone(),
        key_file: certs.key_file.clone(),
    });
    for (name, token, collections) in [
        ("docs-loader", "docs-token-3b9f", vec!["docs".to_owned()]),
        ("admin", "admin-token-7c1e", vec!["*".to_owned()]),
    ] {
        ingest.tokens.push(IngestToken {
            name: name.into(),
            token_env: None,
            token_file: Some(secret(name, token)),
            collections,
        });
    }
    let config = region.config.clone();
    let publisher = Arc::new(Publisher::connect(&config).await.unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        http::serve(publisher, &config.ingest, metrics::prometheus(), async {
            let _ = stopped.await;
        })
        .await
    });
    let url = format!("https://{}", region.config.ingest.listen);
    let client = certs.client().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.get(format!("{url}/healthz")).send().await {
            Ok(r) => {
                assert_eq!(
                    r.status(),
                    StatusCode::OK,
                    "the health check needs no token"
                );
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "never served: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let body = json!({"points": [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}]}).to_string();
    let post = |collection: &str, token: Option<&str>| {
        let mut request = client
            .post(format!("{url}/v1/collections/{collection}/points"))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    for (collection, token, status, says) in [
        ("docs", Some("docs-token-3b9f"), StatusCode::OK, "versions"),
        (
            "notes",
            Some("docs-token-3b9f"),
            StatusCode::FORBIDDEN,
            r#"token \"docs-loader\" may not write collection \"notes\""#,
        ),
        (
            "notes",
            Some("admin-token-7c1e"),
            StatusCode::OK,
            "versions",
        ),
        ("docs", Some("admin-token-7c1e"), StatusCode::OK, "versions"),
        (
            "docs",
            Some("guessed"),
            StatusCode::UNAUTHORIZED,
            "not valid",
        ),
        ("docs", None, StatusCode::UNAUTHORIZED, "Bearer"),
    ] {
        let (got, text) = post(collection, token).await;
        assert_eq!(got, status, "{collection} with {token:?}: {text}");
        assert!(text.contains(says), "{collection} with {token:?}: {text}");
        for secret in ["docs-token-3b9f", "admin-token-7c1e"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
    // Only the three accepted writes reached the topic.
    let events = region.events(4, Duration::from_secs(3)).await;
    assert_eq!(events.len(), 3);

    // Plain HTTP, and a client without the CA, get no answer.
    let plain = format!("http://{}/healthz", region.config.ingest.listen);
    assert!(client.get(plain).send().await.is_err());
    let untrusting = reqwest::Client::new();
    let err = untrusting
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("certificate"), "{err:?}");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
