//! Connect streaming framing: every message is an envelope of 1 flags byte, a 4-byte big-endian
//! length and the payload. Owns encoding envelopes and incrementally decoding them from byte
//! chunks that may split an envelope anywhere.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;

/// Flag bit: the payload is compressed (never used by this agent; rejected on input).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag bit: this is the end-of-stream message (an [`EndStream`](crate::connect::EndStream)).
pub const FLAG_END_STREAM: u8 = 0x02;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 5;
/// Largest payload [`EnvelopeDecoder::new`] accepts; far above any message of this protocol.
pub const DEFAULT_MAX_LEN: usize = 64 << 20;

/// Why an envelope could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The length prefix announces more than the decoder accepts.
    #[error("envelope of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced payload length.
        len: usize,
        /// The decoder's limit.
        max: usize,
    },
    /// The message could not be serialized as JSON.
    #[error("cannot encode message as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The flags byte ([`FLAG_COMPRESSED`], [`FLAG_END_STREAM`]).
    pub flags: u8,
    /// The payload (a JSON message with this codec).
    pub data: Bytes,
}

impl Envelope {
    /// Whether this is the end-of-stream message.
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }

    /// Whether the payload claims to be compressed.
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }
}

fn length_prefix(len: usize) -> Result<[u8; 4], EnvelopeError> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| EnvelopeError::TooLarge {
            len,
            max: u32::MAX as usize,
        })
}

/// Frames `payload` as one envelope.
pub fn encode(flags: u8, payload: &[u8]) -> Result<Bytes, EnvelopeError> {
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    out.put_u8(flags);
    out.put_slice(&length_prefix(payload.len())?);
    out.put_slice(payload);
    Ok(out.freeze())
}

/// Serializes `message` as JSON straight into one envelope (no intermediate copy).
pub fn encode_json<T: Serialize + ?Sized>(flags: u8, message: &T) -> Result<Bytes, EnvelopeError> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[flags, 0, 0, 0, 0]);
    serde_json::to_writer(&mut out, message)?;
    let prefix = length_prefix(out.len() - HEADER_LEN)?;
    if let Some(slot) = out.get_mut(1..HEADER_LEN) {
        slot.copy_from_slice(&prefix);
    }
    Ok(Bytes::from(out))
}

/// Reassembles envelopes from arbitrary chunks: [`push`](Self::push) bytes as they arrive, then
/// call [`next_envelope`](Self::next_envelope) until it yields `None`.
#[derive(Debug)]
pub struct EnvelopeDecoder {
    buf: BytesMut,
    max_len: usize,
}

impl Default for EnvelopeDecoder {
    fn default() -> Self {
        EnvelopeDecoder::new()
    }
}

impl EnvelopeDecoder {
    /// A decoder accepting payloads up to [`DEFAULT_MAX_LEN`].
    pub fn new() -> EnvelopeDecoder {
        EnvelopeDecoder::with_max_len(DEFAULT_MAX_LEN)
    }

    /// A decoder rejecting payloads longer than `max_len` bytes.
    pub fn with_max_len(max_len: usize) -> EnvelopeDecoder {
        EnvelopeDecoder {
            buf: BytesMut::new(),
            max_len,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete envelope, `Ok(None)` if more bytes are needed. After an error the
    /// stream is unusable: the framing is lost.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, EnvelopeError> {
        let Some(header) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let flags = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.max_len {
            return Err(EnvelopeError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        let total = HEADER_LEN + len;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let data = self.buf.split_to(len).freeze();
        Ok(Some(Envelope { flags, data }))
    }

    /// Whether bytes of an incomplete envelope are buffered (at end of input: a truncated stream).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stream() -> Vec<u8> {
        let mut all = Vec::new();
        all.extend_from_slice(&encode(0, br#"{"a":1}"#).unwrap());
        all.extend_from_slice(&encode(0, b"").unwrap());
        all.extend_from_slice(&encode_json(0, &vec![7u8; 300]).unwrap());
        all.extend_from_slice(&encode(FLAG_END_STREAM, b"{}").unwrap());
        all
    }

    fn drain(decoder: &mut EnvelopeDecoder, out: &mut Vec<Envelope>) {
        while let Some(env) = decoder.next_envelope().unwrap() {
            out.push(env);
        }
    }

    #[test]
    fn decodes_whole_and_split_at_every_chunk_size() {
        let all = stream();
        for chunk_size in [1, 2, 3, 4, 5, 6, 7, 13, 64, all.len()] {
            let mut decoder = EnvelopeDecoder::new();
            let mut out = Vec::new();
            for chunk in all.chunks(chunk_size) {
                decoder.push(chunk);
                drain(&mut decoder, &mut out);
            }
            assert!(!decoder.has_partial(), "chunk size {chunk_size}");
            assert_eq!(out.len(), 4, "chunk size {chunk_size}");
            assert_eq!(&out[0].data[..], br#"{"a":1}"#);
            assert!(out[1].data.is_empty());
            assert_eq!(out[2].data.len(), 300 * 2 + 1);
            assert!(out[3].is_end_stream());
            assert!(!out[0].is_end_stream());
        }
    }

    #[test]
    fn split_at_every_offset() {
        let all = stream();
        for cut in 0..all.len() {
            let mut decoder = EnvelopeDecoder::new();
            let mut out = Vec::new();
            decoder.push(&all[..cut]);
            drain(&mut decoder, &mut out);
            decoder.push(&all[cut..]);
            drain(&mut decoder, &mut out);
            assert_eq!(out.len(), 4, "cut at {cut}");
        }
    }

    #[test]
    fn truncated_input_is_partial() {
        let all = stream();
        let mut decoder = EnvelopeDecoder::new();
        decoder.push(&all[..all.len() - 1]);
        let mut out = Vec::new();
        drain(&mut decoder, &mut out);
        assert_eq!(out.len(), 3);
        assert!(decoder.has_partial());
    }

    #[test]
    fn oversized_envelope_is_an_error() {
        let mut decoder = EnvelopeDecoder::with_max_len(4);
        decoder.push(&[0, 0, 0, 0, 5]);
        assert!(matches!(
            decoder.next_envelope(),
            Err(EnvelopeError::TooLarge { len: 5, max: 4 })
        ));
    }

    #[test]
    fn encode_json_prefixes_length() {
        let env = encode_json(FLAG_END_STREAM, &serde_json::json!({})).unwrap();
        assert_eq!(&env[..], b"\x02\x00\x00\x00\x02{}");
    }
}
