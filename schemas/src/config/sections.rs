//! The sections of a region's config, with their defaults.

use crate::vector::Encoding;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// The delta topic of collections with `residency = "local"`, which no
    /// MirrorMaker 2 flow may match; `<topic>.local` when unset.
    #[serde(default)]
    pub local_topic: Option<String>,
    /// The codebook topic of local collections; `<codebook_topic>.local`
    /// when unset.
    #[serde(default)]
    pub local_codebook_topic: Option<String>,
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
    /// TLS and SASL for the region's cluster (`[kafka.security]`).
    #[serde(default)]
    pub security: KafkaSecurity,
    /// librdkafka properties passed through verbatim to every client of the
    /// region's cluster, e.g. `"socket.keepalive.enable" = "true"`. They
    /// win over vecsync's own.
    #[serde(default)]
    pub options: KafkaOptions,
}

impl KafkaConfig {
    /// The delta and codebook topics of a collection that stays in the
    /// region.
    pub fn local_topics(&self) -> (String, String) {
        let or_local =
            |name: &Option<String>, of: &str| name.clone().unwrap_or_else(|| format!("{of}.local"));
        (
            or_local(&self.local_topic, &self.topic),
            or_local(&self.local_codebook_topic, &self.codebook_topic),
        )
    }
}

/// How the clients of one Kafka cluster connect: TLS, SASL and the
/// credentials. The password is read from an environment variable or a
/// file when a client is made, never kept in the config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `plaintext` (the default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// With a `sasl_*` protocol: `PLAIN`, `SCRAM-SHA-256` or
    /// `SCRAM-SHA-512` (GSSAPI/Kerberos is not built in).
    #[serde(default)]
    pub mechanism: Option<SaslMechanism>,
    /// The SASL user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the SASL password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the SASL password (surrounding whitespace ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// With an `ssl` protocol: PEM file of the CA certificates to trust;
    /// the system's trust store when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`, unencrypted.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl KafkaSecurity {
    /// Each problem with `field` (`kafka.security`, …) as its prefix.
    pub fn problems(&self, field: &str) -> Vec<String> {
        let mut p = Vec::new();
        let sasl = matches!(
            self.protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        );
        let tls = matches!(
            self.protocol,
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
        );
        let mut check = |ok: bool, f: &str, problem: &str| {
            if !ok {
                p.push(format!("{field}.{f}: {problem}"));
            }
        };
        if sasl {
            check(
                self.mechanism.is_some(),
                "mechanism",
                "is needed with a sasl_* protocol: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            );
            check(
                self.username.as_ref().is_some_and(|u| !u.is_empty()),
                "username",
                "is needed with a sasl_* protocol",
            );
            check(
                self.password_env.is_some() != self.password_file.is_some(),
                "password_env",
                "exactly one of password_env and password_file is needed with a sasl_* protocol",
            );
        } else {
            for (f, set) in [
                ("mechanism", self.mechanism.is_some()),
                ("username", self.username.is_some()),
                ("password_env", self.password_env.is_some()),
                ("password_file", self.password_file.is_some()),
            ] {
                check(
                    !set,
                    f,
                    "only applies with protocol sasl_plaintext or sasl_ssl",
                );
            }
        }
        for (f, set) in [
            ("ca_file", self.ca_file.is_some()),
            ("cert_file", self.cert_file.is_some()),
            ("key_file", self.key_file.is_some()),
        ] {
            check(!set || tls, f, "only applies with protocol ssl or sasl_ssl");
        }
        check(
            self.cert_file.is_some() == self.key_file.is_some(),
            "cert_file",
            "cert_file and key_file go together",
        );
        p
    }
}

/// `security.protocol` of a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// As librdkafka names it.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

/// `sasl.mechanism` of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// As librdkafka names it.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// librdkafka properties passed through to a cluster's clients. Values of
/// properties that hold secrets (passwords, keys, tokens) never appear in
/// `Debug` output.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KafkaOptions(pub BTreeMap<String, String>);

