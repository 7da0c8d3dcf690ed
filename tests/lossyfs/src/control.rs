//! The control socket of the `strom-lossyfs` daemon: a Unix socket outside the mount; each
//! connection sends one command line and gets one answer line.
//!
//! | command | answer |
//! |---|---|
//! | `crash` | `ok discarded_bytes=N files=N` after the power loss is complete |
//! | `stats` | `ok dirty_bytes=N dirty_files=N synced_bytes=N discarded_bytes=N crashes=N inodes=N` |
//! | `ping`  | `ok` |
//!
//! Anything else is answered with `error ...`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::warn;

use crate::{Controller, Stats};

/// The longest command line read.
const MAX_LINE: u64 = 256;

fn stats_line(s: &Stats) -> String {
    format!(
        "ok dirty_bytes={} dirty_files={} synced_bytes={} discarded_bytes={} crashes={} inodes={}",
        s.dirty_bytes, s.dirty_files, s.synced_bytes, s.discarded_bytes, s.crashes, s.inodes
    )
}

/// Answers one command.
pub fn execute(ctl: &Controller, command: &str) -> String {
    match command.trim() {
        "crash" => {
            let r = ctl.crash();
            format!(
                "ok discarded_bytes={} files={}",
                r.discarded_bytes,
                r.files.len()
            )
        }
        "stats" => stats_line(&ctl.stats()),
        "ping" => "ok".to_owned(),
        other => format!("error unknown command {other:?} (commands: crash, stats, ping)"),
    }
}

fn handle(ctl: &Controller, stream: UnixStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut line)?;
    let mut answer = execute(ctl, &line);
    answer.push('\n');
    (&stream).write_all(answer.as_bytes())
}

/// Binds `path` (replacing a stale socket file) and serves commands on a background thread.
pub fn serve(path: &Path, ctl: Controller) -> io::Result<JoinHandle<()>> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("lossyfs-control".to_owned())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        if let Err(e) = handle(&ctl, stream) {
                            warn!(error = %e, "control connection failed");
                        }
                    }
                    Err(e) => warn!(error = %e, "accepting a control connection failed"),
                }
            }
        })
}

/// Sends one command to a daemon's control socket and returns its answer line.
pub fn request(path: &Path, command: &str) -> io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    // A crash invalidates the kernel's caches of every file; allow it time.
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(format!("{}\n", command.trim()).as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    stream.take(64 * 1024).read_to_string(&mut answer)?;
    Ok(answer.trim_end().to_owned())
}
