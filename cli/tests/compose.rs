//! What can be checked of `docker-compose.yml` without a Docker engine: it
//! parses as a Compose file whose references all resolve (services, files
//! it mounts, the Dockerfile), every vecsync command in it is one `vecsync`
//! takes with a config that passes vecsync's own validation and listens on
//! the port the service publishes and Prometheus scrapes, MirrorMaker's
//! clusters are services, and no two services publish the same host port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_norway::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use vecsync_schemas::config::RegionConfig;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    let mut value: Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    value.apply_merge().unwrap();
    value
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Bind mounts of a service: container path → host path.
fn mounts(service: &Value) -> BTreeMap<String, PathBuf> {
    strings(&service["volumes"])
        .into_iter()
        .filter(|v| v.starts_with("./"))
        .map(|v| {
            let mut parts = v.split(':');
            let host = root().join(parts.next().unwrap());
            (parts.next().unwrap().to_owned(), host)
        })
        .collect()
}

#[test]
fn the_compose_stack_is_consistent_with_vecsync_and_its_configs() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    for want in ["schema-registry", "mirrormaker", "prometheus", "grafana"] {
        assert!(names.contains(want), "{want} missing");
    }
    let mut host_ports = BTreeMap::new();
    // service name → the port its vecsync process listens on.
    let mut listens: BTreeMap<String, u16> = BTreeMap::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        assert!(
            service["image"].is_string() || service["build"].is_string(),
            "{name} has neither image nor build"
        );
        if let Some(context) = service["build"].as_str() {
            assert!(
                root().join(context).join("Dockerfile").is_file(),
                "{name}: no Dockerfile"
            );
        }
        let depends = match &service["depends_on"] {
            Value::Mapping(m) => m.keys().map(|k| k.as_str().unwrap().to_owned()).collect(),
            other => strings(other),
        };
        for d in depends {
            assert!(names.contains(&d), "{name} depends on unknown service {d}");
        }
        for (inside, host) in mounts(service) {
            assert!(
                host.exists(),
                "{name} mounts missing {} at {inside}",
                host.display()
            );
        }
        for port in strings(&service["ports"]) {
            let host = port.split(':').next().unwrap().to_owned();
            if let Some(other) = host_ports.insert(host.clone(), name.to_owned()) {
                panic!("{name} and {other} both publish host port {host}");
            }
        }
        if service["build"].is_string() {
            let command = strings(&service["command"]);
            let at = command
                .iter()
                .position(|a| a == "--config")
                .expect("--config");
            let inside = &command[at + 1];
            let host = mounts(service)
                .get(inside)
                .cloned()
                .unwrap_or_else(|| panic!("{name}: {inside} is not mounted"));
            let config = RegionConfig::load(&host).unwrap_or_else(|e| panic!("{name}: {e}"));
            let port = match command[0].as_str() {
                "produce" => config.ingest.listen.port(),
                "consume" => config.consumer.listen.port(),
                "lag" => config.lag.listen.port(),
                other => panic!("{name}: unknown command {other}"),
            };
            listens.insert(name.to_owned(), port);
            let published = strings(&service["ports"]);
            assert!(
                published.iter().any(|p| p.ends_with(&format!(":{port}"))),
                "{name} listens on {port} but publishes {published:?}"
            );
            // The subcommand and its flags are ones vecsync takes.
            let out = Command::new(env!("CARGO_BIN_EXE_vecsync"))
                .args(&command[..at])
                .arg("--help")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: vecsync {command:?} is not a command"
            );
        }
    }
    assert!(listens.len() >= 6, "{listens:?}");

    // Prometheus scrapes every vecsync service where it listens.
    let scrape = yaml("dashboards/prometheus.yml");
    let mut targets = BTreeSet::new();
    for job in scrape["scrape_configs"].as_sequence().unwrap() {
        for sc in job["static_configs"].as_sequence().unwrap() {
            targets.extend(strings(&sc["targets"]));
        }
    }
    let expected: BTreeSet<String> = listens.iter().map(|(s, p)| format!("{s}:{p}")).collect();
    assert_eq!(
        targets, expected,
        "scrape targets and compose services differ"
    );

    // MirrorMaker's clusters are the regions' brokers, and each region's
    // lag exporter watches the flow from the other.
    let mm2 = std::fs::read_to_string(root().join("compose/mm2.properties")).unwrap();
    let mut aliases = BTreeSet::new();
    for line in mm2.lines().filter(|l| l.contains(".bootstrap.servers")) {
        let (key, servers) = line.split_once('=').unwrap();
        aliases.insert(key.trim().trim_end_matches(".bootstrap.servers").to_owned());
        let host = servers.trim().split(':').next().unwrap();
        assert!(
            names.contains(host),
            "MirrorMaker names unknown cluster {host}"
        );
    }
    for region in ["us-east", "eu-west"] {
        let config = RegionConfig::load(&root().join(format!("compose/{region}.toml"))).unwrap();
        for m in &config.lag.mirrors {
            assert!(
                aliases.contains(&m.alias),
                "no MirrorMaker cluster {}",
                m.alias
            );
        }
        for s in &config.consumer.sources {
            assert!(
                aliases.contains(&s.region) && s.topic.starts_with(&format!("{}.", s.region)),
                "{region} reads {} which MirrorMaker does not write",
                s.topic
            );
        }
    }
}

