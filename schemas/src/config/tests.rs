use super::*;

const MINIMAL: &str = r#"
    region = "us-east"
    [kafka]
    brokers = "127.0.0.1:19092"
    [registry]
    url = "http://127.0.0.1:8081"
    [collections.docs]
    dimension = 384
    distance = "cosine"
"#;

/// The fields an `Invalid` error names, in order.
fn problem_fields(err: &ConfigError) -> Vec<&str> {
    let ConfigError::Invalid { problems, .. } = err else {
        panic!("{err}")
    };
    problems
        .iter()
        .map(|p| p.split(':').next().unwrap())
        .collect()
}

fn parse(text: &str, env: &[(&str, &str)]) -> Result<RegionConfig, ConfigError> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    RegionConfig::parse(text, "test.toml", env)
}

#[test]
fn defaults_fill_what_the_file_leaves_out() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.kafka.topic, "vecsync.deltas");
    assert_eq!(c.kafka.partitions, 3);
    assert_eq!(c.collections["docs"].encoding, Encoding::Sq8);
    assert_eq!(c.producer.compression, "lz4");
    assert_eq!(c.ingest.listen.port(), 8080);
    assert!(c.ingest.bearer_token.is_none());
}

#[test]
fn environment_overrides_the_file() {
    let c = parse(
        MINIMAL,
        &[
            ("VECSYNC__KAFKA__BROKERS", "10.0.0.1:9092"),
            ("VECSYNC__KAFKA__PARTITIONS", "12"),
            ("VECSYNC__INGEST__BEARER_TOKEN", "s3cret"),
            ("VECSYNC__COLLECTIONS__DOCS__ENCODING", "f16"),
            ("VECSYNC__REGION", "'7'"),
            ("UNRELATED", "x"),
        ],
    )
    .unwrap();
    assert_eq!(c.kafka.brokers, "10.0.0.1:9092");
    assert_eq!(c.kafka.partitions, 12);
    assert_eq!(c.ingest.bearer_token.as_deref(), Some("s3cret"));
    assert_eq!(c.collections["docs"].encoding, Encoding::F16);
    assert_eq!(c.region, "7");
    assert!(
        !format!("{:?}", c.ingest).contains("s3cret"),
        "the token must not be printed"
    );
}

#[test]
fn every_problem_is_reported_at_once_naming_its_field() {
    let text = MINIMAL
        .replace("us-east", "us east")
        .replace("384", "0")
        .replace("[kafka]", "[kafka]\npartitions = 0");
    let err = parse(&text, &[("VECSYNC__PRODUCER__RATE_LIMIT_BURST", "5")]).unwrap_err();
    let fields = problem_fields(&err);
    assert_eq!(
        fields,
        [
            "region",
            "kafka.partitions",
            "producer.rate_limit_burst",
            "collections.docs.dimension"
        ]
    );
}

