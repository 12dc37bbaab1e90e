//! Apache Kafka and MirrorMaker 2 for tests, the load test and the
//! walkthrough: the real engines, run from the jars that
//! `devkit/kafka/pom.xml` lists (DESIGN.md §6).
//!
//! - [`Kafka`]: a single-node KRaft broker (broker and controller in one
//!   process) on loopback ports, its data in a folder of its own. It can be
//!   stopped, killed and restarted on the same data.
//! - [`MirrorMaker2`]: MirrorMaker 2 in dedicated mode, its properties made
//!   from the flows, with replication factors of 1 and short intervals.
//!
//! The jars are found in `VECSYNC_KAFKA_LIBS`, else in
//! `~/.cache/vecsync/kafka-<KAFKA_VERSION>/libs`, where `.ci/run` copies
//! them with `mvn dependency:copy-dependencies`. Without them a test fails,
//! unless the user opts out (see [`crate::broker::skip_without`]).

use crate::broker::{free_port, skip_without, wait_metadata};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The Kafka version `devkit/kafka/pom.xml` pins.
pub const KAFKA_VERSION: &str = "4.1.1";

/// Where the jars are: `VECSYNC_KAFKA_LIBS`, else the cache `.ci/run` fills.
pub fn kafka_libs() -> Option<PathBuf> {
    let dir = match std::env::var_os("VECSYNC_KAFKA_LIBS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/vecsync")
            .join(format!("kafka-{KAFKA_VERSION}"))
            .join("libs"),
    };
    dir.join(format!("kafka_2.13-{KAFKA_VERSION}.jar"))
        .is_file()
        .then_some(dir)
}

/// [`kafka_libs`], or `None` after [`skip_without`] says they are missing.
pub fn kafka_libs_or_skip() -> Option<PathBuf> {
    let libs = kafka_libs();
    if libs.is_none() {
        skip_without(&missing_jars());
    }
    libs
}

/// [`kafka_libs`], or an error that says how to get them.
pub fn kafka_libs_required() -> io::Result<PathBuf> {
    kafka_libs().ok_or_else(|| io::Error::other(missing_jars()))
}

fn missing_jars() -> String {
    format!(
        "Apache Kafka's jars are missing (mvn -f devkit/kafka/pom.xml \
         dependency:copy-dependencies -DoutputDirectory=~/.cache/vecsync/kafka-{KAFKA_VERSION}/libs; \
         or set VECSYNC_KAFKA_LIBS)"
    )
}

