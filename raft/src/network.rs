//! The controller RPC: length-prefixed JSON over TCP on the controller listener. It carries
//! Raft's own messages plus the broker-to-controller calls (proposals forwarded to the active
//! controller, broker heartbeats). One request at a time per connection.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::controller::{Heartbeat, HeartbeatReply};
use crate::image::{Command, Outcome};
use crate::{ProposeError, TypeConfig};

type NodeId = u64;

/// Largest RPC frame accepted (snapshots of large clusters included).
const MAX_FRAME: usize = 256 << 20;

#[derive(Serialize, Deserialize)]
pub(crate) enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    Propose(Command),
    Heartbeat(Heartbeat),
    /// Whether the receiver has joined a quorum (used before bootstrapping).
    Status,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Propose(Result<(u64, Outcome), ProposeError>),
    Heartbeat(Result<HeartbeatReply, ProposeError>),
    Status { initialized: bool },
}

pub(crate) async fn read_frame<T: for<'a> Deserialize<'a>>(
    stream: &mut TcpStream,
) -> std::io::Result<T> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "controller frame of {len} bytes is too large"
        )));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    serde_json::from_slice(&buf).map_err(std::io::Error::other)
}

pub(crate) async fn write_frame<T: Serialize>(
    stream: &mut TcpStream,
    value: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    stream.write_all(&buf).await
}

/// Connects from `bind` (the node's own address, so that address-level network faults cut
/// both directions) to `addr`.
pub async fn connect(
    addr: &str,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let target: SocketAddr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr} does not resolve")))?;
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = bind.filter(|ip| ip.is_ipv4() == target.is_ipv4() && !ip.is_unspecified()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(target))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out"),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One connection to a peer's controller listener, re-established on demand.
pub(crate) struct Peer {
    addr: String,
    bind: Option<IpAddr>,
    stream: Option<TcpStream>,
}

impl Peer {
    pub(crate) fn new(addr: String, bind: Option<IpAddr>) -> Self {
        Self {
            addr,
            bind,
            stream: None,
        }
    }

    pub(crate) async fn call(
        &mut self,
        req: &Request,
        timeout: Duration,
    ) -> std::io::Result<Reply> {
        let result = tokio::time::timeout(timeout, async {
            if self.stream.is_none() {
                self.stream = Some(connect(&self.addr, self.bind, timeout).await?);
            }
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| std::io::Error::other("not connected"))?;
            write_frame(stream, req).await?;
            read_frame::<Reply>(stream).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("controller RPC to {} timed out", self.addr),
            ))
        });
        if result.is_err() {
            // The connection may hold half a frame: start over next time.
            self.stream = None;
        }
        result
    }
}

pub struct Network {
    pub(crate) bind: Option<IpAddr>,
}

pub struct PeerClient {
    peer: Peer,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, _target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            peer: Peer::new(node.addr.clone(), self.bind),
        }
    }
}

fn unreachable<E: std::error::Error>(e: std::io::Error) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&e))
}

fn garbled<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(
        "unexpected controller reply",
    )))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .peer
            .call(&Request::Append(rpc), option.hard_ttl())
            .await
            .map_err(unreachable)?
        {
            Reply::Append(r) => {
                r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
            }
            _ => Err(garbled()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .peer
            .call(&Request::Snapshot(rpc), option.hard_ttl())
            .await
            .map_err(unreachable)?
        {
            Reply::Snapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
            }
            _ => Err(garbled()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .peer
            .call(&Request::Vote(rpc), option.hard_ttl())
            .await
            .map_err(unreachable)?
        {
            Reply::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
            }
            _ => Err(garbled()),
        }
    }
}
