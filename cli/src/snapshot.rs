//! `vecsync snapshot`: take a snapshot of a running region's store, and
//! restore one into a new region (README, "Bootstrapping a new region").

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vecsync_consumer::snapshot::{self, Header, Positions};
use vecsync_consumer::store;
use vecsync_schemas::config::RegionConfig;
use vecsync_schemas::hlc::Hlc;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Download a snapshot of a running region's store from its worker
    /// (`GET /v1/snapshot` on `consumer.listen`).
    Create {
        /// The worker's API, `http://host:port`. With several workers
        /// sharing a Qdrant server, give each: the first sends the store,
        /// and each origin's watermark is the lowest any of them reports.
        #[arg(long = "worker", required = true, value_name = "URL")]
        workers: Vec<String>,
        /// Where to write the snapshot (written beside it first, then
        /// renamed, so a cut download leaves no file of that name).
        #[arg(long)]
        out: PathBuf,
    },
    /// Load a snapshot into a new region's empty store, and start the
    /// region's consumer group on each source where the snapshot leaves
    /// off. Run it before the region's first worker starts.
    Restore {
        /// The new region's config file.
        #[arg(long, env = "VECSYNC_CONFIG")]
        config: PathBuf,
        /// The snapshot file.
        #[arg(long)]
        snapshot: PathBuf,
        /// How far before each origin's watermark its source is read from,
        /// in milliseconds: covers records whose timestamps are not their
        /// events' (a producer other than vecsync's, clock skew).
        #[arg(long, default_value_t = 60_000)]
        margin_ms: u64,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Create { workers, out } => create(&workers, &out).await,
        What::Restore {
            config,
            snapshot,
            margin_ms,
        } => tokio::task::spawn_blocking(move || restore(&config, &snapshot, margin_ms)).await?,
    }
}

/// The lowest watermark per origin over the other workers, read before the
/// snapshot begins: an origin any of them has not seen yet gets none.
async fn watermarks_of(
    client: &reqwest::Client,
    workers: &[String],
) -> anyhow::Result<Option<BTreeMap<String, Hlc>>> {
    let mut lowest: Option<BTreeMap<String, Hlc>> = None;
    for worker in workers {
        let url = format!("{}/v1/freshness", worker.trim_end_matches('/'));
        let answer: serde_json::Value = client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("GET {url}"))?;
        let mut marks = BTreeMap::new();
        for origin in answer["origins"].as_array().into_iter().flatten() {
            let (Some(name), Some(mark)) =
                (origin["origin"].as_str(), origin["applied_up_to"].as_str())
            else {
                bail!("GET {url}: an origin without a name or watermark: {origin}");
            };
            let mark: Hlc = mark
                .parse()
                .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
            marks.insert(name.to_owned(), mark);
        }
        lowest = Some(match lowest {
            None => marks,
            Some(low) => low
                .into_iter()
                .filter_map(|(o, l)| Some((o.clone(), l.min(marks.get(&o)?.clone()))))
                .collect(),
        });
    }
    Ok(lowest)
}

async fn create(workers: &[String], out: &Path) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let others = watermarks_of(&client, &workers[1..]).await?;
    let url = format!("{}/v1/snapshot", workers[0].trim_end_matches('/'));
    let mut response = client
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?;
    let partial = out.with_extension("partial");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?,
    );
    let (started, mut told) = (Instant::now(), Instant::now());
    let mut bytes = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("GET {url}: the snapshot was cut short"))?
    {
        file.write_all(&chunk)?;
        bytes += chunk.len() as u64;
        if told.elapsed() > Duration::from_secs(5) {
            tracing::info!(mb = bytes >> 20, "receiving the snapshot");
            told = Instant::now();
        }
    }
    file.flush()?;
    drop(file);
    let header = finish(&partial, others)?;
    std::fs::rename(&partial, out)?;
    println!(
        "snapshot of region {} written to {} ({} MB in {:.1} s); watermarks: {:?}",
        header.region,
        out.display(),
        bytes >> 20,
        started.elapsed().as_secs_f64(),
        header.watermarks
    );
    Ok(())
}

