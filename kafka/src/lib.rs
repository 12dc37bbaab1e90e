//! Every Kafka client vecsync makes comes from here: the producer, the
//! workers' consumers, the dead-letter producer, admin clients, the lag
//! probes and the load test. A [`Cluster`] is one cluster as the config
//! names it (brokers, `security`, `options`); [`Cluster::client`] turns it
//! into a librdkafka config, [`Cluster::create_topics`] makes missing
//! topics, and [`is_fatal`] sorts errors into the ones worth retrying and
//! the ones an operator must fix.

pub mod rate;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vecsync_schemas::config::{
    KafkaOptions, KafkaSecurity, LagGroupConfig, MirrorConfig, RegionConfig, SecurityProtocol,
    SourceConfig, read_secret,
};

/// How long admin calls may take.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client could not be made or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The config names a secret or a file that cannot be read.
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
    /// A Kafka call failed.
    #[error("Kafka cluster {cluster}: {what}: {source}")]
    Kafka {
        cluster: String,
        what: String,
        source: Box<KafkaError>,
    },
    /// The cluster refused the credentials, the certificate or a
    /// permission ([`is_fatal`]), as its client reported.
    #[error("{0}")]
    Fatal(String),
}

impl ClientError {
    /// Whether trying again may help: not for a config problem, nor for
    /// a Kafka error [`is_fatal`] calls fatal.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Config { .. } | Self::Fatal(_) => false,
            Self::Kafka { source, .. } => !is_fatal(source),
        }
    }
}

/// One Kafka cluster as vecsync connects to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// How errors name it: its bootstrap servers.
    name: String,
    brokers: String,
    security: KafkaSecurity,
    /// Where `security` sits in the config, for errors naming a field.
    field: String,
    options: KafkaOptions,
}

impl Cluster {
    /// A cluster from its parts; `field` is where its security sits in the
    /// config (`kafka.security`).
    pub fn new(
        brokers: &str,
        security: &KafkaSecurity,
        field: &str,
        options: &KafkaOptions,
    ) -> Self {
        Self {
            name: brokers.to_owned(),
            brokers: brokers.to_owned(),
            security: security.clone(),
            field: field.to_owned(),
            options: options.clone(),
        }
    }

    /// A plaintext cluster with no options, as tests and tools on loopback
    /// use.
    pub fn plain(brokers: &str) -> Self {
        Self::new(
            brokers,
            &KafkaSecurity::default(),
            "brokers",
            &KafkaOptions::default(),
        )
    }

    /// The region's own cluster (`[kafka]`).
    pub fn of_region(config: &RegionConfig) -> Self {
        let k = &config.kafka;
        Self::new(&k.brokers, &k.security, "kafka.security", &k.options)
    }

    /// A source's cluster, as [`RegionConfig::sources`] fills it in (a
    /// source on the region's cluster carries the region's security).
    pub fn of_source(config: &RegionConfig, source: &SourceConfig) -> Self {
        let field = config
            .consumer
            .sources
            .iter()
            .position(|s| s.region == source.region && s.topic == source.topic)
            .filter(|&i| config.consumer.sources[i].brokers.is_some())
            .map_or_else(
                || "kafka.security".to_owned(),
                |i| format!("consumer.sources[{i}].security"),
            );
        let brokers = source.brokers.as_deref().unwrap_or(&config.kafka.brokers);
        Self::new(brokers, &source.security, &field, &source.options)
    }

    /// The source cluster of a MirrorMaker 2 flow (`lag.mirrors[index]`).
    pub fn of_mirror(mirror: &MirrorConfig, index: usize) -> Self {
        Self::new(
            &mirror.brokers,
            &mirror.security,
            &format!("lag.mirrors[{index}].security"),
            &mirror.options,
        )
    }

