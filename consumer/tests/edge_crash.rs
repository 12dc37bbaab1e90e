//! The embedded store killed with SIGKILL while writing: every batch it
//! flushed is there after a reopen. The child half runs in a child process
//! of this test binary (it does nothing unless `PROBE_DIR` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use vecsync_consumer::apply::{Change, apply};
use vecsync_consumer::store::Store;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_schemas::config::Distance;
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;

#[test]
fn writer_child() {
    let Ok(dir) = std::env::var("PROBE_DIR") else {
        return;
    };
    let store = EdgeStore::open(std::path::Path::new(&dir)).unwrap();
    store.ensure_collection("docs", 4, Distance::Dot).unwrap();
    let start: u64 = std::env::var("PROBE_START").unwrap().parse().unwrap();
    let mut out = std::io::stdout();
    for b in start.. {
        let writes: Vec<_> = (0..500u64)
            .map(|i| {
                let id = PointId::Num((b * 500 + i) % 3000);
                let (r, _) = apply(
                    None,
                    Hlc::new(b + 1, i as u32, "x"),
                    Change::Upsert {
                        vector: vec![b as f32; 4],
                        payload: None,
                    },
                );
                (id, r.unwrap())
            })
            .collect();
        store.write("docs", &writes).unwrap();
        store.flush().unwrap();
        writeln!(out, "flushed {b}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn flushed_batches_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut next = 0u64;
    for round in 0..8 {
        let mut child = Command::new(&exe)
            .args(["writer_child", "--exact", "--nocapture"])
            .env("PROBE_DIR", dir.path())
            .env("PROBE_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("flushed ") {
                    let _ = tx.send(n.trim().parse::<u64>().unwrap());
                }
            }
        });
        // Every round checks a batch: the kill comes only after this run
        // has flushed one, at a different point of the next in each round.
        let Ok(mut last) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!("round {round}: the writer flushed nothing in 60 s");
        };
        std::thread::sleep(Duration::from_millis(100 + round * 370));
        child.kill().unwrap();
        child.wait().unwrap();
        while let Ok(n) = rx.try_recv() {
            last = n;
        }
        next = last + 1;
        // Every point of the last flushed batch must be there at its version.
        let store = EdgeStore::open(dir.path()).unwrap();
        store.ensure_collection("docs", 4, Distance::Dot).unwrap();
        let ids: Vec<PointId> = (0..500u64)
            .map(|i| PointId::Num((last * 500 + i) % 3000))
            .collect();
        let held = store.read("docs", &ids).unwrap();
        let mut bad = 0;
        for (i, id) in ids.iter().enumerate() {
            let v = held.get(id).map(|r| r.current().0.version);
            if v.as_ref().map(|v| v.wall_ms) != Some(last + 1) {
                bad += 1;
                if bad < 3 {
                    eprintln!("round {round} batch {last} point {id} (i {i}): {v:?}");
                }
            }
        }
        assert_eq!(
            bad, 0,
            "round {round}: {bad} points of flushed batch {last} lost"
        );
        eprintln!("round {round}: batch {last} intact");
    }
}
