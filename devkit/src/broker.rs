//! A real Kafka-protocol broker for tests and the demo: tansu, started as a
//! child process on a free loopback port (DESIGN.md §6).
//!
//! `.ci/run` installs tansu. A test whose broker is missing fails, unless
//! the user opts out with `VECSYNC_SKIP_MISSING=1` (see [`skip_without`]).

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the broker keeps its data.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Lost when the broker stops.
    Memory,
    /// A SQLite file; survives restarts.
    Sqlite(PathBuf),
}

/// A running tansu broker, stopped when dropped.
#[derive(Debug)]
pub struct Tansu {
    binary: PathBuf,
    port: u16,
    storage: Storage,
    log: PathBuf,
    child: Option<Child>,
}

/// Finds the tansu binary: `TANSU_BIN`, then `PATH`, then cargo's bin dir.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return Some(PathBuf::from(p));
    }
    which("tansu").or_else(|| {
        std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .map(|d| d.join("bin").join("tansu"))
            .filter(|p| p.is_file())
    })
}

/// A program on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// [`tansu_binary`], or `None` after [`skip_without`] says it is missing.
pub fn tansu_or_skip() -> Option<PathBuf> {
    let binary = tansu_binary();
    if binary.is_none() {
        skip_without(
            "tansu is not installed (cargo install tansu --version 0.6.0 --locked \
             --features dynostore,libsql; or set TANSU_BIN)",
        );
    }
    binary
}

impl Tansu {
    /// Starts an in-memory broker, or returns `None` after a loud message
    /// when tansu is not installed and the user opted out of such tests
    /// ([`skip_without`]).
    pub fn start() -> Option<Self> {
        Self::start_with(Storage::Memory)
    }

    /// Like [`Tansu::start`], with the given storage.
    pub fn start_with(storage: Storage) -> Option<Self> {
        let binary = tansu_or_skip()?;
        let port = free_port().unwrap_or_else(|e| panic!("no free loopback port: {e}"));
        let log = std::env::temp_dir().join(format!("vecsync-tansu-{port}.log"));
        let mut broker = Self {
            binary,
            port,
            storage,
            log,
            child: None,
        };
        broker
            .launch()
            .unwrap_or_else(|e| panic!("failed to start tansu: {e}"));
        Some(broker)
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

    /// The broker's own log, to read when a test fails.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Creates a topic with tansu's own admin command.
    pub fn create_topic(&self, name: &str, partitions: u32) -> io::Result<()> {
        let out = Command::new(&self.binary)
            .args(["topic", "create", name, "--partitions"])
            .arg(partitions.to_string())
            .arg("--broker")
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "tansu topic create {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// Kills the broker, as a crash or a cut link would look to clients.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port (and, with SQLite storage,
    /// the same data).
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }

    fn launch(&mut self) -> io::Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // tansu reads a sqlite URL's path as relative to its working
        // directory, so it runs beside the file.
        let (storage, dir) = match &self.storage {
            Storage::Memory => ("memory://tansu/".to_owned(), std::env::temp_dir()),
            Storage::Sqlite(path) => {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let dir = path.parent().map(Path::to_owned).unwrap_or_default();
                (format!("sqlite://{name}"), dir)
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.binary)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &storage])
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let brokers = self.brokers();
        let child = self.child.insert(child);
        wait_metadata("tansu", child, &brokers, &self.log)
    }
}

/// The variable a user sets to `1` to skip, rather than fail, the tests
/// whose programs (tansu, Apache Kafka, Prometheus) are not installed.
pub const SKIP_MISSING: &str = "VECSYNC_SKIP_MISSING";

/// A test that needs a program which is missing fails, naming it and how
/// to install it; a test passing without its broker would prove nothing.
/// With [`SKIP_MISSING`] set to `1` (never in CI, where `.ci/run` installs
/// everything) it is skipped after a loud message on stderr instead.
pub fn skip_without(msg: &str) {
    let opted_out = std::env::var(SKIP_MISSING).is_ok_and(|v| v == "1");
    if !opted_out || std::env::var_os("CI").is_some() {
        panic!("{msg}; set {SKIP_MISSING}=1 to skip the tests that need it");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
}

/// Waits up to 20 s for a started program to listen on `addr`; fails early
/// when it exits. `log` is where its output went, named in errors.
pub(crate) fn wait_listening(
    name: &str,
    child: &mut Child,
    addr: SocketAddr,
    log: &Path,
) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "{name} exited with {status}; see {}",
                log.display()
            )));
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{name} did not listen on {addr} within 20 s; see {}",
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Waits up to 60 s for a started broker to answer metadata with itself
/// in it; fails early when it exits. Listening is not enough: a broker
/// may listen before it answers, or a port it was restarted on may have
/// gone to another program meanwhile.
pub(crate) fn wait_metadata(
    name: &str,
    child: &mut Child,
    brokers: &str,
    log: &Path,
) -> io::Result<()> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("log_level", "0")
        .create()
        .map_err(io::Error::other)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "{name} exited with {status}; see {}",
                log.display()
            )));
        }
        if let Ok(m) = probe.fetch_metadata(None, Duration::from_millis(500))
            && !m.brokers().is_empty()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{name} did not answer metadata on {brokers} within 60 s; see {}",
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A name no other test of this run uses: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Headers as (name, UTF-8 value).
    pub headers: Vec<(String, String)>,
}

/// Reads `topic` from the start of every partition until `wanted` records
/// for which `keep` holds have arrived or `timeout` passes, and returns
/// those records. Blocking; call it from `spawn_blocking` in async tests.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    wanted: usize,
    timeout: Duration,
    keep: impl Fn(&ReadRecord) -> bool,
) -> Result<Vec<ReadRecord>, String> {
    use rdkafka::message::Headers;
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("vecsync-read"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    // A broker that has just (re)started may refuse the first requests, and
    // the topic may not have been created yet.
    let assignment = loop {
        let found = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|e| e.to_string())
            .and_then(|metadata| {
                let mut assignment = TopicPartitionList::new();
                for t in metadata.topics().iter().filter(|t| t.name() == topic) {
                    for p in t.partitions() {
                        assignment
                            .add_partition_offset(topic, p.id(), Offset::Beginning)
                            .map_err(|e| e.to_string())?;
                    }
                }
                Ok(assignment)
            });
        match found {
            Ok(assignment) if assignment.count() > 0 => break assignment,
            Ok(_) if Instant::now() >= deadline => {
                return Err(format!("topic {topic} has no partitions"));
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while out.len() < wanted && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let record = ReadRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    let value =
                                        String::from_utf8_lossy(h.value.unwrap_or_default());
                                    (h.key.to_owned(), value.into_owned())
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                if keep(&record) {
                    out.push(record);
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => {}
        }
    }
    Ok(out)
}
