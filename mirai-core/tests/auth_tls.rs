//! TLS with generated and user-supplied certificates, and daemon authentication, over real
//! handshakes.

mod common;

use std::sync::Mutex;

use common::*;
use mirai_core::auth::Auth;
use mirai_core::tls::{ServerIdentity, generate};
use mirai_core::{DaemonOptions, Error, Host, HostOptions, Url};
use mirai_proto::{ExitReason, Message};
use pkcs8::PrivateKeyInfoRef;
use pkcs8::der::SecretDocument;
use pkcs8::der::pem::LineEnding;
use pkcs8::pkcs5::{pbes2, scrypt};

#[test]
fn tls_host_serves_daemons_given_its_ca() {
    for url in ["tls+tcp://127.0.0.1:0", "tls+tcp://localhost:0"] {
        let host = Host::listen(url, HostOptions::default()).unwrap();
        assert!(host.url().starts_with("tls+tcp://"));
        let ca = host.tls_ca_pem().unwrap();
        assert!(ca.contains("BEGIN CERTIFICATE") && !ca.contains("PRIVATE KEY"));
        let _d = launch(&host, 2, &[]);
        let tasks: Vec<_> = (0..100).map(|i| submit(&host, &format!("echo:{i}"))).collect();
        for (i, t) in tasks.iter().enumerate() {
            assert_eq!(value(t), i.to_string(), "{url}");
        }
        // A large payload crosses TLS records and partial writes intact.
        let big = format!("echo:{}", "x".repeat(5 << 20));
        assert_eq!(value(&submit(&host, &big)).len(), 5 << 20);
    }
}

fn tls_failure(host: &Host, url: &str, ca: &str) -> String {
    let options = DaemonOptions {
        tls_ca: Some(ca.to_string()),
        secret: host.secret().map(<[u8]>::to_vec),
        ..DaemonOptions::default()
    };
    match run_daemon(url, options) {
        Err(e) => e.to_string(),
        Ok(code) => panic!("daemon connected to {url} ({code:?})"),
    }
}

#[test]
fn wrong_ca_is_refused() {
    let host = Host::listen("tls+tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    let other = generate(&Url::parse("tls+tcp://127.0.0.1:0").unwrap()).unwrap();
    let msg = tls_failure(&host, &host.url(), &other.ca_pem);
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    assert_eq!(host.counters().cumulative, 0);
}

#[test]
fn name_mismatch_is_refused() {
    let host = Host::listen("tls+tcp://localhost:0", HostOptions::default()).unwrap();
    let url = format!("tls+tcp://127.0.0.1:{}", port_of(&host));
    let msg = tls_failure(&host, &url, host.tls_ca_pem().unwrap());
    assert!(msg.contains("not valid for name"), "{msg}");
}

#[test]
fn expired_certificate_is_refused() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.not_before = rcgen::date_time_ymd(2020, 1, 1);
    ca.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let identity = ServerIdentity {
        cert_chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        key_password: None,
        ca_pem: ca.pem(),
    };
    let options = HostOptions { tls: Some(identity), ..HostOptions::default() };
    let host = Host::listen("tls+tcp://127.0.0.1:0", options).unwrap();
    let msg = tls_failure(&host, &host.url(), host.tls_ca_pem().unwrap());
    assert!(msg.contains("certificate expired"), "{msg}");
}

#[test]
fn user_supplied_certificate_and_bad_material() {
    let mine = generate(&Url::parse("tls+tcp://127.0.0.1:0").unwrap()).unwrap();
    let options = HostOptions { tls: Some(mine.clone()), ..HostOptions::default() };
    let host = Host::listen("tls+tcp://127.0.0.1:0", options).unwrap();
    assert_eq!(host.tls_ca_pem(), Some(mine.ca_pem.as_str()));
    let _d = launch(&host, 1, &[]);
    assert_eq!(value(&submit(&host, "echo:mine")), "mine");

    let garbage = ServerIdentity { cert_chain_pem: "not a certificate".into(), ..mine };
    let err =
        Host::listen("tls+tcp://127.0.0.1:0", HostOptions { tls: Some(garbage), ..HostOptions::default() })
            .err()
            .unwrap();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}

