//! The nemesis: a seeded schedule of faults. Every 2–6 s (random) it opens a fault window of
//! 2–10 s, sometimes while another is still open (never two on the same node), and closes it
//! by healing what it did. Kinds are dealt from a shuffled deck, so every chosen kind comes up
//! once per round of the deck; variants of a kind (which node to kill, which partition shape)
//! take turns. Every window is a pair of `Nemesis` events in the history.
//!
//! The seed fixes every random choice; what a choice lands on (the current leader, the active
//! controller) depends on the cluster, so a rerun with the same seed replays the same schedule
//! as long as the cluster behaves the same.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use strom_verify::history::{Event, Phase};

use crate::admin;
use crate::netns;
use crate::nodes::Cluster;
use crate::recorder::Recorder;

/// splitmix64: tiny, seedable, good enough to pick faults.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in `[lo, hi]` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }

    /// True with probability `p` (in percent).
    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> Option<T> {
        xs.get(self.below(xs.len() as u64) as usize).copied()
    }

    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }
}

/// A kind of fault, as `--faults` and the history name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Kill,
    Pause,
    Partition,
    Clock,
    Disk,
    DiskFull,
    Wipe,
    CrashAll,
    Churn,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Kill,
        Kind::Pause,
        Kind::Partition,
        Kind::Clock,
        Kind::Disk,
        Kind::DiskFull,
        Kind::Wipe,
        Kind::CrashAll,
        Kind::Churn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Partition => "partition",
            Kind::Clock => "clock",
            Kind::Disk => "disk",
            Kind::DiskFull => "disk-full",
            Kind::Wipe => "wipe",
            Kind::CrashAll => "crash-all",
            Kind::Churn => "churn",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Runs alone: nothing else open while it is.
    fn exclusive(self) -> bool {
        matches!(self, Kind::Wipe | Kind::CrashAll)
    }

    /// Its variants, taking turns.
    fn variants(self) -> &'static [&'static str] {
        match self {
            Kind::Kill => &[
                "random node",
                "partition leader",
                "active controller",
                "group coordinator",
            ],
            Kind::Partition => &["isolate", "majority-minority", "one-way", "quorum-cut"],
            Kind::Clock => &["+120s", "-90s", "+15m", "-10m", "@+2h", "@-1h"],
            Kind::Churn => &["sigterm", "elect-leaders", "reassign"],
            // fdatasync: a failed flush; write: failed data writes (segment appends use
            // pwritev, a few paths pwrite64).
            Kind::Disk => &["fsync", "write"],
            _ => &[""],
        }
    }
}

/// How to close a window.
enum Undo {
    /// Start these nodes (kill, wipe).
    Restart(Vec<usize>),
    Resume(usize),
    /// Flush the iptables rules of these nodes.
    Flush(Vec<usize>),
    Clock(usize),
    /// Detach strace; restart the node if it died or took partitions offline (log checked
    /// from byte `log_from`).
    Strace {
        node: usize,
        log_from: u64,
    },
    /// Remove the filler file; the same restart rule.
    Filler {
        node: usize,
        log_from: u64,
    },
    /// Start every node, one by one in this order with random 0–3 s gaps.
    CrashAll(Vec<usize>),
    /// Wait for the controlled shutdown to finish, then start the node again.
    Sigtermed(usize),
    Nothing,
}

/// An open fault window.
struct Active {
    kind: Kind,
    target: String,
    /// Nodes no other fault may touch meanwhile.
    nodes: Vec<usize>,
    until: Instant,
    undo: Undo,
}

/// A network partition as installed.
struct Cut {
    /// As the history names it: `n2`, `n1,n3|n2`, `n1>n2`.
    target: String,
    /// Nodes no other fault may touch meanwhile.
    held: Vec<usize>,
    /// Nodes whose namespaces hold its rules.
    ruled: Vec<usize>,
}

/// What the schedule needs to know about the workload.
pub struct Settings {
    pub topic: String,
    pub partitions: i32,
    pub group: String,
    pub logs: std::path::PathBuf,
}

