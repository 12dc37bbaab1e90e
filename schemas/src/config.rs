//! One region's configuration: a TOML file, with environment overrides,
//! validated up front. Producers and consumer workers of a region read the
//! same file.
//!
//! ```toml
//! region = "us-east"
//!
//! [kafka]
//! brokers = "127.0.0.1:19092"
//!
//! [registry]
//! url = "http://127.0.0.1:8081"
//!
//! [collections.docs]
//! dimension = 384
//! distance = "cosine"
//! encoding = "sq8"
//! ```
//!
//! Any field can be overridden by an environment variable named after its
//! path, upper case, with `__` between the parts: `VECSYNC__KAFKA__BROKERS`,
//! `VECSYNC__INGEST__BEARER_TOKEN`, `VECSYNC__COLLECTIONS__DOCS__ENCODING`.
//! Values that read as TOML integers, floats or booleans are taken as such;
//! anything else is a string (quote it, `'"1"'`, to force a string).
//! Precedence: environment, then the file, then the defaults below.

use crate::vector::Encoding;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Prefix of the environment variables that override config fields.
pub const ENV_PREFIX: &str = "VECSYNC__";

/// Why a config could not be used. Every problem of a file is reported at once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {source_name} is not valid TOML: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    #[error("environment variable {var} cannot override the config: {message}")]
    Env { var: String, message: String },
    #[error("config {source_name}{env}: {message}")]
    Shape {
        source_name: String,
        /// Which overrides were applied, when any.
        env: String,
        message: String,
    },
    #[error("config {source_name} is invalid:\n  - {}", problems.join("\n  - "))]
    Invalid {
        source_name: String,
        problems: Vec<String>,
    },
}

/// The configuration of one region.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Name of this region (`us-east`); the origin of every event its
    /// producers write. Letters, digits, `.`, `_` and `-`.
    pub region: String,
    /// The region's Kafka cluster and topics.
    pub kafka: KafkaConfig,
    /// The Schema Registry every region shares.
    pub registry: RegistryConfig,
    /// Producer tuning.
    #[serde(default)]
    pub producer: ProducerConfig,
    /// The HTTP ingest API (`vecsync produce serve`).
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Consumer workers (`vecsync consume`).
    #[serde(default)]
    pub consumer: ConsumerConfig,
    /// The region's vector store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Replicated collections by name.
    pub collections: BTreeMap<String, CollectionConfig>,
}

/// The region's Kafka cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The delta topic this region's producers write.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// The compacted topic PQ codebooks travel on, keyed by codebook id.
    #[serde(default = "default_codebook_topic")]
    pub codebook_topic: String,
    /// Partitions of topics the producer creates. Every region's delta topic
    /// must have the same count so that they co-partition.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Replication factor of topics the producer creates.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: u16,
    /// Create missing topics at start (brokers such as tansu do not
    /// auto-create).
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Longest time a fetch waits for data. Low values cut replication
    /// latency on brokers that answer a fetch only when it runs out.
    #[serde(default = "default_fetch_wait_max_ms")]
    pub fetch_wait_max_ms: u32,
    /// librdkafka properties passed through verbatim, e.g.
    /// `"security.protocol" = "SASL_SSL"`. They win over vecsync's own.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// The Schema Registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of a Confluent-compatible Schema Registry.
    pub url: String,
    /// Timeout of one registry request.
    #[serde(default = "default_registry_timeout_ms")]
    pub timeout_ms: u64,
}

/// Producer tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerConfig {
    /// How long librdkafka waits to fill a batch.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u32,
    /// A send fails when the broker has not acknowledged it within this time.
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u32,
    /// Events queued for the broker before senders wait (backpressure).
    #[serde(default = "default_queue_max_messages")]
    pub queue_max_messages: u32,
    /// Batch compression: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Interval of the heartbeats sent to every partition.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u32,
    /// Cap on events per second (token bucket); unset for no cap.
    #[serde(default)]
    pub rate_limit_events_per_sec: Option<u32>,
    /// Events that may be sent at once above the rate; defaults to one
    /// second's worth.
    #[serde(default)]
    pub rate_limit_burst: Option<u32>,
    /// Payloads larger than this are lz4-compressed inside the event.
    #[serde(default = "default_payload_lz4_threshold_bytes")]
    pub payload_lz4_threshold_bytes: usize,
    /// How far ahead of the wall clock the region's HLC may run.
    #[serde(default = "default_max_clock_ahead_ms")]
    pub max_clock_ahead_ms: u64,
}

