//! Every message survives encoding and decoding, whatever the chunking of the byte stream.

mod common;

use common::{encode_all, every_message};
use mirai_proto::decoder::Decoder;
use mirai_proto::{ErrorCode, FrameHeader, HEADER_LEN, Kind, Message};
use proptest::prelude::*;

fn decode_chunked(stream: &[u8], cuts: &[usize]) -> Vec<Message> {
    let mut decoder = Decoder::new(u64::MAX);
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        let mut chunk = &stream[start..end];
        while let Some(m) = decoder.decode(&mut chunk).expect("decode") {
            out.push(m);
        }
        assert!(chunk.is_empty());
        start = end;
    }
    assert_eq!(decoder.missing(), 0, "stream ends between frames");
    out
}

#[test]
fn every_message_round_trips() {
    for msg in every_message() {
        let stream = encode_all(std::slice::from_ref(&msg));
        assert_eq!(decode_chunked(&stream, &[]), vec![msg]);
    }
}

#[test]
fn header_layout_is_fixed() {
    let stream = encode_all(&[Message::Task { id: 5, everywhere: true, payload: b"xyz".to_vec() }]);
    let header = FrameHeader::decode(stream[..HEADER_LEN].try_into().unwrap(), u64::MAX).unwrap();
    assert_eq!(header.kind, Kind::Task);
    assert_eq!(header.flags, 0x01);
    assert_eq!(header.ctrl_len, 1, "id 5 is one varint byte");
    assert_eq!(header.body_len, 4);
    assert_eq!(&stream[HEADER_LEN + 1..], b"xyz", "payload follows the control header raw");
    assert_eq!(stream[..8], 4u64.to_le_bytes());
}

#[test]
fn split_at_every_boundary() {
    let msgs = every_message();
    let stream = encode_all(&msgs);
    for cut in 0..=stream.len() {
        assert_eq!(decode_chunked(&stream, &[cut]), msgs, "single cut at {cut}");
    }
    // One byte at a time.
    let cuts: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(decode_chunked(&stream, &cuts), msgs);
}

#[test]
fn window_reads_match_buffered_reads() {
    let msgs = vec![
        Message::Task { id: 1, everywhere: false, payload: (0..3_000_000u32).map(|i| i as u8).collect() },
        Message::Cancel { id: 1 },
    ];
    let stream = encode_all(&msgs);
    let mut decoder = Decoder::new(u64::MAX);
    let mut input = &stream[..];
    let mut out = Vec::new();
    while !input.is_empty() {
        if decoder.payload_remaining() > 0 {
            let window = decoder.window().unwrap();
            let n = window.len().min(input.len()).min(777_777);
            window[..n].copy_from_slice(&input[..n]);
            input = &input[n..];
            out.extend(decoder.commit(n).unwrap());
        } else {
            // Feed just the header and control bytes so the payload goes through the window.
            let mut head = &input[..input.len().min(HEADER_LEN + 1)];
            let before = head.len();
            out.extend(decoder.decode(&mut head).unwrap());
            input = &input[before - head.len()..];
        }
    }
    assert_eq!(out, msgs);
}

#[test]
fn error_codes_keep_nng_numbering() {
    assert_eq!(ErrorCode::TimedOut.code(), 5);
    assert_eq!(ErrorCode::ObjectClosed.code(), 7);
    assert_eq!(ErrorCode::ConnectionReset.code(), 19);
    assert_eq!(ErrorCode::Canceled.code(), 20);
    assert_eq!(ErrorCode::TimedOut.to_string(), "5 | Timed out");
    assert_eq!(ErrorCode::Canceled.message(), "Operation canceled");
    for (i, code) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(usize::from(code.code()), i + 1);
        assert_eq!(ErrorCode::from_code(u32::from(code.code())), Some(*code));
    }
    assert_eq!(ErrorCode::from_code(0), None);
    assert_eq!(ErrorCode::from_code(32), None);
}

fn arb_message() -> impl Strategy<Value = Message> {
    use mirai_proto::{ExitReason, Status};
    let bytes = || proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        (any::<u64>(), any::<[u32; 6]>(), any::<u64>(), bytes()).prop_map(
            |(daemon_id, rng_stream, heartbeat_ms, blob)| Message::Init {
                daemon_id,
                rng_stream,
                heartbeat_ms,
                blob
            }
        ),
        (any::<u64>(), any::<bool>(), bytes())
            .prop_map(|(id, everywhere, payload)| { Message::Task { id, everywhere, payload } }),
        (any::<u64>(), 0..3u8, any::<bool>(), bytes()).prop_map(|(id, s, last, payload)| {
            let status = [Status::Value, Status::Error, Status::Interrupted][usize::from(s)];
            Message::Result { id, status, last, payload }
        }),
        any::<u64>().prop_map(|id| Message::Cancel { id }),
        ".{0,40}".prop_map(|detail| Message::Exit { reason: ExitReason::Leaving, detail }),
        Just(Message::Heartbeat),
        (bytes(), ".{0,20}").prop_map(|(auth, label)| {
            let mut h = common::daemon_hello(&auth);
            h.identity.label = label;
            Message::Hello(h)
        }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_messages_any_chunking(
        msgs in proptest::collection::vec(arb_message(), 1..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let stream = encode_all(&msgs);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(decode_chunked(&stream, &cuts), msgs);
    }
}