pub struct Nemesis {
    rng: Rng,
    kinds: Vec<Kind>,
    deck: VecDeque<Kind>,
    /// Next variant per kind.
    turn: BTreeMap<Kind, usize>,
    active: Vec<Active>,
    rec: Recorder,
    s: Settings,
    /// Windows opened, per kind and per `kind/variant`.
    pub injected: BTreeMap<Kind, usize>,
    pub variants: BTreeMap<String, usize>,
    /// Faults that could not be injected: (kind, why).
    pub errors: Vec<(Kind, String)>,
    /// Nodes that exited when no fault expected it: (node, status, t_ms).
    pub crashes: Vec<(usize, String, u64)>,
    /// Since when the exclusive kind at the top of the deck waits for its turn.
    blocked_since: Option<Instant>,
    /// Per node, where its log stood when its last disk fault began: strom stopping itself
    /// over a storage error after that is the fault's doing, even once the window closed.
    disk_marks: BTreeMap<usize, u64>,
}

fn tag(n: usize) -> String {
    format!("n{n}")
}

fn tags(ns: &[usize]) -> String {
    ns.iter().map(|&n| tag(n)).collect::<Vec<_>>().join(",")
}

impl Nemesis {
    pub fn new(seed: u64, kinds: Vec<Kind>, rec: Recorder, s: Settings) -> Self {
        let mut rng = Rng::new(seed);
        let turn = kinds
            .iter()
            .map(|&k| (k, rng.below(k.variants().len() as u64) as usize))
            .collect();
        Nemesis {
            rng,
            kinds,
            deck: VecDeque::new(),
            turn,
            active: Vec::new(),
            rec,
            s,
            injected: BTreeMap::new(),
            variants: BTreeMap::new(),
            errors: Vec::new(),
            crashes: Vec::new(),
            blocked_since: None,
            disk_marks: BTreeMap::new(),
        }
    }

    /// Windows opened so far.
    pub fn starts(&self) -> usize {
        self.injected.values().sum()
    }

