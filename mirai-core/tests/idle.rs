//! An idle host and an idle daemon sleep in the kernel: no polling loops. This test has its own
//! binary so that no other test's work is counted against this process.

mod common;

use std::time::Duration;

use common::*;

/// CPU time (user + system) of a process, in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn idle_host_and_daemon_use_no_cpu() {
    let host = host();
    let d = launch(&host, 1, &[]);
    assert_eq!(value(&submit(&host, "echo:warm")), "warm");
    let (me, daemon) = (std::process::id(), d[0].pid());
    let before = (cpu_ticks(me), cpu_ticks(daemon));
    std::thread::sleep(Duration::from_secs(2));
    let after = (cpu_ticks(me), cpu_ticks(daemon));
    // A tick is 10 ms; a busy loop would burn about 200 per process in 2 s.
    assert!(after.0 - before.0 <= 2, "host process used {} ticks idle", after.0 - before.0);
    assert!(after.1 - before.1 <= 2, "daemon used {} ticks idle", after.1 - before.1);
}