/// A PKCS#8 key in PEM encrypted with `password` under `params`, as `openssl pkcs8 -topk8 -v2 ...`
/// or `openssl genpkey -aes256` write it.
fn encrypt_key(key_pem: &str, params: pbes2::Parameters, password: &str) -> String {
    let (label, der) = SecretDocument::from_pem(key_pem).unwrap();
    assert_eq!(label, "PRIVATE KEY");
    let info = PrivateKeyInfoRef::try_from(der.as_bytes()).unwrap();
    let encrypted = info.encrypt_with_params(params, password).unwrap();
    encrypted.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF).unwrap().to_string()
}

const SALT: &[u8] = b"0123456789abcdef";
const IV: [u8; 16] = *b"fedcba9876543210";

#[test]
fn encrypted_key_with_its_password_serves_daemons() {
    let mine = generate(&Url::parse("tls+tcp://127.0.0.1:0").unwrap()).unwrap();
    let schemes = [
        // openssl's defaults: PBKDF2-SHA256 with 2048 iterations, AES-256-CBC or AES-128-CBC.
        pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(2048, SALT, IV).unwrap(),
        pbes2::Parameters::generate_pbkdf2_sha256_aes128cbc(2048, SALT, IV).unwrap(),
        // `openssl pkcs8 -topk8 -scrypt`, with a small cost to keep the test quick.
        pbes2::Parameters::generate_scrypt_aes256cbc(scrypt::Params::new(10, 8, 1).unwrap(), SALT, IV)
            .unwrap(),
    ];
    for params in schemes {
        let identity = ServerIdentity {
            key_pem: encrypt_key(&mine.key_pem, params, "correct horse"),
            key_password: Some(b"correct horse".to_vec()),
            ..mine.clone()
        };
        assert!(identity.key_pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let options = HostOptions { tls: Some(identity), ..HostOptions::default() };
        let host = Host::listen("tls+tcp://127.0.0.1:0", options).unwrap();
        let _d = launch(&host, 1, &[]);
        assert_eq!(value(&submit(&host, "echo:decrypted")), "decrypted");
    }

    // A password given with a plain key is ignored.
    let plain = ServerIdentity { key_password: Some(b"unused".to_vec()), ..mine };
    let host =
        Host::listen("tls+tcp://127.0.0.1:0", HostOptions { tls: Some(plain), ..HostOptions::default() })
            .unwrap();
    let _d = launch(&host, 1, &[]);
    assert_eq!(value(&submit(&host, "echo:plain")), "plain");
}

#[test]
fn encrypted_key_problems_fail_clearly() {
    let mine = generate(&Url::parse("tls+tcp://127.0.0.1:0").unwrap()).unwrap();
    let params = pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(2048, SALT, IV).unwrap();
    let encrypted = encrypt_key(&mine.key_pem, params, "correct horse");
    let listen = |key_pem: &str, key_password: Option<&str>| {
        let identity = ServerIdentity {
            key_pem: key_pem.to_string(),
            key_password: key_password.map(|p| p.as_bytes().to_vec()),
            ..mine.clone()
        };
        Host::listen("tls+tcp://127.0.0.1:0", HostOptions { tls: Some(identity), ..HostOptions::default() })
            .err()
            .expect("the host started")
    };

    let err = listen(&encrypted, None);
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("encrypted") && err.to_string().contains("password is needed"), "{err}");

    for wrong in ["correct horse battery", "", "Correct horse"] {
        let err = listen(&encrypted, Some(wrong));
        assert!(matches!(err, Error::Tls(_)), "{err}");
        assert!(err.to_string().contains("could not decrypt the private key: wrong password?"), "{err}");
    }

    // OpenSSL's legacy encryption: a pointer to the conversion, password or not.
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                  DEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n\
                  -----END RSA PRIVATE KEY-----\n";
    for password in [None, Some("correct horse")] {
        let err = listen(legacy, password);
        assert!(matches!(err, Error::NotSupported(_)), "{err}");
        assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
    }

    // Damaged PEM, and a BEGIN line with no END.
    let damaged = encrypted.replacen("MI", "!!", 1);
    let err = listen(&damaged, Some("correct horse"));
    assert!(err.to_string().contains("reading the encrypted private key"), "{err}");
    let cut = &encrypted[..encrypted.find("-----END").unwrap()];
    let err = listen(cut, Some("correct horse"));
    assert!(err.to_string().contains("no -----END ENCRYPTED PRIVATE KEY----- line"), "{err}");
}

