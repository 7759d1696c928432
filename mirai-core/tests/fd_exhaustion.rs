//! A host raises the descriptor limit, and one that ran out of descriptors accepts the daemons
//! already queued as soon as descriptors free up, without waiting for another connection. In a
//! test binary of its own: it lowers this process's descriptor limit for good.

mod common;

use std::fs::File;
use std::time::{Duration, Instant};

use common::*;
use mirai_core::launch::CommandTemplate;
use mirai_core::{Host, HostOptions};

fn nofile() -> libc::rlimit {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct passed by reference.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim
}

fn set_nofile(lim: libc::rlimit) {
    // SAFETY: setrlimit reads the struct passed by reference.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

#[test]
fn accepting_resumes_when_descriptors_free_up() {
    capture_logs();
    // The first host of a process raises the soft limit to the hard one (up to a million).
    let hard = nofile().rlim_max;
    set_nofile(libc::rlimit { rlim_cur: 512.min(hard), rlim_max: hard });
    let host = Host::listen("tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    assert_eq!(nofile().rlim_cur, hard.min(1 << 20), "the soft limit was raised at listen");
    // The daemon starts now, while this process can still spawn, and dials a moment later,
    // once the descriptors are gone.
    let script = format!("sleep 1; exec {} \"$0\"", daemon_bin());
    let d =
        mirai_core::launch::launch_local(&host, 1, &CommandTemplate::new("sh", &["-c", &script, "{url}"]))
            .unwrap();

    set_nofile(libc::rlimit { rlim_cur: 256, rlim_max: 256 });
    let mut hoard = Vec::new();
    while let Ok(f) = File::open("/dev/null") {
        hoard.push(f);
    }
    assert!(logged("accept failed, retrying"), "the host never ran out");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(host.counters().connections, 0);

    let freed = Instant::now();
    hoard.clear();
    assert!(host.wait_connections(1, Some(PATIENCE)), "the queued daemon was never accepted");
    eprintln!("accepted {:.0?} after descriptors freed up", freed.elapsed());
    assert!(freed.elapsed() < Duration::from_secs(2));
    assert_eq!(value(&submit(&host, "echo:in")), "in");
    host.exit_daemons();
    assert!(d[0].wait(PATIENCE).is_some());
}
