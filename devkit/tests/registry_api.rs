//! The development registry through real HTTP clients: vecsync's own
//! registry client (schema_registry_converter) and plain REST calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use vecsync_devkit::registry::DevRegistry;
use vecsync_schemas::avro::{AvroRecord, DELTA_EVENT_SCHEMA};
use vecsync_schemas::event::{Body, DeltaEvent, VectorData};
use vecsync_schemas::registry::{RegistryClient, value_subject};
use vecsync_schemas::testing::sample_events;
use vecsync_schemas::wire::{Decoder, Encoder, put_header};

const CT: &str = "application/vnd.schemaregistry.v1+json";

fn client(url: &str) -> Arc<RegistryClient> {
    Arc::new(RegistryClient::new(url, Duration::from_secs(5)).unwrap())
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .header("content-type", CT);
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null),
    )
}

/// The delta schema with one field of the Vector record removed: a stand-in
/// for an older published version.
fn schema_without_codebook_id() -> String {
    let mut schema: Value = serde_json::from_str(DELTA_EVENT_SCHEMA).unwrap();
    let vector = &mut schema["fields"][4]["type"][1];
    assert_eq!(vector["name"], "Vector");
    let fields = vector["fields"].as_array_mut().unwrap();
    fields.retain(|f| f["name"] != "codebook_id");
    schema.to_string()
}

#[tokio::test]
async fn registered_events_round_trip_through_the_wire_format() {
    let running = DevRegistry::in_memory().spawn("127.0.0.1:0").await.unwrap();
    let registry = client(&running.url());
    let subject = value_subject("roundtrip.deltas");
    let encoder = Encoder::<DeltaEvent>::register(&registry, &subject)
        .await
        .unwrap();
    let decoder = Decoder::<DeltaEvent>::new(registry.clone());
    for event in sample_events() {
        let bytes = encoder.encode(&event);
        assert_eq!(bytes[0], 0);
        assert_eq!(
            u32::from_be_bytes(bytes[1..5].try_into().unwrap()),
            encoder.schema_id()
        );
        assert_eq!(decoder.decode(&bytes).await.unwrap(), event);
    }
    // Registering the same schema again gives the same id.
    let again = Encoder::<DeltaEvent>::register(&registry, &subject)
        .await
        .unwrap();
    assert_eq!(again.schema_id(), encoder.schema_id());
    running.stop().await;
}

