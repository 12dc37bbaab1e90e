//! `vecsync demo`: three regions in one process, each with its own Kafka
//! cluster (librdkafka's in-process `MockCluster`), the development
//! registry and a `qdrant-edge` store in a temporary directory. Each
//! region's worker reads the other regions' clusters directly. Every region
//! writes upserts, deletes and payload patches, many to the same ids as
//! the others, while a table shows replication per region pair; then the
//! writes stop, the regions converge, and the demo proves it: equal state
//! digests, and the same nearest-neighbour answer in every region.

use anyhow::bail;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vecsync_consumer::apply::{State, Versioned};
use vecsync_consumer::store::Store;
use vecsync_loadtest::bed::{Bed, BedSpec, COLLECTION, ClusterKind, Region};
use vecsync_loadtest::recorder::Book;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::VectorDatatype;
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::{Hlc, SystemClock, WallClock};
use vecsync_schemas::vector::{EncodedVector, Encoding};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Regions to run (2 to 6).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=6))]
    regions: u8,
    /// Mutations per second each region writes.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds of writing.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Vector dimension.
    #[arg(long, default_value_t = 768)]
    dimension: u32,
    /// Vector encoding on the wire: f32, f16, sq8, sq4 or binary.
    #[arg(long, default_value = "sq8")]
    encoding: Encoding,
    /// Distinct point ids the regions write to; fewer means more conflicts.
    #[arg(long, default_value_t = 2_000)]
    ids: u64,
    /// Longest wait for convergence after the writes stop, in seconds.
    #[arg(long, default_value_t = 60)]
    converge_timeout: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.encoding == Encoding::Pq {
        bail!(
            "--encoding pq needs a trained codebook; the demo takes f32, f16, sq8, sq4 or binary"
        );
    }
    let book = Book::install()?;
    let spec = BedSpec {
        regions: usize::from(args.regions),
        dimension: args.dimension,
        encoding: args.encoding,
        heartbeat_interval_ms: 50,
        batch_max_events: 1_000,
        flush_interval_ms: 100,
        vector_datatype: VectorDatatype::default(),
        mirrored: false,
        clusters: ClusterKind::Mock,
    };
    let bed = Bed::start(&spec).await?;
    let names: Vec<&str> = bed.regions.iter().map(|r| r.name.as_str()).collect();
    println!(
        "vecsync demo: {} regions ({}), each with its own Kafka cluster (in-process MockCluster), \
         the development registry and a qdrant-edge store; {} mutations/s per region for {} s, \
         {}-d vectors as {}.",
        names.len(),
        names.join(", "),
        args.rate,
        args.duration,
        args.dimension,
        args.encoding
    );
    let outcome = exercise(&args, &bed, &book).await;
    // Workers and producers stop before any cluster goes away.
    bed.stop().await?;
    outcome
}