#[test]
fn shape_errors_name_the_field_and_the_override() {
    let err = parse(&MINIMAL.replace("[kafka]", "[kafka]\npartitons = 3"), &[]).unwrap_err();
    assert!(
        err.to_string().contains("unknown field `partitons`"),
        "{err}"
    );
    let err = parse(MINIMAL, &[("VECSYNC__KAFKA__PARTITIONS", "many")]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("VECSYNC__KAFKA__PARTITIONS") && msg.contains("partitions"),
        "{msg}"
    );
    let err = parse(MINIMAL, &[("VECSYNC__COLLECTIONS__DOCS__ENCODING", "sq3")]).unwrap_err();
    assert!(err.to_string().contains("sq3"), "{err}");
    let err = parse(MINIMAL, &[("VECSYNC__REGION__X", "1")]).unwrap_err();
    assert!(matches!(err, ConfigError::Env { ref var, .. } if var == "VECSYNC__REGION__X"));
    let err = parse("region = ", &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
}

#[test]
fn pq_needs_a_codebook_and_only_pq_takes_one() {
    let err = parse(MINIMAL, &[("VECSYNC__COLLECTIONS__DOCS__ENCODING", "pq")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("collections.docs.codebook_file: pq encoding needs")
    );
    let err = parse(
        MINIMAL,
        &[("VECSYNC__COLLECTIONS__DOCS__CODEBOOK_FILE", "cb.avro")],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("only pq encoding uses a codebook"),
        "{err}"
    );
}

#[test]
fn the_shipped_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/local");
    for (file, port) in [("us-east.toml", 19092), ("eu-west.toml", 29092)] {
        let c = RegionConfig::load(&dir.join(file)).unwrap();
        assert_eq!(c.kafka.brokers, format!("127.0.0.1:{port}"));
        assert_eq!(c.collections["docs"].dimension, 384);
        let other = c
            .sources()
            .into_iter()
            .find(|s| s.region != c.region)
            .unwrap();
        let other_port = if port == 19092 { 29092 } else { 19092 };
        assert_eq!(other.brokers, Some(format!("127.0.0.1:{other_port}")));
    }
}

#[test]
fn a_source_replicates_the_collections_it_includes_or_does_not_exclude() {
    let source = |extra: &str| {
        let text = format!(
            "{MINIMAL}\n[collections.images]\ndimension = 8\ndistance = \"dot\"\n\
             [[consumer.sources]]\nregion = \"eu-west\"\ntopic = \"eu-west.vecsync.deltas\"\n{extra}"
        );
        parse(&text, &[]).map(|c| c.consumer.sources[0].clone())
    };
    let all = source("").unwrap();
    assert!(all.replicates("docs") && all.replicates("anything"));

    let only = source("collections = [\"docs\"]").unwrap();
    assert!(only.replicates("docs"));
    assert!(!only.replicates("images") && !only.replicates("unknown"));

    let but = source("exclude_collections = [\"images\"]").unwrap();
    assert!(but.replicates("docs") && !but.replicates("images"));

    let both = source("collections = [\"docs\"]\nexclude_collections = [\"images\"]").unwrap_err();
    assert_eq!(
        problem_fields(&both),
        ["consumer.sources[0].exclude_collections"]
    );
    let unknown = source("collections = [\"docs\", \"nope\"]").unwrap_err();
    assert_eq!(
        problem_fields(&unknown),
        ["consumer.sources[0].collections"]
    );
    assert!(unknown.to_string().contains("\"nope\""), "{unknown}");
}

#[test]
fn a_local_collection_has_topics_no_mirror_matches_and_a_source_of_its_own() {
    let global = parse(MINIMAL, &[]).unwrap();
    assert!(!global.has_local_collections());
    assert_eq!(global.sources().len(), 1, "no local topic to read");

    let text = format!(
        "{MINIMAL}\n[collections.private]\ndimension = 8\ndistance = \"dot\"\nresidency = \"local\"\n"
    );
    let c = parse(&text, &[]).unwrap();
    assert_eq!(
        c.topics_of(&c.collections["private"]),
        (
            "vecsync.deltas.local".into(),
            "vecsync.codebooks.local".into()
        )
    );
    assert_eq!(
        c.topics_of(&c.collections["docs"]),
        ("vecsync.deltas".into(), "vecsync.codebooks".into())
    );
    let topics: Vec<(String, String)> = c
        .sources()
        .into_iter()
        .map(|s| (s.region, s.topic))
        .collect();
    assert_eq!(
        topics,
        [
            ("us-east".into(), "vecsync.deltas".into()),
            ("us-east".into(), "vecsync.deltas.local".into())
        ]
    );

    let clash = parse(&text, &[("VECSYNC__KAFKA__LOCAL_TOPIC", "vecsync.deltas")]).unwrap_err();
    assert_eq!(problem_fields(&clash), ["kafka.local_topic"]);
}

#[test]
fn a_region_replays_its_own_topic_and_the_sources_it_names() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.group_id(), "vecsync-us-east");
    let own = c.sources();
    assert_eq!(own.len(), 1);
    assert_eq!(
        (own[0].region.as_str(), own[0].topic.as_str()),
        ("us-east", "vecsync.deltas")
    );
    assert_eq!(own[0].brokers.as_deref(), Some("127.0.0.1:19092"));

    let text = format!(
        "{MINIMAL}\n[[consumer.sources]]\nregion = \"eu-west\"\ntopic = \"eu-west.vecsync.deltas\"\n"
    );
    let sources = parse(&text, &[]).unwrap().sources();
    assert_eq!(sources.len(), 2, "its own topic is added: {sources:?}");
    assert_eq!(
        sources[1].brokers.as_deref(),
        Some("127.0.0.1:19092"),
        "a mirror on the local cluster"
    );
    assert_eq!(sources[1].codebook_topic, "vecsync.codebooks");

    let bad = text.replace("eu-west.vecsync.deltas", "no spaces allowed");
    let err = parse(&bad, &[]).unwrap_err();
    assert!(
        err.to_string().contains("consumer.sources[0].topic"),
        "{err}"
    );
}

