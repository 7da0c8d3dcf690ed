//! The `strom` processes: node N runs in namespace `strjep-nN` on 10.88.0.N under libfaketime
//! (its wall clock follows a per-node timestamp file, so it can be skewed live), with its data
//! directory on a small tmpfs of its own (so it can be filled up) and its log in the output
//! directory. Everything a fault does to a process (kill, pause, SIGTERM, strace, filling or
//! wiping the disk) goes through here, and [`Cluster::teardown`] undoes all of it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::netns::{self, node_ip};

/// The Kafka, controller and admin ports (the same on every node: each has its own address).
pub const KAFKA_PORT: u16 = 9092;
pub const CONTROLLER_PORT: u16 = 9093;
pub const ADMIN_PORT: u16 = 9644;

/// Where Debian's libfaketime lives (the multi-threaded variant: strom runs many threads).
const FAKETIME_LIBS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];

/// Name of the file that fills a node's disk.
const FILLER: &str = ".strjep-filler";

/// The tmpfs mounts this program makes are named `strjep-nN` (the "device" in /proc/mounts).
const MOUNT_PREFIX: &str = "strjep-n";

/// One node: its directories and (while it runs) its process.
pub struct Node {
    pub id: usize,
    /// The node's `log.dirs`: a tmpfs mount point.
    pub data: PathBuf,
    /// stdout and stderr of every incarnation, appended.
    pub log: PathBuf,
    /// libfaketime's timestamp file (`+0` = the real clock).
    clock: PathBuf,
    child: Option<Child>,
    /// SIGSTOPped and not yet continued.
    pub paused: bool,
    /// An `strace` attached to the process (fault injection).
    strace: Option<Child>,
    /// A file filling the tmpfs.
    filler: Option<PathBuf>,
    mounted: bool,
}

impl Node {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(node_ip(self.id), KAFKA_PORT))
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// The process runs (paused counts as running).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Size of the log so far (to look only at what a later incarnation or a fault window
    /// wrote).
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// The last `lines` lines of the log (read from its last 64 KiB).
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(mut f) = File::open(&self.log) else {
            return String::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(len.saturating_sub(64 << 10)))
            .is_ok()
        {
            let _ = f.read_to_end(&mut buf);
        }
        tail(&String::from_utf8_lossy(&buf), lines)
    }

    /// The first line of the log from byte `from` on that contains one of `needles` (read as
    /// a stream: a node's log can grow by hundreds of MiB in a fault window).
    pub fn log_find(&self, from: u64, needles: &[&str]) -> Option<String> {
        let mut f = File::open(&self.log).ok()?;
        f.seek(SeekFrom::Start(from)).ok()?;
        let mut line = Vec::new();
        let mut r = BufReader::with_capacity(1 << 20, f);
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    if needles.iter().any(|n| text.contains(n)) {
                        return Some(text.trim_end().to_owned());
                    }
                }
            }
        }
    }
}

/// Every node of the run.
pub struct Cluster {
    pub nodes: Vec<Node>,
    bin: PathBuf,
    faketime: PathBuf,
    voters: String,
    overrides: Vec<(String, String)>,
}

/// libfaketime's preload library, or why it is missing.
pub fn faketime_lib() -> Result<PathBuf> {
    FAKETIME_LIBS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            anyhow!(
                "libfaketime is not installed (looked for {FAKETIME_LIBS:?}): apt-get install \
                 faketime (tests/jepsen/run.sh does)"
            )
        })
}

/// Unmounts tmpfs mounts an earlier run left behind.
pub fn remove_leftover_mounts() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(dir), Some(fs)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if fs == "tmpfs" && dev.starts_with(MOUNT_PREFIX) {
            let _ = netns::run("umount", &["-l", dir]);
        }
    }
}