    /// Runs the schedule until `until` (or until `stop` is set), healing each window as it
    /// ends; windows still open at the end stay open for [`Nemesis::heal_all`].
    pub fn run(&mut self, c: &mut Cluster, until: Instant, stop: &AtomicBool) {
        if self.kinds.is_empty() {
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                self.watch_exits(c);
                std::thread::sleep(Duration::from_millis(100));
            }
            return;
        }
        let mut next = Instant::now() + self.rng.millis(2_000, 6_000);
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            self.heal_due(c);
            self.watch_exits(c);
            let now = Instant::now();
            // No window opens in the last 2 s, where heal_all would close it at once.
            if now >= next && now + Duration::from_secs(2) < until {
                // Nothing joins an exclusive window (crash-all, wipe).
                let overlap = match self.active.as_slice() {
                    [] => Some(false),
                    [a] if !a.kind.exclusive() && self.rng.percent(35) => Some(true),
                    _ => None,
                };
                next = match overlap {
                    Some(overlapping) => {
                        if self.start_one(c, overlapping) {
                            now + self.rng.millis(2_000, 6_000)
                        } else {
                            now + Duration::from_secs(1)
                        }
                    }
                    // Wait for the open window(s) to close, then the usual gap.
                    None => {
                        let end = self.active.iter().map(|a| a.until).min().unwrap_or(now);
                        end.max(now) + self.rng.millis(2_000, 6_000)
                    }
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Closes every open window now, then makes sure of the healed state whatever the
    /// bookkeeping says: no rules, no stopped or paused process, real clocks, no strace, no
    /// filler.
    pub fn heal_all(&mut self, c: &mut Cluster) {
        for a in std::mem::take(&mut self.active) {
            self.close(c, a);
        }
        self.watch_exits(c);
        for n in c.ids() {
            let _ = netns::flush(n);
            if c.node(n).paused {
                let _ = c.resume(n);
            }
            let _ = c.set_clock(n, "+0");
            c.detach_strace(n);
            c.unfill_disk(n);
            if c.exited(n).is_some() || !c.node(n).running() {
                if let Err(e) = c.spawn(n) {
                    self.rec.info(format!("heal: cannot start n{n}: {e:#}"));
                }
            }
        }
        self.rec.info("nemesis: everything healed");
    }

    /// Notes nodes that exited by themselves; restarts those no open window accounts for,
    /// counting them as crashes unless strom stopped itself over a storage error after a
    /// disk fault of that node.
    pub fn watch_exits(&mut self, c: &mut Cluster) {
        for n in c.ids() {
            let Some(status) = c.exited(n) else { continue };
            let expected = self.active.iter().any(|a| {
                a.nodes.contains(&n)
                    && matches!(
                        a.undo,
                        Undo::Strace { .. } | Undo::Filler { .. } | Undo::Sigtermed(_)
                    )
            });
            let t = self.rec.ms();
            if expected {
                self.rec.info(format!(
                    "n{n} exited with {status} during a fault window; it is restarted when the window closes"
                ));
                continue;
            }
            let after_disk = self
                .disk_marks
                .get(&n)
                .is_some_and(|&from| c.node(n).log_find(from, &["stopping the node"]).is_some());
            if after_disk {
                self.disk_marks.remove(&n);
                self.rec.info(format!(
                    "n{n} exited with {status}, stopping itself over the storage error of its last disk fault; restarting it"
                ));
            } else {
                self.rec.info(format!(
                    "n{n} exited with {status} although no fault expected it; restarting it"
                ));
                self.crashes.push((n, status.to_string(), t));
            }
            if let Err(e) = c.spawn(n) {
                self.rec.info(format!("cannot restart n{n}: {e:#}"));
            }
        }
    }

    fn heal_due(&mut self, c: &mut Cluster) {
        let now = Instant::now();
        let (due, open): (Vec<Active>, Vec<Active>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|a| a.until <= now);
        self.active = open;
        for a in due {
            self.close(c, a);
        }
    }

    /// Nodes no open window holds, running and not paused.
    fn free(&self, c: &Cluster) -> Vec<usize> {
        c.ids()
            .into_iter()
            .filter(|n| !self.active.iter().any(|a| a.nodes.contains(n)))
            .filter(|&n| c.node(n).running() && !c.node(n).paused)
            .collect()
    }

    /// Deals the next fault that can start now; false if none could.
    fn start_one(&mut self, c: &mut Cluster, overlapping: bool) -> bool {
        if self.deck.is_empty() {
            let mut round = self.kinds.clone();
            self.rng.shuffle(&mut round);
            self.deck.extend(round);
        }
        for i in 0..self.deck.len() {
            let Some(kind) = self.deck.get(i).copied() else {
                break;
            };
            if kind.exclusive() && (overlapping || !self.active.is_empty()) {
                continue;
            }
            match self.try_start(kind, c) {
                Ok(Some(a)) => {
                    self.deck.remove(i);
                    if i == 0 {
                        self.blocked_since = None;
                    }
                    self.active.push(a);
                    return true;
                }
                Ok(None) => {
                    // An exclusive kind at the top waits (up to 30 s) rather than letting the
                    // others overtake it forever: it needs a calm, healthy cluster.
                    if i == 0 && kind.exclusive() && !overlapping {
                        let since = *self.blocked_since.get_or_insert_with(Instant::now);
                        if since.elapsed() < Duration::from_secs(30) {
                            return false;
                        }
                        self.rec.info(format!(
                            "nemesis: {} could not start for 30 s (cluster not healthy); trying it later",
                            kind.name()
                        ));
                        self.blocked_since = None;
                        self.deck.remove(0);
                        self.deck.push_back(kind);
                        return false;
                    }
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    self.rec
                        .info(format!("nemesis: cannot inject {}: {why}", kind.name()));
                    self.errors.push((kind, why));
                    self.deck.remove(i);
                    self.deck.push_back(kind);
                    return false;
                }
            }
        }
        false
    }

    fn variant(&mut self, kind: Kind) -> &'static str {
        let vs = kind.variants();
        let t = self.turn.entry(kind).or_insert(0);
        let v = vs.get(*t % vs.len()).copied().unwrap_or("");
        *t += 1;
        v
    }

    fn window(&mut self) -> Instant {
        Instant::now() + self.rng.millis(2_000, 10_000)
    }

    /// Opens one window of `kind`; `None` when no target is eligible right now.
    fn try_start(&mut self, kind: Kind, c: &mut Cluster) -> Result<Option<Active>> {
        let free = self.free(c);
        let all = c.ids();
        let a = match kind {
            Kind::Kill => {
                let Some((n, variant, detail)) = self.pick_kill(c, &free) else {
                    return Ok(None);
                };
                c.kill9(n);
                let undo = Undo::Restart(vec![n]);
                self.open(kind, variant, tag(n), vec![n], undo, detail)
            }
            Kind::Pause => {
                let Some(n) = self.rng.pick(&free) else {
                    return Ok(None);
                };
                c.pause(n)?;
                self.open(kind, "", tag(n), vec![n], Undo::Resume(n), "SIGSTOP".into())
            }
            Kind::Partition => {
                let v = self.variant(kind);
                let Some(cut) = self.partition(v, &free, &all)? else {
                    return Ok(None);
                };
                let undo = Undo::Flush(cut.ruled);
                self.open(kind, v, cut.target, cut.held, undo, String::new())
            }
            Kind::Clock => {
                let Some(n) = self.rng.pick(&free) else {
                    return Ok(None);
                };
                let v = self.variant(kind);
                let spec = clock_spec(v);
                c.set_clock(n, &spec)?;
                self.open(kind, "", tag(n), vec![n], Undo::Clock(n), spec)
            }
            Kind::Disk => {
                let Some(n) = self.rng.pick(&free) else {
                    return Ok(None);
                };
                let log_from = c.node(n).log_len();
                self.disk_marks.insert(n, log_from);
                let v = self.variant(kind);
                let failing = if v == "write" {
                    "pwritev,pwrite64"
                } else {
                    "fdatasync"
                };
                c.attach_strace(n, &self.s.logs, failing)?;
                let detail = format!("strace: {failing} fails with EIO");
                let undo = Undo::Strace { node: n, log_from };
                self.open(kind, v, tag(n), vec![n], undo, detail)
            }
            Kind::DiskFull => {
                let Some(n) = self.rng.pick(&free) else {
                    return Ok(None);
                };
                let log_from = c.node(n).log_len();
                self.disk_marks.insert(n, log_from);
                let bytes = c.fill_disk(n)?;
                let detail = format!("filled the data tmpfs with {} MiB", bytes >> 20);
                let undo = Undo::Filler { node: n, log_from };
                self.open(kind, "", tag(n), vec![n], undo, detail)
            }
            Kind::Wipe => {
                if free.len() != all.len() || !self.healthy(c) {
                    return Ok(None);
                }
                let Some(n) = self.rng.pick(&free) else {
                    return Ok(None);
                };
                c.kill9(n);
                c.wipe(n)?;
                let detail = "kill -9, data directory deleted".to_owned();
                self.open(kind, "", tag(n), vec![n], Undo::Restart(vec![n]), detail)
            }
            Kind::CrashAll => {
                if free.len() != all.len() {
                    return Ok(None);
                }
                for &n in &all {
                    c.kill9(n);
                }
                let mut order = all.clone();
                self.rng.shuffle(&mut order);
                let detail = format!("kill -9 of every node; restart order {}", tags(&order));
                self.open(kind, "", "all".into(), all, Undo::CrashAll(order), detail)
            }
            Kind::Churn => {
                let v = self.variant(kind);
                match v {
                    "sigterm" => {
                        let Some(n) = self.rng.pick(&free) else {
                            return Ok(None);
                        };
                        c.sigterm(n)?;
                        let detail = "controlled shutdown, restart after the window".into();
                        self.open(kind, v, tag(n), vec![n], Undo::Sigtermed(n), detail)
                    }
                    "elect-leaders" => {
                        let Some(addr) = self.admin_node(c, &free) else {
                            return Ok(None);
                        };
                        let parts: Vec<i32> = (0..self.s.partitions).collect();
                        let detail = match admin::elect_preferred(addr, &self.s.topic, &parts) {
                            Ok(r) => format!("via {addr}: {r}"),
                            Err(e) => format!("via {addr} failed: {e:#}"),
                        };
                        self.open(kind, v, self.s.topic.clone(), vec![], Undo::Nothing, detail)
                    }
                    _ => {
                        let Some(addr) = self.admin_node(c, &free) else {
                            return Ok(None);
                        };
                        // A node that is still starting refuses: try again later.
                        let Ok(md) = admin::metadata(addr) else {
                            return Ok(None);
                        };
                        let p = self.rng.below(self.s.partitions.max(1) as u64) as i32;
                        let replicas = md
                            .topics
                            .get(&self.s.topic)
                            .and_then(|t| t.get(&p))
                            .map(|i| i.replicas.clone())
                            .ok_or_else(|| anyhow!("no metadata for {}/{p}", self.s.topic))?;
                        let new = self.reassigned(&replicas, &all);
                        let result = match admin::reassign(addr, &self.s.topic, p, &new) {
                            Ok(()) => "accepted".to_owned(),
                            Err(e) => format!("failed: {e:#}"),
                        };
                        let detail =
                            format!("replicas {replicas:?} -> {new:?} via {addr}: {result}");
                        let target = format!("{}/{p}", self.s.topic);
                        self.open(kind, v, target, vec![], Undo::Nothing, detail)
                    }
                }
            }
        };
        Ok(Some(a))
    }

    /// Installs a partition of shape `v` (`None`: not enough free nodes for it).
    fn partition(&mut self, v: &str, free: &[usize], all: &[usize]) -> Result<Option<Cut>> {
        match v {
            "majority-minority" => {
                if free.len() != all.len() {
                    return Ok(None);
                }
                let mut order = all.to_vec();
                self.rng.shuffle(&mut order);
                let (minority, majority) = order.split_at(all.len() / 2);
                let (mut minority, mut majority) = (minority.to_vec(), majority.to_vec());
                minority.sort_unstable();
                majority.sort_unstable();
                let r = minority.iter().try_for_each(|&a| {
                    majority
                        .iter()
                        .try_for_each(|&b| netns::drop_peer(a, b).and(netns::drop_peer(b, a)))
                });
                if let Err(e) = r {
                    all.iter().for_each(|&n| drop(netns::flush(n)));
                    return Err(e);
                }
                Ok(Some(Cut {
                    target: format!("{}|{}", tags(&majority), tags(&minority)),
                    held: all.to_vec(),
                    ruled: all.to_vec(),
                }))
            }
            "one-way" => {
                if free.len() < 2 {
                    return Ok(None);
                }
                let mut pair = free.to_vec();
                self.rng.shuffle(&mut pair);
                let (from, to) = (pair[0], pair[1]);
                if let Err(e) = netns::drop_one_way(from, to) {
                    let _ = netns::flush(to);
                    return Err(e);
                }
                Ok(Some(Cut {
                    target: format!("{}>{}", tag(from), tag(to)),
                    held: vec![from, to],
                    ruled: vec![to],
                }))
            }
            _ => {
                let Some(n) = self.rng.pick(free) else {
                    return Ok(None);
                };
                let peers: Vec<usize> = all.iter().copied().filter(|&m| m != n).collect();
                let r = if v == "quorum-cut" {
                    netns::drop_quorum(n, &peers)
                } else {
                    peers.iter().try_for_each(|&p| netns::drop_peer(n, p))
                };
                if let Err(e) = r {
                    let _ = netns::flush(n);
                    return Err(e);
                }
                Ok(Some(Cut {
                    target: tag(n),
                    held: vec![n],
                    ruled: vec![n],
                }))
            }
        }
    }

    /// Records a window's start and returns it.
    fn open(
        &mut self,
        kind: Kind,
        variant: &str,
        target: String,
        nodes: Vec<usize>,
        undo: Undo,
        detail: String,
    ) -> Active {
        *self.injected.entry(kind).or_default() += 1;
        let name = if variant.is_empty() {
            kind.name().to_owned()
        } else {
            format!("{}/{variant}", kind.name())
        };
        *self.variants.entry(name).or_default() += 1;
        let detail = match (variant.is_empty(), detail.is_empty()) {
            (true, _) => detail,
            (false, true) => variant.to_owned(),
            (false, false) => format!("{variant}: {detail}"),
        };
        self.rec.emit(Event::Nemesis {
            t_ms: self.rec.ms(),
            fault: kind.name().to_owned(),
            target: target.clone(),
            phase: Phase::Start,
            detail: (!detail.is_empty()).then_some(detail),
        });
        Active {
            kind,
            target,
            nodes,
            until: self.window(),
            undo,
        }
    }

    /// Closes a window: undoes it and records the end.
    fn close(&mut self, c: &mut Cluster, a: Active) {
        let detail = match self.undo(c, a.undo) {
            Ok(d) => d,
            Err(e) => {
                let why = format!("heal failed: {e:#}");
                self.errors.push((a.kind, why.clone()));
                why
            }
        };
        self.rec.emit(Event::Nemesis {
            t_ms: self.rec.ms(),
            fault: a.kind.name().to_owned(),
            target: a.target,
            phase: Phase::End,
            detail: (!detail.is_empty()).then_some(detail),
        });
    }

    fn undo(&mut self, c: &mut Cluster, undo: Undo) -> Result<String> {
        Ok(match undo {
            Undo::Restart(ns) => {
                for &n in &ns {
                    if !c.node(n).running() {
                        c.spawn(n)?;
                    }
                }
                format!("restarted {}", tags(&ns))
            }
            Undo::Resume(n) => {
                if c.node(n).paused {
                    c.resume(n)?;
                }
                "SIGCONT".into()
            }
            Undo::Flush(ns) => {
                for &n in &ns {
                    netns::flush(n)?;
                }
                "rules flushed".into()
            }
            Undo::Clock(n) => {
                c.set_clock(n, "+0")?;
                "clock reset to +0".into()
            }
            Undo::Strace { node, log_from } => {
                c.detach_strace(node);
                self.after_disk_fault(c, node, log_from, "strace detached")?
            }
            Undo::Filler { node, log_from } => {
                c.unfill_disk(node);
                self.after_disk_fault(c, node, log_from, "filler removed")?
            }
            Undo::CrashAll(order) => {
                for (i, &n) in order.iter().enumerate() {
                    if i > 0 {
                        std::thread::sleep(self.rng.millis(0, 3_000));
                    }
                    if !c.node(n).running() {
                        c.spawn(n)?;
                    }
                }
                format!("restarted {}", tags(&order))
            }
            Undo::Sigtermed(n) => {
                let exited = c.reap(n, Instant::now() + Duration::from_secs(20));
                let how = match exited {
                    Some(s) => format!("exited with {s}"),
                    None if c.node(n).running() => {
                        c.kill9(n);
                        "still running 20 s after SIGTERM: killed with SIGKILL".into()
                    }
                    None => "had exited".into(),
                };
                c.spawn(n)?;
                format!("{how}; restarted")
            }
            Undo::Nothing => String::new(),
        })
    }

    /// After a disk fault: a node that exited, or that took partitions offline (they stay
    /// offline until a restart), is restarted; the detail says which.
    fn after_disk_fault(
        &mut self,
        c: &mut Cluster,
        n: usize,
        log_from: u64,
        done: &str,
    ) -> Result<String> {
        // Strom stops by itself when its metadata store or a log cannot be written; the exit
        // may come seconds after the window closed, so wait for it.
        let stopping = c.node(n).running()
            && c.node(n)
                .log_find(log_from, &["stopping the node"])
                .is_some();
        // Bounded: the schedule waits meanwhile, holding other windows open.
        let status = if stopping {
            c.reap(n, Instant::now() + Duration::from_secs(10))
        } else {
            c.exited(n)
        };
        if let Some(s) = status {
            c.spawn(n)?;
            return Ok(format!("{done}; the node had exited ({s}): restarted"));
        }
        if stopping && c.node(n).running() {
            c.kill9(n);
            c.spawn(n)?;
            return Ok(format!(
                "{done}; the node was stopping itself but still ran 10 s later: SIGKILL, restarted"
            ));
        }
        if !c.node(n).running() {
            c.spawn(n)?;
            return Ok(format!("{done}; the node had exited: restarted"));
        }
        let offline = c.node(n).log_find(
            log_from,
            &[
                "fsync failed",
                "stays offline",
                "taking the partition offline",
            ],
        );
        let Some(line) = offline else {
            return Ok(done.to_owned());
        };
        let line: String = line.chars().take(200).collect();
        c.sigterm(n)?;
        let how = match c.reap(n, Instant::now() + Duration::from_secs(10)) {
            Some(s) => format!("SIGTERM: {s}"),
            None => {
                c.kill9(n);
                "SIGTERM did not stop it in 10 s: SIGKILL".into()
            }
        };
        c.spawn(n)?;
        Ok(format!(
            "{done}; partitions went offline ({line}): restarted ({how})"
        ))
    }

    /// Which node to kill for the next kill variant: (node, variant, detail). Falls back to a
    /// random free node when the wanted one is busy with another fault or unknown.
    fn pick_kill(&mut self, c: &Cluster, free: &[usize]) -> Option<(usize, &'static str, String)> {
        let fallback = self.rng.pick(free)?;
        let v = self.variant(Kind::Kill);
        let wanted: Result<(usize, String)> = match v {
            "partition leader" => {
                let p = self.rng.below(self.s.partitions.max(1) as u64) as i32;
                self.ask(c, free, |addr| {
                    let md = admin::metadata(addr)?;
                    let l = md
                        .topics
                        .get(&self.s.topic)
                        .and_then(|t| t.get(&p))
                        .map_or(-1, |i| i.leader);
                    Ok(l)
                })
                .map(|n| (n, format!("leader of {}/{p}", self.s.topic)))
            }
            "active controller" => self.controller(c).map(|n| (n, String::new())),
            "group coordinator" => self
                .ask(c, free, |addr| admin::coordinator(addr, &self.s.group))
                .map(|n| (n, format!("coordinator of {}", self.s.group))),
            _ => return Some((fallback, "random node", String::new())),
        };
        Some(match wanted {
            Ok((n, what)) if free.contains(&n) => (n, v, what),
            Ok((n, _)) => (
                fallback,
                "random node",
                format!("instead of the {v} n{n}, busy with another fault"),
            ),
            Err(e) => (fallback, "random node", format!("{v} unknown: {e:#}")),
        })
    }

    /// Asks free nodes in turn until one answers with a node id >= 1.
    fn ask(
        &self,
        c: &Cluster,
        free: &[usize],
        f: impl Fn(SocketAddr) -> Result<i32>,
    ) -> Result<usize> {
        let mut last = anyhow!("no node to ask");
        for &n in free {
            match f(c.node(n).addr()) {
                Ok(id) if id >= 1 && (id as usize) <= c.len() => return Ok(id as usize),
                Ok(id) => last = anyhow!("n{n} answered {id}"),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The active controller: the id most running nodes report (a node without a quorum
    /// leader names itself, so one answer alone proves nothing).
    fn controller(&self, c: &Cluster) -> Result<usize> {
        let mut votes: BTreeMap<i32, usize> = BTreeMap::new();
        for n in c.ids() {
            if !c.node(n).running() || c.node(n).paused {
                continue;
            }
            if let Ok(id) = admin::controller(c.node(n).addr()) {
                *votes.entry(id).or_default() += 1;
            }
        }
        let (id, n) = votes
            .into_iter()
            .max_by_key(|&(_, n)| n)
            .ok_or_else(|| anyhow!("no node answered DescribeCluster"))?;
        if n < 2 || id < 1 {
            bail!("no two nodes agree on the controller");
        }
        Ok(id as usize)
    }

    /// A node to send an admin request to: a free one if any, else any running one (`None`:
    /// none runs).
    fn admin_node(&mut self, c: &Cluster, free: &[usize]) -> Option<SocketAddr> {
        let running: Vec<usize> = c
            .ids()
            .into_iter()
            .filter(|&n| c.node(n).running() && !c.node(n).paused)
            .collect();
        let n = self.rng.pick(free).or_else(|| self.rng.pick(&running))?;
        Some(c.node(n).addr())
    }

    /// The replica list after a reassignment: rotated when the replicas are every node (the
    /// same set, another preferred leader), else one replica moved to a node outside the set.
    fn reassigned(&mut self, replicas: &[i32], all: &[usize]) -> Vec<i32> {
        let outside: Vec<i32> = all
            .iter()
            .map(|&n| n as i32)
            .filter(|n| !replicas.contains(n))
            .collect();
        let mut new = replicas.to_vec();
        match self.rng.pick(&outside) {
            Some(to) if !new.is_empty() => {
                let i = self.rng.below(new.len() as u64) as usize;
                new[i] = to;
            }
            _ => new.rotate_left(1),
        }
        new
    }

    /// Every node up, and every partition of every topic led with a full ISR in every node's
    /// metadata.
    fn healthy(&self, c: &Cluster) -> bool {
        for n in c.ids() {
            if !c.node(n).running() || c.node(n).paused {
                return false;
            }
            let Ok(md) = admin::metadata(c.node(n).addr()) else {
                return false;
            };
            let ours = md.topics.get(&self.s.topic);
            if ours.is_none_or(|t| t.len() != self.s.partitions as usize) {
                return false;
            }
            if !md.topics.values().all(|t| t.values().all(|p| p.healthy())) {
                return false;
            }
        }
        true
    }
}

/// A libfaketime spec for a clock variant: relative offsets as they are, `@±Nh` as an
/// absolute date that far from the real now.
fn clock_spec(v: &str) -> String {
    let Some(rel) = v.strip_prefix('@') else {
        return v.to_owned();
    };
    let hours: i64 = rel.trim_end_matches('h').parse().unwrap_or(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    format!("@{}", crate::utc_datetime(now + hours * 3600))
}