/// The HTTP ingest API.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Address the API listens on.
    #[serde(default = "default_ingest_listen")]
    pub listen: SocketAddr,
    /// When set, requests must carry `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Largest request body.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most points in one request.
    #[serde(default = "default_max_points_per_request")]
    pub max_points_per_request: usize,
}

impl fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestConfig")
            .field("listen", &self.listen)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_points_per_request", &self.max_points_per_request)
            .finish()
    }
}

/// Consumer workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Address of the consumer's API and `/metrics`.
    #[serde(default = "default_consumer_listen")]
    pub listen: SocketAddr,
}

/// The region's vector store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the embedded store.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
}

/// How a collection's vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    Cosine,
    Dot,
    Euclid,
    Manhattan,
}

/// One replicated collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// Dimensions of every vector.
    pub dimension: u32,
    /// Distance the store indexes by.
    pub distance: Distance,
    /// How vectors travel: `f32`, `f16`, `sq8`, `sq4`, `pq` or `binary`.
    #[serde(default)]
    pub encoding: Encoding,
    /// PQ only: the codebook file (`vecsync produce train-codebook` writes one).
    #[serde(default)]
    pub codebook_file: Option<PathBuf>,
}

fn default_topic() -> String {
    "vecsync.deltas".into()
}
fn default_codebook_topic() -> String {
    "vecsync.codebooks".into()
}
fn default_partitions() -> u32 {
    3
}
fn default_replication_factor() -> u16 {
    1
}
fn default_true() -> bool {
    true
}
fn default_fetch_wait_max_ms() -> u32 {
    10
}
fn default_registry_timeout_ms() -> u64 {
    5_000
}
fn default_linger_ms() -> u32 {
    5
}
fn default_message_timeout_ms() -> u32 {
    30_000
}
fn default_queue_max_messages() -> u32 {
    100_000
}
fn default_compression() -> String {
    "lz4".into()
}
fn default_heartbeat_interval_ms() -> u32 {
    1_000
}
fn default_payload_lz4_threshold_bytes() -> usize {
    crate::payload::DEFAULT_LZ4_THRESHOLD_BYTES
}
fn default_max_clock_ahead_ms() -> u64 {
    crate::hlc::DEFAULT_MAX_AHEAD_MS
}
fn default_ingest_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_max_points_per_request() -> usize {
    10_000
}
fn default_consumer_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}
fn default_store_path() -> PathBuf {
    PathBuf::from("data")
}

/// Serde's defaults for a section that is left out: the named functions above.
fn from_defaults<T: serde::de::DeserializeOwned>() -> T {
    T::deserialize(toml::Value::Table(toml::Table::new()))
        .unwrap_or_else(|e| unreachable!("every field of the section has a default: {e}"))
}

impl Default for ProducerConfig {
    fn default() -> Self {
        from_defaults()
    }
}
impl Default for IngestConfig {
    fn default() -> Self {
        from_defaults()
    }
}
impl Default for ConsumerConfig {
    fn default() -> Self {
        from_defaults()
    }
}
impl Default for StoreConfig {
    fn default() -> Self {
        from_defaults()
    }
}

