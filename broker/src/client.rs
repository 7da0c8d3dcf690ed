//! A minimal Kafka-protocol client for broker-to-broker calls (follower fetches and
//! OffsetForLeaderEpoch) and the admin CLI, using the same codec as the server side.

use std::net::IpAddr;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response a follower accepts (a fetch is bounded by replica.fetch.response.max.bytes).
const MAX_RESPONSE: usize = 256 << 20;

pub struct Conn {
    stream: TcpStream,
    next_correlation: i32,
    client_id: String,
}

impl Conn {
    pub async fn connect(
        addr: &str,
        bind: Option<IpAddr>,
        client_id: String,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let stream = strom_raft::connect(addr, bind, timeout).await?;
        Ok(Self {
            stream,
            next_correlation: 0,
            client_id,
        })
    }

    /// Wraps an already connected stream (tools that resolve and connect themselves).
    pub fn from_stream(stream: TcpStream, client_id: String) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            next_correlation: 0,
            client_id,
        }
    }

    /// Sends one request and waits for its response.
    pub async fn call<R>(
        &mut self,
        version: i16,
        req: &R,
        timeout: Duration,
    ) -> std::io::Result<R::Response>
    where
        R: Request + Encodable + HeaderVersion,
        R::Response: Decodable,
    {
        let api = ApiKey::try_from(R::KEY).map_err(|_| std::io::Error::other("unknown api key"))?;
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let header_version = R::header_version(version);
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, header_version)
            .map_err(std::io::Error::other)?;
        req.encode(&mut buf, version)
            .map_err(std::io::Error::other)?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let exchange = async {
            self.stream.write_all(&buf).await?;
            let len = self.stream.read_i32().await?;
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_RESPONSE && *l >= 4)
                .ok_or_else(|| std::io::Error::other(format!("bad response length {len}")))?;
            let mut body = BytesMut::zeroed(len);
            self.stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body.freeze())
        };
        let mut body = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{api:?} timed out"))
            })??;
        let header = kafka_protocol::messages::ResponseHeader::decode(
            &mut body,
            api.response_header_version(version),
        )
        .map_err(std::io::Error::other)?;
        if header.correlation_id != correlation {
            return Err(std::io::Error::other(format!(
                "response correlation id {}, expected {correlation}",
                header.correlation_id
            )));
        }
        R::Response::decode(&mut body, version).map_err(std::io::Error::other)
    }
}

/// A consumer's ListOffsets request (replica id -1) for `timestamp` (-1 latest, -2 earliest)
/// of each topic's partitions.
pub fn list_offsets_request(
    topics: impl IntoIterator<Item = (String, Vec<i32>)>,
    timestamp: i64,
) -> ListOffsetsRequest {
    let topic = |(name, partitions): (String, Vec<i32>)| {
        ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(name)))
            .with_partitions(
                partitions
                    .into_iter()
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )
    };
    ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(topics.into_iter().map(topic).collect())
}
