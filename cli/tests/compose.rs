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
