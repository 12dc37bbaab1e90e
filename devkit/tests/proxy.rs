//! The fault proxy: delay and bandwidth cap as lower bounds on a trip
//! (what the proxy adds, not a speed claim), a cut that holds traffic and
//! new connections until it heals, and Kafka clients kept on a WAN link
//! while the cluster's local clients are not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vecsync_devkit::broker::unique_name;
use vecsync_devkit::proxy::{FaultProxy, LinkFaults, WanLink};

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn round_trip(stream: &mut TcpStream, bytes: usize) -> Duration {
    let started = Instant::now();
    let data = vec![7u8; bytes];
    let (mut r, mut w) = stream.split();
    let send = async { w.write_all(&data).await.unwrap() };
    let receive = async {
        let mut back = vec![0u8; bytes];
        r.read_exact(&mut back).await.unwrap();
        assert_eq!(back, data);
    };
    tokio::join!(send, receive);
    started.elapsed()
}

#[tokio::test]
async fn delay_cap_and_cut_shape_the_traffic() {
    let upstream = echo_server().await;
    let proxy = FaultProxy::start("127.0.0.1:0".parse().unwrap(), upstream)
        .await
        .unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut s, 10).await;

    proxy.set(LinkFaults {
        delay: Duration::from_millis(150),
        ..LinkFaults::default()
    });
    let delayed = round_trip(&mut s, 10).await;
    assert!(
        delayed >= Duration::from_millis(300),
        "both ways: {delayed:?}"
    );

    proxy.set(LinkFaults {
        bytes_per_sec: Some(100_000),
        ..LinkFaults::default()
    });
    let capped = round_trip(&mut s, 100_000).await;
    assert!(
        capped >= Duration::from_millis(900),
        "100 KB at 100 KB/s: {capped:?}"
    );

    // Cut: nothing passes and a new connection waits; healed, both work.
    proxy.set(LinkFaults::default());
    proxy.cut(true);
    s.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 4];
    let held = tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await;
    assert!(held.is_err(), "data crossed a cut link");
    let mut late = TcpStream::connect(proxy.addr()).await.unwrap();
    late.write_all(b"new!").await.unwrap();
    let mut late_buf = [0u8; 4];
    let waiting =
        tokio::time::timeout(Duration::from_millis(300), late.read_exact(&mut late_buf)).await;
    assert!(waiting.is_err(), "a new connection crossed a cut link");
    proxy.cut(false);
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"held", "held data arrives after the cut heals");
    late.read_exact(&mut late_buf).await.unwrap();
    assert_eq!(&late_buf, b"new!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_across_a_wan_link_are_cut_off_while_local_ones_are_not() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, Message};
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_name("linked");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let Some(link) = WanLink::start(&cluster.bootstrap_servers()).await.unwrap() else {
        return;
    };
    let local: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let remote: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", link.brokers())
        .set("group.id", unique_name("linked"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    // Assigned, not subscribed: tansu's proxy cannot carry group
    // coordination to librdkafka's mock cluster (FindCoordinator v3).
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    remote.assign(&assignment).unwrap();
    let remote = std::sync::Arc::new(remote);
    let send = |prefix: &str| {
        for i in 0..10 {
            let v = format!("{prefix}{i}");
            local
                .send(BaseRecord::<(), _>::to(&topic).payload(&v))
                .unwrap();
        }
        local.flush(Duration::from_secs(30)).unwrap();
    };
    let read = |wanted: usize, within: Duration| {
        let remote = remote.clone();
        tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            let until = Instant::now() + within;
            while got.len() < wanted && Instant::now() < until {
                if let Some(Ok(m)) = remote.poll(Duration::from_millis(50)) {
                    got.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
                }
            }
            got
        })
    };

    send("a");
    assert_eq!(read(10, Duration::from_secs(30)).await.unwrap().len(), 10);

    link.faults().cut(true);
    // The local producer is not behind the link: its sends complete.
    send("b");
    let during = read(10, Duration::from_secs(2)).await.unwrap();
    assert!(
        during.is_empty(),
        "nothing crosses the cut, yet the remote consumer read {during:?}"
    );

    link.faults().cut(false);
    let after = read(10, Duration::from_secs(30)).await.unwrap();
    let expected: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    assert_eq!(
        after, expected,
        "what was sent during the cut arrives after it, in order"
    );
    let log = std::fs::read_to_string(link.log_path().unwrap()).unwrap_or_default();
    assert!(
        !log.contains("ERROR"),
        "the tansu proxy logged errors:\n{log}"
    );
}
