//! strom-lossyfs: a test tool (below the `tests` layer; no strom crate depends on it) that
//! simulates losing power. It is a FUSE file system passing everything through to a backing
//! directory, except that file data written through it stays in memory until that file is
//! fsynced, like a page cache that is never written back. [`LossyMount::crash`] forgets every
//! unsynced byte, as a power loss of the machine would, and the mount stays usable so that the
//! program under test can start again on it.
//!
//! The model, plainly:
//! - **File data** is durable only after `fsync`/`fdatasync` of that file (or `msync(MS_SYNC)`
//!   of a mapping of it). `close` makes nothing durable. Reads see the unsynced data; the size
//!   reported includes unsynced appends.
//! - **Directory entries** (create, mkdir, rename, unlink, rmdir) and **size changes**
//!   (`truncate`/`ftruncate`) go to the backing directory at once and count as durable
//!   immediately. That is weaker than a real disk, where a new file's entry can vanish unless
//!   its directory is fsynced; so this tool cannot find a missing directory fsync. A file
//!   extended by `ftruncate` and then written keeps its new length after a crash, with zeros
//!   where the unsynced data was.
//! - A crash drops **all** unsynced data. A real machine may have written some of it back
//!   before losing power; this model only tests the worst case, not torn or partial writes.
//! - The backing files themselves are not fsynced: they stand for the disk, and the host
//!   running the test does not lose power.
//!
//! [`dirty`] holds the per-file range logic (pure, unit-tested); [`fs`] the FUSE file system;
//! [`control`] the control socket of the `strom-lossyfs` binary.

pub mod control;
pub mod dirty;
pub mod fs;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption, Session};
use tracing::warn;

pub use fs::{CrashReport, Stats};
use fs::{LossyFs, Shared};

/// Settings of one mount.
#[derive(Debug, Clone)]
pub struct Options {
    /// Unsynced bytes held in memory across all files at most; writes beyond it fail with
    /// ENOSPC (and a warning) until something is fsynced.
    pub max_dirty_bytes: u64,
    /// Threads serving FUSE requests.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_dirty_bytes: 1 << 30,
            threads: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("backing directory {path}: {source}")]
    Backing { path: PathBuf, source: io::Error },
    #[error("mount point {path}: {source}")]
    Mountpoint { path: PathBuf, source: io::Error },
    #[error("mounting a FUSE file system on {path} failed (needs root and /dev/fuse): {source}")]
    Mount { path: PathBuf, source: io::Error },
    #[error("unmounting {path}: {source}")]
    Unmount { path: PathBuf, source: io::Error },
}

fn require_dir(path: &Path) -> io::Result<PathBuf> {
    let path = path.canonicalize()?;
    if !path.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    Ok(path)
}

/// Power-loss switch and counters of a mount; cheap to clone and usable from any thread.
#[derive(Clone)]
pub struct Controller(Arc<Shared>);

impl Controller {
    /// Simulates a power loss: forgets every unsynced byte (see [`LossyMount::crash`]).
    pub fn crash(&self) -> CrashReport {
        self.0.crash()
    }

    pub fn stats(&self) -> Stats {
        self.0.stats()
    }

    /// The FUSE session has ended: the file system was unmounted (perhaps from outside).
    pub fn is_unmounted(&self) -> bool {
        self.0.is_ended()
    }
}

/// A mounted lossy file system. Dropping it unmounts (lazily, if the mount is still busy).
pub struct LossyMount {
    mountpoint: PathBuf,
    shared: Arc<Shared>,
    session: Option<BackgroundSession>,
}

impl LossyMount {
    /// Mounts `backing` on `mountpoint` (both existing directories) and serves it from
    /// background threads.
    pub fn mount(backing: &Path, mountpoint: &Path, options: &Options) -> Result<Self, Error> {
        let root = require_dir(backing).map_err(|source| Error::Backing {
            path: backing.to_owned(),
            source,
        })?;
        let mountpoint = require_dir(mountpoint).map_err(|source| Error::Mountpoint {
            path: mountpoint.to_owned(),
            source,
        })?;
        let shared = Shared::new(root, options.max_dirty_bytes);
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("strom-lossyfs".to_owned()),
            MountOption::Subtype("lossyfs".to_owned()),
        ];
        config.n_threads = Some(options.threads.max(1));
        let mount_err = |source| Error::Mount {
            path: mountpoint.clone(),
            source,
        };
        let session =
            Session::new(LossyFs::new(shared.clone()), &mountpoint, &config).map_err(mount_err)?;
        shared.set_notifier(session.notifier());
        let session = session.spawn().map_err(mount_err)?;
        Ok(Self {
            mountpoint,
            shared,
            session: Some(session),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn controller(&self) -> Controller {
        Controller(self.shared.clone())
    }

    /// Simulates a power loss of the machine: every byte written but not fsynced is forgotten
    /// (including dirty pages of shared mmaps still in the kernel's page cache), and the
    /// kernel's caches of this mount are dropped so that later reads see only synced data.
    /// Programs using the mount should be dead (kill -9) first, as after a real power loss.
    pub fn crash(&self) -> CrashReport {
        self.shared.crash()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Unmounts and waits for the serving threads. If the mount is busy it is detached
    /// lazily (it disappears once the last file on it is closed) and the error is returned.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), Error> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let result = session.umount_and_join();
        if let Err(e) = &result {
            if e.raw_os_error() == Some(nix::libc::EBUSY) {
                warn!(mountpoint = %self.mountpoint.display(), "mount busy: detaching it lazily");
                if let Err(e2) =
                    nix::mount::umount2(self.mountpoint.as_path(), nix::mount::MntFlags::MNT_DETACH)
                {
                    warn!(error = %e2, "lazy unmount failed too");
                }
            }
        }
        result.map_err(|source| Error::Unmount {
            path: self.mountpoint.clone(),
            source,
        })
    }
}

impl Drop for LossyMount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            eprintln!("strom-lossyfs: {e}");
        }
    }
}
