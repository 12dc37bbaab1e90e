//! The fault proxy: delay and bandwidth cap as lower bounds on a trip
//! (what the proxy adds, not a speed claim), a cut that holds traffic and
//! new connections until it heals, and a real broker kept behind it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vecsync_devkit::broker::{Storage, Tansu, free_port, unique_name};
use vecsync_devkit::proxy::{FaultProxy, LinkFaults};

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
async fn a_broker_behind_the_proxy_is_cut_off_and_comes_back() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, Message};
    let proxy_port = free_port().unwrap();
    let Some(broker) = Tansu::start_behind(Storage::Memory, proxy_port) else {
        return;
    };
    let upstream: SocketAddr = broker.brokers().parse().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let proxy = FaultProxy::start(listen, upstream).await.unwrap();
    let topic = unique_name("proxied");
    broker.create_topic(&topic, 1).unwrap();
    let via_proxy = proxy.addr().to_string();

    let counted = tokio::task::spawn_blocking({
        let topic = topic.clone();
        let via_proxy = via_proxy.clone();
        move || {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &via_proxy)
                .set("linger.ms", "1")
                .create()
                .unwrap();
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &via_proxy)
                .set("group.id", unique_name("proxied"))
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", "5")
                .create()
                .unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            let read_for = |d: Duration| {
                let mut n = 0;
                let until = Instant::now() + d;
                while n < 20 && Instant::now() < until {
                    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                        assert!(m.payload().is_some());
                        n += 1;
                    }
                }
                n
            };
            let send = |n: usize| {
                for i in 0..n {
                    let v = format!("v{i}");
                    producer
                        .send(BaseRecord::<(), _>::to(&topic).payload(&v))
                        .unwrap();
                }
                producer.poll(Duration::ZERO);
            };
            send(20);
            producer.flush(Duration::from_secs(30)).unwrap();
            let before = read_for(Duration::from_secs(30));
            (producer, consumer, before)
        }
    })
    .await
    .unwrap();
    let (producer, consumer, before) = counted;
    assert_eq!(before, 20);

    proxy.cut(true);
    let during = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || {
            for i in 0..10 {
                let v = format!("w{i}");
                producer
                    .send(BaseRecord::<(), _>::to(&topic).payload(&v))
                    .unwrap();
            }
            producer.poll(Duration::ZERO);
            let mut n = 0;
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                if let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) {
                    n += 1;
                }
            }
            (producer, consumer, n)
        }
    })
    .await
    .unwrap();
    let (producer, consumer, cut_off) = during;
    assert_eq!(
        cut_off, 0,
        "nothing crosses the cut: the clients are behind the proxy"
    );

    proxy.cut(false);
    let after = tokio::task::spawn_blocking(move || {
        producer.flush(Duration::from_secs(30)).unwrap();
        let mut n = 0;
        let until = Instant::now() + Duration::from_secs(20);
        while n < 10 && Instant::now() < until {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) {
                n += 1;
            }
        }
        n
    })
    .await
    .unwrap();
    assert_eq!(after, 10, "what was sent during the cut arrives after it");
}
