//! What the fuzz targets share (mirai-proto's decoder target and mirai-core's authentication
//! target, which includes this file by path): the runner, chunk boundaries, and damage done to
//! valid byte streams. `MIRAI_FUZZ_CASES` sets the number of inputs per target.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

pub fn cases() -> u32 {
    std::env::var("MIRAI_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

/// Runs `test` on `cases()` inputs from `strategy`, then reports `what` held for all of them.
pub fn run<S: Strategy>(strategy: S, what: &str, test: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    let config = RunnerConfig { cases: cases(), failure_persistence: None, ..RunnerConfig::default() };
    TestRunner::new(config)
        .run(&strategy, |value| {
            test(value);
            Ok(())
        })
        .unwrap();
    eprintln!("fuzz: {} inputs, {what}", cases());
}

/// Sorted offsets below `max` at which to cut a stream into chunks.
pub fn cuts(max: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0usize..max, 0..8).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

#[derive(Debug, Clone)]
pub enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

/// Between `min` and 5 mutations.
pub fn mutations(min: usize) -> impl Strategy<Value = Vec<Mutation>> {
    let m = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    proptest::collection::vec(m, min..6)
}

/// `bytes` with each mutation applied in turn (positions taken modulo the current length).
pub fn damage(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(i, b) if !bytes.is_empty() => bytes[i % len] ^= b | 1,
            Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Mutation::Remove(i) if !bytes.is_empty() => {
                bytes.remove(i % len);
            }
            Mutation::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
            _ => {}
        }
    }
    bytes
}
