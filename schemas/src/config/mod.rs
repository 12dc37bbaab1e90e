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

mod sections;
#[cfg(test)]
mod tests;

pub use sections::*;

use crate::vector::Encoding;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// The lag exporter (`vecsync lag`).
    #[serde(default)]
    pub lag: LagConfig,
    /// Replicated collections by name.
    pub collections: BTreeMap<String, CollectionConfig>,
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

    /// The consumer group of this region's workers.
    pub fn group_id(&self) -> String {
        self.consumer
            .group_id
            .clone()
            .unwrap_or_else(|| format!("vecsync-{}", self.region))
    }

    /// The sources to replay, brokers (and for those on this region's
    /// cluster, its security and options) filled in, this region's own
    /// topic included.
    pub fn sources(&self) -> Vec<SourceConfig> {
        let mut sources: Vec<SourceConfig> = self
            .consumer
            .sources
            .iter()
            .map(|s| match &s.brokers {
                Some(_) => s.clone(),
                // On this region's cluster: its brokers, security and
                // options, the source's own options on top.
                None => {
                    let mut options = self.kafka.options.clone();
                    options.extend(s.options.iter().map(|(k, v)| (k.clone(), v.clone())));
                    SourceConfig {
                        brokers: Some(self.kafka.brokers.clone()),
                        security: self.kafka.security.clone(),
                        options,
                        ..s.clone()
                    }
                }
            })
            .collect();
        // Local collections' events are on a topic of this cluster alone.
        let (local, local_codebooks) = self.kafka.local_topics();
        if self.has_local_collections() && !sources.iter().any(|s| s.topic == local) {
            sources.push(SourceConfig {
                security: self.kafka.security.clone(),
                options: self.kafka.options.clone(),
                ..SourceConfig::new(
                    &self.region,
                    Some(self.kafka.brokers.clone()),
                    &local,
                    &local_codebooks,
                )
            });
        }
        if !sources
            .iter()
            .any(|s| s.region == self.region && s.topic != local)
        {
            sources.insert(
                0,
                SourceConfig {
                    security: self.kafka.security.clone(),
                    options: self.kafka.options.clone(),
                    ..SourceConfig::new(
                        &self.region,
                        Some(self.kafka.brokers.clone()),
                        &self.kafka.topic,
                        &self.kafka.codebook_topic,
                    )
                },
            );
        }
        sources
    }

    /// Whether any collection has `residency = "local"`.
    pub fn has_local_collections(&self) -> bool {
        self.collections
            .values()
            .any(|c| c.residency == Residency::Local)
    }

    /// The delta topics the region's producers write, each with its
    /// codebook topic: `kafka.topic`, then the local topics when any
    /// collection has `residency = "local"`.
    pub fn delta_topics(&self) -> Vec<(String, String)> {
        let mut topics = vec![(self.kafka.topic.clone(), self.kafka.codebook_topic.clone())];
        if self.has_local_collections() {
            topics.push(self.kafka.local_topics());
        }
        topics
    }

    /// The delta and codebook topics a collection's events go to.
    pub fn topics_of(&self, collection: &CollectionConfig) -> (String, String) {
        match collection.residency {
            Residency::Global => (self.kafka.topic.clone(), self.kafka.codebook_topic.clone()),
            Residency::Local => self.kafka.local_topics(),
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
        let (local, local_codebooks) = k.local_topics();
        check(is_name(&local, 249), "kafka.local_topic", NAME_RULE);
        check(
            is_name(&local_codebooks, 249),
            "kafka.local_codebook_topic",
            NAME_RULE,
        );
        check(
            ![&k.topic, &k.codebook_topic, &local_codebooks].contains(&&local)
                && ![&k.topic, &k.codebook_topic].contains(&&local_codebooks),
            "kafka.local_topic",
            "the local topics must differ from each other and from kafka.topic and kafka.codebook_topic",
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
        check(
            r.username.is_some() == (r.password_env.is_some() || r.password_file.is_some()),
            "registry.username",
            "basic auth needs username and one of password_env and password_file",
        );
        check(
            !(r.password_env.is_some() && r.password_file.is_some()),
            "registry.password_env",
            "give one of password_env and password_file, not both",
        );
        check(
            r.ca_file.is_none() || r.url.starts_with("https://"),
            "registry.ca_file",
            "only applies with an https:// URL",
        );
        let st = &self.store;
        check(st.wal_max_mb > 0, "store.wal_max_mb", "must be positive");
        if st.backend == StoreBackend::Qdrant {
            check(
                st.url.starts_with("http://") || st.url.starts_with("https://"),
                "store.url",
                "must be an http:// or https:// URL",
            );
            check(st.timeout_ms > 0, "store.timeout_ms", "must be positive");
            check(
                st.api_key.as_ref().is_none_or(|k| !k.trim().is_empty()),
                "store.api_key",
                "must not be empty when set",
            );
            check(
                st.ca_file.is_none() || st.url.starts_with("https://"),
                "store.ca_file",
                "only applies with an https:// URL",
            );
        }
        for (name, c) in &st.collections {
            let field = |f: &str| format!("store.collections.{name}{f}");
            check(
                self.collections.contains_key(name),
                &field(""),
                "no such collection in [collections]",
            );
            for (f, n) in [
                (".shard_number", c.shard_number.map(u64::from)),
                (".replication_factor", c.replication_factor.map(u64::from)),
                (".hnsw_m", c.hnsw_m),
                (".hnsw_ef_construct", c.hnsw_ef_construct),
            ] {
                check(n.is_none_or(|n| n > 0), &field(f), "must be at least 1");
            }
            check(
                c.write_consistency_factor
                    .is_none_or(|w| w == c.replication_factor.unwrap_or(1)),
                &field(".write_consistency_factor"),
                "must equal replication_factor: a write acknowledged by fewer copies \
                 could be missed by the version check before a later write",
            );
        }
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
        for (n, t) in i.tokens.iter().enumerate() {
            let field = |f: &str| format!("ingest.tokens[{n}].{f}");
            check(
                !t.name.trim().is_empty(),
                &field("name"),
                "must not be empty",
            );
            check(
                i.tokens[..n].iter().all(|o| o.name != t.name),
                &field("name"),
                "another token has this name",
            );
            check(
                t.token_env.is_some() != t.token_file.is_some(),
                &field("token_env"),
                "exactly one of token_env and token_file is needed",
            );
            check(
                !t.collections.is_empty(),
                &field("collections"),
                "must list the collections it may write, or \"*\" for all",
            );
            for c in &t.collections {
                check(
                    c == "*" || self.collections.contains_key(c),
                    &field("collections"),
                    &format!("no collection {c:?} in [collections]"),
                );
            }
        }
        let co = &self.consumer;
        check(
            is_name(&co.dead_letter_topic, 249),
            "consumer.dead_letter_topic",
            NAME_RULE,
        );
        check(
            co.batch_max_events > 0,
            "consumer.batch_max_events",
            "must be positive",
        );
        check(
            co.reorder_max_events > 0,
            "consumer.reorder_max_events",
            "must be positive",
        );
        check(
            co.reorder_max_bytes > 0,
            "consumer.reorder_max_bytes",
            "must be positive",
        );
        check(
            co.fetch_queue_max_kbytes > 0,
            "consumer.fetch_queue_max_kbytes",
            "must be positive",
        );
        check(
            co.codebook_wait_max_events > 0,
            "consumer.codebook_wait_max_events",
            "must be positive",
        );
        check(
            co.idle_after_ms > 0,
            "consumer.idle_after_ms",
            "must be positive",
        );
        check(
            co.group_id.as_ref().is_none_or(|g| !g.trim().is_empty()),
            "consumer.group_id",
            "must not be empty; leave it out for vecsync-<region>",
        );
        check(
            co.worker_count > 0,
            "consumer.worker_count",
            "must be positive",
        );
        check(
            co.worker_index < co.worker_count,
            "consumer.worker_index",
            "must be below consumer.worker_count",
        );
        for (i, src) in co.sources.iter().enumerate() {
            let field = |f: &str| format!("consumer.sources[{i}].{f}");
            check(is_name(&src.region, 64), &field("region"), NAME_RULE);
            check(
                src.topic.starts_with('^') || is_name(&src.topic, 249),
                &field("topic"),
                "must be a topic name or a regular expression starting with '^'",
            );
            check(
                !(src.topic.starts_with('^') && co.assignment == Assignment::Static),
                &field("topic"),
                "a topic pattern needs consumer.assignment = \"group\"",
            );
            check(
                is_name(&src.codebook_topic, 249),
                &field("codebook_topic"),
                NAME_RULE,
            );
            check(
                src.collections.is_empty() || src.exclude_collections.is_empty(),
                &field("exclude_collections"),
                "cannot be set together with collections: list what to replicate or what not to",
            );
            check(
                src.max_read_bytes_per_sec != Some(0),
                &field("max_read_bytes_per_sec"),
                "must be positive; leave it out for no limit",
            );
            for name in &src.collections {
                check(
                    self.collections.contains_key(name),
                    &field("collections"),
                    &format!("{name:?} is not one of this region's collections"),
                );
            }
        }
        let l = &self.lag;
        check(l.interval_ms > 0, "lag.interval_ms", "must be positive");
        check(l.timeout_ms > 0, "lag.timeout_ms", "must be positive");
        for (i, g) in l.groups.iter().enumerate() {
            let field = |f: &str| format!("lag.groups[{i}].{f}");
            check(
                !g.group.trim().is_empty(),
                &field("group"),
                "must not be empty",
            );
            check(
                !g.topics.is_empty(),
                &field("topics"),
                "must name at least one topic",
            );
            for t in &g.topics {
                check(is_name(t, 249), &field("topics"), NAME_RULE);
            }
            check(
                g.brokers.is_none() || g.cluster.as_deref().is_some_and(|c| is_name(c, 64)),
                &field("cluster"),
                "names the cluster of lag.groups brokers in metrics; letters, digits, '.', '_' and '-'",
            );
        }
        for (i, m) in l.mirrors.iter().enumerate() {
            let field = |f: &str| format!("lag.mirrors[{i}].{f}");
            check(is_name(&m.alias, 64), &field("alias"), NAME_RULE);
            check(
                !m.brokers.trim().is_empty(),
                &field("brokers"),
                "must name at least one host:port",
            );
            check(
                m.topic.as_deref().is_none_or(|t| is_name(t, 249)),
                &field("topic"),
                NAME_RULE,
            );
        }
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
        p.extend(self.kafka.security.problems("kafka.security"));
        for (i, src) in co.sources.iter().enumerate() {
            let field = format!("consumer.sources[{i}].security");
            if src.brokers.is_none() && src.security != KafkaSecurity::default() {
                p.push(format!(
                    "{field}: only with brokers; a source on this region's cluster uses kafka.security"
                ));
            }
            p.extend(src.security.problems(&field));
        }
        for (i, g) in l.groups.iter().enumerate() {
            let field = format!("lag.groups[{i}]");
            if g.brokers.is_none()
                && (g.security != KafkaSecurity::default() || !g.options.is_empty())
            {
                p.push(format!(
                    "{field}: security and options only with brokers; a group on this region's cluster uses kafka's"
                ));
            }
            p.extend(g.security.problems(&format!("{field}.security")));
        }
        for (i, m) in l.mirrors.iter().enumerate() {
            p.extend(m.security.problems(&format!("lag.mirrors[{i}].security")));
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
