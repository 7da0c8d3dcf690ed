//! Kafka's framing: every request and response is a big-endian `i32` size followed by that many
//! bytes. Request headers start with api key, api version and correlation id at fixed places,
//! which lets the broker route (or reject) a request before decoding its body.

use bytes::{Buf, BytesMut};

/// Why the byte stream can no longer be trusted; the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {size} is outside 8..={max} (socket.request.max.bytes)")]
    InvalidSize { size: i64, max: usize },
}

/// Takes one complete frame off the front of `buf`, or returns `Ok(None)` when more bytes are
/// needed. `max` bounds the size a peer may announce, so a hostile length never makes us
/// allocate.
pub fn take_frame(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    // api key + version + correlation id is the smallest request there is.
    if size < 8 || size as usize > max {
        return Err(FrameError::InvalidSize {
            size: i64::from(size),
            max,
        });
    }
    let size = size as usize;
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size)))
}

/// The fixed first eight bytes of every request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestPrefix {
    pub fn peek(frame: &[u8]) -> Option<Self> {
        let b = frame.get(..8)?;
        Some(Self {
            api_key: i16::from_be_bytes([b[0], b[1]]),
            api_version: i16::from_be_bytes([b[2], b[3]]),
            correlation_id: i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_wait_for_more() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&10i32.to_be_bytes());
        buf.extend_from_slice(&[1; 6]);
        assert_eq!(take_frame(&mut buf, 100), Ok(None));
        buf.extend_from_slice(&[2; 4]);
        buf.extend_from_slice(&[9; 3]);
        let f = take_frame(&mut buf, 100).expect("ok").expect("frame");
        assert_eq!(f.len(), 10);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn hostile_sizes_are_errors() {
        for size in [-1i32, 0, 7, 101, i32::MAX] {
            let mut buf = BytesMut::from(&size.to_be_bytes()[..]);
            assert!(take_frame(&mut buf, 100).is_err(), "{size}");
        }
    }
}
