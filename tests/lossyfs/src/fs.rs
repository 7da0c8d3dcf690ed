//! The FUSE file system: a pass-through to a backing directory whose file data stays in memory
//! ([`Dirty`]) until the file is fsynced, and is forgotten by [`Shared::crash`].
//!
//! Inode numbers are this file system's own (a counter, never reused), mapped to paths
//! relative to the backing directory. Unsynced data belongs to the inode, so it follows a
//! rename, and a file unlinked and created again under the same name starts clean.
//!
//! Every request takes one lock around the whole table; the work under it is memory copies and
//! syscalls on the backing directory, never IO on the mount itself, so nothing can deadlock.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, FileTimes, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use crate::dirty::Dirty;

/// How long the kernel may cache attributes and directory entries. Everything changes through
/// this file system except a power loss, and that invalidates the kernel's caches explicitly.
const TTL: Duration = Duration::from_secs(1);

/// The largest file offset the kernel can send (`loff_t`).
const MAX_OFFSET: u64 = i64::MAX as u64;

/// What one power loss dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Unsynced bytes forgotten.
    pub discarded_bytes: u64,
    /// Each file that had unsynced bytes, with how many: its path relative to the mount
    /// (`None` for a file already unlinked), sorted by path.
    pub files: Vec<(Option<PathBuf>, u64)>,
}

/// Counters since mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Unsynced bytes held now.
    pub dirty_bytes: u64,
    /// Files with unsynced bytes now.
    pub dirty_files: u64,
    /// Bytes written to backing files by fsync.
    pub synced_bytes: u64,
    /// Bytes forgotten by power losses.
    pub discarded_bytes: u64,
    /// Power losses simulated.
    pub crashes: u64,
    /// Inodes this file system tracks (the kernel's references, plus files with unsynced
    /// data the kernel has forgotten).
    pub inodes: u64,
}

/// One file or directory the kernel knows, or that still holds unsynced data.
struct Inode {
    /// Path relative to the backing directory; `None` once unlinked (or replaced by a rename)
    /// while the kernel still refers to it.
    path: Option<PathBuf>,
    /// The kernel's lookup count (FUSE `nlookup`); the inode may go when it and `opens` are 0.
    lookups: u64,
    /// Open file handles.
    opens: u64,
    /// The backing file, read-write, while a handle is open: reads and fsync use it, and it
    /// keeps an unlinked file readable.
    file: Option<File>,
    /// Data written but not yet fsynced.
    dirty: Dirty,
}

/// A directory listing taken at opendir, so readdir offsets stay stable.
struct DirEntry {
    ino: u64,
    kind: FileType,
    name: OsString,
}

enum Handle {
    File { ino: u64 },
    Dir { entries: Vec<DirEntry> },
}

struct Table {
    inodes: HashMap<u64, Inode>,
    by_path: HashMap<PathBuf, u64>,
    handles: HashMap<u64, Handle>,
    next_ino: u64,
    next_fh: u64,
    stats: Stats,
    /// The write refused for exceeding the bound was logged (once per mount).
    warned_full: bool,
}

/// State shared between the FUSE session (through [`LossyFs`]) and whoever triggers power
/// losses.
pub struct Shared {
    root: PathBuf,
    max_dirty_bytes: u64,
    table: Mutex<Table>,
    /// Set once the session exists; used to drop the kernel's page cache at a power loss.
    notifier: OnceLock<Notifier>,
    /// The FUSE session has ended (unmounted, possibly from outside).
    ended: AtomicBool,
}

/// The [`Filesystem`] handed to fuser.
pub struct LossyFs {
    shared: Arc<Shared>,
}

fn errno(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_i32)
}

fn kind_of(m: &Metadata) -> FileType {
    FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nsecs = u32::try_from(nsecs).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, nsecs),
        Err(_) => UNIX_EPOCH,
    }
}

