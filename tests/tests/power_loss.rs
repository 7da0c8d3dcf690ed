//! Power loss of the whole cluster at once, which `kill -9` cannot show (the page cache
//! survives a killed process). Each node keeps its data directory on its own `strom-lossyfs`
//! mount (`tests/lossyfs/`, mounted in this process through its library): file data written
//! but not fsynced stays in memory there and is forgotten by a simulated power loss.
//!
//! Three times, each on a fresh topic (replication factor 3, `min.insync.replicas=2`, default
//! `log.flush.acks.all=true`): librdkafka produces an idempotent `acks=all` stream for a few
//! seconds; then, while it is still sending, every node is killed with `kill -9`, every mount
//! loses its unsynced data, and the nodes start again in a random order. Once the stream flows
//! again it is finished, and the checker proves that every acknowledged record is present
//! exactly once at its acknowledged offset, identical on all three replicas on disk; the
//! records acknowledged in earlier rounds are checked again too. The lossy layer must have
//! dropped data at least once, so the test cannot pass vacuously.
//!
//! Needs root and /dev/fuse. `STROM_POWER_LOSS_SEED=<n>` repeats a restart order.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strom_lossyfs::{CrashReport, LossyMount, Options};
use strom_tests::cluster::{read_all, verify, Cluster, Deliveries, Stream, NODES};

const PARTITIONS: i32 = 3;
/// Records per second of the stream.
const RATE: u64 = 1000;
/// How long the stream runs before the power loss.
const BEFORE_CRASH: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;

/// One lossy disk per node: `disk-n/` (the durable contents) mounted on `mnt-n/`. Dropping it
/// unmounts every mount (the cluster, declared after it, is dropped and killed first), then
/// removes the directories.
struct Disks {
    // Field order is drop order: unmount before the directories are removed.
    mounts: Vec<LossyMount>,
    root: tempfile::TempDir,
}

impl Disks {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let mounts = (1..=NODES)
            .map(|n| {
                let backing = root.path().join(format!("disk-{n}"));
                let mountpoint = root.path().join(format!("mnt-{n}"));
                std::fs::create_dir(&backing).expect("backing dir");
                std::fs::create_dir(&mountpoint).expect("mount point");
                LossyMount::mount(&backing, &mountpoint, &Options::default())
                    .unwrap_or_else(|e| panic!("{e} (this test needs root and /dev/fuse)"))
            })
            .collect();
        Self { mounts, root }
    }

    fn mountpoints(&self) -> Vec<PathBuf> {
        self.mounts
            .iter()
            .map(|m| m.mountpoint().to_owned())
            .collect()
    }

    /// Power loss on every disk; what each dropped.
    fn crash_all(&self) -> Vec<CrashReport> {
        self.mounts.iter().map(LossyMount::crash).collect()
    }

    fn backing(&self, n: usize) -> PathBuf {
        self.root.path().join(format!("disk-{n}"))
    }
}

