//! Calls that wait for the host: from a completion callback (which runs on the host's I/O
//! thread) they return at once instead of stopping the host, and concurrent closes all return
//! only once the I/O thread serves no more.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mirai_core::transport::dial;
use mirai_core::{Host, HostOptions, SubmitOptions, Url};

/// Held while this binary starts a process: until its exec, a child holds a copy of every
/// descriptor, a closed host's listener included, so a dial could still connect to it.
static SPAWNING: Mutex<()> = Mutex::new(());

#[test]
fn a_callback_on_the_io_thread_is_never_made_to_wait() {
    let host = Arc::new(
        Host::listen(&unique_url(), HostOptions { memory_limit: Some(20), ..HostOptions::default() })
            .unwrap(),
    );
    let _d = {
        let _spawning = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
        launch(&host, 1, &[])
    };
    let busy = submit(&host, "sleep:3000");
    // Its timeout fires on the I/O thread, which then runs the callback.
    let (tx, rx) = mpsc::channel();
    let (h, pending) = (host.clone(), busy.clone());
    let callback = Box::new(move |_, _| {
        let started = Instant::now();
        let waited = pending.wait(None);
        let raced = h.race(std::slice::from_ref(&pending), None);
        let connected = h.wait_connections(5, None);
        let room = h.wait_capacity(None);
        let submitted = h.submit(b"echo:x".to_vec(), SubmitOptions::default()).err().map(|e| e.to_string());
        tx.send((waited, raced, connected, room, submitted, started.elapsed())).unwrap();
    });
    let options = SubmitOptions {
        timeout: Some(Duration::from_millis(100)),
        callback: Some(callback),
        ..SubmitOptions::default()
    };
    let _trigger = host.submit(b"echo:t".to_vec(), options).unwrap();
    // Puts the queue over its cap of 20 bytes.
    let filler = submit(&host, &format!("echo:{}", "f".repeat(30)));
    let (waited, raced, connected, room, submitted, took) =
        rx.recv_timeout(PATIENCE).expect("the callback ran");
    assert!(!waited && raced.is_none() && !connected && !room, "{waited} {raced:?} {connected} {room}");
    assert!(submitted.is_some_and(|e| e.contains("try_submit")), "submit at the cap was refused");
    assert!(took < Duration::from_secs(1), "the callback waited {took:?}");
    // The host carried on.
    assert_eq!(value(&busy), "slept");
    assert_eq!(value(&filler), "f".repeat(30));
}

#[test]
fn concurrent_closes_all_wait_until_the_host_serves_no_more() {
    for _ in 0..20 {
        let _spawning = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
        let url = unique_url();
        let host = Arc::new(Host::listen(&url, HostOptions::default()).unwrap());
        let closers: Vec<_> = (0..4)
            .map(|_| {
                let (host, url) = (host.clone(), Url::parse(&url).unwrap());
                std::thread::spawn(move || {
                    host.close();
                    // Once close returns, the listener is gone.
                    dial(&url, Duration::from_secs(1), None).is_err()
                })
            })
            .collect();
        for c in closers {
            assert!(c.join().unwrap(), "a close returned while the host still listened");
        }
    }
}