/// Attributes of `m` as the kernel should see them: the size includes unsynced appends.
fn attr_of(ino: u64, m: &Metadata, dirty: &Dirty) -> FileAttr {
    let kind = kind_of(m);
    let size = if kind == FileType::RegularFile {
        m.len().max(dirty.end())
    } else {
        m.len()
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: m.blocks().max(size.div_ceil(512)),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: time(m.ctime(), m.ctime_nsec()),
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: u32::try_from(m.nlink()).unwrap_or(u32::MAX),
        uid: m.uid(),
        gid: m.gid(),
        rdev: u32::try_from(m.rdev()).unwrap_or(0),
        blksize: u32::try_from(m.blksize()).unwrap_or(4096),
        flags: 0,
    }
}

fn system_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Table {
    fn inode(&self, ino: u64) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    /// The relative path of `name` in directory `parent`.
    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        let name_path = Path::new(name);
        let mut parts = name_path.components();
        match (parts.next(), parts.next()) {
            (Some(std::path::Component::Normal(_)), None) => {}
            _ => return Err(Errno::EINVAL),
        }
        let dir = self.inode(parent)?.path.as_ref().ok_or(Errno::ENOENT)?;
        Ok(dir.join(name))
    }

    /// The inode for `path`, created if this file system has none for it yet.
    fn intern(&mut self, path: PathBuf) -> u64 {
        if let Some(&ino) = self.by_path.get(&path) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_path.insert(path.clone(), ino);
        self.inodes.insert(
            ino,
            Inode {
                path: Some(path),
                lookups: 0,
                opens: 0,
                file: None,
                dirty: Dirty::default(),
            },
        );
        ino
    }

    /// Forgets an inode nobody refers to any more, unless it still holds unsynced data for a
    /// path (that data must stay visible, and is lost only by a power loss).
    fn maybe_drop(&mut self, ino: u64) {
        if ino == INodeNo::ROOT.0 {
            return;
        }
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        if inode.opens == 0 {
            inode.file = None;
        }
        if inode.lookups > 0 || inode.opens > 0 || (inode.path.is_some() && !inode.dirty.is_empty())
        {
            return;
        }
        let dropped = inode.dirty.discard();
        self.stats.dirty_bytes -= dropped;
        if let Some(path) = inode.path.take() {
            if self.by_path.get(&path) == Some(&ino) {
                self.by_path.remove(&path);
            }
        }
        self.inodes.remove(&ino);
    }

    /// `path` no longer names the inode it named (unlinked, removed or renamed over).
    fn detach(&mut self, path: &Path) {
        if let Some(ino) = self.by_path.remove(path) {
            if let Some(inode) = self.inodes.get_mut(&ino) {
                inode.path = None;
            }
            self.maybe_drop(ino);
        }
    }
}

impl Shared {
    pub fn new(root: PathBuf, max_dirty_bytes: u64) -> Arc<Self> {
        let mut table = Table {
            inodes: HashMap::new(),
            by_path: HashMap::new(),
            handles: HashMap::new(),
            next_ino: INodeNo::ROOT.0 + 1,
            next_fh: 1,
            stats: Stats::default(),
            warned_full: false,
        };
        table.by_path.insert(PathBuf::new(), INodeNo::ROOT.0);
        table.inodes.insert(
            INodeNo::ROOT.0,
            Inode {
                path: Some(PathBuf::new()),
                lookups: 1,
                opens: 0,
                file: None,
                dirty: Dirty::default(),
            },
        );
        Arc::new(Self {
            root,
            max_dirty_bytes,
            table: Mutex::new(table),
            notifier: OnceLock::new(),
            ended: AtomicBool::new(false),
        })
    }

    pub(crate) fn set_notifier(&self, n: Notifier) {
        let _ = self.notifier.set(n);
    }

