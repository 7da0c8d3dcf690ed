//! Property test over request decoding: arbitrary bytes as the body of every advertised API and
//! version must produce a response or a decode error, never a panic.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;
use kafka_protocol::messages::RequestHeader;
use proptest::prelude::*;
use strom_broker::handlers::{dispatch, Reply, SUPPORTED};
use strom_broker::{Broker, BrokerConfig};

/// One broker (with its single-node quorum) shared by every case.
fn shared() -> &'static (
    tokio::runtime::Runtime,
    std::sync::Arc<Broker>,
    tempfile::TempDir,
) {
    static SHARED: OnceLock<(
        tokio::runtime::Runtime,
        std::sync::Arc<Broker>,
        tempfile::TempDir,
    )> = OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut layer = BTreeMap::new();
        layer.insert("log.dirs".to_owned(), dir.path().display().to_string());
        let config = BrokerConfig::from_layers(&[layer]).expect("config");
        let broker = rt.block_on(async {
            let b = Broker::start(config).await.expect("broker");
            b.wait_ready().await;
            b
        });
        (rt, broker, dir)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn arbitrary_bodies_never_panic(
        which in 0..SUPPORTED.len(),
        version_pick in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let (rt, b, _) = shared();
        let _guard = rt.enter();
        let (api, lo, hi) = SUPPORTED[which];
        let version = lo + (i16::from(version_pick) % (hi - lo + 1));
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7);
        match dispatch(b, api, &header, Bytes::from(body), "127.0.0.1") {
            Ok(Reply::Now(frame)) => prop_assert!(frame.len() >= 8),
            Ok(Reply::Later(_)) | Ok(Reply::Quiet(_)) | Err(_) => {}
        }
    }
}
