//! `strom dev-cluster`: a local cluster of combined nodes on loopback, each a child `strom`
//! process with its own data directory, log file and ports, wired together through
//! `controller.quorum.voters` exactly as a real deployment would be.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use clap::Args;

#[derive(Args)]
pub struct DevClusterArgs {
    /// Number of nodes (each is broker and controller).
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Parent directory for each node's data directory and log file.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Client port of node 1; node N listens on base + 100*(N-1), its controller on that + 1.
    #[arg(long, default_value_t = 9092)]
    base_port: u16,
    /// Extra `KEY=VALUE` settings passed to every node.
    #[arg(long = "override", short = 'o', value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

struct Node {
    id: u16,
    port: u16,
    controller_port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Node {
    /// The admin HTTP listener: 9644 for the node on 9092, then +100 per node like the others.
    fn admin_port(&self) -> u16 {
        self.port.saturating_add(552)
    }
}

pub async fn run(args: DevClusterArgs, stop: impl std::future::Future<Output = ()>) -> ExitCode {
    if args.nodes == 0 {
        eprintln!("strom dev-cluster: --nodes must be at least 1");
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("strom dev-cluster: cannot find the strom binary: {e}");
            return ExitCode::from(1);
        }
    };
    let nodes: Vec<Node> = (1..=args.nodes)
        .map(|id| {
            let port = args.base_port + 100 * (id - 1);
            Node {
                id,
                port,
                controller_port: port + 1,
                dir: args.data_dir.join(format!("node-{id}")),
                log: args.data_dir.join(format!("node-{id}.log")),
            }
        })
        .collect();
    let voters = nodes
        .iter()
        .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for n in &nodes {
        if let Err(e) = std::fs::create_dir_all(&n.dir) {
            eprintln!("strom dev-cluster: cannot create {}: {e}", n.dir.display());
            return ExitCode::from(1);
        }
        let log = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
        {
            Ok(f) => f,
            Err(e) => {
                eprintln!("strom dev-cluster: cannot open {}: {e}", n.log.display());
                return ExitCode::from(1);
            }
        };
        let err = match log.try_clone() {
            Ok(f) => f,
            Err(e) => {
                eprintln!("strom dev-cluster: {e}");
                return ExitCode::from(1);
            }
        };
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("serve")
            .arg("--node-id")
            .arg(n.id.to_string())
            .arg("--log-dirs")
            .arg(&n.dir)
            .arg("--listeners")
            .arg(format!(
                "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                n.port, n.controller_port
            ))
            .arg("--advertised-listeners")
            .arg(format!("PLAINTEXT://127.0.0.1:{}", n.port))
            .arg("-o")
            .arg(format!("controller.quorum.voters={voters}"))
            .arg("-o")
            .arg(format!("admin.listener=127.0.0.1:{}", n.admin_port()));
        for o in &args.overrides {
            cmd.arg("-o").arg(o);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        match cmd.spawn() {
            Ok(c) => children.push(c),
            Err(e) => {
                eprintln!("strom dev-cluster: cannot start node {}: {e}", n.id);
                return ExitCode::from(1);
            }
        }
    }
    let bootstrap = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",");
    println!("strom dev-cluster: {} nodes", nodes.len());
    for n in &nodes {
        println!(
            "  node {}: client 127.0.0.1:{}, controller 127.0.0.1:{}, admin http://127.0.0.1:{}/metrics, data {}, log {}",
            n.id,
            n.port,
            n.controller_port,
            n.admin_port(),
            n.dir.display(),
            n.log.display()
        );
    }
    println!("bootstrap.servers={bootstrap}");
    println!("Ctrl-C stops all nodes.");
    stop.await;
    println!("stopping nodes...");
    for c in &children {
        if let Some(pid) = c.id() {
            // SIGTERM: each node runs its controlled shutdown.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
    let mut ok = true;
    for mut c in children {
        match tokio::time::timeout(std::time::Duration::from_secs(30), c.wait()).await {
            Ok(Ok(status)) => ok &= status.success(),
            _ => {
                let _ = c.kill().await;
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