impl KafkaOptions {
    /// Whether a property's value is a secret.
    pub fn is_secret(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        ["password", "secret", "jaas", "token", "pem", "key"]
            .iter()
            .any(|s| key.contains(s))
    }
}

impl std::ops::Deref for KafkaOptions {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KafkaOptions {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v = if Self::is_secret(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k, v)
            }))
            .finish()
    }
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
    /// HTTP basic auth user; Confluent Cloud's API key.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the basic auth password (Confluent
    /// Cloud's API secret).
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the basic auth password (surrounding whitespace ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// With an `https://` URL: PEM file of CA certificates trusted besides
    /// the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl RegistryConfig {
    /// The basic auth password, from `password_env` or `password_file`.
    pub fn password(&self) -> Result<Option<String>, SecretError> {
        read_secret(
            "registry",
            "password",
            self.password_env.as_deref(),
            self.password_file.as_deref(),
        )
    }
}

/// A secret that could not be read; names its field and never holds the
/// secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SecretError {
    /// `kafka.security.password_env`, …
    pub field: String,
    pub problem: String,
}

/// A secret from the environment variable `env` or else the file `file`
/// (trimmed); neither set is `None`. An error names the field
/// `<section>.<kind>_env` or `<section>.<kind>_file`.
pub fn read_secret(
    section: &str,
    kind: &str,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, SecretError> {
    let error = |from: &str, problem: String| SecretError {
        field: format!("{section}.{kind}_{from}"),
        problem,
    };
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(p) if !p.is_empty() => Ok(Some(p)),
            _ => Err(error(
                "env",
                format!("environment variable {var} is not set"),
            )),
        };
    }
    if let Some(path) = file {
        return match std::fs::read_to_string(path) {
            Ok(p) if !p.trim().is_empty() => Ok(Some(p.trim().to_owned())),
            Ok(_) => Err(error("file", format!("{} is empty", path.display()))),
            Err(e) => Err(error(
                "file",
                format!("cannot read {}: {e}", path.display()),
            )),
        };
    }
    Ok(None)
}

/// TLS on one of vecsync's HTTP listeners (`[ingest.tls]`, `[consumer.tls]`,
/// `[lag.tls]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain, the listener's own certificate first.
    pub cert_file: PathBuf,
    /// Its unencrypted PEM private key.
    pub key_file: PathBuf,
}

/// One bearer token of the ingest API and the collections it may write.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestToken {
    /// Who holds it; logged and counted, never the token itself.
    pub name: String,
    /// Environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding the token (surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The collections it may write; `["*"]` for all.
    pub collections: Vec<String>,
}

impl fmt::Debug for IngestToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestToken")
            .field("name", &self.name)
            .field("token_env", &self.token_env)
            .field("token_file", &self.token_file)
            .field("collections", &self.collections)
            .finish()
    }
}

impl IngestToken {
    /// The token, from `token_env` or `token_file`.
    pub fn token(&self, field: &str) -> Result<String, SecretError> {
        read_secret(
            field,
            "token",
            self.token_env.as_deref(),
            self.token_file.as_deref(),
        )?
        .ok_or_else(|| SecretError {
            field: format!("{field}.token_env"),
            problem: "one of token_env and token_file is needed".into(),
        })
    }

