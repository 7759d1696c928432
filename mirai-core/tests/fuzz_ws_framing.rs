//! Fuzz harness for the WebSocket framing, both sides: arbitrary bytes, and genuine frame
//! streams that were damaged, arrive in arbitrary chunks with stalls between them. Nothing may
//! panic or read past what arrived; an undamaged stream reads back exactly; after a refusal the
//! stream stays ended. `MIRAI_FUZZ_CASES` sets the number of inputs per target.

#[path = "../../mirai-proto/tests/support/fuzz.rs"]
mod fuzz;

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::mem::MaybeUninit;

use fuzz::{cuts, damage, mutations, run};
use mirai_core::ws::framing::{Framed, ReadUninit, Side};
use proptest::prelude::*;

/// Arriving bytes in chunks, `WouldBlock` between chunks, then the end of the stream. What
/// the framing writes back (pongs, closes) is kept.
struct Arrivals {
    chunks: VecDeque<Vec<u8>>,
    stalled: bool,
    written: Vec<u8>,
}

impl Read for Arrivals {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Every other call stalls, as a non-blocking socket drained to the last byte does.
        self.stalled = !self.stalled;
        if self.stalled && !self.chunks.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let Some(chunk) = self.chunks.front_mut() else { return Ok(0) };
        let n = buf.len().min(chunk.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        Ok(n)
    }
}

/// Large payload reads go here, as they do on a socket.
impl ReadUninit for Arrivals {
    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let mut scratch = vec![0; buf.len()];
        let n = self.read(&mut scratch)?;
        for (b, x) in buf.iter_mut().zip(&scratch[..n]) {
            b.write(*x);
        }
        Ok(n)
    }

    fn drained_after(&self, n: usize, asked: usize) -> bool {
        n < asked && self.chunks.is_empty()
    }
}

impl Write for Arrivals {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `bytes` cut at `cuts` into chunks, none empty.
fn arrivals(bytes: &[u8], cuts: &[usize]) -> Arrivals {
    let mut chunks = VecDeque::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let end = end.clamp(start, bytes.len());
        if end > start {
            chunks.push_back(bytes[start..end].to_vec());
        }
        start = end;
    }
    Arrivals { chunks, stalled: false, written: Vec::new() }
}

/// Reads everything `side` makes of `bytes`: the stream read, and whether it was refused.
fn read_all(side: Side, bytes: &[u8], cuts: &[usize], buf_len: usize) -> (Vec<u8>, bool) {
    let mut framed = Framed::new(arrivals(bytes, cuts), side, &[]);
    let mut got = Vec::new();
    let mut buf = vec![0u8; buf_len];
    loop {
        match framed.read(&mut buf) {
            Ok(0) => return (got, false),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                assert_eq!(framed.read(&mut buf).unwrap(), 0, "a refused stream stays ended");
                return (got, true);
            }
        }
        assert!(got.len() <= bytes.len(), "no more read than arrived");
    }
}

/// The frames `side` writes for `data`, handed over in slices of `slice` bytes.
fn frames_of(side: Side, data: &[u8], slice: usize) -> Vec<u8> {
    let sink = Arrivals { chunks: VecDeque::new(), stalled: false, written: Vec::new() };
    let mut framed = Framed::new(sink, side, &[]);
    let mut sent = 0;
    while sent < data.len() {
        let slices: Vec<IoSlice<'_>> = data[sent..].chunks(slice).take(64).map(IoSlice::new).collect();
        sent += framed.write_vectored(&slices).unwrap();
    }
    framed.flush().unwrap();
    std::mem::take(&mut framed.get_mut().written)
}

fn other(side: Side) -> Side {
    if side == Side::Client { Side::Server } else { Side::Client }
}

#[test]
fn arbitrary_bytes() {
    let input = (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..512), cuts(512), 1usize..300);
    run(input, "arbitrary bytes: no crash", |(client, bytes, cuts, buf_len)| {
        let side = if client { Side::Client } else { Side::Server };
        read_all(side, &bytes, &cuts, buf_len);
    });
}

#[test]
fn genuine_frames_damaged_or_not() {
    let input = (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 1..3000),
        1usize..1000,
        cuts(4000),
        1usize..5000,
        mutations(0),
    );
    run(
        input,
        "genuine frames: exact when intact, no crash when damaged",
        |(client, data, slice, cuts, buf_len, m)| {
            let sender = if client { Side::Client } else { Side::Server };
            let wire = frames_of(sender, &data, slice);
            let damaged = damage(wire.clone(), &m);
            let (got, refused) = read_all(other(sender), &damaged, &cuts, buf_len);
            if damaged == wire {
                assert!(!refused && got == data, "an intact stream reads back exactly");
            }
        },
    );
}
