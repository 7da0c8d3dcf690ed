//! The file system through a real FUSE mount (needs root and /dev/fuse, as every test run here
//! has): what a program sees before and after a simulated power loss.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use strom_lossyfs::{LossyMount, Options};

struct Fixture {
    // Field order is drop order: unmount before the directories go.
    mount: LossyMount,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("backing")).unwrap();
        fs::create_dir(dir.path().join("mnt")).unwrap();
        let mount = LossyMount::mount(
            &dir.path().join("backing"),
            &dir.path().join("mnt"),
            &Options::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Self { mount, dir }
    }

    fn mnt(&self, rel: &str) -> PathBuf {
        self.mount.mountpoint().join(rel)
    }

    fn backing(&self, rel: &str) -> PathBuf {
        self.dir.path().join("backing").join(rel)
    }
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn unsynced_writes_are_visible_until_a_crash() {
    let fx = Fixture::new();
    let p = fx.mnt("a.log");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(b"durable ").unwrap();
    f.sync_data().unwrap();
    f.write_all(b"volatile").unwrap();
    assert_eq!(read(&p), b"durable volatile");
    assert_eq!(fs::metadata(&p).unwrap().len(), 16);
    assert_eq!(
        read(&fx.backing("a.log")),
        b"durable ",
        "only synced data reaches the disk"
    );
    assert_eq!(fx.mount.stats().dirty_bytes, 8);

    let report = fx.mount.crash();
    assert_eq!(report.discarded_bytes, 8);
    assert_eq!(report.files, vec![(Some(PathBuf::from("a.log")), 8)]);
    assert_eq!(read(&p), b"durable ");
    assert_eq!(fs::metadata(&p).unwrap().len(), 8);
    // A descriptor opened before the crash sees the same.
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"durable ");
    // And the file keeps working.
    f.write_all(b"again").unwrap();
    f.sync_all().unwrap();
    assert_eq!(read(&fx.backing("a.log")), b"durable again");
    let s = fx.mount.stats();
    assert_eq!((s.dirty_bytes, s.discarded_bytes, s.crashes), (0, 8, 1));
}

#[test]
fn close_does_not_make_data_durable() {
    let fx = Fixture::new();
    fs::write(fx.mnt("closed"), b"never synced").unwrap();
    assert_eq!(read(&fx.mnt("closed")), b"never synced");
    fx.mount.crash();
    assert_eq!(
        read(&fx.mnt("closed")),
        b"",
        "the entry survives, the data does not"
    );
}

#[test]
fn overwrites_and_holes_merge_with_the_backing_file() {
    let fx = Fixture::new();
    let p = fx.mnt("f");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all_at(b"0123456789", 0).unwrap();
    f.sync_all().unwrap();
    f.write_all_at(b"ab", 3).unwrap();
    f.write_all_at(b"tail", 14).unwrap();
    assert_eq!(read(&p), b"012ab56789\0\0\0\0tail");
    fx.mount.crash();
    assert_eq!(read(&p), b"0123456789");
}

#[test]
fn truncate_applies_to_disk_and_unsynced_data() {
    let fx = Fixture::new();
    let p = fx.mnt("t");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all_at(b"synced-part", 0).unwrap();
    f.sync_data().unwrap();
    f.write_all_at(b"+unsynced", 11).unwrap();
    f.set_len(6).unwrap();
    assert_eq!(read(&p), b"synced");
    assert_eq!(
        read(&fx.backing("t")),
        b"synced",
        "a size change is durable at once"
    );
    f.set_len(8).unwrap();
    assert_eq!(read(&p), b"synced\0\0");
    f.write_all_at(b"xy", 6).unwrap();
    fx.mount.crash();
    assert_eq!(read(&p), b"synced\0\0");
}