/// A JVM running one of Kafka's main classes, its output in `log`.
fn java(libs: &Path, dir: &Path, heap: &str, main: &str, args: &[&str]) -> io::Result<Child> {
    let log4j = dir.join("log4j2.properties");
    if !log4j.exists() {
        std::fs::write(&log4j, LOG4J)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("out.log"))?;
    Command::new("java")
        .arg(format!("-Xmx{heap}"))
        .args(["-XX:+UseParallelGC", "-Djava.awt.headless=true"])
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg(main)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// Warnings and errors only; MirrorMaker's unknown-key warnings among them.
const LOG4J: &str = "\
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
";

/// A folder that is removed when dropped.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new(prefix: &str) -> io::Result<Self> {
        let dir = std::env::temp_dir().join(crate::broker::unique_name(prefix));
        // A directory of this name is a killed process's, which had our
        // process id: a broker formatted there would refuse to format again.
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends SIGTERM and waits up to `grace` for the process to exit, then
/// kills it.
fn terminate(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A listener of its own for the clients across one link: the broker
/// listens on `port` and advertises `advertised`, the address of a fault
/// proxy in front of it ([`crate::proxy::WanLink::to_listener`]). A client
/// that bootstraps through the proxy is told the proxy's address, so it
/// stays on the link, while local clients use the broker's own listener.
#[derive(Debug, Clone, Copy)]
pub struct LinkListener {
    pub port: u16,
    pub advertised: std::net::SocketAddr,
}

/// A running single-node KRaft broker, killed when dropped.
#[derive(Debug)]
pub struct Kafka {
    libs: PathBuf,
    port: u16,
    dir: Scratch,
    child: Option<Child>,
    secure: Option<SecureListener>,
}

/// A `SASL_SSL` listener (SCRAM-SHA-512 over TLS) a broker serves beside
/// its plaintext one, and what a client needs to use it.
#[derive(Debug, Clone)]
pub struct SecureListener {
    pub port: u16,
    /// The broker's self-signed certificate (for 127.0.0.1), as PEM: the
    /// CA a client trusts.
    pub ca_file: PathBuf,
    /// The SCRAM-SHA-512 users made when the broker was formatted, each
    /// with its password, the first `vecsync`.
    pub users: Vec<(String, String)>,
    /// A second listener, `SSL` with client certificates required (mutual
    /// TLS), which trusts the client CA that signed `client_cert`.
    pub mtls_port: u16,
    /// A client certificate (`CN=vecsync`) and its key, as PEM.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    dir: PathBuf,
}

impl SecureListener {
    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<mtls_port>`, for `bootstrap.servers`.
    pub fn mtls_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.mtls_port)
    }

    /// A client's `[kafka.security]` for the mutual-TLS listener.
    pub fn mtls_security(&self) -> vecsync_schemas::config::KafkaSecurity {
        use vecsync_schemas::config::{KafkaSecurity, SecurityProtocol};
        KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            ca_file: Some(self.ca_file.clone()),
            cert_file: Some(self.client_cert.clone()),
            key_file: Some(self.client_key.clone()),
            ..KafkaSecurity::default()
        }
    }

    /// A client's `[kafka.security]` for the listener, as user `vecsync`.
    pub fn security(&self) -> vecsync_schemas::config::KafkaSecurity {
        self.security_of("vecsync")
    }

    /// A client's `[kafka.security]` for the listener, as `user` (its
    /// password in a file).
    pub fn security_of(&self, user: &str) -> vecsync_schemas::config::KafkaSecurity {
        use vecsync_schemas::config::{KafkaSecurity, SaslMechanism, SecurityProtocol};
        KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            mechanism: Some(SaslMechanism::ScramSha512),
            username: Some(user.to_owned()),
            password_file: Some(self.dir.join(format!("{user}.password"))),
            ca_file: Some(self.ca_file.clone()),
            ..KafkaSecurity::default()
        }
    }
}

impl Kafka {
    /// Formats a new data folder and starts the broker on free loopback
    /// ports. `None` after a message when the jars are missing and the user
    /// opted out of such tests; otherwise a missing jar or a broker that
    /// does not come up panics.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Like [`Kafka::start`], with extra `server.properties` lines.
    pub fn start_with(extra: &[(&str, &str)]) -> Option<Self> {
        let libs = kafka_libs_or_skip()?;
        let broker = Self::launch_new(libs, &[], extra, None)
            .unwrap_or_else(|e| panic!("failed to start Apache Kafka: {e}"));
        Some(broker)
    }

    /// Like [`Kafka::start`], with a [`SecureListener`] beside the
    /// plaintext one (which the devkit's own helpers go on using): a
    /// certificate made with the JDK's `keytool`, and a SCRAM user.
    pub fn start_secured() -> Option<Self> {
        Self::start_secured_with(&[], false)
    }

    /// Like [`Kafka::start_secured`], with SCRAM users beside `vecsync`,
    /// and with `acls`, KRaft's `StandardAuthorizer`: a user on the secured
    /// listener may do only what [`Kafka::allow`] grants it (the plaintext
    /// listener's anonymous clients may do anything).
    pub fn start_secured_with(users: &[&str], acls: bool) -> Option<Self> {
        let libs = kafka_libs_or_skip()?;
        let broker = Self::launch_new(libs, &[], &[], Some((users, acls)))
            .unwrap_or_else(|e| panic!("failed to start Apache Kafka: {e}"));
        Some(broker)
    }

    /// Grants `user` the `operations` (`Read`, `Write`, `Describe`, …) on
    /// each of `topics` and on the groups whose names start with one of
    /// `group_prefixes`, with Kafka's `kafka-acls` tool.
    pub fn allow(
        &self,
        user: &str,
        operations: &[&str],
        topics: &[&str],
        group_prefixes: &[&str],
    ) -> io::Result<()> {
        let brokers = self.brokers();
        let principal = format!("User:{user}");
        let resources = [
            ("--topic", topics, "literal"),
            ("--group", group_prefixes, "prefixed"),
        ];
        for (flag, names, pattern) in resources {
            if names.is_empty() {
                continue;
            }
            let mut args = vec!["--bootstrap-server", &brokers, "--add"];
            args.extend([
                "--allow-principal",
                &principal,
                "--resource-pattern-type",
                pattern,
            ]);
            for op in operations {
                args.extend(["--operation", op]);
            }
            for name in names {
                args.extend([flag, name]);
            }
            let main = "org.apache.kafka.tools.AclCommand";
            let status = java(&self.libs, &self.dir.0, "128m", main, &args)?.wait()?;
            if !status.success() {
                return Err(io::Error::other(format!(
                    "kafka-acls exited with {status}; see {}",
                    self.log_path().display()
                )));
            }
        }
        Ok(())
    }

    /// The secured listener of a broker from [`Kafka::start_secured`].
    pub fn secure(&self) -> Option<&SecureListener> {
        self.secure.as_ref()
    }

    /// Starts a broker that also serves a listener per link. Errors (the
    /// jars missing among them) are returned, for programs such as the
    /// load test.
    pub fn start_linked(links: &[LinkListener]) -> io::Result<Self> {
        Self::launch_new(kafka_libs_required()?, links, &[], None)
    }

    fn launch_new(
        libs: PathBuf,
        links: &[LinkListener],
        extra: &[(&str, &str)],
        secured: Option<(&[&str], bool)>,
    ) -> io::Result<Self> {
        let dir = Scratch::new("vecsync-kafka")?;
        let port = free_port()?;
        let controller = free_port()?;
        let (mut listeners, mut advertised, mut protocols) = (
            format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"),
            format!("PLAINTEXT://127.0.0.1:{port}"),
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_owned(),
        );
        for (i, link) in links.iter().enumerate() {
            let _ = write!(listeners, ",LINK{i}://127.0.0.1:{}", link.port);
            let _ = write!(advertised, ",LINK{i}://{}", link.advertised);
            let _ = write!(protocols, ",LINK{i}:PLAINTEXT");
        }
        let secure = if let Some((users, _)) = secured {
            let secure = secure_listener(&dir.0, users)?;
            for (name, port) in [("SECURE", secure.port), ("MTLS", secure.mtls_port)] {
                let _ = write!(listeners, ",{name}://127.0.0.1:{port}");
                let _ = write!(advertised, ",{name}://127.0.0.1:{port}");
            }
            protocols.push_str(",SECURE:SASL_SSL,MTLS:SSL");
            Some(secure)
        } else {
            None
        };
        let mut props = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             listeners={listeners}\n\
             advertised.listeners={advertised}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map={protocols}\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
             log.dirs={data}\n\
             num.partitions=1\n\
             auto.create.topics.enable=false\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=3\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n\
             log.retention.check.interval.ms=5000\n",
            data = dir.0.join("data").display(),
        );
        let mut format_args = Vec::new();
        if let Some(secure) = &secure {
            let _ = write!(
                props,
                "sasl.enabled.mechanisms=SCRAM-SHA-512\n\
                 listener.name.secure.scram-sha-512.sasl.jaas.config=\
                 org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
                 ssl.keystore.location={}\n\
                 ssl.keystore.type=PKCS12\n\
                 ssl.keystore.password={KEYSTORE_PASSWORD}\n\
                 ssl.key.password={KEYSTORE_PASSWORD}\n\
                 listener.name.mtls.ssl.client.auth=required\n\
                 listener.name.mtls.ssl.truststore.type=PEM\n\
                 listener.name.mtls.ssl.truststore.location={}\n",
                dir.0.join("broker.p12").display(),
                dir.0.join("client-ca.pem").display()
            );
            for (user, password) in &secure.users {
                format_args.push("--add-scram".to_owned());
                format_args.push(format!("SCRAM-SHA-512=[name={user},password={password}]"));
            }
        }
        if secured.is_some_and(|(_, acls)| acls) {
            props.push_str(
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
                 super.users=User:ANONYMOUS\n",
            );
        }
        for (k, v) in extra {
            let _ = writeln!(props, "{k}={v}");
        }
        let file = dir.0.join("server.properties");
        std::fs::write(&file, props)?;
        let file = file.display().to_string();
        let id = cluster_id(port);
        let mut args = vec!["format", "--standalone", "-t", &id, "-c", &file];
        args.extend(format_args.iter().map(String::as_str));
        let status = java(&libs, &dir.0, "256m", "kafka.tools.StorageTool", &args)?.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "kafka-storage format exited with {status}; see {}",
                dir.0.join("out.log").display()
            )));
        }
        let mut broker = Self {
            libs,
            port,
            dir,
            child: None,
            secure,
        };
        broker.launch()?;
        Ok(broker)
    }

    fn launch(&mut self) -> io::Result<()> {
        let file = self.dir.0.join("server.properties").display().to_string();
        let heap = std::env::var("VECSYNC_KAFKA_HEAP").unwrap_or_else(|_| "512m".into());
        let child = java(&self.libs, &self.dir.0, &heap, "kafka.Kafka", &[&file])?;
        let (brokers, log) = (self.brokers(), self.log_path());
        let child = self.child.insert(child);
        wait_metadata("Apache Kafka", child, &brokers, &log)
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The broker's output, to read when a test fails.
    pub fn log_path(&self) -> PathBuf {
        self.dir.0.join("out.log")
    }

    /// Creates a topic with `partitions` partitions and one replica, and
    /// waits until its metadata shows them. Blocking; safe to call from
    /// async code.
    pub fn create_topic(&self, name: &str, partitions: u32) -> io::Result<()> {
        self.create_topic_with(name, partitions, &[])
    }

    /// Like [`Kafka::create_topic`], with topic configs such as
    /// `("retention.ms", "1000")`.
    pub fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        configs: &[(&str, &str)],
    ) -> io::Result<()> {
        let brokers = self.brokers();
        let (name, configs): (String, Vec<(String, String)>) = (
            name.to_owned(),
            configs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        // The admin client's futures need no executor of their own; a
        // thread with a small runtime keeps this callable from anywhere.
        std::thread::spawn(move || create_topic(&brokers, &name, partitions, &configs))
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("topic creation panicked")))
    }

    /// Stops the broker cleanly (SIGTERM), as an operator would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(30));
        }
    }

    /// Kills the broker (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same ports and the same data.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }

    /// Starts the broker again after [`Kafka::kill`] or [`Kafka::stop`].
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Err(io::Error::other("the broker is running"));
        }
        self.launch()
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.kill();
    }
}

fn create_topic(
    brokers: &str,
    name: &str,
    partitions: u32,
    configs: &[(String, String)],
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(io::Error::other)?;
    let partitions = i32::try_from(partitions).map_err(io::Error::other)?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = rt
        .block_on(admin.create_topics([&topic], &options))
        .map_err(io::Error::other)?;
    for r in results {
        r.map_err(|(t, e)| io::Error::other(format!("creating topic {t}: {e}")))?;
    }
    // Kafka answers before every partition has a leader.
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(io::Error::other)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = probe
            .fetch_metadata(Some(name), Duration::from_secs(5))
            .ok()
            .is_some_and(|m| {
                m.topics().iter().any(|t| {
                    t.name() == name
                        && t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "topic {name} has no leaders after 30 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The password of the broker's keystore (test material only).
const KEYSTORE_PASSWORD: &str = "vecsync-devkit";

/// A self-signed certificate for 127.0.0.1 in `dir/broker.p12`, its PEM in
/// `dir/ca.pem`, a client CA and certificate, free ports and SCRAM users
/// (`vecsync` and `users`, each password in `dir/<user>.password`) for a
/// [`SecureListener`].
fn secure_listener(dir: &Path, users: &[&str]) -> io::Result<SecureListener> {
    let keystore = dir.join("broker.p12").display().to_string();
    let ca_file = dir.join("ca.pem");
    let ca = ca_file.display().to_string();
    for args in [
        vec![
            "-genkeypair",
            "-alias",
            "broker",
            "-keyalg",
            "RSA",
            "-keysize",
            "2048",
            "-validity",
            "2",
            "-dname",
            "CN=127.0.0.1",
            "-ext",
            "SAN=ip:127.0.0.1,dns:localhost",
            "-storetype",
            "PKCS12",
            "-keystore",
            &keystore,
            "-storepass",
            KEYSTORE_PASSWORD,
            "-keypass",
            KEYSTORE_PASSWORD,
        ],
        vec![
            "-exportcert",
            "-rfc",
            "-alias",
            "broker",
            "-keystore",
            &keystore,
            "-storepass",
            KEYSTORE_PASSWORD,
            "-file",
            &ca,
        ],
    ] {
        run_tool("keytool", &args)?;
    }
    // A client CA (which the mutual-TLS listener trusts) and a client
    // certificate it signs.
    let client = crate::tls::TestCerts::signed(
        dir,
        "client",
        "/CN=vecsync",
        "basicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n",
    )?;
    let mut made = Vec::new();
    for user in std::iter::once("vecsync").chain(users.iter().copied()) {
        let password = crate::broker::unique_name(&format!("{user}-password"));
        std::fs::write(dir.join(format!("{user}.password")), &password)?;
        made.push((user.to_owned(), password));
    }
    Ok(SecureListener {
        port: free_port()?,
        ca_file,
        users: made,
        mtls_port: free_port()?,
        client_cert: client.cert_file,
        client_key: client.key_file,
        dir: dir.to_owned(),
    })
}

/// Runs a command-line tool to its end; its error output when it fails.
pub(crate) fn run_tool(program: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program).args(args).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{program} {} failed: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&out.stderr)
    )))
}

/// A cluster id for `kafka-storage format`: 16 bytes, base64url without
/// padding, different per broker.
fn cluster_id(port: u16) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    cluster_id_of(nanos, port)
}

fn cluster_id_of(nanos: u128, port: u16) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 16];
    bytes[..12].copy_from_slice(&nanos.to_le_bytes()[..12]);
    bytes[12..14].copy_from_slice(&port.to_le_bytes());
    bytes[14..].copy_from_slice(&(std::process::id() as u16).to_le_bytes());
    // Never the all-zero id, which Kafka reserves, and never a leading '-'
    // (or '_'), which the storage tool's argument parser reads as an option.
    bytes[0] = (bytes[0] & 0x7f) | 1;
    let mut bits: u32 = 0;
    let mut n = 0;
    let mut out = String::with_capacity(22);
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(ALPHABET[((bits >> n) & 63) as usize] as char);
        }
    }
    out.push(ALPHABET[((bits << (6 - n)) & 63) as usize] as char);
    out
}

/// One cluster MirrorMaker 2 connects.
#[derive(Debug, Clone)]
pub struct Mm2Cluster {
    /// MirrorMaker's alias: the prefix of the mirrors it writes elsewhere.
    pub alias: String,
    pub brokers: String,
}

/// A running MirrorMaker 2 (dedicated mode), killed when dropped.
#[derive(Debug)]
pub struct MirrorMaker2 {
    libs: PathBuf,
    dir: Scratch,
    /// `--clusters`: the target clusters this process serves; empty for all.
    targets: Vec<String>,
    child: Option<Child>,
}

/// The topics of the cluster at `brokers`; none when it does not answer
/// within 5 s.
pub fn topic_names(brokers: &str) -> Vec<String> {
    let probe: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create();
    probe
        .ok()
        .and_then(|p| p.fetch_metadata(None, Duration::from_secs(5)).ok())
        .map(|m| m.topics().iter().map(|t| t.name().to_owned()).collect())
        .unwrap_or_default()
}

/// Properties for tests: every flow between `clusters` that `flows` names
/// (`(source, target)` aliases), mirroring the topics matched by `topics`,
/// replication factors of 1, one-second heartbeats and checkpoints, and
/// topic refreshes every two seconds.
pub fn mm2_properties(clusters: &[Mm2Cluster], flows: &[(&str, &str)], topics: &str) -> String {
    let aliases: Vec<&str> = clusters.iter().map(|c| c.alias.as_str()).collect();
    let mut p = format!("clusters = {}\n", aliases.join(", "));
    for c in clusters {
        let _ = writeln!(p, "{}.bootstrap.servers = {}", c.alias, c.brokers);
    }
    for (source, target) in flows {
        let _ = writeln!(p, "{source}->{target}.enabled = true");
    }
    let _ = writeln!(p, "topics = {topics}");
    p.push_str(
        "groups = none\n\
         replication.factor = 1\n\
         checkpoints.topic.replication.factor = 1\n\
         heartbeats.topic.replication.factor = 1\n\
         offset-syncs.topic.replication.factor = 1\n\
         offset.storage.replication.factor = 1\n\
         status.storage.replication.factor = 1\n\
         config.storage.replication.factor = 1\n\
         emit.heartbeats.interval.seconds = 1\n\
         emit.checkpoints.interval.seconds = 1\n\
         refresh.topics.interval.seconds = 2\n\
         refresh.groups.interval.seconds = 2\n\
         sync.topic.configs.interval.seconds = 2\n",
    );
    p
}

impl MirrorMaker2 {
    /// Starts MirrorMaker 2 with the given `mm2.properties` text. `None`
    /// when the jars are missing and the user opted out of such tests.
    pub fn start(properties: &str) -> Option<Self> {
        let libs = kafka_libs_or_skip()?;
        let mm = Self::launch_new(libs, properties, &[])
            .unwrap_or_else(|e| panic!("failed to start MirrorMaker 2: {e}"));
        Some(mm)
    }

    /// Starts a MirrorMaker 2 that runs only the flows into `target`
    /// (`--clusters`), as one per region is deployed beside the region's
    /// cluster. Errors are returned, for programs such as the load test.
    pub fn start_into(properties: &str, target: &str) -> io::Result<Self> {
        Self::launch_new(kafka_libs_required()?, properties, &[target.to_owned()])
    }

    fn launch_new(libs: PathBuf, properties: &str, targets: &[String]) -> io::Result<Self> {
        let dir = Scratch::new("vecsync-mm2")?;
        std::fs::write(dir.0.join("mm2.properties"), properties)?;
        let mut mm = Self {
            libs,
            dir,
            targets: targets.to_vec(),
            child: None,
        };
        mm.launch()?;
        Ok(mm)
    }

    fn launch(&mut self) -> io::Result<()> {
        let file = self.dir.0.join("mm2.properties").display().to_string();
        let mut args = vec![file.as_str()];
        if !self.targets.is_empty() {
            args.push("--clusters");
            args.extend(self.targets.iter().map(String::as_str));
        }
        let child = java(
            &self.libs,
            &self.dir.0,
            "512m",
            "org.apache.kafka.connect.mirror.MirrorMaker",
            &args,
        )?;
        self.child = Some(child);
        Ok(())
    }

    /// MirrorMaker's process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process still runs; its exit status if not.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// MirrorMaker's output, to read when a test fails.
    pub fn log_path(&self) -> PathBuf {
        self.dir.0.join("out.log")
    }

    /// What MirrorMaker has written to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops MirrorMaker cleanly (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(30));
        }
    }

    /// Starts it again with the same properties; it resumes from the
    /// offsets it stored in its clusters.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Err(io::Error::other("MirrorMaker is running"));
        }
        self.launch()
    }
}

impl Drop for MirrorMaker2 {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_16_bytes_of_base64url() {
        let id = cluster_id(9092);
        assert_eq!(id.len(), 22, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
        // The last character carries 2 bits of data and 4 of padding.
        assert!(b"AQgw".contains(&id.as_bytes()[21]), "{id}");
        // `-t <id>`: an id that starts with '-' would be taken for an option.
        for low_byte in 0..=255 {
            let id = cluster_id_of(low_byte, 9092);
            assert!(id.as_bytes()[0].is_ascii_alphabetic(), "{id}");
        }
        assert_ne!(cluster_id(9092), cluster_id(9093));
    }
}