    /// A watched group's cluster (`lag.groups[index]`): its own with
    /// `brokers`, the region's otherwise.
    pub fn of_group(config: &RegionConfig, group: &LagGroupConfig, index: usize) -> Self {
        match &group.brokers {
            Some(brokers) => Self::new(
                brokers,
                &group.security,
                &format!("lag.groups[{index}].security"),
                &group.options,
            ),
            None => Self::of_region(config),
        }
    }

    /// Its bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// A librdkafka config for one client of the cluster: the brokers and
    /// security, then `settings` (the client's role), then the cluster's
    /// pass-through options, which win.
    pub fn client(&self, settings: &[(&str, &str)]) -> Result<ClientConfig, ClientError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        let s = &self.security;
        c.set("security.protocol", s.protocol.as_str());
        if let Some(mechanism) = s.mechanism {
            c.set("sasl.mechanism", mechanism.as_str());
        }
        if let Some(user) = &s.username {
            c.set("sasl.username", user);
        }
        if let Some(password) = self.password()? {
            c.set("sasl.password", password);
        }
        for (key, file, what) in [
            ("ssl.ca.location", &s.ca_file, "ca_file"),
            ("ssl.certificate.location", &s.cert_file, "cert_file"),
            ("ssl.key.location", &s.key_file, "key_file"),
        ] {
            if let Some(path) = file {
                if !path.is_file() {
                    return Err(self
                        .config_error(what, format!("{} is not a readable file", path.display())));
                }
                c.set(key, path.display().to_string());
            }
        }
        if matches!(
            s.protocol,
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
        ) {
            // Check that the broker's certificate names the host dialled.
            c.set("ssl.endpoint.identification.algorithm", "https");
        }
        for (k, v) in settings {
            c.set(*k, *v);
        }
        for (k, v) in self.options.iter() {
            c.set(k, v);
        }
        Ok(c)
    }

    /// An admin client of the cluster, destroyed off the async runtime
    /// ([`Admin`]).
    fn admin(&self) -> Result<Admin, ClientError> {
        self.client(&[])?
            .create_with_context(Watch::new(self))
            .map(|client| Admin(Some(client)))
            .map_err(|e| self.error("failed to create an admin client", e))
    }

    /// Connects and reads the cluster's metadata, within `timeout`: the
    /// check a component makes before it starts. A refused login or
    /// certificate fails it at once with [`ClientError::Fatal`] (librdkafka
    /// reports those only through a polled client's error callback, and
    /// otherwise retries them forever); an unreachable cluster fails it
    /// with a retriable error once `timeout` has passed. Blocking.
    pub fn check(&self, timeout: Duration) -> Result<(), ClientError> {
        self.check_topics(timeout, &[])
    }

    /// [`Cluster::check`], and that each of `topics` exists and may be
    /// used: for a component that may not create them
    /// (`kafka.create_topics = false`), a missing topic or a refused one is
    /// fatal, naming the cluster and the topic. Blocking.
    pub fn check_topics(&self, timeout: Duration, topics: &[&str]) -> Result<(), ClientError> {
        // A producer asking for a topic's metadata would otherwise have a
        // broker that auto-creates topics make it.
        let probe: BaseProducer<Watch> = self
            .client(&[("allow.auto.create.topics", "false")])?
            .create_with_context(Watch::new(self))
            .map_err(|e| self.error("failed to create a client", e))?;
        let deadline = Instant::now() + timeout;
        let metadata = |topic: Option<&str>| loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500));
            let answer = probe.client().fetch_metadata(topic, wait);
            probe.poll(Duration::ZERO);
            if let Some(fatal) = probe.context().fatal.get() {
                return Err(ClientError::Fatal(fatal));
            }
            match answer {
                Ok(metadata) if !metadata.brokers().is_empty() => return Ok(metadata),
                Err(e) if is_fatal(&e) || Instant::now() >= deadline => {
                    return Err(self.error("failed to connect", e));
                }
                _ if Instant::now() >= deadline => {
                    let none = KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerNotAvailable);
                    return Err(self.error("failed to connect", none));
                }
                _ => {}
            }
        };
        metadata(None)?;
        for &topic in topics {
            let metadata = metadata(Some(topic))?;
            if let Some(e) = topic_refused(&metadata, topic) {
                return Err(self.error(&format!("cannot use topic {topic}"), e));
            }
            let exists = metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && !t.partitions().is_empty());
            if !exists {
                return Err(ClientError::Fatal(format!(
                    "Kafka cluster {}: topic {topic} does not exist \
                     (create it, or set kafka.create_topics = true)",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// [`Cluster::check`] within [`ADMIN_TIMEOUT`], off the async runtime.
    pub async fn verify(&self) -> Result<(), ClientError> {
        self.verify_topics(&[]).await
    }

    /// [`Cluster::check_topics`] within [`ADMIN_TIMEOUT`], off the async
    /// runtime.
    pub async fn verify_topics(&self, topics: &[&str]) -> Result<(), ClientError> {
        let cluster = self.clone();
        let topics: Vec<String> = topics.iter().map(|&t| t.to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            cluster.check_topics(ADMIN_TIMEOUT, &topics)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Creates the topics that are missing; those that exist are left as
    /// they are. Verifies the cluster first ([`Cluster::verify`]).
    pub async fn create_topics(&self, topics: &[Topic<'_>]) -> Result<(), ClientError> {
        self.verify().await?;
        let admin = self.admin()?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                let topic = NewTopic::new(
                    t.name,
                    i32::try_from(t.partitions).unwrap_or(i32::MAX),
                    TopicReplication::Fixed(i32::from(t.replication_factor)),
                );
                if t.compacted {
                    topic.set("cleanup.policy", "compact")
                } else {
                    topic
                }
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let created = async {
            let results = admin
                .create_topics(&new, &options)
                .await
                .map_err(|e| (String::new(), e))?;
            for result in results {
                match result {
                    Ok(topic) => tracing::info!(topic, "created topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => return Err((topic, KafkaError::AdminOp(code))),
                }
            }
            Ok(())
        };
        created.await.map_err(|(topic, e): (String, KafkaError)| {
            // A refused login shows as a timeout; the client's context has
            // the reason by then.
            match admin.inner().context().fatal.get() {
                Some(fatal) => ClientError::Fatal(fatal),
                None if topic.is_empty() => self.error("failed to create topics", e),
                None => self.error(&format!("failed to create topic {topic}"), e),
            }
        })
    }

    /// The topic's `retention.ms` as the cluster reports it; `None` when it
    /// keeps records forever (`-1`).
    pub async fn retention_ms(&self, topic: &str) -> Result<Option<u64>, ClientError> {
        let admin = self.admin()?;
        let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
        let what = format!("failed to read the config of topic {topic}");
        let answers = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
            .await
            .map_err(|e| self.error(&what, e))?;
        let resource = answers
            .into_iter()
            .next()
            .ok_or_else(|| self.error(&what, KafkaError::AdminOpCreation("no answer".into())))?
            .map_err(|code| self.error(&what, KafkaError::AdminOp(code)))?;
        let value = resource
            .get("retention.ms")
            .and_then(|entry| entry.value.as_deref())
            .ok_or_else(|| {
                self.error(&what, KafkaError::AdminOpCreation("no retention.ms".into()))
            })?;
        let ms: i64 = value.parse().map_err(|_| {
            self.error(
                &what,
                KafkaError::AdminOpCreation(format!("retention.ms = {value}")),
            )
        })?;
        Ok(u64::try_from(ms).ok())
    }

    /// A Kafka error of this cluster, with what was being done.
    pub fn error(&self, what: &str, source: KafkaError) -> ClientError {
        ClientError::Kafka {
            cluster: self.name.clone(),
            what: what.to_owned(),
            source: Box::new(source),
        }
    }

    fn config_error(&self, what: &str, reason: String) -> ClientError {
        ClientError::Config {
            field: format!("{}.{what}", self.field),
            reason,
        }
    }

    /// The SASL password, from its variable or file.
    fn password(&self) -> Result<Option<String>, ClientError> {
        let s = &self.security;
        read_secret(
            &self.field,
            "password",
            s.password_env.as_deref(),
            s.password_file.as_deref(),
        )
        .map_err(|e| ClientError::Config {
            field: e.field,
            reason: e.problem,
        })
    }
}

/// A topic to create.
#[derive(Debug, Clone, Copy)]
pub struct Topic<'a> {
    pub name: &'a str,
    pub partitions: u32,
    pub replication_factor: u16,
    /// `cleanup.policy = compact`.
    pub compacted: bool,
}

/// Whether an error will not go away by trying again: the cluster refused
/// the credentials, the certificate, or the permission. An operator must
/// act; a component stops with the error instead of retrying forever.
/// Network errors, timeouts and a leader moving are retried.
pub fn is_fatal(error: &KafkaError) -> bool {
    error.rdkafka_error_code().is_some_and(is_fatal_code)
}

/// The fatal error (an authorization refused) the cluster's metadata
/// gives for `topic`, if any: a client that may not see a topic finds it
/// in the metadata with that error instead of its partitions.
pub fn topic_refused(metadata: &Metadata, topic: &str) -> Option<KafkaError> {
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .find_map(|t| t.error())
        .map(RDKafkaErrorCode::from)
        .filter(|&code| is_fatal_code(code))
        .map(KafkaError::MetadataFetch)
}

/// [`is_fatal`] for an error code.
pub fn is_fatal_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::Authentication
            | C::SaslAuthenticationFailed
            | C::SSL
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::DelegationTokenAuthorizationFailed
            | C::UnsupportedSASLMechanism
            | C::IllegalSASLState
            | C::Fatal
    )
}

/// The first fatal error a client reported outside any call (librdkafka
/// reports a refused login or certificate through its error callback, and
/// goes on retrying): shared between a [`Watch`] context and whoever
/// decides to stop.
#[derive(Debug, Clone, Default)]
pub struct Fatal(Arc<Mutex<Option<String>>>);

impl Fatal {
    /// The fatal error seen, if any.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Looks at an error a client reported: a fatal one is kept (the first
    /// only), others are logged.
    pub fn observe(&self, cluster: &str, error: &KafkaError, reason: &str) {
        if is_fatal(error) {
            tracing::error!(cluster, "Kafka cluster {cluster}: {error}: {reason}");
            let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert_with(|| format!("Kafka cluster {cluster}: {reason}"));
        } else {
            tracing::warn!(cluster, "Kafka cluster {cluster}: {error}: {reason}");
        }
    }
}

/// A client context that keeps the fatal errors of its client in a
/// [`Fatal`].
#[derive(Debug, Clone)]
pub struct Watch {
    pub cluster: String,
    pub fatal: Fatal,
}

impl Watch {
    /// A context for a client of `cluster`.
    pub fn new(cluster: &Cluster) -> Self {
        Self {
            cluster: cluster.name.clone(),
            fatal: Fatal::default(),
        }
    }
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        self.fatal.observe(&self.cluster, &error, reason);
    }
}

impl ConsumerContext for Watch {}

impl ProducerContext for Watch {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// An admin client that, dropped, is destroyed by [`drop_off_runtime`].
struct Admin(Option<AdminClient<Watch>>);

impl std::ops::Deref for Admin {
    type Target = AdminClient<Watch>;

    // `None` only once `drop` has taken the client: never seen here.
    #[allow(clippy::expect_used)]
    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("an admin client is taken only when dropped")
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop_off_runtime(client);
        }
    }
}

/// Drops a client on the blocking pool when called from the async runtime:
/// librdkafka's destroy waits for the client's threads to end, and would
/// hold a runtime thread (and every task queued on it) meanwhile. In the
/// load test, the retention checks' admin clients, dropped after their
/// request timed out on a cluster that does not answer it, held every
/// region's replication up for 100–200 ms.
fn drop_off_runtime<T: Send + 'static>(client: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(client))),
        Err(_) => drop(client),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vecsync_schemas::config::SaslMechanism;

    /// A client whose drop waits for the runtime to run another task: it
    /// finishes only when dropped off the runtime's one thread.
    #[tokio::test(flavor = "current_thread")]
    async fn a_client_dropped_from_the_runtime_leaves_the_runtime_free() {
        struct Client {
            ran: std::sync::mpsc::Receiver<()>,
            dropped: tokio::sync::oneshot::Sender<bool>,
        }
        impl Drop for Client {
            fn drop(&mut self) {
                // Bounded, so that a drop on the runtime's thread fails the
                // test instead of hanging it.
                let ran = self.ran.recv_timeout(Duration::from_secs(30)).is_ok();
                let (done, _) = tokio::sync::oneshot::channel();
                let _ = std::mem::replace(&mut self.dropped, done).send(ran);
            }
        }
        let (run, ran) = std::sync::mpsc::channel();
        let (dropped, was) = tokio::sync::oneshot::channel();
        drop_off_runtime(Client { ran, dropped });
        tokio::spawn(async move { run.send(()) })
            .await
            .unwrap()
            .unwrap();
        assert!(was.await.unwrap(), "the drop held the runtime");
    }

    fn sasl(password_env: Option<&str>, password_file: Option<std::path::PathBuf>) -> Cluster {
        let security = KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            mechanism: Some(SaslMechanism::ScramSha512),
            username: Some("vecsync".into()),
            password_env: password_env.map(str::to_owned),
            password_file,
            ..KafkaSecurity::default()
        };
        let mut options = KafkaOptions::default();
        options.insert("socket.keepalive.enable".into(), "true".into());
        Cluster::new("b:9093", &security, "kafka.security", &options)
    }

    fn get(c: &ClientConfig, key: &str) -> Option<String> {
        c.get(key).map(str::to_owned)
    }

    #[test]
    fn security_becomes_librdkafka_settings_and_options_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let c = sasl(None, Some(file))
            .client(&[("socket.keepalive.enable", "false")])
            .unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("sasl_ssl"));
        assert_eq!(get(&c, "sasl.mechanism").as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(get(&c, "sasl.username").as_deref(), Some("vecsync"));
        assert_eq!(get(&c, "sasl.password").as_deref(), Some("s3cret"));
        assert_eq!(get(&c, "socket.keepalive.enable").as_deref(), Some("true"));
    }

    #[test]
    fn a_missing_password_or_file_names_the_field() {
        let err = sasl(Some("VECSYNC_TEST_UNSET_PASSWORD"), None)
            .client(&[])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kafka.security.password_env: environment variable VECSYNC_TEST_UNSET_PASSWORD is not set"
        );
        assert!(!err.is_retriable());
        let mut cluster = sasl(Some("PATH"), None);
        cluster.security.ca_file = Some("/nonexistent/ca.pem".into());
        let err = cluster.client(&[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("kafka.security.ca_file: /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn refused_credentials_and_permissions_are_fatal_and_the_network_is_not() {
        for code in [
            RDKafkaErrorCode::Authentication,
            RDKafkaErrorCode::SaslAuthenticationFailed,
            RDKafkaErrorCode::SSL,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::GroupAuthorizationFailed,
        ] {
            assert!(is_fatal(&KafkaError::MetadataFetch(code)), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::QueueFull,
        ] {
            assert!(!is_fatal(&KafkaError::MetadataFetch(code)), "{code:?}");
        }
        let fatal = Fatal::default();
        let refused = KafkaError::Global(RDKafkaErrorCode::Authentication);
        fatal.observe(
            "b:9093",
            &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "down",
        );
        assert_eq!(fatal.get(), None);
        fatal.observe(
            "b:9093",
            &refused,
            "SASL authentication error: invalid credentials",
        );
        fatal.observe("b:9093", &refused, "again");
        assert_eq!(
            fatal.get().as_deref(),
            Some("Kafka cluster b:9093: SASL authentication error: invalid credentials")
        );
    }
}