    /// True when the token may write `collection`.
    pub fn allows(&self, collection: &str) -> bool {
        self.collections.iter().any(|c| c == "*" || c == collection)
    }
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
    /// When set, requests must carry `Authorization: Bearer <token>`; it
    /// may write every collection. `tokens` gives several, scoped ones.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Bearer tokens, each scoped to collections (`[[ingest.tokens]]`).
    /// With any token set, every write needs one.
    #[serde(default)]
    pub tokens: Vec<IngestToken>,
    /// Serve HTTPS (`[ingest.tls]`).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
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
            .field("tokens", &self.tokens)
            .field("tls", &self.tls)
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
    /// Serve the API over HTTPS (`[consumer.tls]`).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Consumer group of the region's workers; `vecsync-<region>` if unset.
    #[serde(default)]
    pub group_id: Option<String>,
    /// How the region's workers share partitions. `static` (the default):
    /// worker `worker_index` of `worker_count` takes partitions p with
    /// p mod `worker_count` = `worker_index` in every source, with no broker
    /// coordination, so a crashed worker resumes at once. `group`: the
    /// broker's consumer group with the range assignor.
    #[serde(default)]
    pub assignment: Assignment,
    /// This worker's number among the region's workers (static assignment).
    #[serde(default)]
    pub worker_index: u32,
    /// How many workers the region runs (static assignment).
    #[serde(default = "default_worker_count")]
    pub worker_count: u32,
    /// Static assignment: records re-read before the committed offset at
    /// start. Harmless (apply is idempotent) and needed on brokers that
    /// cannot fetch from inside a record batch, such as tansu 0.6; at least
    /// the largest batch a producer writes (vecsync's write at most 1,000).
    #[serde(default = "default_resume_rewind_records")]
    pub resume_rewind_records: u64,
    /// A stable name for this worker within the group (Kafka static
    /// membership): a restarted worker takes its partitions back at once
    /// instead of waiting for the session to time out.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// A worker silent this long is dropped from the group and its
    /// partitions go to the others.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u32,
    /// Topic on this region's cluster for events that cannot be applied.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Events applied to the store in one batch, at most.
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// How long a batch lingers for more events once the store is free.
    /// 0 (the default) starts it at once: the next batch fills while one
    /// is applied, so batches grow with the load by themselves. A linger
    /// trades latency for fewer, larger store requests.
    #[serde(default)]
    pub batch_max_wait_ms: u64,
    /// Applied events are searchable at once; the store is flushed (made
    /// durable) at most this often, and offsets are committed only after
    /// the flush. 0 flushes every batch.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// The flush interval while the worker is behind (its batches come
    /// full): rarer flushes leave the store more time for writes, so a
    /// backlog drains faster. Back to `flush_interval_ms` once caught up.
    #[serde(default = "default_flush_interval_behind_ms")]
    pub flush_interval_behind_ms: u64,
    /// Events the reorder buffer holds before releasing the oldest anyway.
    #[serde(default = "default_reorder_max_events")]
    pub reorder_max_events: usize,
    /// Bytes of records the reorder buffer holds before releasing the
    /// oldest anyway: with the fetch queue, what bounds a worker's memory
    /// while it reads a backlog.
    #[serde(default = "default_reorder_max_bytes")]
    pub reorder_max_bytes: usize,
    /// Kilobytes of records librdkafka fetches ahead per source
    /// (`queued.max.messages.kbytes`; its own default is 64 MB).
    #[serde(default = "default_fetch_queue_max_kbytes")]
    pub fetch_queue_max_kbytes: u32,
    /// PQ events held while their codebook has not arrived; when full, the
    /// worker reads no more records until codebooks come.
    #[serde(default = "default_codebook_wait_max_events")]
    pub codebook_wait_max_events: usize,
    /// A source silent this long stops holding the watermark back.
    #[serde(default = "default_idle_after_ms")]
    pub idle_after_ms: u64,
    /// At shutdown, how long to drain and commit before giving up.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// How long tombstones (and the undo history of deltas) are kept:
    /// longer than any replication delay.
    #[serde(default = "default_tombstone_horizon_ms")]
    pub tombstone_horizon_ms: u64,
    /// How often tombstones and delta chains older than the horizon are
    /// cleared from the store.
    #[serde(default = "default_expiry_interval_ms")]
    pub expiry_interval_ms: u64,
    /// What the region replays. When no source carries this region's own
    /// writes, its own topic is added (log first: every store gets every
    /// region's writes by the same path).
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

/// How a region's workers share the partitions of its sources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    #[default]
    Static,
    Group,
}

