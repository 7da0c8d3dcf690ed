//! The history: every thread hands its events to one writer thread through a bounded channel,
//! and the writer appends them to `history.jsonl` as they come (one line each, in the format of
//! `strom_verify::history`), flushing whenever the channel goes quiet, so a run that dies
//! half-way still leaves the history up to that point on disk.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use strom_verify::history::{self, Event, Millis};

/// Events waiting for the writer; a full channel blocks the emitting thread, which bounds
/// memory when the disk is slow.
const QUEUE: usize = 65_536;

/// A handle every thread clones to add events to the history.
#[derive(Clone)]
pub struct Recorder {
    /// The run's time zero (`t_ms` counts from here; the workload's clock, never a node's).
    start: Instant,
    /// `None` closes the history.
    tx: SyncSender<Option<Event>>,
}

/// The writer thread; [`Writer::close`] ends the history and returns how many events it holds.
pub struct Writer {
    tx: SyncSender<Option<Event>>,
    thread: JoinHandle<std::io::Result<u64>>,
}

impl Recorder {
    /// Creates `path` and starts the writer thread.
    pub fn create(path: &Path) -> Result<(Recorder, Writer)> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || write_all(rx, BufWriter::with_capacity(1 << 20, file)))
            .context("starting the history writer thread")?;
        Ok((
            Recorder {
                start: Instant::now(),
                tx: tx.clone(),
            },
            Writer { tx, thread },
        ))
    }

    /// Milliseconds since the start of the run.
    pub fn ms(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    /// Adds one event (dropped silently once the history is closed).
    pub fn emit(&self, e: Event) {
        let _ = self.tx.send(Some(e));
    }

    /// A free-form note (ignored by the checker, useful to whoever reads the history).
    pub fn info(&self, message: impl Into<String>) {
        self.emit(Event::Info {
            t_ms: self.ms(),
            message: message.into(),
        });
    }
}

impl Writer {
    /// Writes everything queued so far, closes the file and returns the number of events.
    pub fn close(self) -> Result<u64> {
        let _ = self.tx.send(None);
        match self.thread.join() {
            Ok(r) => r.context("writing history.jsonl"),
            Err(_) => anyhow::bail!("the history writer thread panicked"),
        }
    }
}

fn write_all(rx: Receiver<Option<Event>>, mut out: BufWriter<File>) -> std::io::Result<u64> {
    let mut n = 0u64;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(e)) => {
                out.write_all(history::line(&e).as_bytes())?;
                out.write_all(b"\n")?;
                n += 1;
            }
            Err(RecvTimeoutError::Timeout) => out.flush()?,
            Ok(None) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(n)
}