/// Writes, watches, waits for convergence and proves it.
async fn exercise(args: &Args, bed: &Bed, book: &Book) -> anyhow::Result<()> {
    let regions = &bed.regions;
    // Every region writes; the table shows what crossed.
    let stop = Arc::new(AtomicBool::new(false));
    let writers_of_id: Arc<Mutex<HashMap<u64, HashSet<usize>>>> = Arc::default();
    let mut writers = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        writers.push(tokio::spawn(write(
            i,
            r.publisher.clone(),
            args.rate,
            args.dimension as usize,
            args.ids,
            stop.clone(),
            writers_of_id.clone(),
        )));
    }
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(2).min(end - Instant::now())).await;
        print_table(regions, book, started.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    let mut last: BTreeMap<String, Hlc> = BTreeMap::new();
    let mut written = 0u64;
    for (i, w) in writers.into_iter().enumerate() {
        let (count, newest) = w.await??;
        written += count;
        if let Some(hlc) = newest {
            last.insert(regions[i].name.clone(), hlc);
        }
    }
    let conflicted = writers_of_id
        .lock()
        .map(|m| m.values().filter(|w| w.len() > 1).count())
        .unwrap_or(0);
    println!(
        "writes stopped: {written} mutations, {conflicted} ids written by more than one region; \
         waiting for every region to apply every other's writes"
    );

    // Convergence: every region has applied every origin's last write
    // (heartbeats carry the watermarks past it), and all digests agree.
    let deadline = Instant::now() + Duration::from_secs(args.converge_timeout);
    let digests = loop {
        let caught_up = regions.iter().all(|r| {
            let marks = r.marks();
            last.iter()
                .all(|(origin, hlc)| marks.get(origin).is_some_and(|m| m >= hlc))
        });
        if caught_up {
            let digests = bed.digests()?;
            if digests.windows(2).all(|w| w[0].1 == w[1].1) {
                break digests;
            }
        }
        if Instant::now() >= deadline {
            print_table(regions, book, started.elapsed());
            let digests = bed.digests()?;
            for (name, digest) in &digests {
                eprintln!("  {name}: {digest}");
            }
            explain_differences(regions)?;
            bail!(
                "the regions did not converge within {} s",
                args.converge_timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    print_table(regions, book, started.elapsed());
    println!(
        "converged: {} regions hold the same state ({}), {:.1} s after the writes stopped",
        regions.len(),
        digests[0].1,
        (Instant::now() - end).as_secs_f64()
    );

    // The same query in every region gets the same answer.
    let mut rng = StdRng::seed_from_u64(7);
    // A cosine collection holds unit vectors; so is the query.
    let query = vecsync_consumer::apply::unit(random_vector(&mut rng, args.dimension as usize));
    let mut answers = Vec::new();
    for r in regions {
        let hits = r.store.search(COLLECTION, query.clone(), 5)?;
        let shown: Vec<String> = hits
            .iter()
            .map(|(id, score)| format!("{id}:{score:.4}"))
            .collect();
        println!("  nearest 5 in {:<10} {}", r.name, shown.join("  "));
        answers.push(hits);
    }
    if !answers.windows(2).all(|w| w[0] == w[1]) {
        bail!("the same query answered differently in different regions");
    }
    println!("same nearest neighbours in every region");

    // What the encoding saved on the wire.
    let events = book.events.load(Ordering::Relaxed);
    let bytes = book.bytes.load(Ordering::Relaxed);
    let encoded = EncodedVector::encode(args.encoding, &query)?.wire_len();
    let raw = args.dimension as usize * 4;
    println!(
        "on the wire: {bytes} bytes for {events} events ({} B/event); a {}-d vector is {encoded} B as {} \
         against {raw} B as f32: {:.0}% saved",
        bytes / events.max(1),
        args.dimension,
        args.encoding,
        100.0 * (1.0 - encoded as f64 / raw as f64)
    );

    Ok(())
}

/// Names the first points on which the regions differ, with what each
/// region holds.
fn explain_differences(regions: &[Region]) -> anyhow::Result<()> {
    let mut held: Vec<BTreeMap<PointId, Versioned>> = Vec::new();
    for r in regions {
        let mut points = BTreeMap::new();
        r.store.scan(COLLECTION, &mut |id, point| {
            points.insert(id, point);
        })?;
        held.push(points);
    }
    let ids: BTreeSet<&PointId> = held.iter().flat_map(|h| h.keys()).collect();
    let differing = ids
        .into_iter()
        .filter(|id| held.windows(2).any(|w| w[0].get(id) != w[1].get(id)));
    for id in differing.take(5) {
        eprintln!("  point {id} differs:");
        for (r, points) in regions.iter().zip(&held) {
            let shown = match points.get(id) {
                Some(Versioned {
                    version,
                    state: State::Live(c),
                }) => format!(
                    "version {version}, payload {}, vector[..3] {:?}",
                    serde_json::Value::Object(c.payload.clone()),
                    &c.vector[..c.vector.len().min(3)]
                ),
                Some(Versioned {
                    version,
                    state: State::Deleted,
                }) => format!("deleted at {version}"),
                None => "absent".into(),
            };
            eprintln!("    {:<10} {shown}", r.name);
        }
    }
    Ok(())
}

/// One region's writer: `rate` mutations a second in batches every 20 ms,
/// until `stop`. Returns how many it wrote and the newest version.
async fn write(
    index: usize,
    publisher: Arc<Publisher>,
    rate: u32,
    dimension: usize,
    ids: u64,
    stop: Arc<AtomicBool>,
    writers_of_id: Arc<Mutex<HashMap<u64, HashSet<usize>>>>,
) -> anyhow::Result<(u64, Option<Hlc>)> {
    let mut rng = StdRng::seed_from_u64(index as u64);
    let tick = Duration::from_millis(20);
    let per_tick = (f64::from(rate) * tick.as_secs_f64()).max(1.0);
    let mut owed = 0.0;
    let mut versions: HashMap<u64, Hlc> = HashMap::new();
    let (mut count, mut newest) = (0u64, None);
    let mut ticks = tokio::time::interval(tick);
    while !stop.load(Ordering::SeqCst) {
        ticks.tick().await;
        owed += per_tick;
        let mut batch = Vec::new();
        while owed >= 1.0 {
            owed -= 1.0;
            let id = rng.random_range(0..ids);
            let roll: f64 = rng.random();
            let m = match versions.get(&id) {
                Some(base) if roll < 0.1 => Mutation::PatchPayload {
                    id: PointId::Num(id),
                    base_version: base.clone(),
                    payload: json!({"reviewed": true})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                },
                _ if roll < 0.2 => Mutation::Delete {
                    id: PointId::Num(id),
                },
                _ => Mutation::Upsert {
                    id: PointId::Num(id),
                    vector: random_vector(&mut rng, dimension),
                    payload: json!({"n": count}).as_object().cloned(),
                },
            };
            batch.push(m);
        }
        if batch.is_empty() {
            continue;
        }
        let written = publisher.publish(COLLECTION, &batch).await?;
        if let Ok(mut w) = writers_of_id.lock() {
            for m in &batch {
                if let PointId::Num(id) = m.id() {
                    w.entry(id).or_default().insert(index);
                }
            }
        }
        for (m, hlc) in batch.iter().zip(&written) {
            if let PointId::Num(id) = m.id() {
                versions.insert(id, hlc.clone());
            }
        }
        count += batch.len() as u64;
        newest = written.into_iter().max().or(newest);
    }
    Ok((count, newest))
}

fn random_vector(rng: &mut StdRng, dimension: usize) -> Vec<f32> {
    (0..dimension)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect()
}

/// Per region pair: events applied, p50 and p99 replication lag, and the
/// age of the applied watermark. On a terminal the table is redrawn in
/// place; otherwise each one is printed below the last.
fn print_table(regions: &[Region], book: &Book, elapsed: Duration) {
    use std::io::IsTerminal;
    static DRAWN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let drawn = DRAWN.swap(0, Ordering::SeqCst);
    let terminal = std::io::stdout().is_terminal();
    if terminal && drawn > 0 {
        print!("\x1b[{drawn}A\x1b[J");
    }
    let mut out = String::new();
    let lags = book.lags();
    let now_ms = SystemClock.now_ms();
    let _ = writeln!(
        out,
        "\n t={:>3}s  {:<24} {:>10} {:>9} {:>9} {:>15}",
        elapsed.as_secs(),
        "origin → region",
        "applied",
        "p50 ms",
        "p99 ms",
        "watermark age"
    );
    for r in regions {
        let marks = r.marks();
        for origin in regions.iter().filter(|o| o.name != r.name) {
            let lag = lags.get(&(origin.name.clone(), r.name.clone()));
            let count = lag.map_or(0, |h| h.len());
            let pct = |q: f64| {
                lag.filter(|h| !h.is_empty())
                    .map(|h| format!("{:.1}", h.value_at_quantile(q) as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into())
            };
            let age = marks
                .get(&origin.name)
                .map(|m| format!("{} ms", now_ms.saturating_sub(m.wall_ms)))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "         {:<24} {:>10} {:>9} {:>9} {:>15}",
                format!("{} → {}", origin.name, r.name),
                count,
                pct(0.5),
                pct(0.99),
                age
            );
        }
    }
    print!("{out}");
    if terminal {
        DRAWN.store(out.lines().count(), Ordering::SeqCst);
    }
}