    fn abs(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Current metadata of an inode: from its open backing file, else by path.
    fn metadata(&self, inode: &Inode) -> Result<Metadata, Errno> {
        if let Some(f) = &inode.file {
            return f.metadata().map_err(|e| errno(&e));
        }
        let path = inode.path.as_ref().ok_or(Errno::ENOENT)?;
        std::fs::symlink_metadata(self.abs(path)).map_err(|e| errno(&e))
    }

    fn attr(&self, t: &Table, ino: u64) -> Result<FileAttr, Errno> {
        let inode = t.inode(ino)?;
        let m = self.metadata(inode)?;
        Ok(attr_of(ino, &m, &inode.dirty))
    }

    /// Opens the backing file of `ino` read-write unless it is open already.
    fn ensure_open(&self, inode: &mut Inode) -> Result<(), Errno> {
        if inode.file.is_some() {
            return Ok(());
        }
        let path = inode.path.as_ref().ok_or(Errno::ENOENT)?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.abs(path))
            .map_err(|e| errno(&e))?;
        inode.file = Some(f);
        Ok(())
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let mut t = self.table.lock();
        let path = t.child(parent, name)?;
        let m = std::fs::symlink_metadata(self.abs(&path)).map_err(|e| errno(&e))?;
        let ino = t.intern(path);
        let inode = t.inode_mut(ino)?;
        inode.lookups += 1;
        Ok(attr_of(ino, &m, &inode.dirty))
    }