/// One stream of a region's delta events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The region whose writes the source carries.
    pub region: String,
    /// Bootstrap servers of the source's cluster; this region's
    /// `kafka.brokers` if unset (a mirrored or shared-cluster topic).
    #[serde(default)]
    pub brokers: Option<String>,
    /// The delta topic: `vecsync.deltas` read directly from the region's
    /// cluster, `us-east.vecsync.deltas` as MirrorMaker 2 names a mirror,
    /// or a regular expression starting with `^`.
    pub topic: String,
    /// The codebook topic that goes with it.
    #[serde(default = "default_codebook_topic")]
    pub codebook_topic: String,
    /// TLS and SASL for the source's cluster, when `brokers` names one of
    /// its own; a source on this region's cluster uses `[kafka.security]`.
    #[serde(default)]
    pub security: KafkaSecurity,
    /// librdkafka properties for the source's clients, passed through (on
    /// top of `kafka.options` for a source on this region's cluster).
    #[serde(default)]
    pub options: KafkaOptions,
    /// The collections this region replicates from the source; every one
    /// when empty. The source's events of any other collection are skipped
    /// and counted (`vecsync_consumer_skipped_events_total`), not
    /// dead-lettered.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Collections this region does not replicate from the source, skipped
    /// and counted the same way. Not together with `collections`.
    #[serde(default)]
    pub exclude_collections: Vec<String>,
    /// Bytes of records per second this worker reads from the source at
    /// most (a token bucket, a second's worth of burst); unlimited when
    /// unset. For sources read across a link that user traffic shares: a
    /// catch-up after a cut then drains the backlog at this rate instead of
    /// saturating the link.
    #[serde(default)]
    pub max_read_bytes_per_sec: Option<u32>,
}

impl SourceConfig {
    /// A source of every collection, with no security or options of its own.
    pub fn new(region: &str, brokers: Option<String>, topic: &str, codebook_topic: &str) -> Self {
        Self {
            region: region.to_owned(),
            brokers,
            topic: topic.to_owned(),
            codebook_topic: codebook_topic.to_owned(),
            security: KafkaSecurity::default(),
            options: KafkaOptions::default(),
            collections: Vec::new(),
            exclude_collections: Vec::new(),
            max_read_bytes_per_sec: None,
        }
    }

    /// Whether this region replicates `collection` from the source.
    pub fn replicates(&self, collection: &str) -> bool {
        let listed = |names: &[String]| names.iter().any(|n| n == collection);
        if self.collections.is_empty() {
            !listed(&self.exclude_collections)
        } else {
            listed(&self.collections)
        }
    }
}

/// The region's vector store.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `edge` (Qdrant's engine embedded in the worker, at `path`) or
    /// `qdrant` (a Qdrant server at `url`).
    #[serde(default)]
    pub backend: StoreBackend,
    /// Directory of the embedded store.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// gRPC URL of the Qdrant server; `https://` turns TLS on.
    #[serde(default = "default_store_url")]
    pub url: String,
    /// Qdrant API key, sent with every request when set.
    #[serde(default)]
    pub api_key: Option<String>,
    /// With an `https://` URL: PEM file of CA certificates trusted besides
    /// the system's (a server whose certificate a company CA signed).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Longest wait for one call to the Qdrant server.
    #[serde(default = "default_store_timeout_ms")]
    pub timeout_ms: u64,
    /// Embedded store only: the write-ahead log each shard may keep, in
    /// MiB. The engine never trims its log, so once a flush finds more,
    /// the shard is closed and loaded again without it, which holds
    /// writes back for that moment (110–260 ms in the load test, at up to
    /// 200,000 768-d points).
    #[serde(default = "default_store_wal_max_mb")]
    pub wal_max_mb: u64,
    /// How the store keeps each vector: `float32` (the default) as decoded,
    /// or `float16`, half the memory, disk and flush for a rounding of at
    /// most 1/2048 of each component (well under an `sq8` step). Applies to
    /// collections vecsync creates; one that exists keeps its own.
    #[serde(default)]
    pub vector_datatype: VectorDatatype,
    /// Qdrant server only: how vecsync creates each collection (and its
    /// tombstone collection) when it is missing, by collection name.
    /// A collection that exists is used as it is.
    #[serde(default)]
    pub collections: BTreeMap<String, ServerCollectionConfig>,
}

