//! Property test over request decoding: arbitrary bytes as the body of every advertised API and
//! version must produce a response or a decode error, never a panic.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::RequestHeader;
use proptest::prelude::*;
use strom_broker::handlers::{dispatch, Reply, SUPPORTED};
use strom_broker::{Broker, BrokerConfig};

fn broker(dir: &std::path::Path) -> std::sync::Arc<Broker> {
    let mut layer = BTreeMap::new();
    layer.insert("log.dirs".to_owned(), dir.display().to_string());
    Broker::open(BrokerConfig::from_layers(&[layer]).expect("config")).expect("broker")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn arbitrary_bodies_never_panic(
        which in 0..SUPPORTED.len(),
        version_pick in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = broker(dir.path());
        let (api, lo, hi) = SUPPORTED[which];
        let version = lo + (i16::from(version_pick) % (hi - lo + 1));
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7);
        match dispatch(&b, api, &header, Bytes::from(body), "127.0.0.1") {
            Ok(Reply::Now(frame)) => prop_assert!(frame.len() >= 8),
            Ok(Reply::Later(_)) | Ok(Reply::None) | Err(_) => {}
        }
    }
}