#[test]
fn a_qdrant_server_store_is_checked_and_its_key_kept_secret() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.store.backend, StoreBackend::Edge);
    let c = parse(
        MINIMAL,
        &[
            ("VECSYNC__STORE__BACKEND", "qdrant"),
            (
                "VECSYNC__STORE__URL",
                "https://qdrant.eu-west.internal:6334",
            ),
            ("VECSYNC__STORE__API_KEY", "k3y"),
        ],
    )
    .unwrap();
    assert_eq!(c.store.backend, StoreBackend::Qdrant);
    assert!(
        !format!("{c:?}").contains("k3y"),
        "the key must not be printed"
    );
    let err = parse(
        MINIMAL,
        &[
            ("VECSYNC__STORE__BACKEND", "qdrant"),
            ("VECSYNC__STORE__URL", "qdrant:6334"),
            ("VECSYNC__STORE__API_KEY", " "),
            ("VECSYNC__STORE__TIMEOUT_MS", "0"),
            ("VECSYNC__STORE__CA_FILE", "ca.pem"),
        ],
    )
    .unwrap_err();
    let fields = problem_fields(&err);
    assert_eq!(
        fields,
        [
            "store.url",
            "store.timeout_ms",
            "store.api_key",
            "store.ca_file"
        ]
    );
    let err = parse(MINIMAL, &[("VECSYNC__STORE__BACKEND", "milvus")]).unwrap_err();
    assert!(err.to_string().contains("milvus"), "{err}");
    assert_eq!(parse(MINIMAL, &[]).unwrap().store.wal_max_mb, 512);
    let err = parse(MINIMAL, &[("VECSYNC__STORE__WAL_MAX_MB", "0")]).unwrap_err();
    assert_eq!(problem_fields(&err), ["store.wal_max_mb"]);
}

#[test]
fn lag_groups_and_mirrors_are_checked() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.lag.interval_ms, 5_000);
    assert!(c.lag.groups.is_empty() && c.lag.mirrors.is_empty());
    let text = format!(
        "{MINIMAL}
        [lag]
        interval_ms = 0
        [[lag.groups]]
        group = \"analytics\"
        topics = []
        brokers = \"10.0.0.1:9092\"
        [[lag.mirrors]]
        alias = \"eu west\"
        brokers = \"10.0.0.2:9092\"
        topic = \"a/b\"
        "
    );
    let err = parse(&text, &[]).unwrap_err();
    assert_eq!(
        problem_fields(&err),
        [
            "lag.interval_ms",
            "lag.groups[0].topics",
            "lag.groups[0].cluster",
            "lag.mirrors[0].alias",
            "lag.mirrors[0].topic"
        ]
    );
}

/// Dotted paths of every value in a table; arrays of tables as `name[]`.
fn paths(table: &toml::Table, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(t) => paths(t, &path, out),
            toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                for item in items.iter().filter_map(toml::Value::as_table) {
                    paths(item, &format!("{path}[]"), out);
                }
            }
            _ => {
                out.insert(path);
            }
        }
    }
}

