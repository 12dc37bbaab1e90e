//! Bulk ingest from files: JSON Lines of Qdrant-style points, or a NumPy
//! `.npy` matrix with ids beside it.
//!
//! - JSONL: `{"id": 7, "vector": [..], "payload": {..}}` per line, and
//!   `{"id": 7, "delete": true}` for deletes. Blank lines are ignored.
//! - `.npy`: a 2-d float32 (or float64) array, one vector per row. Ids come
//!   from a text file with one id per line, a 1-d integer `.npy`, or count up
//!   from a first id.
//!
//! The file is streamed: memory stays constant whatever its size. Batches
//! are stamped in file order, so a later line about the same point wins, and
//! a few are kept in flight to the broker. A resume point beside the input
//! (`<input>.vecsync-resume`) records how far the broker has acknowledged,
//! and, written durably before each batch is sent, the batches sent since
//! with the versions they were given. A second run after a crash (SIGKILL
//! included) or an interrupt starts there: it sends those batches again
//! with the same versions, so that a line the broker took before the crash
//! is a duplicate the consumers drop, never a newer write over changes made
//! since, and carries on. A run that finishes removes the resume point.

use crate::error::ProducerError;
use crate::publisher::{Mutation, Pending, Publisher, Run};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::sync::mpsc;
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::{mutation, npy};

/// What to load and how.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub collection: String,
    /// A `.jsonl` (`.ndjson`, `.json`) or `.npy` file.
    pub input: PathBuf,
    /// `.npy` only: the ids, one per row: a text file with one id per line,
    /// or a 1-d integer `.npy`.
    pub ids: Option<PathBuf>,
    /// `.npy` only, without `ids`: ids count up from this one.
    pub id_start: Option<u64>,
    /// Points per batch.
    pub batch_size: usize,
    /// Batches sent but not yet acknowledged, at most.
    pub in_flight: usize,
    /// Skip invalid lines (each is logged with its line number and counted)
    /// instead of stopping at the first.
    pub skip_invalid: bool,
    /// Ignore a resume point and start from the beginning.
    pub restart: bool,
}

impl LoadOptions {
    pub fn new(collection: impl Into<String>, input: impl Into<PathBuf>) -> Self {
        Self {
            collection: collection.into(),
            input: input.into(),
            ids: None,
            id_start: None,
            batch_size: 500,
            in_flight: 4,
            skip_invalid: false,
            restart: false,
        }
    }

    /// The resume point's path: beside the input.
    pub fn resume_path(&self) -> PathBuf {
        let mut name = self.input.file_name().unwrap_or_default().to_owned();
        name.push(".vecsync-resume");
        self.input.with_file_name(name)
    }
}

/// How far a load has come.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Events the broker acknowledged, this run and runs before it.
    pub events: u64,
    /// Invalid records skipped.
    pub skipped: u64,
    /// Input bytes acknowledged.
    pub input_bytes_done: u64,
    pub input_bytes_total: u64,
    /// Bytes of framed events acknowledged this run.
    pub published_bytes: u64,
}

/// The end of a load.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub progress: Progress,
    /// Events already acknowledged by earlier runs, when resumed.
    pub resumed_from_events: u64,
    pub elapsed: Duration,
    /// Stopped by the shutdown signal; the resume point is kept.
    pub interrupted: bool,
}

/// Why a load stopped.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error(
        "{path}: publishing failed (acknowledged progress is saved; run again to resume): {source}"
    )]
    Publish {
        path: PathBuf,
        source: Box<ProducerError>,
    },
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where reading has come to, after some records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    /// Bytes of the input consumed.
    offset: u64,
    /// Records (lines or rows) consumed, blank and skipped ones included.
    records: u64,
}

/// The resume point file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ResumePoint {
    collection: String,
    input_len: u64,
    input_modified_ms: u64,
    cursor: Cursor,
    events: u64,
    skipped: u64,
    /// Batches handed to the publisher past `cursor`, oldest first.
    #[serde(default)]
    sent: VecDeque<SentBatch>,
}

