//! The Kafka listener: accepts connections, frames requests, runs them through the handlers
//! and writes responses back in request order, with bounds on request size and on bytes
//! buffered across all connections. Shutdown stops reading, lets in-flight requests finish,
//! then returns so the caller can flush and close the logs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use strom_protocol::frame::{take_frame, RequestPrefix};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::handlers::{self, Frame, HandlerError, Reply};
use crate::observe;

/// Responses a connection may have outstanding before it stops reading. librdkafka pipelines up
/// to 1,000,000 requests, and an acks=all response can wait 100+ ms for a group-commit fsync while
/// the kernel writes back a burst: a shallow pipeline then stops reading, and appends (so
/// consumers) stall behind the fsync. Memory stays bounded by `queued.max.request.bytes`.
const MAX_PIPELINE: usize = 1024;
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Server {
    listener: TcpListener,
    broker: Arc<Broker>,
}

impl Server {
    pub async fn bind(broker: Arc<Broker>) -> std::io::Result<Self> {
        let l = &broker.config.listener;
        // `PLAINTEXT://:9092` means every interface, as in Kafka.
        let host = if l.host.is_empty() {
            "0.0.0.0"
        } else {
            &l.host
        };
        let listener = TcpListener::bind((host, l.port)).await?;
        Ok(Self { listener, broker })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains connections.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let budget = self
            .broker
            .config
            .queued_max_request_bytes
            .clamp(1, Semaphore::MAX_PERMITS);
        let inflight = Arc::new(Semaphore::new(budget));
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let conn = Connection {
                            broker: self.broker.clone(),
                            peer,
                            inflight: inflight.clone(),
                            budget,
                        };
                        conns.spawn(conn.serve(stream, stop_rx.clone()));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        tracing::info!(
            connections = conns.len(),
            "stopped accepting; draining in-flight requests"
        );
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("connections still busy after {DRAIN_TIMEOUT:?}; closing them");
            conns.abort_all();
        }
    }
}

/// A response on its way: ready bytes, a task computing them, or a task with no response
/// (acks=0) whose failure closes the connection.
enum Pending {
    Ready(Frame),
    Task(tokio::task::JoinHandle<Result<Frame, HandlerError>>),
    Quiet(tokio::task::JoinHandle<Result<(), HandlerError>>),
}

struct Connection {
    broker: Arc<Broker>,
    peer: SocketAddr,
    inflight: Arc<Semaphore>,
    budget: usize,
}