/// A small deterministic generator (xorshift64*) for the restart order.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// What a crash dropped, summed by kind of file (segment `.log`, `.index`, ...).
fn by_kind(r: &CrashReport) -> String {
    let mut kinds: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    for (path, bytes) in &r.files {
        let name = path.as_ref().and_then(|p| p.file_name()).map_or_else(
            || "(unlinked)".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        let kind = match name.rsplit_once('.') {
            Some((stem, ext)) if stem.chars().all(|c| c.is_ascii_digit()) => format!("*.{ext}"),
            _ => name,
        };
        let e = kinds.entry(kind).or_default();
        e.0 += bytes;
        e.1 += 1;
    }
    kinds
        .iter()
        .map(|(k, (b, n))| format!("{k} {b} B in {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until every partition got `min` acknowledgements at or after `since`; false after
/// `timeout`.
fn wait_flowing(stream: &Stream, since: Instant, min: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while stream.acks_since(since).iter().any(|&n| n < min) {
        if Instant::now() > deadline {
            eprintln!(
                "power_loss: the stream has not resumed: acks per partition since the restart \
                 {:?}",
                stream.acks_since(since)
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Every record acknowledged in `d` is still readable at its acknowledged offset.
fn check_still_present(c: &Cluster, topic: &str, d: &Deliveries) {
    c.wait_full_isr(topic, PARTITIONS, Duration::from_secs(60));
    let mut committed = vec![0i64; PARTITIONS as usize];
    for (_, p, o, _) in d.acked() {
        committed[p as usize] = committed[p as usize].max(o + 1);
    }
    let read = read_all(&c.bootstrap(), topic, PARTITIONS, &committed);
    let missing: Vec<(String, i32, i64)> = d
        .acked()
        .filter(|(s, p, o, _)| {
            read[*p as usize].get(o).map(|r| r.1.as_str()) != Some(s.value.as_str())
        })
        .map(|(s, p, o, _)| (s.value.clone(), p, o))
        .collect();
    assert!(
        missing.is_empty(),
        "{topic}: {} records acknowledged in an earlier round are gone after a later power \
         loss (first {:?})",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn acknowledged_writes_survive_power_loss_of_every_node() {
    let seed = std::env::var("STROM_POWER_LOSS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("power_loss: seed {seed} (STROM_POWER_LOSS_SEED repeats it)");
    let mut rng = Rng(seed);

    let disks = Disks::new();
    let mut c = Cluster::start_with_dirs(&disks.mountpoints());
    let mut earlier: Vec<(String, Deliveries)> = Vec::new();
    let mut discarded_total = 0u64;

    for round in 1..=ROUNDS {
        if round > 1 {
            // The previous round's check stopped every node cleanly.
            for n in 1..=NODES {
                c.start_node(n);
            }
            for n in 1..=NODES {
                c.wait_serving(n);
            }
        }
        let topic = format!("power-loss-{round}");
        c.create_topic(&topic, PARTITIONS);
        let started = Instant::now();
        let stream = Stream::start(&c.bootstrap(), &topic, PARTITIONS, RATE, None);
        stream.wait_acks_since(started, 100, Duration::from_secs(30));
        std::thread::sleep(BEFORE_CRASH.saturating_sub(started.elapsed()));
        let leaders: Vec<usize> = (0..PARTITIONS).map(|p| c.leader(&topic, p)).collect();

        // Power loss of the whole cluster, while the stream is still sending.
        for n in 1..=NODES {
            c.kill9(n);
        }
        let reports = disks.crash_all();
        let dropped: u64 = reports.iter().map(|r| r.discarded_bytes).sum();
        discarded_total += dropped;
        eprintln!(
            "power_loss round {round}: power loss dropped {dropped} unsynced bytes; per node: {}",
            reports
                .iter()
                .enumerate()
                .map(|(i, r)| format!("node {}: {}", i + 1, by_kind(r)))
                .collect::<Vec<_>>()
                .join("; ")
        );

        let mut order: Vec<usize> = (1..=NODES).collect();
        rng.shuffle(&mut order);
        for &n in &order {
            c.start_node(n);
            std::thread::sleep(Duration::from_millis(rng.next() % 500));
        }
        for &n in &order {
            c.wait_serving(n);
        }
        let restarted = Instant::now();
        // The stream should flow again; if it does not (a producer fenced for good, say), the
        // check below still runs first, since what it finds is the better evidence.
        let resumed = wait_flowing(&stream, restarted, 100, Duration::from_secs(60));
        let d = stream.finish();
        let leaders_after: Vec<usize> = (0..PARTITIONS).map(|p| c.leader(&topic, p)).collect();

        for (t, old) in &earlier {
            check_still_present(&c, t, old);
        }
        let summary = verify(&mut c, &topic, PARTITIONS, &d);
        eprintln!(
            "power_loss round {round}: leaders before {leaders:?}, restart order {order:?}, \
             leaders after {leaders_after:?}: {summary}"
        );
        assert!(
            resumed,
            "round {round}: the stream did not resume within 60 s of the restart: failures {}",
            d.failures()
        );
        earlier.push((topic, d));
    }
    assert!(
        discarded_total > 0,
        "the lossy file system never dropped any data: the test proved nothing (backing dirs \
         {:?})",
        (1..=NODES).map(|n| disks.backing(n)).collect::<Vec<_>>()
    );
}