/// A batch handed to the publisher and not yet known to be acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SentBatch {
    /// Where its records end in the input; it begins where the one before
    /// it ends, the first at the resume point's cursor.
    end: Cursor,
    /// The version of its first event, as text; the others follow it
    /// ([`Hlc::nth`]).
    first: String,
    /// Its events (records refused by the publisher and skipped are not).
    events: usize,
}

/// Records read from the input, ready to submit.
struct Chunk {
    mutations: Vec<Mutation>,
    /// Line (JSONL) or row (`.npy`, from 1) of each mutation.
    lines: Vec<u64>,
    /// Records skipped while reading this chunk.
    skipped: u64,
    end: Cursor,
}

/// Loads `options.input` into the collection through `publisher`, calling
/// `on_progress` after each acknowledged batch. Stops early, keeping the
/// resume point, when `shutdown` resolves.
pub async fn load(
    publisher: &Publisher,
    options: &LoadOptions,
    shutdown: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Summary, FileError> {
    let started = Instant::now();
    let path = options.input.clone();
    let Some((dimension, _)) = publisher.collection(&options.collection) else {
        return Err(FileError::Publish {
            path,
            source: Box::new(ProducerError::UnknownCollection(options.collection.clone())),
        });
    };
    let meta = std::fs::metadata(&path).map_err(io_error(&path))?;
    let fingerprint = ResumePoint {
        collection: options.collection.clone(),
        input_len: meta.len(),
        input_modified_ms: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64),
        cursor: Cursor::default(),
        events: 0,
        skipped: 0,
        sent: VecDeque::new(),
    };
    let resume_path = options.resume_path();
    let mut point = match (options.restart, read_resume_point(&resume_path)?) {
        (false, Some(saved)) => {
            if (saved.input_len, saved.input_modified_ms, &saved.collection)
                != (
                    fingerprint.input_len,
                    fingerprint.input_modified_ms,
                    &fingerprint.collection,
                )
            {
                return Err(FileError::Input {
                    path,
                    reason: format!(
                        "the resume point {} was written for another version of this file or \
                         another collection; run with --restart to start over",
                        resume_path.display()
                    ),
                });
            }
            tracing::info!(
                events = saved.events,
                records = saved.cursor.records,
                sending_again = saved.sent.len(),
                "resuming where an earlier run stopped; batches it sent are sent again with the \
                 versions they had"
            );
            saved
        }
        _ => fingerprint,
    };
    let resumed_from_events = point.events;
    let mut progress = Progress {
        events: point.events,
        skipped: point.skipped,
        input_bytes_done: point.cursor.offset,
        input_bytes_total: meta.len(),
        published_bytes: 0,
    };

    // Sent by an earlier run and perhaps acknowledged: read again in the
    // same batches and sent with the same versions.
    let mut again = point.sent.clone();
    let (tx, mut rx) = mpsc::channel(2);
    let reader = Reader::open(
        options,
        dimension,
        point.cursor,
        again.iter().map(|b| b.end).collect(),
    )?;
    let reading = tokio::task::spawn_blocking(move || reader.run(&tx));
    let mut in_flight: VecDeque<(Pending, Cursor, u64)> = VecDeque::new();
    let mut interrupted = false;
    tokio::pin!(shutdown);
    let outcome: Result<(), FileError> = async {
        loop {
            let chunk = tokio::select! {
                biased;
                () = &mut shutdown => { interrupted = true; break; }
                chunk = rx.recv() => match chunk {
                    Some(chunk) => chunk?,
                    None => break,
                },
            };
            let skipped_reading = chunk.skipped;
            let end = chunk.end;
            let (pending, skipped) = match again.pop_front() {
                Some(batch) => {
                    let first = batch.first.parse().map_err(|reason| FileError::Input {
                        path: resume_path.clone(),
                        reason,
                    })?;
                    let run = Run::Again {
                        first,
                        events: batch.events,
                    };
                    submit(publisher, options, chunk, run).await?
                }
                None => {
                    let mut record = |first: &Hlc, events: usize| {
                        point.sent.push_back(SentBatch {
                            end,
                            first: first.to_string(),
                            events,
                        });
                        write_resume_point(&resume_path, &point)
                    };
                    submit(publisher, options, chunk, Run::Recorded(&mut record)).await?
                }
            };
            in_flight.push_back((pending, end, skipped_reading + skipped));
            while in_flight.len() >= options.in_flight.max(1) {
                settle(&mut in_flight, &mut point, &mut progress, &path).await?;
                on_progress(&progress);
            }
        }
        while !in_flight.is_empty() {
            settle(&mut in_flight, &mut point, &mut progress, &path).await?;
            on_progress(&progress);
        }
        Ok(())
    }
    .await;
    drop(rx);
    // The reader stops on its own once the channel is closed.
    let _ = reading.await;
    let finished = outcome.is_ok() && !interrupted;
    if finished {
        match std::fs::remove_file(&resume_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(&resume_path)(e)),
            _ => {}
        }
    } else if point.cursor.records > 0 || !point.sent.is_empty() {
        write_resume_point(&resume_path, &point).map_err(io_error(&resume_path))?;
    }
    outcome?;
    Ok(Summary {
        progress,
        resumed_from_events,
        elapsed: started.elapsed(),
        interrupted,
    })
}