impl Cluster {
    /// Prepares `nodes` nodes under `dir` (a tmpfs of `tmpfs_mb` MiB per data directory, a
    /// clock file, a log); starts nothing.
    pub fn new(
        dir: &Path,
        nodes: usize,
        bin: PathBuf,
        tmpfs_mb: u64,
        overrides: Vec<(String, String)>,
    ) -> Result<Self> {
        let faketime = faketime_lib()?;
        remove_leftover_mounts();
        let voters = (1..=nodes)
            .map(|n| format!("{n}@{}:{CONTROLLER_PORT}", node_ip(n)))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            nodes: Vec::new(),
            bin,
            faketime,
            voters,
            overrides,
        };
        for id in 1..=nodes {
            let data = dir.join("strjep-data").join(format!("n{id}"));
            let log = dir.join("logs").join(format!("n{id}.log"));
            let clock = dir.join("clocks").join(format!("n{id}"));
            for d in [&data, &dir.join("logs"), &dir.join("clocks")] {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            }
            let mut node = Node {
                id,
                data,
                log,
                clock,
                child: None,
                paused: false,
                strace: None,
                filler: None,
                mounted: false,
            };
            netns::run(
                "mount",
                &[
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={tmpfs_mb}m,mode=0755"),
                    &format!("{MOUNT_PREFIX}{id}"),
                    &node.data.to_string_lossy(),
                ],
            )
            .context("mounting a node's data tmpfs")?;
            node.mounted = true;
            write_atomic(&node.clock, "+0\n")?;
            c.nodes.push(node);
        }
        Ok(c)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, n: usize) -> &Node {
        &self.nodes[n - 1]
    }

    fn node_mut(&mut self, n: usize) -> &mut Node {
        &mut self.nodes[n - 1]
    }

    pub fn ids(&self) -> Vec<usize> {
        (1..=self.nodes.len()).collect()
    }

    /// `bootstrap.servers` naming every node.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `n` (returns at once; see [`Cluster::wait_ready`]).
    pub fn spawn(&mut self, n: usize) -> Result<()> {
        let (bin, faketime, voters) =
            (self.bin.clone(), self.faketime.clone(), self.voters.clone());
        let overrides = self.overrides.clone();
        let node = self.node_mut(n);
        if node.child.is_some() {
            bail!("node {n} is already running");
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let _ = writeln!(log, "=== strom-jepsen: starting node {n} ===");
        let out = log.try_clone().context("node log file")?;
        let ip = node_ip(n);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns::ns(n)])
            .arg(&bin)
            .arg("serve")
            .arg("--node-id")
            .arg(n.to_string())
            .arg("--log-dirs")
            .arg(&node.data)
            .arg("--listeners")
            .arg(format!(
                "PLAINTEXT://{ip}:{KAFKA_PORT},CONTROLLER://{ip}:{CONTROLLER_PORT}"
            ))
            .arg("--advertised-listeners")
            .arg(format!("PLAINTEXT://{ip}:{KAFKA_PORT}"))
            .arg("-o")
            .arg(format!("controller.quorum.voters={voters}"))
            .arg("-o")
            .arg(format!("admin.listener={ip}:{ADMIN_PORT}"));
        for (k, v) in &overrides {
            cmd.arg("-o").arg(format!("{k}={v}"));
        }
        cmd.env_remove("STROM_BIN")
            .env("STROM_LOG", "info")
            .env("NO_COLOR", "1")
            .env("LD_PRELOAD", &faketime)
            .env("FAKETIME_TIMESTAMP_FILE", &node.clock)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal reaches this program only, which
            // then stops the nodes itself.
            .process_group(0);
        // `ip netns exec` execs the command, so the child's pid is strom's.
        let child = cmd
            .spawn()
            .with_context(|| format!("starting node {n} ({})", bin.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Waits until node `n` accepts Kafka connections and `/readyz` says 200.
    pub fn wait_ready(&mut self, n: usize, deadline: Instant) -> Result<()> {
        loop {
            if let Some(status) = self.exited(n) {
                bail!("node {n} exited during start-up with {status} (see logs/n{n}.log)");
            }
            let ready =
                TcpStream::connect_timeout(&self.node(n).addr(), Duration::from_millis(300))
                    .is_ok()
                    && readyz(n).is_ok_and(|code| code == 200);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {n} was not ready (Kafka port open and /readyz 200) in time; /readyz \
                     says {:?} (see logs/n{n}.log)",
                    readyz(n)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The exit status of node `n` if its process ended on its own (it then counts as stopped).
    pub fn exited(&mut self, n: usize) -> Option<ExitStatus> {
        let node = self.node_mut(n);
        let status = node.child.as_mut()?.try_wait().ok().flatten()?;
        node.child = None;
        node.paused = false;
        Some(status)
    }

    fn signal(&self, n: usize, sig: i32) -> Result<()> {
        let pid = self
            .node(n)
            .pid()
            .ok_or_else(|| anyhow!("node {n} is not running"))?;
        // SAFETY: kill(2) on a pid this program spawned and has not reaped yet, so the pid
        // cannot have been reused.
        if unsafe { libc::kill(pid, sig) } != 0 {
            bail!(
                "kill({pid}, {sig}) for node {n}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// SIGKILL and reap; a stopped node is left as it is.
    pub fn kill9(&mut self, n: usize) {
        let _ = self.signal(n, libc::SIGKILL);
        let node = self.node_mut(n);
        if let Some(mut c) = node.child.take() {
            let _ = c.wait();
        }
        node.paused = false;
    }

    pub fn pause(&mut self, n: usize) -> Result<()> {
        self.signal(n, libc::SIGSTOP)?;
        self.node_mut(n).paused = true;
        Ok(())
    }

    pub fn resume(&mut self, n: usize) -> Result<()> {
        self.signal(n, libc::SIGCONT)?;
        self.node_mut(n).paused = false;
        Ok(())
    }

    /// SIGTERM: a controlled shutdown (continued first if paused). Returns at once.
    pub fn sigterm(&mut self, n: usize) -> Result<()> {
        if self.node(n).paused {
            self.resume(n)?;
        }
        self.signal(n, libc::SIGTERM)
    }

    /// Waits for node `n` to exit until `deadline`; `None` if it still runs.
    pub fn reap(&mut self, n: usize, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if !self.node(n).running() {
                return None;
            }
            if let Some(s) = self.exited(n) {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Deletes everything in node `n`'s data directory (the node must be stopped).
    pub fn wipe(&mut self, n: usize) -> Result<()> {
        let node = self.node(n);
        if node.running() {
            bail!("wipe: node {n} is still running");
        }
        for e in std::fs::read_dir(&node.data)
            .with_context(|| format!("reading {}", node.data.display()))?
        {
            let p = e?.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            }
            .with_context(|| format!("removing {}", p.display()))?;
        }
        Ok(())
    }

    /// Sets node `n`'s fake clock (`+120s`, `-90s`, `@2030-01-01 00:00:00`, `+0`).
    pub fn set_clock(&mut self, n: usize, spec: &str) -> Result<()> {
        write_atomic(&self.node(n).clock, &format!("{spec}\n"))
    }

    /// Attaches strace to every thread of node `n`, failing the system calls `failing` (a
    /// comma-separated list, e.g. `fdatasync` or `pwritev,pwrite64`) with EIO.
    pub fn attach_strace(&mut self, n: usize, logs: &Path, failing: &str) -> Result<()> {
        let pid = self
            .node(n)
            .pid()
            .ok_or_else(|| anyhow!("node {n} is not running"))?;
        let err = File::create(logs.join(format!("n{n}.strace.log")))?;
        let mut child = Command::new("strace")
            .args(["-p", &pid.to_string(), "-f", "-qq", "-o", "/dev/null"])
            .args([
                "-e",
                &format!("trace=fsync,{failing}"),
                "-e",
                &format!("inject={failing}:error=EIO"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .process_group(0)
            .spawn()
            .context("starting strace")?;
        // Attached once the kernel names a tracer for the process.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // A node that met its first failed fsync while strace attached (e.g. one just
                // restarting) exits at once and strace with it: the fault did happen, and
                // healing restarts the node.
                if self.node_has_exited(n, Duration::from_secs(2)) {
                    self.node_mut(n).strace = Some(child);
                    return Ok(());
                }
                bail!("strace exited with {status} instead of attaching to node {n} (pid {pid})");
            }
            if tracer_pid(pid).is_some_and(|t| t != 0) {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("strace did not attach to node {n} (pid {pid}) within 5 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.node_mut(n).strace = Some(child);
        Ok(())
    }

    /// Whether node `n`'s process has exited, waiting up to `within` (the exit status stays
    /// with the child for [`Cluster::exited`]).
    fn node_has_exited(&mut self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let Some(child) = self.node_mut(n).child.as_mut() else {
                return true;
            };
            if matches!(child.try_wait(), Ok(Some(_))) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Detaches strace from node `n` (SIGINT makes it detach cleanly; SIGKILL after 5 s).
    pub fn detach_strace(&mut self, n: usize) {
        let Some(mut child) = self.node_mut(n).strace.take() else {
            return;
        };
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Fills node `n`'s tmpfs until ENOSPC; returns the bytes written.
    pub fn fill_disk(&mut self, n: usize) -> Result<u64> {
        let path = self.node(n).data.join(FILLER);
        let mut f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        self.node_mut(n).filler = Some(path.clone());
        let mut written = 0u64;
        let big = vec![0u8; 1 << 20];
        // Bounded: the tmpfs is far smaller than this.
        for chunk in [&big[..], &big[..4096], &big[..1]] {
            for _ in 0..(64 << 10) {
                match f.write(chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => written += k as u64,
                }
            }
        }
        let _ = f.sync_all();
        Ok(written)
    }

    /// Removes node `n`'s filler file, if any.
    pub fn unfill_disk(&mut self, n: usize) {
        if let Some(p) = self.node_mut(n).filler.take() {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Kills every process, detaches strace, resets clocks, removes fillers and unmounts the
    /// data directories (idempotent).
    pub fn teardown(&mut self) {
        for n in self.ids() {
            self.detach_strace(n);
            self.kill9(n);
            self.unfill_disk(n);
            let _ = self.set_clock(n, "+0");
            let node = self.node_mut(n);
            if std::mem::take(&mut node.mounted) {
                if let Err(e) = netns::run("umount", &[&node.data.to_string_lossy()]) {
                    eprintln!("strom-jepsen: {e}; unmounting lazily");
                    let _ = netns::run("umount", &["-l", &node.data.to_string_lossy()]);
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The pid tracing `pid` (0: none), from /proc.
fn tracer_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Replaces `path` by writing a temporary file and renaming it (libfaketime re-reads the clock
/// file on every call and must never see half of it).
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// `GET /readyz` on node `n`'s admin listener: the HTTP status code.
pub fn readyz(n: usize) -> std::io::Result<u16> {
    let addr = SocketAddr::V4(SocketAddrV4::new(node_ip(n), ADMIN_PORT));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET /readyz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        node_ip(n)
    )?;
    let mut head = [0u8; 64];
    let k = s.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..k]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {line:?}")))
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
