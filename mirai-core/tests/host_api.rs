//! Host addresses and transports, RNG streams against R's, and idleness.

mod common;

use common::*;
use mirai_core::rng::{R_KIND_CODE, next_stream, stream_from_seed};
use mirai_core::{Error, Host, HostOptions};

#[test]
fn bad_urls_fail_before_anything_starts() {
    for url in ["localhost:5555", "udp://1.2.3.4:5", "tcp://nohost", "tcp://h:70000", "ipc://"] {
        match Host::listen(url, HostOptions::default()) {
            Err(Error::InvalidUrl(msg)) => assert!(msg.contains(url), "{msg}"),
            other => panic!("{url}: expected InvalidUrl, got {:?}", other.map(|h| h.url())),
        }
    }
}

#[test]
fn every_transport_serves_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let ipc = format!("ipc://{}/host.sock", dir.path().display());
    for url in [unique_url(), ipc, "tcp://127.0.0.1:0".to_string(), "tcp://[::1]:0".to_string()] {
        let host = match Host::listen(&url, HostOptions::default()) {
            Ok(h) => h,
            Err(e) if url.contains("::1") => {
                eprintln!("skipping IPv6: {e}");
                continue;
            }
            Err(e) => panic!("{url}: {e}"),
        };
        if url.ends_with(":0") {
            assert!(!host.url().ends_with(":0"), "port 0 is resolved: {}", host.url());
        }
        let _d = launch(&host, 1, &[]);
        assert_eq!(value(&submit(&host, "echo:over the wire")), "over the wire", "{url}");
    }
}

#[test]
fn address_in_use_is_reported() {
    let host = Host::listen("tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    let err = Host::listen(&host.url(), HostOptions::default()).err().unwrap();
    assert_eq!(err.code(), mirai_core::ErrorCode::AddressInUse, "{err}");
}

#[test]
fn ipc_socket_file_is_removed_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sock");
    let host = Host::listen(&format!("ipc://{}", path.display()), HostOptions::default()).unwrap();
    assert!(path.exists());
    drop(host);
    assert!(!path.exists());
}

/// Reads `tests/data/r_rng_streams.txt`: seed, then 5 × 7 words (`.Random.seed` after
/// `set.seed` and after 1 to 4 `nextRNGStream` calls), all produced by R itself.
fn r_reference() -> Vec<(i32, Vec<[u32; 7]>)> {
    include_str!("data/r_rng_streams.txt")
        .lines()
        .map(|line| {
            let nums: Vec<i64> = line.split_whitespace().map(|w| w.parse().unwrap()).collect();
            let streams = nums[1..].chunks(7).map(|c| std::array::from_fn(|i| c[i] as u32)).collect();
            (nums[0] as i32, streams)
        })
        .collect()
}

#[test]
fn streams_match_r() {
    for (seed, streams) in r_reference() {
        let mut s = stream_from_seed(seed).unwrap();
        for expected in &streams {
            assert_eq!(expected[0], R_KIND_CODE as u32);
            assert_eq!(&expected[1..], &s[..], "seed {seed}");
            s = next_stream(s);
        }
    }
}

#[test]
fn daemons_get_r_streams_in_connection_order() {
    let (seed, streams) = r_reference().into_iter().find(|(s, _)| *s == 1546).unwrap();
    let options = HostOptions { stream: stream_from_seed(seed), ..HostOptions::default() };
    let host = Host::listen(&unique_url(), options).unwrap();
    let _d = launch(&host, 4, &[]);
    // `everywhere` reaches each daemon once; each reports its id (its place in the connection
    // order) and the stream it was given.
    let reports: Vec<String> = host.everywhere(b"init", 1).unwrap().iter().map(value).collect();
    assert_eq!(reports.len(), 4);
    for report in reports {
        let (id, stream) = report.split_once(' ').unwrap();
        let k: usize = id.parse().unwrap();
        let expected = format!("{:?}", &streams[k][1..]);
        assert_eq!(stream, expected, "daemon {k} has R's nextRNGStream^{k}(set.seed({seed}))");
    }
}