/// Submits a chunk; with `skip_invalid`, drops each invalid mutation the
/// publisher refuses (logging its line) and submits the rest.
async fn submit(
    publisher: &Publisher,
    options: &LoadOptions,
    chunk: Chunk,
    mut run: Run<'_>,
) -> Result<(Pending, u64), FileError> {
    let Chunk {
        mut mutations,
        mut lines,
        ..
    } = chunk;
    let mut skipped = 0;
    loop {
        let e = match publisher
            .submit_run(&options.collection, &mutations, run.reborrow())
            .await
        {
            Ok(pending) => return Ok((pending, skipped)),
            Err(e) => e,
        };
        let Some((index, reason)) = e.refused_mutation() else {
            return Err(FileError::Publish {
                path: options.input.clone(),
                source: Box::new(e),
            });
        };
        let line = lines[index];
        if !options.skip_invalid {
            return Err(FileError::Line {
                path: options.input.clone(),
                line,
                reason,
            });
        }
        tracing::warn!(line, "skipped an invalid record: {reason}");
        skipped += 1;
        mutations.remove(index);
        lines.remove(index);
    }
}

/// Waits for the oldest batch in flight and moves the resume point past it.
async fn settle(
    in_flight: &mut VecDeque<(Pending, Cursor, u64)>,
    point: &mut ResumePoint,
    progress: &mut Progress,
    path: &Path,
) -> Result<(), FileError> {
    let Some((pending, end, skipped)) = in_flight.pop_front() else {
        return Ok(());
    };
    let published = pending
        .acknowledged()
        .await
        .map_err(|source| FileError::Publish {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
    point.cursor = end;
    point.sent.pop_front();
    point.events += published.versions.len() as u64;
    point.skipped += skipped;
    progress.events = point.events;
    progress.skipped = point.skipped;
    progress.input_bytes_done = end.offset;
    progress.published_bytes += published.bytes;
    Ok(())
}

fn read_resume_point(path: &Path) -> Result<Option<ResumePoint>, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| FileError::Input {
                path: path.to_owned(),
                reason: format!("unreadable resume point ({e}); delete it or run with --restart"),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Writes the resume point atomically and durably: a new file, synced,
/// renamed over the old, and the rename synced.
fn write_resume_point(path: &Path, point: &ResumePoint) -> io::Result<()> {
    let tmp = path.with_extension("vecsync-resume.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(point)?)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)?;
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
    File::open(folder.unwrap_or(Path::new(".")))?.sync_all()
}

/// Where `.npy` rows get their ids.
enum Ids {
    Counting(u64),
    Text {
        path: PathBuf,
        lines: io::Lines<BufReader<File>>,
    },
    Npy {
        path: PathBuf,
        file: BufReader<File>,
        header: npy::Header,
        buf: Vec<u8>,
    },
}

impl Ids {
    fn open(options: &LoadOptions, rows: u64, skip: u64) -> Result<Self, FileError> {
        let input = &options.input;
        let path = match (&options.ids, options.id_start) {
            (Some(path), None) => path.clone(),
            (None, Some(first)) => return Ok(Ids::Counting(first + skip)),
            (None, None) => {
                return Err(FileError::Input {
                    path: input.clone(),
                    reason: "a .npy input needs ids: --ids FILE or --id-start N".into(),
                });
            }
            (Some(_), Some(_)) => {
                return Err(FileError::Input {
                    path: input.clone(),
                    reason: "give --ids or --id-start, not both".into(),
                });
            }
        };
        let mut file = BufReader::new(File::open(&path).map_err(io_error(&path))?);
        if path.extension().is_some_and(|e| e == "npy") {
            let header = npy::read_header(&mut file).map_err(io_error(&path))?;
            if header.rows != rows || header.cols != 1 || header.dtype.is_float() {
                return Err(FileError::Input {
                    path,
                    reason: format!("expected {rows} integer ids in a 1-d array"),
                });
            }
            file.seek(SeekFrom::Current((skip * header.row_bytes()) as i64))
                .map_err(io_error(&path))?;
            Ok(Ids::Npy {
                path,
                file,
                header,
                buf: Vec::new(),
            })
        } else {
            let mut lines = file.lines();
            for _ in 0..skip {
                lines.next();
            }
            Ok(Ids::Text { path, lines })
        }
    }

    fn next(&mut self, row: u64) -> Result<PointId, FileError> {
        match self {
            Ids::Counting(next) => {
                let id = PointId::Num(*next);
                *next += 1;
                Ok(id)
            }
            Ids::Text { path, lines } => {
                let line = lines
                    .next()
                    .transpose()
                    .map_err(io_error(path))?
                    .ok_or_else(|| FileError::Line {
                        path: path.clone(),
                        line: row,
                        reason: "fewer ids than vectors".into(),
                    })?;
                line.trim().parse().map_err(|reason| FileError::Line {
                    path: path.clone(),
                    line: row,
                    reason,
                })
            }
            Ids::Npy {
                path,
                file,
                header,
                buf,
            } => npy::read_u64(file, header, buf)
                .map(PointId::Num)
                .map_err(|e| FileError::Line {
                    path: path.clone(),
                    line: row,
                    reason: e.to_string(),
                }),
        }
    }
}

/// Reads the input on a blocking thread and hands chunks over.
struct Reader {
    path: PathBuf,
    file: BufReader<File>,
    format: Format,
    batch_size: usize,
    skip_invalid: bool,
    cursor: Cursor,
    /// Where the first chunks end, to read again the batches an earlier run
    /// sent; `batch_size` decides after them.
    ends: VecDeque<Cursor>,
}

enum Format {
    Jsonl,
    Npy { header: npy::Header, ids: Ids },
}

impl Reader {
    fn open(
        options: &LoadOptions,
        dimension: usize,
        mut cursor: Cursor,
        ends: VecDeque<Cursor>,
    ) -> Result<Self, FileError> {
        let path = options.input.clone();
        let mut file =
            BufReader::with_capacity(1 << 20, File::open(&path).map_err(io_error(&path))?);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        let format = match ext {
            "jsonl" | "ndjson" | "json" => Format::Jsonl,
            "npy" => {
                let header = npy::read_header(&mut file).map_err(io_error(&path))?;
                let len = file.get_ref().metadata().map_err(io_error(&path))?.len();
                let bad = |reason: String| FileError::Input {
                    path: path.clone(),
                    reason,
                };
                if !header.dtype.is_float() {
                    return Err(bad(format!(
                        "expected float vectors, found {:?}",
                        header.dtype
                    )));
                }
                if header.cols != dimension {
                    return Err(bad(format!(
                        "vectors have {} dimensions; collection {} has {dimension}",
                        header.cols, options.collection
                    )));
                }
                if len != header.file_len() {
                    return Err(bad(format!(
                        "truncated or padded: the header promises {} rows of {} values ({} bytes) \
                         but the file has {len} bytes",
                        header.rows,
                        header.cols,
                        header.file_len()
                    )));
                }
                let ids = Ids::open(options, header.rows, cursor.records)?;
                cursor.offset = cursor.offset.max(header.data_offset);
                Format::Npy { header, ids }
            }
            _ => {
                return Err(FileError::Input {
                    path,
                    reason: "unknown input format: expected a .jsonl, .ndjson or .npy file".into(),
                });
            }
        };
        if cursor.offset > 0 {
            file.seek(SeekFrom::Start(cursor.offset))
                .map_err(io_error(&path))?;
        }
        Ok(Self {
            path,
            file,
            format,
            batch_size: options.batch_size.max(1),
            skip_invalid: options.skip_invalid,
            cursor,
            ends,
        })
    }

    /// Sends chunks until the input ends, an error (sent on) stops it, or
    /// the receiver goes away.
    fn run(mut self, tx: &mpsc::Sender<Result<Chunk, FileError>>) {
        loop {
            match self.next_chunk() {
                Ok(None) => return,
                Ok(Some(chunk)) => {
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    }

    /// The next chunk, or `None` at the end of the input.
    fn next_chunk(&mut self) -> Result<Option<Chunk>, FileError> {
        let start = self.cursor;
        let mut chunk = Chunk {
            mutations: Vec::with_capacity(self.batch_size),
            lines: Vec::with_capacity(self.batch_size),
            skipped: 0,
            end: self.cursor,
        };
        let mut line = String::new();
        let mut row = Vec::new();
        let mut buf = Vec::new();
        let end = self.ends.pop_front();
        while match end {
            Some(end) => self.cursor.records < end.records,
            None => chunk.mutations.len() < self.batch_size,
        } {
            let record = self.cursor.records + 1;
            let parsed = match &mut self.format {
                Format::Jsonl => {
                    line.clear();
                    let n = self
                        .file
                        .read_line(&mut line)
                        .map_err(io_error(&self.path))?;
                    if n == 0 {
                        break;
                    }
                    self.cursor.offset += n as u64;
                    self.cursor.records = record;
                    if line.trim().is_empty() {
                        continue;
                    }
                    mutation::from_jsonl_line(&line)
                }
                Format::Npy { header, ids } => {
                    if self.cursor.records == header.rows {
                        break;
                    }
                    npy::read_f32_row(&mut self.file, header, &mut buf, &mut row)
                        .map_err(io_error(&self.path))?;
                    self.cursor.offset += header.row_bytes();
                    self.cursor.records = record;
                    let id = ids.next(record)?;
                    Ok(Mutation::Upsert {
                        id,
                        vector: std::mem::take(&mut row),
                        payload: None,
                    })
                }
            };
            match parsed {
                Ok(m) => {
                    chunk.mutations.push(m);
                    chunk.lines.push(record);
                }
                Err(reason) if self.skip_invalid => {
                    tracing::warn!(line = record, "skipped an invalid record: {reason}");
                    chunk.skipped += 1;
                }
                Err(reason) => {
                    return Err(FileError::Line {
                        path: self.path.clone(),
                        line: record,
                        reason,
                    });
                }
            }
        }
        if let Some(end) = end
            && end != self.cursor
        {
            return Err(FileError::Input {
                path: self.path.clone(),
                reason: format!(
                    "a batch its resume point records as sent ends at record {}, which the input \
                     does not match; run with --restart to start over",
                    end.records
                ),
            });
        }
        chunk.end = self.cursor;
        Ok((self.cursor != start).then_some(chunk))
    }
}