#[test]
fn the_reference_config_names_every_field() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/reference.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = RegionConfig::parse(&text, "reference.toml", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut written = std::collections::BTreeSet::new();
    paths(&text.parse().unwrap(), "", &mut written);
    // What the structs serialize: every field, Option ones included since
    // the reference sets them all.
    let mut fields = std::collections::BTreeSet::new();
    paths(&toml::Table::try_from(&config).unwrap(), "", &mut fields);
    let missing: Vec<&String> = fields.difference(&written).collect();
    assert!(
        missing.is_empty(),
        "examples/reference.toml lacks {missing:?}"
    );
}

#[test]
fn the_vector_datatype_is_read_and_checked() {
    assert_eq!(
        parse(MINIMAL, &[]).unwrap().store.vector_datatype,
        VectorDatatype::Float32
    );
    let half = [("VECSYNC__STORE__VECTOR_DATATYPE", "float16")];
    assert_eq!(
        parse(MINIMAL, &half).unwrap().store.vector_datatype,
        VectorDatatype::Float16
    );
    let err = parse(MINIMAL, &[("VECSYNC__STORE__VECTOR_DATATYPE", "float8")]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("VECSYNC__STORE__VECTOR_DATATYPE") && msg.contains("float8"),
        "{msg}"
    );
}

#[test]
fn server_collection_settings_are_read_and_checked() {
    let text = format!(
        "{MINIMAL}
    [store.collections.docs]
    shard_number = 4
    replication_factor = 3
    on_disk = true
    hnsw_m = 32
    quantization = \"binary\"
"
    );
    let c = parse(&text, &[]).unwrap();
    let docs = &c.store.collections["docs"];
    assert_eq!(
        (docs.shard_number, docs.replication_factor, docs.on_disk),
        (Some(4), Some(3), Some(true))
    );
    assert_eq!(docs.quantization, Some(ServerQuantization::Binary));
    assert_eq!(docs.write_consistency_factor, None);

    let bad = format!(
        "{text}    write_consistency_factor = 2
    hnsw_ef_construct = 0
    [store.collections.doc]
"
    );
    let err = parse(&bad, &[]).unwrap_err();
    assert_eq!(
        problem_fields(&err),
        [
            "store.collections.doc",
            "store.collections.docs.hnsw_ef_construct",
            "store.collections.docs.write_consistency_factor",
        ]
    );
    let err = parse(&text.replace("\"binary\"", "\"pq\""), &[]).unwrap_err();
    assert!(err.to_string().contains("pq"), "{err}");
}

/// [`MINIMAL`] with `tables` (TOML tables, given in full) added.
fn with_tables(tables: &str) -> String {
    format!("{MINIMAL}\n    {tables}\n")
}

#[test]
fn kafka_security_is_checked_field_by_field() {
    let text = with_tables(
        r#"[kafka.security]
    protocol = "sasl_ssl"
    mechanism = "SCRAM-SHA-512"
    username = "vecsync"
    password_env = "KAFKA_PASSWORD"
    ca_file = "/etc/ca.pem""#,
    );
    let c = parse(&text, &[]).unwrap();
    assert_eq!(c.kafka.security.protocol, SecurityProtocol::SaslSsl);
    assert_eq!(c.kafka.security.mechanism, Some(SaslMechanism::ScramSha512));

    // SASL without its parts, TLS files on plaintext, a lone client cert.
    let bad = with_tables(
        r#"[kafka.security]
    protocol = "sasl_plaintext"
    ca_file = "/etc/ca.pem"
    cert_file = "/etc/client.pem"
    [[consumer.sources]]
    region = "eu-west"
    topic = "eu-west.vecsync.deltas"
    [consumer.sources.security]
    protocol = "ssl"
    [[lag.mirrors]]
    alias = "eu-west"
    brokers = "10.0.0.2:9092"
    [lag.mirrors.security]
    username = "lag""#,
    );
    let err = parse(&bad, &[]).unwrap_err();
    assert_eq!(
        problem_fields(&err),
        [
            "kafka.security.mechanism",
            "kafka.security.username",
            "kafka.security.password_env",
            "kafka.security.ca_file",
            "kafka.security.cert_file",
            "kafka.security.cert_file",
            "consumer.sources[0].security",
            "lag.mirrors[0].security.username",
        ]
    );
    let unknown = text.replace("SCRAM-SHA-512", "GSSAPI");
    let err = parse(&unknown, &[]).unwrap_err().to_string();
    assert!(err.contains("SCRAM-SHA-256"), "{err}");
}