#[test]
fn rename_carries_unsynced_data_and_a_new_file_starts_clean() {
    let fx = Fixture::new();
    fs::write(fx.mnt("x.tmp"), b"checkpoint").unwrap();
    fs::rename(fx.mnt("x.tmp"), fx.mnt("x")).unwrap();
    assert_eq!(read(&fx.mnt("x")), b"checkpoint");
    // The classic bug this catches: rename without fsync leaves an empty file after a crash.
    fx.mount.crash();
    assert!(fx.mnt("x").exists());
    assert!(!fx.mnt("x.tmp").exists());
    assert_eq!(read(&fx.mnt("x")), b"");

    fs::write(fx.mnt("y"), b"old unsynced").unwrap();
    fs::remove_file(fx.mnt("y")).unwrap();
    fs::write(fx.mnt("y"), b"new").unwrap();
    assert_eq!(read(&fx.mnt("y")), b"new");
    let f = OpenOptions::new().append(true).open(fx.mnt("y")).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fx.mount.crash();
    assert_eq!(read(&fx.mnt("y")), b"new");
}

#[test]
fn directories_are_passed_through() {
    let fx = Fixture::new();
    fs::create_dir_all(fx.mnt("d/e")).unwrap();
    for i in 0..300 {
        fs::write(fx.mnt(&format!("d/e/file-{i:03}")), b"x").unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(fx.mnt("d/e"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 300);
    assert_eq!(names[0], "file-000");
    fs::rename(fx.mnt("d"), fx.mnt("moved")).unwrap();
    assert_eq!(read(&fx.mnt("moved/e/file-007")), b"x");
    File::open(fx.mnt("moved")).unwrap().sync_all().unwrap(); // fsyncdir
    fs::remove_dir_all(fx.mnt("moved")).unwrap();
    assert!(!fx.backing("moved").exists());
    let st = nix::sys::statvfs::statvfs(fx.mount.mountpoint()).unwrap();
    assert!(st.blocks() > 0);
}

#[test]
fn shared_mmap_writes_are_durable_only_after_msync() {
    let fx = Fixture::new();
    for (name, sync) in [("synced.index", true), ("unsynced.index", false)] {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(fx.mnt(name))
            .unwrap();
        f.set_len(8192).unwrap();
        // SAFETY: the file is private to this test and not resized while mapped.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&f) }.unwrap();
        map[..5].copy_from_slice(b"HELLO");
        map[4096..4101].copy_from_slice(b"WORLD");
        if sync {
            map.flush().unwrap();
        }
        drop(map);
        drop(f);
        let back = read(&fx.mnt(name));
        assert_eq!(
            (&back[..5], &back[4096..4101]),
            (&b"HELLO"[..], &b"WORLD"[..])
        );
    }
    fx.mount.crash();
    let synced = read(&fx.mnt("synced.index"));
    assert_eq!(&synced[..5], b"HELLO");
    assert_eq!(&synced[4096..4101], b"WORLD");
    let unsynced = read(&fx.mnt("unsynced.index"));
    assert_eq!(unsynced.len(), 8192, "the preallocated size is durable");
    assert!(
        unsynced.iter().all(|&b| b == 0),
        "unsynced mmap writes are lost"
    );
}

#[test]
fn writes_beyond_the_bound_fail_with_enospc() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("b")).unwrap();
    fs::create_dir(dir.path().join("m")).unwrap();
    let mount = LossyMount::mount(
        &dir.path().join("b"),
        &dir.path().join("m"),
        &Options {
            max_dirty_bytes: 64 * 1024,
            ..Options::default()
        },
    )
    .unwrap();
    let mut f = File::create(dir.path().join("m/big")).unwrap();
    let chunk = vec![7u8; 16 * 1024];
    let mut err = None;
    for _ in 0..8 {
        if let Err(e) = f.write_all(&chunk) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("writes past 64 KiB unsynced must fail");
    assert_eq!(err.raw_os_error(), Some(nix::libc::ENOSPC), "{err}");
    f.sync_all().unwrap();
    f.write_all(&chunk).unwrap();
    drop(f);
    mount.unmount().unwrap();
}
