//! Fuzz harness for the decoder and state machine: arbitrary bytes and mutated valid streams,
//! fed in arbitrary chunks to both ends in every state. Nothing may panic, and a failed
//! connection must stay failed. `MIRAI_FUZZ_CASES` sets the number of inputs per target.

mod common;
mod support;

use common::{Pair, daemon_hello, encode_all, every_message};
use mirai_proto::{Config, Conn, State};
use proptest::prelude::*;
use support::fuzz::{cuts, damage, mutations, run};

/// The ends a hostile stream may hit: fresh host, fresh daemon, and both after a handshake.
fn targets() -> Vec<Conn> {
    let config = Config { max_frame: 1 << 16, ..Config::default() };
    let mut pair = Pair::new(config);
    pair.handshake();
    vec![Conn::host(config, 0), Conn::daemon(config, 0, daemon_hello(b"")).unwrap(), pair.host, pair.daemon]
}

/// What every input must leave true.
const WHAT: &str = "no crash";

fn feed_all(bytes: &[u8], cuts: &[usize]) {
    for mut conn in targets() {
        let mut start = 0;
        let mut failed = None;
        for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let end = end.clamp(start, bytes.len());
            match conn.feed(0, &bytes[start..end]) {
                Ok(()) => {}
                Err(e) => {
                    assert_eq!(conn.state(), State::Closed);
                    failed = Some(e);
                    break;
                }
            }
            while conn.poll_event().is_some() {}
            start = end;
        }
        if let Some(e) = failed {
            assert_eq!(conn.error(), Some(&e), "the first error sticks");
        } else {
            let _ = conn.handle_eof();
        }
        let _ = conn.handle_timeout(u64::MAX);
    }
}

#[test]
fn fuzz_arbitrary_bytes() {
    run((proptest::collection::vec(any::<u8>(), 0..2048), cuts(4096)), WHAT, |(bytes, cuts)| {
        feed_all(&bytes, &cuts)
    });
}

#[test]
fn fuzz_mutated_streams() {
    let base = encode_all(&every_message());
    let strategy = (proptest::collection::vec(any::<prop::sample::Index>(), 1..6), mutations(1), cuts(4096));
    run(strategy, WHAT, |(picks, mutations, cuts)| {
        // Start from a stream of a few valid messages in some order, then damage it.
        let msgs = every_message();
        let chosen: Vec<_> = picks.iter().map(|i| msgs[i.index(msgs.len())].clone()).collect();
        let bytes = if chosen.is_empty() { base.clone() } else { encode_all(&chosen) };
        feed_all(&damage(bytes, &mutations), &cuts);
    });
}
