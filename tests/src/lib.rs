//! Test harness: starts real `strom` processes on free ports with temporary data directories,
//! so black-box tests drive them over TCP with stock clients.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod proxy;

/// Path of the `strom` binary: `$STROM_BIN`, else the workspace's debug or release build.
pub fn strom_bin() -> PathBuf {
    if let Ok(p) = std::env::var("STROM_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target");
    for profile in ["debug", "release"] {
        let p = root.join(profile).join("strom");
        if p.exists() {
            return p;
        }
    }
    panic!("strom binary not found: run `cargo build --bin strom` first or set STROM_BIN");
}

/// A free TCP port on loopback (the OS picks it; a race with other processes is unlikely).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running broker process and its data directory.
pub struct Strom {
    child: Option<Child>,
    pub port: u16,
    /// The admin HTTP listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    overrides: Vec<(String, String)>,
    /// The port clients are told to use (a proxy's, when one sits in front).
    advertised_port: u16,
}

impl Strom {
    /// Starts a broker with Strom's defaults.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a broker with extra config keys.
    pub fn start_with(overrides: &[(&str, &str)]) -> Self {
        let port = free_port();
        Self::start_advertising(port, port, overrides)
    }

    /// Starts a broker on `port` that tells clients to connect to `advertised_port`.
    pub fn start_advertising(port: u16, advertised_port: u16, overrides: &[(&str, &str)]) -> Self {
        let mut s = Self {
            child: None,
            advertised_port,
            port,
            admin_port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            overrides: overrides
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        s.spawn();
        s
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("strom.log")
    }

    fn spawn(&mut self) {
        let listener = format!("PLAINTEXT://127.0.0.1:{}", self.port);
        let advertised = format!("PLAINTEXT://127.0.0.1:{}", self.advertised_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut cmd = Command::new(strom_bin());
        cmd.arg("serve")
            .arg("--listeners")
            .arg(&listener)
            .arg("--advertised-listeners")
            .arg(&advertised)
            .arg("--log-dirs")
            .arg(self.data_dir())
            .env("STROM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        cmd.arg("--override")
            .arg(format!("admin.listener=127.0.0.1:{}", self.admin_port));
        for (k, v) in &self.overrides {
            cmd.arg("--override").arg(format!("{k}={v}"));
        }
        self.child = Some(cmd.spawn().expect("spawn strom"));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "strom exited during start-up with {status}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "strom did not accept connections within 30 s:\n{}",
            self.log()
        );
    }

    /// The broker's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit, returning the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("strom did not exit within 30 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker before restarting it");
        self.spawn();
    }
}

impl Drop for Strom {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- strom log ----\n{}", self.log());
        }
    }
}