/// Reads the header of the downloaded snapshot at `path` and, when
/// `others` is given, lowers its watermarks to theirs (rewriting the first
/// line). A snapshot cut short fails the download, or its restore.
fn finish(path: &Path, others: Option<BTreeMap<String, Hlc>>) -> anyhow::Result<Header> {
    let mut reader = BufReader::new(std::fs::File::open(path)?);
    let mut header = snapshot::read_header(&mut reader)?;
    let Some(others) = others else {
        return Ok(header);
    };
    header.watermarks = header
        .watermarks
        .iter()
        .filter_map(|(origin, mark)| {
            let mark: Hlc = mark.parse().ok()?;
            Some((
                origin.clone(),
                mark.min(others.get(origin)?.clone()).to_string(),
            ))
        })
        .collect();
    // The header is rewritten into a new file followed by the rest.
    let lowered = path.with_extension("lowered");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&lowered)?);
    serde_json::to_writer(&mut out, &header)?;
    out.write_all(b"\n")?;
    std::io::copy(&mut reader, &mut out)?;
    out.flush()?;
    std::fs::rename(&lowered, path)?;
    Ok(header)
}

fn restore(config: &Path, path: &Path, margin_ms: u64) -> anyhow::Result<()> {
    let config = RegionConfig::load(config)?;
    let open = || {
        std::fs::File::open(path)
            .map(BufReader::new)
            .with_context(|| format!("cannot read the snapshot {}", path.display()))
    };
    let header = snapshot::read_header(&mut open()?)?;
    // Positions first: a snapshot too old for a source's retention is
    // refused before anything is written.
    let positions = snapshot::plan_positions(&config, &header, margin_ms)?;
    let store = store::open(&config.store).context("cannot open the store ([store])")?;
    let started = Instant::now();
    let loaded = snapshot::load(store.as_ref(), &config, &mut open()?, &mut |points| {
        tracing::info!(points, "restoring");
    })?;
    snapshot::commit_positions(&config, &positions)?;
    println!(
        "restored {} records of region {}'s snapshot into region {} in {:.1} s",
        loaded.points,
        header.region,
        config.region,
        started.elapsed().as_secs_f64()
    );
    for (collection, n) in &loaded.skipped {
        println!("  skipped {n} records of {collection}: not a collection of this region");
    }
    for Positions {
        source,
        from_ms,
        partitions,
    } in &positions
    {
        match from_ms {
            Some(ms) => println!(
                "  {} (from {}): reads from {ms} ms on, at offsets {partitions:?}",
                source.topic, source.region
            ),
            None => println!(
                "  {} (from {}): no watermark in the snapshot, reads from its first record",
                source.topic, source.region
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_workers_lower_the_watermarks_and_the_rest_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snapshot");
        let header = serde_json::json!({
            "vecsync_snapshot": snapshot::FORMAT, "region": "us-east", "taken_at_ms": 1,
            "watermarks": {"us-east": "500.0@us-east", "eu-west": "900.0@eu-west", "ap-south": "70.0@ap-south"},
            "committed": {}, "collections": []
        });
        let rest = "{\"end\":{\"points\":0}}\n";
        std::fs::write(&path, format!("{header}\n{rest}")).unwrap();
        let others = BTreeMap::from([
            ("us-east".to_owned(), "400.0@us-east".parse().unwrap()),
            ("eu-west".to_owned(), "950.0@eu-west".parse().unwrap()),
        ]);
        let lowered = finish(&path, Some(others)).unwrap();
        // us-east lowered, eu-west kept, ap-south unknown to another worker.
        let expected = BTreeMap::from([
            ("eu-west".to_owned(), "900.0@eu-west".to_owned()),
            ("us-east".to_owned(), "400.0@us-east".to_owned()),
        ]);
        assert_eq!(lowered.watermarks, expected);
        let written = std::fs::read_to_string(&path).unwrap();
        let mut reader = written.as_bytes();
        assert_eq!(snapshot::read_header(&mut reader).unwrap(), lowered);
        assert_eq!(std::str::from_utf8(reader).unwrap(), rest);
    }
}
