//! The test network: a bridge `strjep0` in the root namespace (address 10.88.0.254, where the
//! workload runs) and one network namespace `strjep-nN` per node, joined to the bridge by a
//! veth pair, with address 10.88.0.N. Everything here is created by this program and removed by
//! it; the only traffic it ever sends goes to these addresses.
//!
//! Partitions are iptables rules inside the node namespaces, so they cut links between nodes
//! while every node stays reachable from the workload's 10.88.0.254.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The bridge.
pub const BRIDGE: &str = "strjep0";
/// Namespace of node N: `strjep-nN`.
const NS_PREFIX: &str = "strjep-n";
/// Root-namespace end of node N's veth pair: `strjep-vN`.
const VETH_PREFIX: &str = "strjep-v";
/// The root namespace's address on the bridge (the clients').
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 254);

/// Node `n`'s address (1-based).
pub fn node_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 0, n as u8)
}

/// Node `n`'s namespace.
pub fn ns(n: usize) -> String {
    format!("{NS_PREFIX}{n}")
}

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The namespaces and the bridge; dropping it removes them.
pub struct Network {
    nodes: usize,
    up: bool,
}

impl Network {
    /// Removes leftovers of an earlier run, then creates the bridge and `nodes` namespaces.
    pub fn create(nodes: usize) -> Result<Self> {
        remove_leftovers();
        let mut net = Network { nodes, up: true };
        net.build().context("creating the test network")?;
        Ok(net)
    }

    fn build(&mut self) -> Result<()> {
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", BRIDGE],
        )?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        for n in 1..=self.nodes {
            let ns = ns(n);
            let veth = format!("{VETH_PREFIX}{n}");
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", BRIDGE])?;
            run("ip", &["link", "set", &veth, "up"])?;
            let addr = format!("{}/24", node_ip(n));
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Removes the namespaces and the bridge (idempotent).
    pub fn teardown(&mut self) {
        if std::mem::take(&mut self.up) {
            remove_leftovers();
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Deletes every `strjep-*` namespace, veth and the bridge, whoever made them.
pub fn remove_leftovers() {
    let list = Command::new("ip").args(["netns", "list"]).output();
    if let Ok(out) = list {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(NS_PREFIX) {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
    let links = Command::new("ip").args(["-o", "link", "show"]).output();
    if let Ok(out) = links {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "12: strjep-v1@if2: <...>"
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or_default();
            if name.starts_with(VETH_PREFIX) {
                let _ = run("ip", &["link", "del", name]);
            }
        }
    }
    if Command::new("ip")
        .args(["link", "show", BRIDGE])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let _ = run("ip", &["link", "del", BRIDGE]);
    }
}

/// Appends one iptables rule inside node `n`'s namespace.
pub fn iptables(n: usize, rule: &[&str]) -> Result<()> {
    let ns = ns(n);
    let mut args = vec!["netns", "exec", &ns, "iptables", "-w", "-A"];
    args.extend_from_slice(rule);
    run("ip", &args)
}

/// Drops every packet between node `n` and `peer` (both directions, rules in `n`'s namespace).
pub fn drop_peer(n: usize, peer: usize) -> Result<()> {
    let p = node_ip(peer).to_string();
    iptables(n, &["INPUT", "-s", &p, "-j", "DROP"])?;
    iptables(n, &["OUTPUT", "-d", &p, "-j", "DROP"])
}

/// Drops packets from `from` arriving at `to` only (rule in `to`'s namespace).
pub fn drop_one_way(from: usize, to: usize) -> Result<()> {
    let p = node_ip(from).to_string();
    iptables(to, &["INPUT", "-s", &p, "-j", "DROP"])
}

/// Cuts node `n` from the metadata quorum only: every TCP segment between `n` and a peer with
/// the controller port 9093 at either end, in both directions. The Kafka port stays open.
pub fn drop_quorum(n: usize, peers: &[usize]) -> Result<()> {
    for &peer in peers {
        let p = node_ip(peer).to_string();
        for port in ["--dport", "--sport"] {
            iptables(
                n,
                &["INPUT", "-s", &p, "-p", "tcp", port, "9093", "-j", "DROP"],
            )?;
            iptables(
                n,
                &["OUTPUT", "-d", &p, "-p", "tcp", port, "9093", "-j", "DROP"],
            )?;
        }
    }
    Ok(())
}

/// Removes every rule in node `n`'s namespace.
pub fn flush(n: usize) -> Result<()> {
    run("ip", &["netns", "exec", &ns(n), "iptables", "-w", "-F"])
}