#[test]
fn a_source_on_the_regions_cluster_takes_its_security_and_options() {
    let text = with_tables(
        r#"[kafka.security]
    protocol = "ssl"
    [kafka.options]
    "socket.keepalive.enable" = "true"
    "client.rack" = "a"
    [[consumer.sources]]
    region = "eu-west"
    topic = "eu-west.vecsync.deltas"
    [consumer.sources.options]
    "client.rack" = "b"
    [[consumer.sources]]
    region = "ap-south"
    brokers = "10.0.0.3:9092"
    topic = "vecsync.deltas""#,
    );
    let c = parse(&text, &[]).unwrap();
    let sources = c.sources();
    let mirror = sources.iter().find(|s| s.region == "eu-west").unwrap();
    assert_eq!(mirror.security.protocol, SecurityProtocol::Ssl);
    assert_eq!(mirror.options["client.rack"], "b");
    assert_eq!(mirror.options["socket.keepalive.enable"], "true");
    let remote = sources.iter().find(|s| s.region == "ap-south").unwrap();
    assert_eq!(remote.security, KafkaSecurity::default());
    assert!(remote.options.is_empty());
}

#[test]
fn secret_options_never_show_in_debug_output() {
    let text = with_tables(
        r#"[kafka.options]
    "sasl.password" = "hunter2-pass"
    "ssl.key.pem" = "-----BEGIN hunter3"
    "sasl.oauthbearer.client.secret" = "hunter4"
    "client.rack" = "use1-az1""#,
    );
    let debug = format!("{:?}", parse(&text, &[]).unwrap());
    for secret in ["hunter2", "hunter3", "hunter4"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("use1-az1"), "{debug}");
}

#[test]
fn registry_auth_and_ingest_tokens_are_checked() {
    let registry = |fields: &str| {
        MINIMAL.replace(
            r#"url = "http://127.0.0.1:8081""#,
            &format!("url = \"https://sr.example.com\"\n    {fields}"),
        )
    };
    let good = registry(
        r#"username = "KEY"
    password_env = "SR_SECRET"
    ca_file = "/etc/sr-ca.pem""#,
    );
    let c = parse(&good, &[]).unwrap();
    assert_eq!(c.registry.username.as_deref(), Some("KEY"));

    let bad = format!(
        "{}\n    {}",
        registry(
            r#"password_env = "SR_SECRET"
    password_file = "/run/sr""#
        )
        .replace("https://", "http://")
        .replace(
            "password_file = \"/run/sr\"",
            "password_file = \"/run/sr\"\n    ca_file = \"/ca.pem\""
        ),
        r#"[[ingest.tokens]]
    name = "loader"
    collections = []
    [[ingest.tokens]]
    name = "loader"
    token_env = "T"
    collections = ["nope"]"#
    );
    let err = parse(&bad, &[]).unwrap_err();
    assert_eq!(
        problem_fields(&err),
        [
            "registry.username",
            "registry.password_env",
            "registry.ca_file",
            "ingest.tokens[0].token_env",
            "ingest.tokens[0].collections",
            "ingest.tokens[1].name",
            "ingest.tokens[1].collections",
        ]
    );
    let tokens = parse(
        &with_tables(
            r#"[[ingest.tokens]]
    name = "loader"
    token_env = "VECSYNC_TEST_UNSET_TOKEN"
    collections = ["docs"]"#,
        ),
        &[],
    )
    .unwrap();
    let token = &tokens.ingest.tokens[0];
    assert!(token.allows("docs") && !token.allows("other"));
    let err = token.token("ingest.tokens[0]").unwrap_err();
    assert_eq!(err.field, "ingest.tokens[0].token_env");
}
