//! A TCP proxy that makes a loopback link look like a WAN link, for load
//! and fault tests (the kernel here has no netem): a one-way delay, a
//! bandwidth cap, and cuts that heal. The faults can be changed while
//! traffic flows.
//!
//! A cut holds traffic in both directions and holds new connections
//! unanswered until it heals, as a network partition does to TCP:
//! connections survive a short cut and their data arrives after it, late.
//! A Kafka client behind a plain TCP proxy would go around it, since the
//! broker's metadata names the broker's own address. [`WanLink`] puts
//! tansu's Kafka-aware proxy behind the fault proxy: it advertises the
//! fault proxy's address, so that the clients that bootstrap through the
//! link stay on it, while the broker's local clients connect directly.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// What the link does to traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Added to every byte's trip, each way.
    pub delay: Duration,
    /// Bytes per second each way, shared by every connection; `None`:
    /// unlimited.
    pub bytes_per_sec: Option<u64>,
    /// Nothing passes while set.
    pub cut: bool,
}

/// A running proxy; stopped, with its connections, when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<watch::Sender<LinkFaults>>,
    /// Bytes carried toward the upstream, and toward the clients.
    carried: [Arc<AtomicU64>; 2],
    task: JoinHandle<()>,
}

/// When a direction of the link is next free to send, for the bandwidth cap.
type Pacer = Arc<Mutex<Instant>>;

impl FaultProxy {
    /// Listens on `listen` (port 0 for any) and forwards to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(watch::channel(LinkFaults::default()).0);
        let shared = faults.clone();
        let carried: [Arc<AtomicU64>; 2] = Default::default();
        let counters = carried.clone();
        let task = tokio::spawn(async move {
            let pacers = [
                Pacer::new(Instant::now().into()),
                Pacer::new(Instant::now().into()),
            ];
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let faults = shared.subscribe();
                let pacers = pacers.clone();
                let counters = counters.clone();
                connections.spawn(async move {
                    let _ = relay(client, upstream, faults, pacers, counters).await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            addr,
            faults,
            carried,
            task,
        })
    }

    /// Bytes the link has carried from the upstream to its clients (for a
    /// Kafka link, mostly fetched records).
    pub fn bytes_to_clients(&self) -> u64 {
        self.carried[1].load(Ordering::Relaxed)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the faults; data already delayed keeps its delay.
    pub fn set(&self, faults: LinkFaults) {
        self.faults.send_replace(faults);
    }

    pub fn faults(&self) -> LinkFaults {
        *self.faults.borrow()
    }

    /// Cuts the link (`true`) or heals it (`false`), keeping the rest.
    pub fn cut(&self, cut: bool) {
        self.faults.send_modify(|f| f.cut = cut);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    mut faults: watch::Receiver<LinkFaults>,
    pacers: [Pacer; 2],
    carried: [Arc<AtomicU64>; 2],
) -> io::Result<()> {
    // A new connection waits out a cut, unanswered.
    faults
        .wait_for(|f| !f.cut)
        .await
        .map_err(|_| io::Error::other("proxy stopped"))?;
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let [up, down] = pacers;
    let [carried_up, carried_down] = carried;
    tokio::select! {
        r = pump(client_read, server_write, faults.clone(), up, carried_up) => r,
        r = pump(server_read, client_write, faults, down, carried_down) => r,
    }
}

/// Carries one direction: what is read is sent on after the delay, no
/// faster than the cap, and not while the link is cut.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    faults: watch::Receiver<LinkFaults>,
    pacer: Pacer,
    carried: Arc<AtomicU64>,
) -> io::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let delays = faults.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), io::Error>(());
            }
            let due = Instant::now() + delays.borrow().delay;
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return Ok(());
            }
        }
    };
    let writer = async move {
        let mut faults = faults;
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            faults
                .wait_for(|f| !f.cut)
                .await
                .map_err(|_| io::Error::other("proxy stopped"))?;
            let rate = faults.borrow().bytes_per_sec;
            if let Some(rate) = rate.filter(|r| *r > 0) {
                // The chunk is through once the link has carried all of it.
                let send_at = {
                    let mut next = pacer.lock().unwrap_or_else(|e| e.into_inner());
                    let start = (*next).max(Instant::now());
                    *next = start + Duration::from_secs_f64(data.len() as f64 / rate as f64);
                    *next
                };
                tokio::time::sleep_until(send_at).await;
            }
            to.write_all(&data).await?;
            carried.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        to.shutdown().await
    };
    let (r, w) = tokio::join!(reader, writer);
    r.and(w)
}