/// `compose/mm2.properties` as `key = value` pairs, comments left out.
fn mm2_properties() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("compose/mm2.properties")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not key = value: {l}"));
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// The config names a Kafka config class defines, from the reference its
/// `main` prints (the same text as Kafka's documentation).
fn config_names(libs: &Path, class: &str) -> BTreeSet<String> {
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg(class)
        .output()
        .unwrap();
    assert!(out.status.success(), "{class}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let names: BTreeSet<String> = text
        .split("<h4><a id=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_owned)
        .collect();
    assert!(!names.is_empty(), "{class} printed no reference: {text}");
    names
}

#[test]
fn every_key_of_the_committed_mm2_properties_is_one_mirrormaker_2_reads() {
    let Some(libs) = vecsync_devkit::kafka::kafka_libs_or_skip() else {
        return;
    };
    let mut known = BTreeSet::new();
    for class in [
        "org.apache.kafka.connect.mirror.MirrorSourceConfig",
        "org.apache.kafka.connect.mirror.MirrorCheckpointConfig",
        "org.apache.kafka.connect.mirror.MirrorHeartbeatConfig",
        "org.apache.kafka.connect.runtime.distributed.DistributedConfig",
    ] {
        known.extend(config_names(&libs, class));
    }
    let producer = config_names(&libs, "org.apache.kafka.clients.producer.ProducerConfig");
    let properties = mm2_properties();
    let clusters: Vec<String> = properties
        .iter()
        .find(|(k, _)| k == "clusters")
        .map(|(_, v)| v.split(',').map(|c| c.trim().to_owned()).collect())
        .expect("mm2.properties names its clusters");
    let mut unknown = Vec::new();
    for (key, _) in &properties {
        // `<alias>.` and `<source>-><target>.` scope a key to a cluster or
        // a flow; what follows is an ordinary key.
        let mut rest = key.as_str();
        let mut flow_key = false;
        for c in &clusters {
            if let Some(flow) = rest.strip_prefix(&format!("{c}->")) {
                rest = clusters
                    .iter()
                    .find_map(|t| flow.strip_prefix(&format!("{t}.")))
                    .unwrap_or(flow);
                flow_key = true;
            } else if let Some(scoped) = rest.strip_prefix(&format!("{c}.")) {
                rest = scoped;
            }
        }
        // `clusters` and a flow's `enabled` are MirrorMakerConfig's own,
        // which prints no reference.
        let ok = rest == "clusters"
            || (flow_key && rest == "enabled")
            || known.contains(rest)
            || rest
                .strip_prefix("producer.override.")
                .is_some_and(|p| producer.contains(p));
        if !ok {
            unknown.push(key.clone());
        }
    }
    assert!(
        unknown.is_empty(),
        "keys MirrorMaker 2 does not read: {unknown:?}"
    );
}

#[test]
fn the_committed_mm2_properties_mirrors_between_two_kafka_clusters() {
    use vecsync_devkit::broker::read_topic;
    use vecsync_devkit::kafka::{Kafka, MirrorMaker2};
    let (Some(east), Some(west)) = (Kafka::start(), Kafka::start()) else {
        return;
    };
    // The committed file as it is, with only its bootstrap servers pointed
    // at the test's brokers.
    let mut text = String::new();
    for (k, v) in mm2_properties() {
        let v = match k.as_str() {
            "us-east.bootstrap.servers" => east.brokers(),
            "eu-west.bootstrap.servers" => west.brokers(),
            _ => v,
        };
        text.push_str(&format!("{k} = {v}\n"));
    }
    east.create_topic("vecsync.deltas", 3).unwrap();
    // A local collection's topic (residency = "local"), never to be mirrored.
    east.create_topic("vecsync.deltas.local", 3).unwrap();
    west.create_topic("vecsync.deltas", 3).unwrap();
    let Some(mm2) = MirrorMaker2::start(&text) else {
        return;
    };
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", east.brokers())
        .create()
        .unwrap();
    use rdkafka::producer::Producer as _;
    for i in 0..30 {
        let value = format!("event {i}");
        for topic in ["vecsync.deltas.local", "vecsync.deltas"] {
            producer
                .send(
                    rdkafka::producer::BaseRecord::to(topic)
                        .key(&value)
                        .payload(&value),
                )
                .unwrap();
        }
    }
    producer.flush(std::time::Duration::from_secs(30)).unwrap();
    // MirrorMaker 2 creates the mirror once it finds the topic.
    let got = read_topic(
        &west.brokers(),
        "us-east.vecsync.deltas",
        30,
        std::time::Duration::from_secs(120),
        |_| true,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mm2.log()));
    assert_eq!(got.len(), 30, "{}", mm2.log());
    let mut values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    values.sort();
    let mut sent: Vec<String> = (0..30).map(|i| format!("event {i}")).collect();
    sent.sort();
    assert_eq!(values, sent);
    // The local topic was there from the start, and written first: had it
    // matched, its mirror would exist by now.
    let names = vecsync_devkit::kafka::topic_names(&west.brokers());
    assert!(
        names.iter().any(|n| n == "us-east.vecsync.deltas")
            && !names.iter().any(|n| n.contains(".local")),
        "{names:?}"
    );
}