#[tokio::test]
async fn an_incompatible_schema_is_refused_with_409_under_backward() {
    let running = DevRegistry::in_memory().spawn("127.0.0.1:0").await.unwrap();
    let subject = value_subject("compat.deltas");
    let registry = client(&running.url());
    Encoder::<DeltaEvent>::register(&registry, &subject)
        .await
        .unwrap();

    // A new required field without a default cannot read old events.
    let mut incompatible: Value = serde_json::from_str(DELTA_EVENT_SCHEMA).unwrap();
    incompatible["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "tenant", "type": "string"}));
    let url = format!("{}/subjects/{subject}/versions", running.url());
    let (status, body) = call(
        reqwest::Method::POST,
        url,
        Some(json!({"schema": incompatible.to_string()})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error_code"], 409);
    assert!(
        body["message"].as_str().unwrap().contains("incompatible"),
        "{body}"
    );

    // The same refusal through vecsync's client is an error, and not a retriable one.
    let err = registry
        .register(&subject, &incompatible.to_string())
        .await
        .unwrap_err();
    assert!(!err.is_retriable(), "{err}");

    // With a default, the field is a compatible change.
    let mut compatible = incompatible.clone();
    let fields = compatible["fields"].as_array_mut().unwrap();
    fields.last_mut().unwrap()["default"] = json!("");
    let id = registry
        .register(&subject, &compatible.to_string())
        .await
        .unwrap();
    assert_eq!(id, 2);
    running.stop().await;
}

#[tokio::test]
async fn events_written_with_an_older_schema_decode_with_the_current_one() {
    let running = DevRegistry::in_memory().spawn("127.0.0.1:0").await.unwrap();
    let registry = client(&running.url());
    let subject = value_subject("evolve.deltas");
    let old_schema = schema_without_codebook_id();
    let old_id = registry.register(&subject, &old_schema).await.unwrap();

    // Write an event with the old schema, as an old producer would.
    let event = &sample_events()[0];
    let mut current = Vec::new();
    event.write_avro(&mut current);
    let reader = apache_avro::Schema::parse_str(DELTA_EVENT_SCHEMA).unwrap();
    let old = apache_avro::Schema::parse_str(&old_schema).unwrap();
    #[allow(deprecated)]
    let old_body = {
        let value = apache_avro::from_avro_datum(&reader, &mut &current[..], None).unwrap();
        let value = strip_codebook_id(value);
        apache_avro::to_avro_datum(&old, value).unwrap()
    };
    let mut framed = Vec::new();
    put_header(&mut framed, old_id);
    framed.extend_from_slice(&old_body);

    // The new encoder gets its own id, not the subject's cached old one.
    let encoder = Encoder::<DeltaEvent>::register(&registry, &subject)
        .await
        .unwrap();
    assert_ne!(encoder.schema_id(), old_id);

    let decoded = Decoder::<DeltaEvent>::new(registry)
        .decode(&framed)
        .await
        .unwrap();
    assert_eq!(&decoded, event);
    let Body::Upsert(u) = decoded.body else {
        panic!("not an upsert")
    };
    let VectorData::Full(v) = u.vector else {
        panic!("not a full vector")
    };
    assert_eq!(v.codebook_id, None);
    running.stop().await;
}

/// The contract's own evolution: v1 as published, then the current schema,
/// under BACKWARD. Events an old producer wrote with v1 decode with producer
/// 0; the current producer's ids survive the trip.
#[tokio::test]
async fn the_published_v1_then_the_current_schema_register_under_backward() {
    const V1: &str = include_str!("../../schemas/avro/delta-event.v1.avsc");
    let running = DevRegistry::in_memory().spawn("127.0.0.1:0").await.unwrap();
    let registry = client(&running.url());
    let subject = value_subject("contract.deltas");
    let (status, body) = call(
        reqwest::Method::PUT,
        format!("{}/config/{subject}", running.url()),
        Some(json!({"compatibility": "BACKWARD"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v1_id = registry.register(&subject, V1).await.unwrap();
    let encoder = Encoder::<DeltaEvent>::register(&registry, &subject)
        .await
        .unwrap();
    assert_ne!(encoder.schema_id(), v1_id);

    let decoder = Decoder::<DeltaEvent>::new(registry);
    let (v1, current) = (
        apache_avro::Schema::parse_str(V1).unwrap(),
        apache_avro::Schema::parse_str(DELTA_EVENT_SCHEMA).unwrap(),
    );
    for event in sample_events() {
        let mut body = Vec::new();
        event.write_avro(&mut body);
        #[allow(deprecated)]
        let v1_body = {
            let value = apache_avro::from_avro_datum(&current, &mut &body[..], Some(&v1)).unwrap();
            apache_avro::to_avro_datum(&v1, value).unwrap()
        };
        let mut framed = Vec::new();
        put_header(&mut framed, v1_id);
        framed.extend_from_slice(&v1_body);
        let old = decoder.decode(&framed).await.unwrap();
        assert_eq!(old.hlc.producer, 0);
        assert_eq!(
            (old.hlc.wall_ms, &old.hlc.origin),
            (event.hlc.wall_ms, &event.hlc.origin)
        );
        assert_eq!(
            decoder.decode(&encoder.encode(&event)).await.unwrap(),
            event
        );
    }
    running.stop().await;
}

/// Drops the `codebook_id` field from every Vector record in a value.
fn strip_codebook_id(value: apache_avro::types::Value) -> apache_avro::types::Value {
    use apache_avro::types::Value as V;
    match value {
        V::Record(fields) => V::Record(
            fields
                .into_iter()
                .filter(|(name, _)| name != "codebook_id")
                .map(|(n, v)| (n, strip_codebook_id(v)))
                .collect(),
        ),
        V::Union(i, inner) => V::Union(i, Box::new(strip_codebook_id(*inner))),
        other => other,
    }
}

#[tokio::test]
async fn unknown_ids_and_an_unreachable_registry_are_told_apart() {
    let running = DevRegistry::in_memory().spawn("127.0.0.1:0").await.unwrap();
    let url = running.url();
    let decoder = Decoder::<DeltaEvent>::new(client(&url));
    let mut framed = Vec::new();
    put_header(&mut framed, 99);
    framed.push(0);
    let err = decoder.decode(&framed).await.unwrap_err();
    assert!(!err.is_retriable(), "unknown id is permanent: {err}");
    assert_eq!(err.reason_label(), "unknown_schema");
    running.stop().await;

    let decoder = Decoder::<DeltaEvent>::new(client(&url));
    let err = decoder.decode(&framed).await.unwrap_err();
    assert!(err.is_retriable(), "outage is retriable: {err}");
    assert_eq!(err.reason_label(), "registry");
}

#[tokio::test]
async fn rest_api_answers_like_confluent() {
    let running = DevRegistry::in_memory().spawn("127.0.0.1:0").await.unwrap();
    let base = running.url();
    use reqwest::Method as M;
    let schema =
        json!({"schema": r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#});
    let v2 = json!({"schema": r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"int","default":1}]}"#});

    let steps = [
        (
            M::POST,
            "/subjects/s/versions",
            Some(schema.clone()),
            json!({"id": 1}),
        ),
        (
            M::POST,
            "/subjects/s/versions",
            Some(v2.clone()),
            json!({"id": 2}),
        ),
        (M::GET, "/subjects", None, json!(["s"])),
        (M::GET, "/subjects/s/versions", None, json!([1, 2])),
    ];
    for (method, path, body, want) in steps {
        assert_eq!(
            call(method, format!("{base}{path}"), body).await,
            (200, want),
            "{path}"
        );
    }
    let (status, latest) = call(M::GET, format!("{base}/subjects/s/versions/latest"), None).await;
    assert_eq!(
        (status, &latest["version"], &latest["id"]),
        (200, &json!(2), &json!(2))
    );
    let (status, by_id) = call(M::GET, format!("{base}/schemas/ids/1"), None).await;
    assert_eq!(status, 200);
    assert_eq!(by_id["schema"], schema["schema"]);
    let (_, lookup) = call(M::POST, format!("{base}/subjects/s"), Some(schema.clone())).await;
    assert_eq!(lookup["version"], 1);

    let breaking =
        json!({"schema": r#"{"type":"record","name":"R","fields":[{"name":"c","type":"int"}]}"#});
    let (_, compat) = call(
        M::POST,
        format!("{base}/compatibility/subjects/s/versions/latest?verbose=true"),
        Some(breaking.clone()),
    )
    .await;
    assert_eq!(compat["is_compatible"], false);
    assert!(!compat["messages"].as_array().unwrap().is_empty());

    let steps = [
        (
            M::POST,
            "/compatibility/subjects/s/versions/1",
            Some(v2.clone()),
            json!({"is_compatible": true}),
        ),
        (
            M::GET,
            "/config",
            None,
            json!({"compatibilityLevel": "BACKWARD"}),
        ),
        (
            M::PUT,
            "/config/s",
            Some(json!({"compatibility": "NONE"})),
            json!({"compatibility": "NONE"}),
        ),
        (
            M::GET,
            "/config/s",
            None,
            json!({"compatibilityLevel": "NONE"}),
        ),
        // Under NONE the breaking schema registers.
        (
            M::POST,
            "/subjects/s/versions",
            Some(breaking),
            json!({"id": 3}),
        ),
        (
            M::PUT,
            "/config",
            Some(json!({"compatibility": "FULL_TRANSITIVE"})),
            json!({"compatibility": "FULL_TRANSITIVE"}),
        ),
        (
            M::GET,
            "/config/other?defaultToGlobal=true",
            None,
            json!({"compatibilityLevel": "FULL_TRANSITIVE"}),
        ),
    ];
    for (method, path, body, want) in steps {
        assert_eq!(
            call(method, format!("{base}{path}"), body).await,
            (200, want),
            "{path}"
        );
    }

    // Errors carry Confluent's codes.
    let errors = [
        (M::GET, "/subjects/missing/versions", None, 404, 40401),
        (M::GET, "/subjects/s/versions/9", None, 404, 40402),
        (M::GET, "/subjects/s/versions/zero", None, 422, 42202),
        (M::GET, "/schemas/ids/42", None, 404, 40403),
        (M::GET, "/config/other", None, 404, 40408),
        (
            M::PUT,
            "/config",
            Some(json!({"compatibility": "SIDEWAYS"})),
            422,
            42203,
        ),
        (
            M::POST,
            "/subjects/s/versions",
            Some(json!({"schema": "{nope"})),
            422,
            42201,
        ),
        (
            M::POST,
            "/subjects/s/versions",
            Some(json!({"schema": "\"int\"", "schemaType": "PROTOBUF"})),
            422,
            42201,
        ),
        (
            M::POST,
            "/subjects/s/versions",
            Some(json!({"wrong": 1})),
            422,
            422,
        ),
    ];
    for (method, path, body, status, code) in errors {
        let (got, body) = call(method, format!("{base}{path}"), body).await;
        assert_eq!(
            (got, &body["error_code"]),
            (status, &json!(code)),
            "{path}: {body}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    running.stop().await;
}

#[tokio::test]
async fn ids_survive_a_restart_with_a_data_file() {
    let dir = std::env::temp_dir().join(format!("vecsync-registry-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("registry.json");
    let _ = std::fs::remove_file(&path);
    let subject = value_subject("restart.deltas");

    let running = DevRegistry::open(&path)
        .unwrap()
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
    let registry = client(&running.url());
    registry
        .register("filler-value", r#""string""#)
        .await
        .unwrap();
    let first = Encoder::<DeltaEvent>::register(&registry, &subject)
        .await
        .unwrap();
    let bytes = first.encode(&sample_events()[3]);
    running.stop().await;

    let running = DevRegistry::open(&path)
        .unwrap()
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
    let registry = client(&running.url());
    let decoded = Decoder::<DeltaEvent>::new(registry.clone())
        .decode(&bytes)
        .await
        .unwrap();
    assert_eq!(decoded, sample_events()[3]);
    let again = Encoder::<DeltaEvent>::register(&registry, &subject)
        .await
        .unwrap();
    assert_eq!(again.schema_id(), first.schema_id());
    running.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
