//! Helpers for tests that run real daemon processes against a real host.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mirai_core::launch::{CommandTemplate, LocalDaemon, spawn_local};
use mirai_core::{Host, HostOptions, SubmitOptions, Task, TaskStatus};

/// Generous bound for anything that should happen "at once"; only hit when something hangs.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn daemon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mirai-test-daemon")
}

/// A fresh abstract-socket URL, unique per test process and call.
pub fn unique_url() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "abstract://mirai-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn template(args: &[&str]) -> CommandTemplate {
    let mut all = vec!["{url}"];
    all.extend_from_slice(args);
    CommandTemplate::new(daemon_bin(), &all)
}

/// Starts `n` test daemons with `args` against `host` and waits until all are connected.
pub fn launch(host: &Host, n: usize, args: &[&str]) -> Vec<LocalDaemon> {
    let before = host.counters().connections;
    let daemons = spawn_local(&host.url(), &template(args), n).expect("spawn daemons");
    assert!(
        host.wait_connections(before + n as u64, Some(PATIENCE)),
        "daemons did not connect: {:?}",
        host.counters()
    );
    daemons
}

pub fn host() -> Host {
    Host::listen(&unique_url(), HostOptions::default()).expect("listen")
}

pub fn submit(host: &Host, text: &str) -> Task {
    host.submit(text.as_bytes().to_vec(), SubmitOptions::default())
        .expect("submit")
}

/// Waits for a task and returns its status and payload as text.
pub fn outcome(task: &Task) -> (TaskStatus, String) {
    assert!(
        task.wait(Some(PATIENCE)),
        "task {} did not resolve",
        task.id()
    );
    let payload = task.take_payload().unwrap_or_default();
    (task.status().unwrap(), String::from_utf8(payload).unwrap())
}

pub fn value(task: &Task) -> String {
    match outcome(task) {
        (TaskStatus::Value, text) => text,
        other => panic!("task {} ended {other:?}", task.id()),
    }
}