/// How a collection is created on a Qdrant server
/// (`[store.collections.<name>]`); the server's defaults where unset
/// (serde leaves a missing `Option` at `None`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerCollectionConfig {
    /// Shards the collection is split into.
    pub shard_number: Option<u32>,
    /// Copies of each shard, on different nodes.
    pub replication_factor: Option<u32>,
    /// Copies that acknowledge a write before the server answers. Equal to
    /// `replication_factor` (its default): every write a worker commits
    /// after is then on every copy, so the version check before a write can
    /// never read an older version from a copy the write did not reach.
    pub write_consistency_factor: Option<u32>,
    /// Vectors kept on disk (memory-mapped) instead of in memory.
    pub on_disk: Option<bool>,
    /// Payloads kept on disk instead of in memory.
    pub on_disk_payload: Option<bool>,
    /// HNSW: edges per node.
    pub hnsw_m: Option<u64>,
    /// HNSW: candidates kept while the graph is built.
    pub hnsw_ef_construct: Option<u64>,
    /// Quantization of the search index: `scalar` (int8) or `binary`.
    pub quantization: Option<ServerQuantization>,
}

/// Quantization a Qdrant server keeps beside the vectors for faster search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerQuantization {
    /// One byte per dimension.
    Scalar,
    /// One bit per dimension.
    Binary,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("path", &self.path)
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("timeout_ms", &self.timeout_ms)
            .field("wal_max_mb", &self.wal_max_mb)
            .field("vector_datatype", &self.vector_datatype)
            .field("collections", &self.collections)
            .finish()
    }
}

/// The lag exporter (`vecsync lag`): consumer lag of the region's workers
/// (and any other groups listed) and MirrorMaker 2 lag into this region's
/// cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LagConfig {
    /// Address of the exporter's `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_lag_listen")]
    pub listen: SocketAddr,
    /// Serve over HTTPS (`[lag.tls]`).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// How often the clusters are read.
    #[serde(default = "default_lag_interval_ms")]
    pub interval_ms: u64,
    /// Longest wait for one cluster in one scan; a cluster that does not
    /// answer within it is reported unreachable.
    #[serde(default = "default_lag_timeout_ms")]
    pub timeout_ms: u64,
    /// Records read back before an offset when the broker cannot fetch from
    /// inside a record batch (tansu 0.6), to find the record at a committed
    /// offset; at least the largest batch a producer writes.
    #[serde(default = "default_resume_rewind_records")]
    pub rewind_records: u64,
    /// Consumer groups watched besides the region's own workers (which are
    /// always watched, over every source).
    #[serde(default)]
    pub groups: Vec<LagGroupConfig>,
    /// MirrorMaker 2 flows into this region's cluster.
    #[serde(default)]
    pub mirrors: Vec<MirrorConfig>,
}

/// A consumer group whose lag is exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LagGroupConfig {
    /// The consumer group.
    pub group: String,
    /// Topics it reads.
    pub topics: Vec<String>,
    /// Bootstrap servers of the group's cluster; this region's
    /// `kafka.brokers` if unset.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Name of that cluster in metrics (needed with `brokers`; this region's
    /// name otherwise).
    #[serde(default)]
    pub cluster: Option<String>,
    /// TLS and SASL for the group's cluster, with `brokers`.
    #[serde(default)]
    pub security: KafkaSecurity,
    /// librdkafka properties for that cluster, with `brokers`.
    #[serde(default)]
    pub options: KafkaOptions,
}