#[test]
fn plaintext_and_tls_mixups_fail_clearly() {
    // A plaintext daemon at a TLS port.
    let tls_host = Host::listen("tls+tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    let plain_url = format!("tcp://127.0.0.1:{}", port_of(&tls_host));
    let options = DaemonOptions { secret: tls_host.secret().map(<[u8]>::to_vec), ..DaemonOptions::default() };
    let msg = run_daemon(&plain_url, options).unwrap_err().to_string();
    assert!(msg.contains("tls+tcp://"), "the error suggests TLS: {msg}");
    assert_eq!(tls_host.counters().cumulative, 0);

    // A TLS daemon at a plaintext port.
    let plain_host = Host::listen("tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    let tls_url = format!("tls+tcp://127.0.0.1:{}", port_of(&plain_host));
    let msg = tls_failure(&plain_host, &tls_url, tls_host.tls_ca_pem().unwrap());
    assert!(msg.contains("without TLS"), "the error suggests plain TCP: {msg}");

    // TLS URL but no CA given.
    let msg = run_daemon(&tls_host.url(), DaemonOptions::default()).unwrap_err().to_string();
    assert!(msg.contains("CA certificate"), "{msg}");
}

#[test]
fn daemons_must_prove_the_secret() {
    capture_logs();
    let host = Host::listen("tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    let _d = launch(&host, 1, &[]);
    let port = port_of(&host);
    let before = host.counters();

    // No proof, and a proof made with the wrong secret.
    let refused = |r: Result<std::net::TcpStream, Message>| match r {
        Err(Message::Exit { reason: ExitReason::AuthFailed, .. }) => {}
        Err(other) => panic!("expected AuthFailed, got {other:?}"),
        Ok(_) => panic!("accepted without the secret"),
    };
    refused(raw_handshake(port, |_, _| Vec::new()));
    refused(raw_handshake(port, |d, h| daemon_proof(b"not the secret at all", d, h)));
    // The host's own proof, reflected back: proofs name their role.
    refused(raw_handshake(port, |_, h| h[32..].to_vec()));

    // A proof recorded from one connection, replayed on another.
    let secret = host.secret().unwrap().to_vec();
    let recorded = Mutex::new(Vec::new());
    let accepted = raw_handshake(port, |d, h| {
        let p = daemon_proof(&secret, d, h);
        *recorded.lock().unwrap() = p.clone();
        p
    });
    assert!(accepted.is_ok());
    let replay = recorded.lock().unwrap().clone();
    refused(raw_handshake(port, move |_, _| replay.clone()));
    assert!(logged("failed authentication"));

    // Refusals touched no counter; the one good connection counted.
    let after = host.counters();
    assert_eq!(after.cumulative, before.cumulative + 1);
    assert_eq!(value(&submit(&host, "echo:still here")), "still here");

    // A daemon given no secret at all is told why.
    let msg = run_daemon(&host.url(), DaemonOptions::default()).unwrap_err().to_string();
    assert!(msg.contains("AuthFailed"), "{msg}");
}

#[test]
fn authentication_can_be_turned_off_explicitly() {
    let options = HostOptions { auth: Auth::Disabled, ..HostOptions::default() };
    let host = Host::listen("tcp://127.0.0.1:0", options).unwrap();
    assert!(host.secret().is_none());
    let _daemon = raw_handshake(port_of(&host), |_, _| Vec::new()).expect("accepted without a proof");
    assert!(host.wait_connections(1, Some(PATIENCE)));
    let short = HostOptions { auth: Auth::Secret(b"short".to_vec()), ..HostOptions::default() };
    assert!(matches!(Host::listen("tcp://127.0.0.1:0", short), Err(Error::InvalidArgument(_))));
}