impl Connection {
    async fn serve(self, stream: TcpStream, mut stop: watch::Receiver<bool>) {
        let _ = stream.set_nodelay(true);
        let (mut rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel::<(Pending, OwnedSemaphorePermit)>(MAX_PIPELINE);
        let writer = tokio::spawn(write_loop(wr, rx, self.peer));
        let max = self.broker.config.socket_request_max_bytes;
        let idle = Duration::from_millis(self.broker.config.connections_max_idle_ms);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        'conn: loop {
            loop {
                let frame = match take_frame(&mut buf, max) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(peer = %self.peer, error = %e, "closing connection: bad frame");
                        break 'conn;
                    }
                };
                let want = frame.len().clamp(1, self.budget) as u32;
                let Ok(permit) = self.inflight.clone().acquire_many_owned(want).await else {
                    break 'conn;
                };
                let pending = match self.handle(frame) {
                    Ok(Reply::Now(b)) => Pending::Ready(b),
                    Ok(Reply::Later(fut)) => Pending::Task(tokio::spawn(fut)),
                    Ok(Reply::Quiet(fut)) => Pending::Quiet(tokio::spawn(fut)),
                    Err(reason) => {
                        tracing::warn!(peer = %self.peer, %reason, "closing connection");
                        break 'conn;
                    }
                };
                if tx.send((pending, permit)).await.is_err() {
                    break 'conn; // the writer hit an error and is gone
                }
            }
            tokio::select! {
                read = tokio::time::timeout(idle, rd.read_buf(&mut buf)) => match read {
                    Ok(Ok(0)) => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "read failed");
                        break;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %self.peer, "closing idle connection");
                        break;
                    }
                },
                _ = stop.changed() => break,
            }
        }
        drop(tx);
        let _ = writer.await;
    }

    /// Routes one frame; `Err` carries why the connection must close.
    fn handle(&self, frame: BytesMut) -> Result<Reply, String> {
        let prefix = RequestPrefix::peek(&frame).ok_or("request shorter than its header")?;
        let api = ApiKey::try_from(prefix.api_key)
            .map_err(|_| format!("unknown API key {}", prefix.api_key))?;
        let (lo, hi) = handlers::supported_range(api)
            .ok_or_else(|| format!("API {api:?} is not supported"))?;
        if !(lo..=hi).contains(&prefix.api_version) {
            if api == ApiKey::ApiVersions {
                return handlers::unsupported_version_response(prefix.correlation_id)
                    .map(|b| Reply::Now(b.into()))
                    .map_err(|e| e.to_string());
            }
            return Err(format!(
                "{api:?} v{} is not supported (supported: v{lo}-v{hi})",
                prefix.api_version
            ));
        }
        let mut bytes = frame.freeze();
        let header_version = api.request_header_version(prefix.api_version);
        let header = RequestHeader::decode(&mut bytes, header_version)
            .map_err(|e| format!("malformed {api:?} request header: {e}"))?;
        tracing::trace!(peer = %self.peer, ?api, version = prefix.api_version, "request");
        // Kafka reports client hosts as Java's InetAddress prints them: "/127.0.0.1".
        let peer = format!("/{}", self.peer.ip());
        let started = std::time::Instant::now();
        let reply = handlers::dispatch(&self.broker, api, &header, bytes, &peer)
            .map_err(|e| e.to_string())?;
        Ok(match reply {
            Reply::Later(fut) => Reply::Later(Box::pin(async move {
                let out = fut.await;
                observe::request_done(api, started);
                out
            })),
            Reply::Quiet(fut) => Reply::Quiet(Box::pin(async move {
                let out = fut.await;
                observe::request_done(api, started);
                out
            })),
            now => {
                observe::request_done(api, started);
                now
            }
        })
    }
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<(Pending, OwnedSemaphorePermit)>,
    peer: SocketAddr,
) {
    while let Some((pending, permit)) = rx.recv().await {
        let bytes = match pending {
            Pending::Ready(b) => Ok(b),
            Pending::Quiet(task) => match task.await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => {
                    tracing::warn!(peer = %peer, reason = %e, "closing connection");
                    break;
                }
                Err(e) => {
                    tracing::error!(peer = %peer, error = %e, "request task failed");
                    break;
                }
            },
            Pending::Task(task) => match task.await {
                Ok(result) => result,
                Err(e) => {
                    tracing::error!(peer = %peer, error = %e, "request task failed");
                    break;
                }
            },
        };
        drop(permit);
        match bytes {
            Ok(frame) => {
                if let Err(e) = write_frame(&mut wr, frame).await {
                    tracing::debug!(peer = %peer, error = %e, "write failed");
                    break;
                }
            }
            Err(e) => {
                tracing::error!(peer = %peer, error = %e, "closing connection");
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// Writes every part of a frame, several per system call.
async fn write_frame(wr: &mut OwnedWriteHalf, frame: Frame) -> std::io::Result<()> {
    let parts: Vec<Bytes> = frame.0.into_iter().filter(|p| !p.is_empty()).collect();
    if let [one] = parts.as_slice() {
        return wr.write_all(one).await;
    }
    let (mut i, mut skip) = (0usize, 0usize);
    while i < parts.len() {
        let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&parts[i][skip..])
            .chain(parts[i + 1..].iter().map(|p| &p[..]))
            .take(64)
            .map(std::io::IoSlice::new)
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && i < parts.len() {
            let left = parts[i].len() - skip;
            if n >= left {
                n -= left;
                i += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
    Ok(())
}
