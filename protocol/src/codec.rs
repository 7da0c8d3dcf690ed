//! The four Kafka compression codecs, with the framings stock clients produce and expect:
//! gzip, snappy in the xerial stream framing the Java client writes (raw snappy blocks, as some
//! clients send, are read too), the LZ4 frame format, and zstd frames.

use std::io::{Read, Write};

/// Compression codec of a record batch (attribute bits 0–2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

/// Why a payload could not be (de)compressed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{codec:?} data is corrupt: {reason}")]
    Corrupt { codec: Codec, reason: String },
    #[error("decompressed size exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("{codec:?} compression failed: {reason}")]
    Compress { codec: Codec, reason: String },
}

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
/// Uncompressed block size of the xerial stream; the Java client uses 32 KiB.
const XERIAL_BLOCK: usize = 32 * 1024;

impl Codec {
    pub fn from_attributes(attributes: i16) -> Result<Self, crate::batch::BatchError> {
        Ok(match attributes & 0x07 {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            other => return Err(crate::batch::BatchError::UnknownCodec(other)),
        })
    }

    /// The name used by `compression.type`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "none" | "uncompressed" => Codec::None,
            "gzip" => Codec::Gzip,
            "snappy" => Codec::Snappy,
            "lz4" => Codec::Lz4,
            "zstd" => Codec::Zstd,
            _ => return None,
        })
    }

    fn corrupt(self, reason: impl std::fmt::Display) -> CodecError {
        CodecError::Corrupt {
            codec: self,
            reason: reason.to_string(),
        }
    }

    fn compress_err(self, reason: impl std::fmt::Display) -> CodecError {
        CodecError::Compress {
            codec: self,
            reason: reason.to_string(),
        }
    }

    /// Decompresses `data`, refusing to produce more than `limit` bytes (a bound against
    /// decompression bombs).
    pub fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
        let bounded = |reader: &mut dyn Read| -> Result<Vec<u8>, CodecError> {
            let mut out = Vec::new();
            reader
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| self.corrupt(e))?;
            if out.len() > limit {
                return Err(CodecError::TooLarge(limit));
            }
            Ok(out)
        };
        match self {
            Codec::None => {
                if data.len() > limit {
                    return Err(CodecError::TooLarge(limit));
                }
                Ok(data.to_vec())
            }
            Codec::Gzip => bounded(&mut flate2::read::MultiGzDecoder::new(data)),
            Codec::Lz4 => bounded(&mut lz4_flex::frame::FrameDecoder::new(data)),
            Codec::Zstd => {
                let mut dec =
                    zstd::stream::read::Decoder::new(data).map_err(|e| self.corrupt(e))?;
                bounded(&mut dec)
            }
            Codec::Snappy => snappy_decompress(data, limit),
        }
    }

    /// Compresses `data` in the framing Kafka clients read.
    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::None => Ok(data.to_vec()),
            Codec::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(data).map_err(|e| self.compress_err(e))?;
                enc.finish().map_err(|e| self.compress_err(e))
            }
            Codec::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent);
                let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
                enc.write_all(data).map_err(|e| self.compress_err(e))?;
                enc.finish().map_err(|e| self.compress_err(e))
            }
            Codec::Zstd => zstd::bulk::compress(data, 3).map_err(|e| self.compress_err(e)),
            Codec::Snappy => snappy_compress_xerial(data),
        }
    }
}

fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let corrupt = |r: &dyn std::fmt::Display| Codec::Snappy.corrupt(r);
    let raw_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), CodecError> {
        let len = snap::raw::decompress_len(block).map_err(|e| corrupt(&e))?;
        if out.len() + len > limit {
            return Err(CodecError::TooLarge(limit));
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| corrupt(&e))?;
        Ok(())
    };
    let mut out = Vec::new();
    if data.len() < XERIAL_HEADER_LEN || data[..8] != XERIAL_MAGIC {
        raw_block(data, &mut out)?;
        return Ok(out);
    }
    let mut rest = &data[XERIAL_HEADER_LEN..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(corrupt(&"truncated xerial block length"));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let block = rest
            .get(4..4 + len)
            .ok_or_else(|| corrupt(&"truncated xerial block"))?;
        raw_block(block, &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

fn snappy_compress_xerial(data: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2);
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes()); // stream version
    out.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
    let mut enc = snap::raw::Encoder::new();
    for chunk in data.chunks(XERIAL_BLOCK) {
        let block = enc
            .compress_vec(chunk)
            .map_err(|e| Codec::Snappy.compress_err(e))?;
        out.extend_from_slice(&(block.len() as u32).to_be_bytes());
        out.extend_from_slice(&block);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in ALL {
            let c = codec.compress(&data).expect("compress");
            assert_eq!(
                codec.decompress(&c, data.len()).expect("decompress"),
                data,
                "{codec:?}"
            );
        }
    }

    #[test]
    fn limit_stops_bombs() {
        let data = vec![0u8; 1 << 20];
        for codec in ALL {
            let c = codec.compress(&data).expect("compress");
            assert!(
                matches!(codec.decompress(&c, 1000), Err(CodecError::TooLarge(_))),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn raw_snappy_is_accepted() {
        let block = snap::raw::Encoder::new()
            .compress_vec(b"hello hello hello")
            .expect("snappy");
        assert_eq!(
            Codec::Snappy.decompress(&block, 100).expect("raw"),
            b"hello hello hello"
        );
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            for codec in ALL {
                let _ = codec.decompress(&bytes, 1 << 16);
            }
        }
    }
}
