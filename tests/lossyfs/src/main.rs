//! `strom-lossyfs`: simulate a power loss under a program, as lazyfs does, with FUSE.
//!
//! ```text
//! strom-lossyfs <backing-dir> <mountpoint> [--control <socket>] [--max-dirty-bytes N]
//! strom-lossyfs ctl <socket> crash|stats|ping
//! ```
//!
//! The daemon mounts a pass-through view of `<backing-dir>` on `<mountpoint>` (root and
//! `/dev/fuse` needed; no libfuse or fusermount: the mount is a plain mount(2)). File data
//! written through the mount is held in memory and reaches the backing file only when that
//! file is fsynced (`fsync`, `fdatasync`, `msync(MS_SYNC)`); `close` does not make it durable.
//! A power loss, asked for with `SIGUSR1` or with `crash` on the control socket, forgets every
//! unsynced byte; later reads see only what was synced, and the daemon keeps serving so the
//! program under test can start again on the same mount. Kill the program with `kill -9`
//! first, as a power loss would. `crash` answers `ok discarded_bytes=N files=N` once done.
//!
//! Directory entries and size changes (create, mkdir, rename, unlink, rmdir, truncate) go to
//! the backing directory at once and count as durable immediately: weaker than a real disk,
//! so a missing directory fsync goes unnoticed. See the library docs for the whole model.
//!
//! `SIGTERM`, `SIGINT` or `SIGHUP` unmount and exit (the mount is detached lazily if still
//! busy); so does `umount <mountpoint>` from outside. `STROM_LOSSYFS_LOG` sets the log filter
//! (default `info`); logs go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use strom_lossyfs::{control, LossyMount, Options};
use tracing::{error, info};

const USAGE: &str = "usage: strom-lossyfs <backing-dir> <mountpoint> [--control <socket>] \
                     [--max-dirty-bytes N]\n       strom-lossyfs ctl <socket> crash|stats|ping";

struct Args {
    backing: PathBuf,
    mountpoint: PathBuf,
    control: Option<PathBuf>,
    options: Options,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut control = None;
    let mut options = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--control" => {
                control = Some(PathBuf::from(it.next().ok_or("--control needs a path")?));
            }
            "--max-dirty-bytes" => {
                let v = it.next().ok_or("--max-dirty-bytes needs a number")?;
                options.max_dirty_bytes = v
                    .parse()
                    .map_err(|e| format!("--max-dirty-bytes {v}: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    match <[PathBuf; 2]>::try_from(positional) {
        Ok([backing, mountpoint]) => Ok(Args {
            backing,
            mountpoint,
            control,
            options,
        }),
        Err(_) => Err("expected a backing directory and a mount point".to_owned()),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STROM_LOSSYFS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("ctl") {
        return match args.as_slice() {
            [_, socket, command] => match control::request(socket.as_ref(), command) {
                Ok(answer) => {
                    println!("{answer}");
                    if answer.starts_with("ok") {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("strom-lossyfs: control socket {socket}: {e}");
                    ExitCode::FAILURE
                }
            },
            _ => {
                eprintln!("{USAGE}");
                ExitCode::from(2)
            }
        };
    }
    let args = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("strom-lossyfs: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    // Block the signals we wait for before any thread exists, so every thread inherits the
    // mask and only the sigwait below receives them.
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGUSR1,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;

    let mount = LossyMount::mount(&args.backing, &args.mountpoint, &args.options)
        .map_err(|e| e.to_string())?;
    let ctl = mount.controller();
    if let Some(path) = &args.control {
        control::serve(path, ctl.clone())
            .map_err(|e| format!("control socket {}: {e}", path.display()))?;
    }
    info!(
        backing = %args.backing.display(),
        mountpoint = %mount.mountpoint().display(),
        control = ?args.control,
        pid = std::process::id(),
        "mounted; SIGUSR1 or `crash` on the control socket simulates a power loss"
    );
    // An unmount from outside ends the session: turn that into a SIGTERM for the loop below.
    {
        let ctl = ctl.clone();
        std::thread::Builder::new()
            .name("lossyfs-watch".to_owned())
            .spawn(move || {
                while !ctl.is_unmounted() {
                    std::thread::sleep(Duration::from_millis(200));
                }
                let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), Signal::SIGTERM);
            })
            .map_err(|e| format!("spawning a thread: {e}"))?;
    }
    loop {
        match signals.wait() {
            Ok(Signal::SIGUSR1) => {
                let r = ctl.crash();
                info!(
                    discarded_bytes = r.discarded_bytes,
                    files = r.files.len(),
                    "SIGUSR1: power loss simulated"
                );
            }
            Ok(sig) => {
                info!(signal = %sig, "unmounting");
                break;
            }
            Err(e) => return Err(format!("waiting for signals: {e}")),
        }
    }
    if let Some(path) = &args.control {
        let _ = std::fs::remove_file(path);
    }
    mount.unmount().map_err(|e| e.to_string())
}
