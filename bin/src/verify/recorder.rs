//! The run's history: every task hands its events to one [`Recorder`], which appends each as a
//! JSON line to the history file as it comes (so a run that dies half-way leaves its history up
//! to that point) and keeps them for the check at the end.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use strom_verify::history::{self, Event, Millis};

pub struct Recorder {
    /// The run's time zero: `t_ms` counts from here (the workload's clock, never a node's).
    start: Instant,
    inner: Mutex<Sink>,
}

struct Sink {
    out: BufWriter<File>,
    /// Everything emitted so far, for the check.
    events: Vec<Event>,
    /// The first write that failed: the history on disk is incomplete, so the run failed.
    error: Option<std::io::Error>,
}

impl Recorder {
    /// Creates the history file, refusing to overwrite one that exists.
    pub fn create(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("cannot create the history file {}", path.display()))?;
        Ok(Self {
            start: Instant::now(),
            inner: Mutex::new(Sink {
                out: BufWriter::with_capacity(1 << 20, file),
                events: Vec::new(),
                error: None,
            }),
        })
    }

    /// Milliseconds since the start of the run.
    pub fn ms(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    fn sink(&self) -> MutexGuard<'_, Sink> {
        // A task that panicked while holding the lock left whole events behind it: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one event.
    pub fn emit(&self, e: Event) {
        let mut sink = self.sink();
        if sink.error.is_none() {
            if let Err(err) = writeln!(sink.out, "{}", history::line(&e)) {
                tracing::error!(error = %err, "cannot write the history; the run will fail");
                sink.error = Some(err);
            }
        }
        sink.events.push(e);
    }

    /// A free-form note in the history (ignored by the checker).
    pub fn info(&self, message: impl Into<String>) {
        self.emit(Event::Info {
            t_ms: self.ms(),
            message: message.into(),
        });
    }

    /// Flushes the file and hands over every event; an error if any write failed.
    pub fn finish(&self) -> Result<Vec<Event>> {
        let mut sink = self.sink();
        if let Some(e) = sink.error.take() {
            return Err(anyhow!(e).context("writing the history failed"));
        }
        sink.out.flush().context("writing the history failed")?;
        Ok(std::mem::take(&mut sink.events))
    }
}