    fn forget(&self, ino: u64, n: u64) {
        let mut t = self.table.lock();
        if let Some(inode) = t.inodes.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(n);
        }
        t.maybe_drop(ino);
    }

    fn getattr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let t = self.table.lock();
        self.attr(&t, ino)
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr, Errno> {
        let mut t = self.table.lock();
        let path = t.inode(ino)?.path.clone();
        let abs = path.as_deref().map(|p| self.abs(p));
        let io = |e: io::Error| errno(&e);
        if let Some(mode) = mode {
            let perm = std::fs::Permissions::from_mode(mode & 0o7777);
            match (&t.inode(ino)?.file, &abs) {
                (Some(f), _) => f.set_permissions(perm).map_err(io)?,
                (None, Some(p)) => std::fs::set_permissions(p, perm).map_err(io)?,
                (None, None) => return Err(Errno::ENOENT),
            }
        }
        if uid.is_some() || gid.is_some() {
            match (&t.inode(ino)?.file, &abs) {
                (Some(f), _) => std::os::unix::fs::fchown(f, uid, gid).map_err(io)?,
                (None, Some(p)) => std::os::unix::fs::lchown(p, uid, gid).map_err(io)?,
                (None, None) => return Err(Errno::ENOENT),
            }
        }
        if let Some(size) = size {
            if size > MAX_OFFSET {
                return Err(Errno::EFBIG);
            }
            // A size change is metadata: applied to the backing file at once (durable), and
            // unsynced bytes past the new end are forgotten.
            let inode = t.inode_mut(ino)?;
            match (&inode.file, &abs) {
                (Some(f), _) => f.set_len(size).map_err(io)?,
                (None, Some(p)) => OpenOptions::new()
                    .write(true)
                    .open(p)
                    .and_then(|f| f.set_len(size))
                    .map_err(io)?,
                (None, None) => return Err(Errno::ENOENT),
            }
            let dropped = inode.dirty.truncate(size);
            t.stats.dirty_bytes -= dropped;
        }
        if atime.is_some() || mtime.is_some() {
            let mut times = FileTimes::new();
            if let Some(a) = atime {
                times = times.set_accessed(system_time(a));
            }
            if let Some(m) = mtime {
                times = times.set_modified(system_time(m));
            }
            match (&t.inode(ino)?.file, &abs) {
                (Some(f), _) => f.set_times(times).map_err(io)?,
                (None, Some(p)) => File::open(p).and_then(|f| f.set_times(times)).map_err(io)?,
                (None, None) => return Err(Errno::ENOENT),
            }
        }
        self.attr(&t, ino)
    }

    fn open(&self, ino: u64) -> Result<u64, Errno> {
        let mut t = self.table.lock();
        let inode = t.inode_mut(ino)?;
        self.ensure_open(inode)?;
        inode.opens += 1;
        let fh = t.next_fh;
        t.next_fh += 1;
        t.handles.insert(fh, Handle::File { ino });
        Ok(fh)
    }

    fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        let mut t = self.table.lock();
        let path = t.child(parent, name)?;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).mode(mode & !umask & 0o7777);
        if flags & nix::libc::O_EXCL != 0 {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        let truncate = flags & nix::libc::O_TRUNC != 0;
        opts.truncate(truncate);
        let file = opts.open(self.abs(&path)).map_err(|e| errno(&e))?;
        let m = file.metadata().map_err(|e| errno(&e))?;
        let ino = t.intern(path);
        let inode = t.inode_mut(ino)?;
        let dropped = if truncate { inode.dirty.truncate(0) } else { 0 };
        if inode.file.is_none() {
            inode.file = Some(file);
        }
        inode.lookups += 1;
        inode.opens += 1;
        let attr = attr_of(ino, &m, &inode.dirty);
        t.stats.dirty_bytes -= dropped;
        let fh = t.next_fh;
        t.next_fh += 1;
        t.handles.insert(fh, Handle::File { ino });
        Ok((attr, fh))
    }

    fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let mut t = self.table.lock();
        let inode = t.inode_mut(ino)?;
        self.ensure_open(inode)?;
        let Some(file) = &inode.file else {
            return Err(Errno::EBADF);
        };
        let backing_len = file.metadata().map_err(|e| errno(&e))?.len();
        let logical = backing_len.max(inode.dirty.end());
        if offset >= logical {
            return Ok(Vec::new());
        }
        let n = usize::try_from((logical - offset).min(u64::from(size))).unwrap_or(0);
        let mut buf = vec![0u8; n];
        if offset < backing_len {
            let want = usize::try_from((backing_len - offset).min(n as u64)).unwrap_or(0);
            let mut done = 0usize;
            while done < want {
                let Some(dst) = buf.get_mut(done..want) else {
                    break;
                };
                match file.read_at(dst, offset + done as u64) {
                    Ok(0) => break, // the backing file is shorter than it was a moment ago
                    Ok(k) => done += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno(&e)),
                }
            }
        }
        inode.dirty.overlay(offset, &mut buf);
        Ok(buf)
    }

    fn write(&self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let len = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        if offset
            .checked_add(u64::from(len))
            .is_none_or(|end| end > MAX_OFFSET)
        {
            return Err(Errno::EFBIG);
        }
        let mut t = self.table.lock();
        if t.stats.dirty_bytes + u64::from(len) > self.max_dirty_bytes {
            if !t.warned_full {
                t.warned_full = true;
                warn!(
                    held = t.stats.dirty_bytes,
                    limit = self.max_dirty_bytes,
                    "unsynced data would exceed --max-dirty-bytes: refusing writes with ENOSPC \
                     until something is fsynced"
                );
            }
            return Err(Errno::ENOSPC);
        }
        let grown = t.inode_mut(ino)?.dirty.write(offset, data);
        t.stats.dirty_bytes += grown;
        Ok(len)
    }

    fn fsync(&self, ino: u64) -> Result<(), Errno> {
        let mut t = self.table.lock();
        let inode = t.inode_mut(ino)?;
        if inode.dirty.is_empty() {
            return Ok(());
        }
        if inode.path.is_none() && inode.file.is_none() {
            // Unlinked and closed: nothing can read it again.
            let n = inode.dirty.discard();
            t.stats.dirty_bytes -= n;
            return Ok(());
        }
        self.ensure_open(inode)?;
        let Some(file) = &inode.file else {
            return Err(Errno::EBADF);
        };
        // The backing file is the durable state of this model; it is not fsynced itself,
        // since the host never loses power during a test.
        let result = inode
            .dirty
            .sync_to(|off, data| file.write_all_at(data, off));
        let synced = match result {
            Ok(n) => n,
            Err((n, e)) => {
                warn!(ino, error = %e, "writing unsynced data to the backing file failed");
                t.stats.dirty_bytes -= n;
                t.stats.synced_bytes += n;
                return Err(errno(&e));
            }
        };
        t.stats.dirty_bytes -= synced;
        t.stats.synced_bytes += synced;
        Ok(())
    }

    fn release(&self, ino: u64, fh: u64) {
        let mut t = self.table.lock();
        let ino = match t.handles.remove(&fh) {
            Some(Handle::File { ino }) => ino,
            Some(Handle::Dir { .. }) | None => {
                warn!(ino, fh, "release of an unknown file handle");
                return;
            }
        };
        if let Some(inode) = t.inodes.get_mut(&ino) {
            inode.opens = inode.opens.saturating_sub(1);
        }
        t.maybe_drop(ino);
    }

    fn opendir(&self, ino: u64) -> Result<u64, Errno> {
        let mut t = self.table.lock();
        let path = t.inode(ino)?.path.clone().ok_or(Errno::ENOENT)?;
        let mut entries = vec![
            DirEntry {
                ino,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEntry {
                ino,
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        for e in std::fs::read_dir(self.abs(&path)).map_err(|e| errno(&e))? {
            let e = e.map_err(|e| errno(&e))?;
            let name = e.file_name();
            let kind = e
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            // The inode number here is informational (the kernel looks names up before use);
            // the backing one serves for files this file system has not seen yet.
            let ino = t
                .by_path
                .get(&path.join(&name))
                .copied()
                .unwrap_or_else(|| std::os::unix::fs::DirEntryExt::ino(&e));
            entries.push(DirEntry { ino, kind, name });
        }
        let fh = t.next_fh;
        t.next_fh += 1;
        t.handles.insert(fh, Handle::Dir { entries });
        Ok(fh)
    }

    fn readdir(&self, fh: u64, offset: u64, reply: &mut ReplyDirectory) -> Result<(), Errno> {
        let t = self.table.lock();
        let Some(Handle::Dir { entries }) = t.handles.get(&fh) else {
            return Err(Errno::EBADF);
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, e) in entries.iter().enumerate().skip(skip) {
            if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, &e.name) {
                break;
            }
        }
        Ok(())
    }

    fn releasedir(&self, fh: u64) {
        self.table.lock().handles.remove(&fh);
    }

    fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, umask: u32) -> Result<FileAttr, Errno> {
        let mut t = self.table.lock();
        let path = t.child(parent, name)?;
        let abs = self.abs(&path);
        std::fs::DirBuilder::new()
            .mode(mode & !umask & 0o7777)
            .create(&abs)
            .map_err(|e| errno(&e))?;
        let m = std::fs::symlink_metadata(&abs).map_err(|e| errno(&e))?;
        let ino = t.intern(path);
        let inode = t.inode_mut(ino)?;
        inode.lookups += 1;
        Ok(attr_of(ino, &m, &inode.dirty))
    }

    fn unlink(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let mut t = self.table.lock();
        let path = t.child(parent, name)?;
        let abs = self.abs(&path);
        if dir {
            std::fs::remove_dir(&abs)
        } else {
            std::fs::remove_file(&abs)
        }
        .map_err(|e| errno(&e))?;
        t.detach(&path);
        Ok(())
    }

    fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
    ) -> Result<(), Errno> {
        let mut t = self.table.lock();
        let from = t.child(parent, name)?;
        let to = t.child(newparent, newname)?;
        std::fs::rename(self.abs(&from), self.abs(&to)).map_err(|e| errno(&e))?;
        if from == to {
            return Ok(());
        }
        t.detach(&to);
        // Move the mapping of `from` and, for a directory, of everything below it.
        let moved: Vec<(PathBuf, u64)> = t
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(&from))
            .map(|(p, &ino)| (p.clone(), ino))
            .collect();
        for (old, ino) in moved {
            let Ok(rest) = old.strip_prefix(&from) else {
                continue;
            };
            let new = if rest.as_os_str().is_empty() {
                to.clone()
            } else {
                to.join(rest)
            };
            t.by_path.remove(&old);
            t.by_path.insert(new.clone(), ino);
            if let Some(inode) = t.inodes.get_mut(&ino) {
                inode.path = Some(new);
            }
        }
        Ok(())
    }

    /// Power loss: every unsynced byte of every file is forgotten, and the kernel's cached
    /// pages and attributes of this mount are dropped so that later reads see only synced
    /// data. The mount stays usable.
    pub fn crash(&self) -> CrashReport {
        let inos: Vec<u64> = self.table.lock().inodes.keys().copied().collect();
        // First make the kernel hand over any dirty page-cache pages (a killed process's
        // writes to a shared mmap are still in the page cache): invalidation writes them
        // back to us, where they become unsynced data like any other write.
        self.invalidate(&inos);
        let report = {
            let mut t = self.table.lock();
            let mut report = CrashReport::default();
            for inode in t.inodes.values_mut() {
                let n = inode.dirty.discard();
                if n > 0 {
                    report.discarded_bytes += n;
                    report.files.push((inode.path.clone(), n));
                }
            }
            report.files.sort();
            t.stats.dirty_bytes = 0;
            t.stats.discarded_bytes += report.discarded_bytes;
            t.stats.crashes += 1;
            let all: Vec<u64> = t.inodes.keys().copied().collect();
            for ino in all {
                t.maybe_drop(ino);
            }
            report
        };
        // Then drop whatever the kernel read or cached in between.
        self.invalidate(&inos);
        for (path, n) in &report.files {
            debug!(path = ?path, bytes = n, "power loss: discarded");
        }
        info!(
            discarded_bytes = report.discarded_bytes,
            files = report.files.len(),
            "power loss: unsynced data discarded"
        );
        report
    }

    fn invalidate(&self, inos: &[u64]) {
        let Some(n) = self.notifier.get() else {
            return;
        };
        for &ino in inos {
            if let Err(e) = n.inval_inode(INodeNo(ino), 0, 0) {
                debug!(ino, error = %e, "invalidating the kernel's cache failed");
            }
        }
    }

    /// Whether the FUSE session has ended (the mount is gone).
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> Stats {
        let t = self.table.lock();
        let mut s = t.stats;
        s.dirty_files = t.inodes.values().filter(|i| !i.dirty.is_empty()).count() as u64;
        s.inodes = t.inodes.len() as u64;
        s
    }
}

