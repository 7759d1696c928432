//! `mirai_host_options_set_tls`'s key password through the C ABI: a host with an encrypted key serves
//! a daemon over a real TLS handshake; a missing or wrong password fails with a clear message.

use std::ffi::{CStr, CString, c_char};

use mirai::*;
use mirai_core::tls::generate;
use mirai_core::{Daemon, DaemonOptions, Evaluation, Evaluator, Interrupt, Url};
use mirai_proto::Status;
use pkcs8::PrivateKeyInfoRef;
use pkcs8::der::SecretDocument;
use pkcs8::der::pem::LineEnding;
use pkcs8::pkcs5::pbes2;

struct Echo;

impl Evaluator for Echo {
    fn evaluate(&mut self, payload: Vec<u8>, _: bool, _: &Interrupt) -> Evaluation {
        Evaluation { status: Status::Value, payload }
    }
}

fn last_error() -> String {
    let mut buf = vec![0u8; mirai_last_error(std::ptr::null_mut(), 0) + 1];
    mirai_last_error(buf.as_mut_ptr().cast(), buf.len());
    CStr::from_bytes_until_nul(&buf).unwrap().to_string_lossy().into_owned()
}

fn text(ptr: *const c_char) -> String {
    // SAFETY: a non-NULL string the host owns, read while it lives.
    unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_string()
}

/// Listens at a TLS URL with this chain, key and password; the host, or the code and message.
fn listen(
    chain: &CStr,
    key: &CStr,
    password: Option<&CStr>,
) -> Result<*mut mirai_host, (mirai_result, String)> {
    let opts = mirai_host_options_new();
    let set = mirai_host_options_set_tls(
        opts,
        chain.as_ptr(),
        key.as_ptr(),
        std::ptr::null(),
        password.map_or(std::ptr::null(), CStr::as_ptr),
    );
    assert_eq!(set, mirai_result::Ok, "{}", last_error());
    let mut host: *mut mirai_host = std::ptr::null_mut();
    let listened = mirai_host_listen(c"tls+tcp://127.0.0.1:0".as_ptr(), opts, &mut host);
    mirai_host_options_free(opts);
    match listened {
        mirai_result::Ok => Ok(host),
        code => {
            assert!(host.is_null(), "out-parameter untouched on failure");
            Err((code, last_error()))
        }
    }
}

#[test]
fn encrypted_key_through_host_options() {
    let identity = generate(&Url::parse("tls+tcp://127.0.0.1:0").unwrap()).unwrap();
    let (_, der) = SecretDocument::from_pem(&identity.key_pem).unwrap();
    let params =
        pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(2048, b"0123456789abcdef", *b"fedcba9876543210")
            .unwrap();
    // A password that is not UTF-8 goes through as its bytes.
    let password = b"s\xe9same";
    let encrypted = PrivateKeyInfoRef::try_from(der.as_bytes())
        .unwrap()
        .encrypt_with_params(params, password)
        .unwrap()
        .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .unwrap();
    let chain = CString::new(identity.cert_chain_pem).unwrap();
    let key = CString::new(encrypted.as_str()).unwrap();

    let (code, msg) = listen(&chain, &key, None).unwrap_err();
    assert_eq!(code, mirai_result::InvalidArgument, "{msg}");
    assert!(msg.contains("password is needed"), "{msg}");
    let (code, msg) = listen(&chain, &key, Some(c"sesame")).unwrap_err();
    assert_eq!(code, mirai_result::Cryptographic, "{msg}");
    assert!(msg.contains("wrong password?"), "{msg}");

    let host = listen(&chain, &key, Some(&CString::new(&password[..]).unwrap())).unwrap();
    let url = text(mirai_host_url(host));
    let options = DaemonOptions {
        tls_ca: Some(text(mirai_host_tls_ca(host))),
        secret: Some(mirai_core::auth::from_hex(&text(mirai_host_secret_hex(host))).unwrap()),
        ..DaemonOptions::default()
    };
    let daemon = std::thread::spawn(move || Daemon::run(&url, options, &mut Echo));
    let mut task: *mut mirai_task = std::ptr::null_mut();
    assert_eq!(
        mirai_host_submit(host, b"over TLS".as_ptr(), 8, std::ptr::null(), &mut task),
        mirai_result::Ok
    );
    assert_eq!(mirai_task_wait(task, 20_000), mirai_result::Ok, "{}", last_error());
    let mut out = mirai_bytes { data: std::ptr::null_mut(), len: 0 };
    assert_eq!(mirai_task_take_result(task, &mut out), mirai_result::Ok);
    // SAFETY: `out` holds `len` bytes from the library until freed below.
    assert_eq!(unsafe { std::slice::from_raw_parts(out.data, out.len) }, b"over TLS");
    mirai_bytes_free(&mut out);
    mirai_task_free(task);
    assert_eq!(mirai_host_exit_daemons(host), mirai_result::Ok);
    daemon.join().unwrap().unwrap();
    mirai_host_free(host);
}
