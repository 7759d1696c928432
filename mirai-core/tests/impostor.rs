//! Daemons serve only a host that proves it holds their secret: after the real host exits, whoever
//! binds its URL gets no task evaluated, over every transport; a relay between two TLS sessions
//! fails; and the daemon comes back to the real host when it returns.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mirai_core::auth::Auth;
use mirai_core::tls::{ServerIdentity, client_config, server_config};
use mirai_core::transport::{Listener, Stream, dial};
use mirai_core::{Daemon, DaemonOptions, Error, Host, HostOptions, Url};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

const SECRET: &[u8] = b"the secret of the real host and its daemons";

fn real(url: &str, tls: Option<ServerIdentity>) -> Host {
    Host::listen(url, HostOptions { auth: Auth::Secret(SECRET.to_vec()), tls, ..HostOptions::default() })
        .expect("listen")
}

/// A host at `url` without the secret: one with authentication off, one with another secret.
/// Each gets `patience` to have its task evaluated; none may.
fn impostors_get_nothing(url: &str, patience: Duration) {
    for auth in [Auth::Disabled, Auth::Secret(b"a guess at the secret, long enough".to_vec())] {
        let what = format!("{auth:?} at {url}");
        let impostor = Host::listen(url, HostOptions { auth, ..HostOptions::default() }).expect("listen");
        let task = submit(&impostor, "echo:run this for me");
        assert!(!task.wait(Some(patience)), "{what}: the daemon evaluated the impostor's task");
        let c = impostor.counters();
        assert_eq!((c.connections, c.cumulative), (0, 0), "{what}: a daemon joined");
        drop(impostor);
    }
}

fn daemon_stays_loyal(first: &str, tls: Option<ServerIdentity>) {
    let host = real(first, tls.clone());
    let url = host.url();
    let d = mirai_core::launch::launch_local(&host, 1, &template(&["--autoexit=false"])).unwrap();
    assert!(host.wait_connections(1, Some(PATIENCE)), "{url}");
    assert_eq!(value(&submit(&host, "echo:first")), "first");
    drop(host);
    impostors_get_nothing(&url, Duration::from_millis(1500));
    assert!(d[0].wait(Duration::from_millis(10)).is_none(), "the daemon still waits for its host");
    let host = real(&url, tls);
    assert!(host.wait_connections(1, Some(PATIENCE)), "the daemon came back to {url}");
    assert_eq!(value(&submit(&host, "echo:back")), "back");
    host.exit_daemons();
    assert_eq!(exit_code(&d[0]), Some(0));
}

#[test]
fn impostor_at_an_abstract_name() {
    daemon_stays_loyal(&unique_url(), None);
}

#[test]
fn impostor_at_an_ipc_path() {
    let dir = tempfile::tempdir().unwrap();
    daemon_stays_loyal(&format!("ipc://{}", dir.path().join("host.sock").display()), None);
}

#[test]
fn impostor_at_a_tcp_port() {
    daemon_stays_loyal("tcp://127.0.0.1:0", None);
}

#[test]
fn impostor_at_a_tls_port() {
    // The real host's certificate is reused by the second real host, so the daemon's pinned CA
    // accepts it; the impostors generate their own.
    let identity = mirai_core::tls::generate(&Url::parse("tls+tcp://127.0.0.1:0").unwrap()).unwrap();
    daemon_stays_loyal("tls+tcp://127.0.0.1:0", Some(identity));
}

/// A CA and two certificates for `localhost` it signed: one for the real host, one for a relay
/// that also holds a certificate the daemons trust.
fn ca_and_two_leaves() -> (String, ServerIdentity, ServerIdentity) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf = || {
        let key = KeyPair::generate().unwrap();
        let cert =
            CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
        ServerIdentity {
            cert_chain_pem: format!("{}{}", cert.pem(), ca.pem()),
            key_pem: key.serialize_pem(),
            key_password: None,
            ca_pem: ca.pem(),
        }
    };
    (ca.pem(), leaf(), leaf())
}

/// Copies what `from` has to `to`; false once `from` has closed.
fn pump(from: &mut Stream, to: &mut Stream) -> bool {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                let mut rest = &buf[..n];
                while !rest.is_empty() {
                    match to.write(rest) {
                        Ok(k) => rest = &rest[k..],
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(1))
                        }
                        Err(_) => return false,
                    }
                }
                while let Err(e) = to.flush() {
                    if e.kind() != ErrorKind::WouldBlock {
                        return false;
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_relay_between_two_tls_sessions_fails_authentication() {
    capture_logs();
    let (ca, host_id, relay_id) = ca_and_two_leaves();
    let host = real("tls+tcp://localhost:0", Some(host_id));
    let host_url = Url::parse(&host.url()).unwrap();

    // The relay terminates the daemon's TLS with its own trusted certificate and opens its own
    // session to the host, passing the plaintext through both ways.
    let relay_config = server_config(&relay_id.cert_chain_pem, &relay_id.key_pem, None).unwrap();
    let (listener, relay_url) =
        Listener::bind(&Url::parse("tls+tcp://localhost:0").unwrap(), Some(relay_config)).unwrap();
    let to_host = client_config(&ca).unwrap();
    let relay = std::thread::spawn(move || {
        let deadline = Instant::now() + PATIENCE;
        let mut daemon_side = loop {
            match listener.accept() {
                Ok(s) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("relay accept: {e}"),
            }
        };
        let mut host_side = dial(&host_url, Duration::from_secs(5), Some(Arc::clone(&to_host))).unwrap();
        let mut relayed = false;
        while Instant::now() < deadline {
            let a = pump(&mut daemon_side, &mut host_side);
            let b = pump(&mut host_side, &mut daemon_side);
            relayed = true;
            if !(a && b) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        relayed
    });

    let options =
        DaemonOptions { secret: Some(SECRET.to_vec()), tls_ca: Some(ca), ..DaemonOptions::default() };
    let result = Daemon::run(&relay_url.to_string(), options.clone(), &mut Echo);
    match result {
        Err(Error::Refused(text)) => assert!(text.contains("could not prove"), "{text}"),
        other => panic!("the daemon served through the relay: {other:?}"),
    }
    assert!(relay.join().unwrap(), "the relay carried the handshake");
    assert_eq!(host.counters().cumulative, 0, "no daemon joined through the relay");

    // The same daemon, certificates and secret, dialling the host itself, are accepted.
    let direct = host.url();
    let serving = std::thread::spawn(move || Daemon::run(&direct, options, &mut Echo));
    assert!(host.wait_connections(1, Some(PATIENCE)));
    assert_eq!(value(&submit(&host, "direct")), "direct");
    host.exit_daemons();
    assert!(serving.join().unwrap().is_ok());
}
