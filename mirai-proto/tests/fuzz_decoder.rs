//! Fuzz harness for the decoder and state machine: arbitrary bytes and mutated valid streams,
//! fed in arbitrary chunks to both ends in every state. Nothing may panic, and a failed
//! connection must stay failed. `MIRAI_FUZZ_CASES` sets the number of inputs per target.

mod common;

use common::{Pair, daemon_hello, encode_all, every_message};
use mirai_proto::{Config, Conn, State};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

fn cases() -> u32 {
    std::env::var("MIRAI_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

/// The ends a hostile stream may hit: fresh host, fresh daemon, and both after a handshake.
fn targets() -> Vec<Conn> {
    let config = Config { max_frame: 1 << 16, ..Config::default() };
    let mut pair = Pair::new(config);
    pair.handshake();
    vec![Conn::host(config, 0), Conn::daemon(config, 0, daemon_hello(b"")).unwrap(), pair.host, pair.daemon]
}

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

fn run<S: Strategy>(strategy: S, test: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(RunnerConfig { cases: cases(), ..RunnerConfig::default() });
    runner
        .run(&strategy, |value| {
            test(value);
            Ok(())
        })
        .unwrap();
    eprintln!("fuzz: {} inputs, no crash", cases());
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0usize..4096, 0..8).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

#[test]
fn fuzz_arbitrary_bytes() {
    run((proptest::collection::vec(any::<u8>(), 0..2048), cuts()), |(bytes, cuts)| feed_all(&bytes, &cuts));
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

#[test]
fn fuzz_mutated_streams() {
    let base = encode_all(&every_message());
    let mutation = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    let strategy = (
        proptest::collection::vec(any::<prop::sample::Index>(), 1..6),
        proptest::collection::vec(mutation, 1..6),
        cuts(),
    );
    run(strategy, |(picks, mutations, cuts)| {
        // Start from a stream of a few valid messages in some order, then damage it.
        let msgs = every_message();
        let chosen: Vec<_> = picks.iter().map(|i| msgs[i.index(msgs.len())].clone()).collect();
        let mut bytes = if chosen.is_empty() { base.clone() } else { encode_all(&chosen) };
        for m in mutations {
            let len = bytes.len().max(1);
            match m {
                Mutation::Flip(i, b) if !bytes.is_empty() => bytes[i % len] ^= b | 1,
                Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
                Mutation::Remove(i) if !bytes.is_empty() => {
                    bytes.remove(i % len);
                }
                Mutation::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
                _ => {}
            }
        }
        feed_all(&bytes, &cuts);
    });
}