/// A WAN link to a Kafka cluster: a [`FaultProxy`] in front of something
/// that advertises the fault proxy in its metadata, so that clients that
/// bootstrap from [`WanLink::brokers`] reach the cluster only across the
/// link. That is either a tansu proxy (`tansu proxy`) forwarding to any
/// broker ([`WanLink::start`]), or a listener of an Apache Kafka broker
/// advertised at the fault proxy ([`WanLink::to_listener`]). Stopped when
/// dropped.
#[derive(Debug)]
pub struct WanLink {
    proxy: FaultProxy,
    /// The tansu proxy and its log, when there is one.
    kafka: Option<(Child, PathBuf)>,
}

impl WanLink {
    /// A link to `origin` (`host:port` of one of the cluster's brokers), or
    /// `None` after a loud message when tansu is not installed and the user
    /// opted out of such tests (see [`crate::broker::skip_without`]).
    pub async fn start(origin: &str) -> io::Result<Option<Self>> {
        let Some(binary) = crate::broker::tansu_or_skip() else {
            return Ok(None);
        };
        let kafka_port = crate::broker::free_port()?;
        let kafka_addr = SocketAddr::from(([127, 0, 0, 1], kafka_port));
        let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), kafka_addr).await?;
        let log = std::env::temp_dir().join(format!("vecsync-tansu-proxy-{kafka_port}.log"));
        let out = std::fs::File::create(&log)?;
        let mut kafka = Command::new(binary)
            .arg("proxy")
            .arg("--listener-url")
            .arg(format!("tcp://{kafka_addr}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{}", proxy.addr()))
            .arg("--origin-url")
            .arg(format!("tcp://{origin}"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        if let Err(e) = crate::broker::wait_listening("tansu proxy", &mut kafka, kafka_addr, &log) {
            let _ = kafka.kill();
            return Err(e);
        }
        Ok(Some(Self {
            proxy,
            kafka: Some((kafka, log)),
        }))
    }

    /// A link to a broker's listener on loopback `port` that advertises
    /// [`WanLink::brokers`] (see [`crate::kafka::LinkListener`]); it may be
    /// started before the broker.
    pub async fn to_listener(port: u16) -> io::Result<Self> {
        let upstream = SocketAddr::from(([127, 0, 0, 1], port));
        let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), upstream).await?;
        Ok(Self { proxy, kafka: None })
    }

    /// `bootstrap.servers` for clients on the far side of the link.
    pub fn brokers(&self) -> String {
        self.proxy.addr().to_string()
    }

    /// The link's faults, to change while traffic flows.
    pub fn faults(&self) -> &FaultProxy {
        &self.proxy
    }

    /// The tansu proxy's process, if the link has one.
    pub fn pid(&self) -> Option<u32> {
        self.kafka.as_ref().map(|(c, _)| c.id())
    }

    /// The tansu proxy's log, to read when a test fails.
    pub fn log_path(&self) -> Option<&std::path::Path> {
        self.kafka.as_ref().map(|(_, log)| log.as_path())
    }
}

impl Drop for WanLink {
    fn drop(&mut self) {
        if let Some((kafka, _)) = &mut self.kafka {
            let _ = kafka.kill();
            let _ = kafka.wait();
        }
    }
}