impl RegionConfig {
    /// Reads `path`, applies `VECSYNC__*` overrides from the process
    /// environment and validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), std::env::vars())
    }

    /// Parses `text` (named `source_name` in errors), applies the overrides
    /// among `env`, and validates the result.
    pub fn parse(
        text: &str,
        source_name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    source_name: source_name.to_owned(),
                    message: e.to_string(),
                })?;
        let mut applied = Vec::new();
        for (var, value) in env {
            if let Some(path) = var.strip_prefix(ENV_PREFIX) {
                apply_override(&mut table, path, &value).map_err(|message| ConfigError::Env {
                    var: var.clone(),
                    message,
                })?;
                applied.push(var);
            }
        }
        let config =
            Self::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Shape {
                source_name: source_name.to_owned(),
                env: if applied.is_empty() {
                    String::new()
                } else {
                    format!(" (with {})", applied.join(", "))
                },
                message: e.to_string().trim_end().to_owned(),
            })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                source_name: source_name.to_owned(),
                problems,
            })
        }
    }

    /// Checks fields against each other; no IO. Each problem names its field.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut check = |ok: bool, field: &str, problem: &str| {
            if !ok {
                p.push(format!("{field}: {problem}"));
            }
        };
        check(is_name(&self.region, 64), "region", NAME_RULE);
        let k = &self.kafka;
        check(
            !k.brokers.trim().is_empty(),
            "kafka.brokers",
            "must name at least one host:port",
        );
        check(is_name(&k.topic, 249), "kafka.topic", NAME_RULE);
        check(
            is_name(&k.codebook_topic, 249),
            "kafka.codebook_topic",
            NAME_RULE,
        );
        check(
            k.topic != k.codebook_topic,
            "kafka.codebook_topic",
            "must differ from kafka.topic",
        );
        check(k.partitions >= 1, "kafka.partitions", "must be at least 1");
        check(
            k.replication_factor >= 1,
            "kafka.replication_factor",
            "must be at least 1",
        );
        let r = &self.registry;
        check(
            r.url.starts_with("http://") || r.url.starts_with("https://"),
            "registry.url",
            "must be an http:// or https:// URL",
        );
        check(r.timeout_ms > 0, "registry.timeout_ms", "must be positive");
        let pr = &self.producer;
        check(
            pr.message_timeout_ms > 0,
            "producer.message_timeout_ms",
            "must be positive",
        );
        check(
            pr.queue_max_messages > 0,
            "producer.queue_max_messages",
            "must be positive",
        );
        check(
            ["none", "gzip", "snappy", "lz4", "zstd"].contains(&pr.compression.as_str()),
            "producer.compression",
            "must be one of none, gzip, snappy, lz4, zstd",
        );
        check(
            pr.heartbeat_interval_ms > 0,
            "producer.heartbeat_interval_ms",
            "must be positive",
        );
        check(
            pr.rate_limit_events_per_sec != Some(0),
            "producer.rate_limit_events_per_sec",
            "must be positive; leave it out for no limit",
        );
        check(
            pr.rate_limit_burst.is_none() || pr.rate_limit_events_per_sec.is_some(),
            "producer.rate_limit_burst",
            "needs producer.rate_limit_events_per_sec",
        );
        check(
            pr.rate_limit_burst != Some(0),
            "producer.rate_limit_burst",
            "must be positive",
        );
        let i = &self.ingest;
        check(
            i.max_body_bytes > 0,
            "ingest.max_body_bytes",
            "must be positive",
        );
        check(
            i.max_points_per_request > 0,
            "ingest.max_points_per_request",
            "must be positive",
        );
        check(
            i.bearer_token.as_ref().is_none_or(|t| !t.trim().is_empty()),
            "ingest.bearer_token",
            "must not be empty; leave it out for no authentication",
        );
        check(
            !self.collections.is_empty(),
            "collections",
            "at least one collection is needed",
        );
        for (name, c) in &self.collections {
            let field = |f: &str| format!("collections.{name}.{f}");
            check(
                is_name(name, 255),
                &format!("collections.{name}"),
                NAME_RULE,
            );
            check(
                (1..=65_536).contains(&c.dimension),
                &field("dimension"),
                "must be between 1 and 65536",
            );
            match (c.encoding, &c.codebook_file) {
                (Encoding::Pq, None) => check(
                    false,
                    &field("codebook_file"),
                    "pq encoding needs a codebook file",
                ),
                (e, Some(_)) if e != Encoding::Pq => check(
                    false,
                    &field("codebook_file"),
                    "only pq encoding uses a codebook",
                ),
                _ => {}
            }
        }
        p
    }
}

const NAME_RULE: &str = "must be non-empty and use only letters, digits, '.', '_' and '-'";

fn is_name(s: &str, max_len: usize) -> bool {
    !s.is_empty()
        && s.len() <= max_len
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Sets the field at `path` (`KAFKA__BROKERS`) to `raw`, creating tables on
/// the way. Keys are matched case-insensitively to what the file holds, and
/// otherwise lowercased.
fn apply_override(table: &mut toml::Table, path: &str, raw: &str) -> Result<(), String> {
    let parts: Vec<&str> = path.split("__").collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err("the name has an empty part".into());
    }
    let mut at = table;
    for (n, part) in parts.iter().enumerate() {
        let key = at
            .keys()
            .find(|k| k.eq_ignore_ascii_case(part))
            .cloned()
            .unwrap_or_else(|| part.to_ascii_lowercase());
        if n + 1 == parts.len() {
            at.insert(key, scalar(raw));
            return Ok(());
        }
        let entry = at
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is a value in the file, not a section"))?;
    }
    Ok(())
}

/// An override's value: a TOML integer, float, boolean or quoted string, or
/// else the raw text as a string.
fn scalar(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(
                v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_)),
            ) => v,
            Some(v @ toml::Value::String(_)) if raw.trim_start().starts_with(['"', '\'']) => v,
            _ => toml::Value::String(raw.to_owned()),
        },
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
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
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
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
        }
    }
}
