//! Where the load test's own process keeps its resident memory: sampled
//! every second from `/proc/self/smaps`, split into each region's store
//! files (the engine maps its segments), other files, and anonymous memory
//! (queues, buffers, batches, the engine's heap: every region's at once).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// The process's resident memory at the sample where it was largest, MB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryAtPeak {
    pub total_mb: f64,
    /// Memory no file backs: the heap and anonymous maps, of all regions.
    pub anonymous_mb: f64,
    /// Each region's store files mapped in, by region.
    pub stores_mb: Vec<(String, f64)>,
    /// Every other file mapped in: the binary and its libraries.
    pub other_files_mb: f64,
}

impl MemoryAtPeak {
    /// A region's own share: its store files, and an equal part of the
    /// anonymous memory (which one process cannot tell apart by region).
    pub fn region_mb(&self, store_mb: f64) -> f64 {
        store_mb + self.anonymous_mb / self.stores_mb.len().max(1) as f64
    }
}

/// Samples the process's memory every second on a thread of its own until
/// [`Sampler::finish`].
#[derive(Debug)]
pub struct Sampler {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Option<MemoryAtPeak>>,
}

impl Sampler {
    /// Starts sampling; `stores` are the regions' store directories.
    pub fn start(stores: Vec<(String, PathBuf)>) -> Self {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut peak: Option<MemoryAtPeak> = None;
            loop {
                let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
                let now = split(&smaps, &stores);
                if peak.as_ref().is_none_or(|p| now.total_mb > p.total_mb) {
                    peak = Some(now);
                }
                // A second between samples, or until finished.
                if stopped.recv_timeout(Duration::from_secs(1))
                    != Err(mpsc::RecvTimeoutError::Timeout)
                {
                    break;
                }
            }
            peak.filter(|p| p.total_mb > 0.0)
        });
        Self { stop, thread }
    }

    /// Stops sampling: the largest sample (`None` where `/proc` has none).
    pub fn finish(self) -> Option<MemoryAtPeak> {
        let _ = self.stop.send(());
        self.thread.join().ok().flatten()
    }
}

/// Splits the resident memory `smaps` lists by what backs it.
fn split(smaps: &str, stores: &[(String, PathBuf)]) -> MemoryAtPeak {
    let mut stores_kb = vec![0u64; stores.len()];
    let (mut anonymous_kb, mut other_kb) = (0u64, 0u64);
    // What backs the mapping whose fields are being read.
    let mut backing: Option<&str> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range, perms, offset, dev, inode[, path].
            backing = fields.nth(4);
            continue;
        }
        if first != "Rss:" {
            continue;
        }
        let kb: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match backing.filter(|b| b.starts_with('/')) {
            None => anonymous_kb += kb,
            Some(path) => match stores
                .iter()
                .position(|(_, dir)| Path::new(path).starts_with(dir))
            {
                Some(i) => stores_kb[i] += kb,
                None => other_kb += kb,
            },
        }
    }
    let mb = |kb: u64| kb as f64 / 1024.0;
    MemoryAtPeak {
        total_mb: mb(anonymous_kb + other_kb + stores_kb.iter().sum::<u64>()),
        anonymous_mb: mb(anonymous_kb),
        stores_mb: stores
            .iter()
            .zip(stores_kb)
            .map(|((name, _), kb)| (name.clone(), mb(kb)))
            .collect(),
        other_files_mb: mb(other_kb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_split_by_what_backs_it() {
        let smaps = "\
55d0c0000000-55d0c1000000 r-xp 00000000 fd:00 123 /usr/bin/vecsync
Size:              16384 kB
Rss:                1024 kB
55d0c2000000-55d0c3000000 rw-p 00000000 00:00 0                          [heap]
Rss:                2048 kB
7f0000000000-7f0010000000 rw-s 00000000 fd:00 456 /data/us-east/docs/segments/a/vector_storage/chunk_0.mmap
Rss:                4096 kB
7f0010000000-7f0020000000 rw-s 00000000 fd:00 457 /data/eu-west/docs/segments/b/vector_storage/chunk_0.mmap
Rss:                3072 kB
7f0020000000-7f0020100000 rw-p 00000000 00:00 0
Rss:                 512 kB
";
        let stores = vec![
            ("us-east".to_owned(), PathBuf::from("/data/us-east")),
            ("eu-west".to_owned(), PathBuf::from("/data/eu-west")),
        ];
        let m = split(smaps, &stores);
        assert_eq!(m.anonymous_mb, 2.5);
        assert_eq!(m.other_files_mb, 1.0);
        assert_eq!(
            m.stores_mb,
            [("us-east".to_owned(), 4.0), ("eu-west".to_owned(), 3.0)]
        );
        assert_eq!(m.total_mb, 10.5);
        assert_eq!(m.region_mb(4.0), 5.25);
    }
}