impl LossyFs {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn log_err(op: &str, ino: u64, e: Errno) -> Errno {
    if e != Errno::ENOENT && e != Errno::EEXIST {
        debug!(op, ino, errno = e.code(), "request failed");
    }
    e
}

impl Filesystem for LossyFs {
    fn destroy(&mut self) {
        self.shared.ended.store(true, Ordering::Release);
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.shared.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(log_err("lookup", parent.0, e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.shared.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(log_err("getattr", ino.0, e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self
            .shared
            .setattr(ino.0, mode, uid, gid, size, atime, mtime)
        {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(log_err("setattr", ino.0, e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.shared.mkdir(parent.0, name, mode, umask) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(log_err("mkdir", parent.0, e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.shared.unlink(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(log_err("unlink", parent.0, e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.shared.unlink(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(log_err("rmdir", parent.0, e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            // RENAME_NOREPLACE / EXCHANGE / WHITEOUT are not needed by strom.
            reply.error(Errno::EINVAL);
            return;
        }
        match self.shared.rename(parent.0, name, newparent.0, newname) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(log_err("rename", parent.0, e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // No FOPEN_KEEP_CACHE: every open drops the kernel's cached pages of the file, and no
        // FOPEN_DIRECT_IO, so shared mmap works (through the page cache, written back to us
        // as ordinary writes).
        match self.shared.open(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(log_err("open", ino.0, e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.shared.create(parent.0, name, mode, umask, flags) {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(log_err("create", parent.0, e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.shared.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(log_err("read", ino.0, e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // By inode, not handle: page-cache write-back (mmap) may come with any handle.
        match self.shared.write(ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(log_err("write", ino.0, e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.release(ino.0, fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.shared.fsync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(log_err("fsync", ino.0, e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.shared.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(log_err("opendir", ino.0, e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.shared.readdir(fh.0, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(log_err("readdir", ino.0, e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory entries go to the backing directory at once and count as durable.
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // ENOSYS tells the kernel that this file system has no extended attributes at all, so
        // it stops asking (it would otherwise ask for `security.capability` on every write).
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Regular files answer no ioctl (isatty() asks TCGETS on every open in some runtimes).
        reply.error(Errno::ENOTTY);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statvfs::statvfs(&self.shared.root) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                u32::try_from(s.block_size()).unwrap_or(4096),
                u32::try_from(s.name_max()).unwrap_or(255),
                u32::try_from(s.fragment_size()).unwrap_or(4096),
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }
}