/// A MirrorMaker 2 flow from another cluster into this region's cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// MirrorMaker's alias of the source cluster: the prefix of the mirrored
    /// topics (`<alias>.vecsync.deltas`, `<alias>.heartbeats`).
    pub alias: String,
    /// Bootstrap servers of the source cluster.
    pub brokers: String,
    /// The source topic; this region's `kafka.topic` if unset.
    #[serde(default)]
    pub topic: Option<String>,
    /// MirrorMaker's alias of this region's cluster, which names the offset
    /// syncs topic on the source (`mm2-offset-syncs.<target_alias>.internal`);
    /// the region's name if unset.
    #[serde(default)]
    pub target_alias: Option<String>,
    /// MirrorMaker's `replication.policy.class`: `default` mirrors a topic
    /// as `<alias>.<topic>`, `identity` keeps its name. Heartbeats are
    /// mirrored as `<alias>.heartbeats` under both.
    #[serde(default)]
    pub replication_policy: ReplicationPolicy,
    /// TLS and SASL for the source cluster.
    #[serde(default)]
    pub security: KafkaSecurity,
    /// librdkafka properties for the source cluster.
    #[serde(default)]
    pub options: KafkaOptions,
}

/// How MirrorMaker 2 names the mirror of a topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationPolicy {
    /// `DefaultReplicationPolicy`: `<alias>.<topic>`.
    #[default]
    Default,
    /// `IdentityReplicationPolicy`: the topic's own name.
    Identity,
}

impl ReplicationPolicy {
    /// The name of `topic`'s mirror from the cluster `alias`.
    pub fn mirror_topic(self, alias: &str, topic: &str) -> String {
        match self {
            Self::Default => format!("{alias}.{topic}"),
            Self::Identity => topic.to_owned(),
        }
    }
}

/// Which vector store a region uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Qdrant's engine in-process (`qdrant-edge`).
    #[default]
    Edge,
    /// A Qdrant server, through `qdrant-client`.
    Qdrant,
}

/// How a store keeps vectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorDatatype {
    /// Four bytes a component: the vector exactly as decoded.
    #[default]
    Float32,
    /// Two bytes a component (IEEE half precision).
    Float16,
}

impl fmt::Display for VectorDatatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Float32 => "float32",
            Self::Float16 => "float16",
        })
    }
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
    /// `global` (the default): replicated to every region. `local`: its
    /// events (and codebook) go to `kafka.local_topic`, which MirrorMaker 2
    /// does not mirror, so its vectors never leave the region.
    #[serde(default)]
    pub residency: Residency,
}

/// Where a collection's data may go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Residency {
    #[default]
    Global,
    Local,
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
fn default_resume_rewind_records() -> u64 {
    1_000
}
fn default_worker_count() -> u32 {
    1
}
fn default_session_timeout_ms() -> u32 {
    10_000
}
fn default_dead_letter_topic() -> String {
    "vecsync.deadletters".into()
}
fn default_batch_max_events() -> usize {
    1_000
}
fn default_flush_interval_ms() -> u64 {
    100
}
/// `consumer.flush_interval_behind_ms` when unset: saturated on tansu, 3 s
/// replicated 8% more than 1 s, and more than 5 s (BENCHMARKS.md).
pub fn default_flush_interval_behind_ms() -> u64 {
    3_000
}
fn default_reorder_max_bytes() -> usize {
    64 << 20
}
fn default_fetch_queue_max_kbytes() -> u32 {
    16 << 10
}
fn default_codebook_wait_max_events() -> usize {
    10_000
}

fn default_reorder_max_events() -> usize {
    100_000
}
fn default_idle_after_ms() -> u64 {
    10_000
}
fn default_drain_timeout_ms() -> u64 {
    10_000
}
fn default_tombstone_horizon_ms() -> u64 {
    7 * 24 * 3_600_000
}
fn default_expiry_interval_ms() -> u64 {
    600_000
}
fn default_store_path() -> PathBuf {
    PathBuf::from("data")
}

fn default_store_url() -> String {
    "http://127.0.0.1:6334".into()
}

fn default_store_timeout_ms() -> u64 {
    10_000
}

fn default_store_wal_max_mb() -> u64 {
    512
}

fn default_lag_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9095))
}
fn default_lag_interval_ms() -> u64 {
    5_000
}
fn default_lag_timeout_ms() -> u64 {
    5_000
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
impl Default for LagConfig {
    fn default() -> Self {
        from_defaults()
    }
}
