//! Zero-config TLS: certificates made at host start (a short-lived CA and a leaf signed by it),
//! rustls configurations for both ends, and PEM handling for user-supplied material. The host's
//! private keys never leave the host; daemons get only the CA certificate.

use std::sync::Arc;

use pkcs8::der::Document;
use pkcs8::{EncryptedPrivateKeyInfoRef, PrivateKeyInfoRef};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use time::{Duration as Days, OffsetDateTime};

use crate::error::Error;
use crate::identity::hostname;
use crate::url::Url;

/// Environment variable through which launchers hand daemons the CA certificate (PEM).
pub const CA_ENV: &str = "MIRAI_TLS_CA";

/// How long generated certificates are valid: enough for any pool, short enough that a leaked
/// CA certificate soon means nothing. A day of slack before now tolerates clock skew.
const VALIDITY_DAYS: i64 = 30;

/// A host's TLS material, in PEM.
#[derive(Clone)]
pub struct ServerIdentity {
    /// The certificate chain, leaf first.
    pub cert_chain_pem: String,
    /// The private key: PKCS#8, PKCS#1 or SEC1, or PKCS#8 encrypted with `key_password`.
    pub key_pem: String,
    /// Decrypts an `ENCRYPTED PRIVATE KEY`; ignored for a plain key.
    pub key_password: Option<Vec<u8>>,
    /// The certificate daemons must trust: the generated CA, or what the user supplied.
    pub ca_pem: String,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity").field("ca_pem", &self.ca_pem).finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{what}: {e}"))
}

/// The names a certificate for `url` must carry: its host, or for a listener on every interface,
/// this machine's name and the loopback addresses.
fn names_for(url: &Url) -> Vec<String> {
    match url.host_port() {
        Some((host, _)) if !host.is_empty() => {
            vec![host.trim_start_matches('[').trim_end_matches(']').to_string()]
        }
        _ => {
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
            let h = hostname();
            if !h.is_empty() {
                names.push(h);
            }
            names
        }
    }
}

/// Generates a CA and a leaf for `url`'s host, valid from a day ago for 30 days.
pub fn generate(url: &Url) -> Result<ServerIdentity, Error> {
    let now = OffsetDateTime::now_utc();
    let names = names_for(url);

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("CA parameters", e))?;
    // A unique name: verifiers look issuers up by name, so two hosts' CAs must not share one.
    let tag = crate::auth::to_hex(&crate::auth::random(8));
    ca.distinguished_name.push(DnType::CommonName, format!("mirai ephemeral CA {tag}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let (not_before, not_after) = (now - Days::days(1), now + Days::days(VALIDITY_DAYS));
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
    let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(|e| tls_err("CA certificate", e))?;

    let mut leaf = CertificateParams::new(names.clone()).map_err(|e| tls_err("certificate parameters", e))?;
    leaf.distinguished_name.push(DnType::CommonName, names[0].clone());
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let leaf_key = KeyPair::generate().map_err(|e| tls_err("key", e))?;
    let leaf = leaf.signed_by(&leaf_key, &ca).map_err(|e| tls_err("certificate", e))?;

    Ok(ServerIdentity {
        cert_chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
        key_pem: leaf_key.serialize_pem(),
        key_password: None,
        ca_pem: ca.pem(),
    })
}

/// Certificates from PEM text.
fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(&format!("reading the {what}"), e))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("the {what} holds no PEM certificate")));
    }
    Ok(certs)
}

/// The host's rustls configuration from a PEM chain and key; `key_password` decrypts an
/// encrypted PKCS#8 key and is ignored for a plain one.
pub fn server_config(
    cert_chain_pem: &str,
    key_pem: &str,
    key_password: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, Error> {
    let chain = certs(cert_chain_pem, "certificate chain")?;
    let key = private_key(key_pem, key_password)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("certificate and key", e))?;
    // Authentication is bound to the session's exported keys, which TLS 1.2 makes unique to
    // the session only with the extended master secret.
    config.require_ems = true;
    Ok(Arc::new(config))
}

const ENCRYPTED_BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const ENCRYPTED_END: &str = "-----END ENCRYPTED PRIVATE KEY-----";
/// How to turn a key this cannot read into one it can (PBES2: PBKDF2-SHA256 and AES-256-CBC).
const CONVERT: &str = "convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out key-pkcs8.pem`";

/// The private key in `pem`: plain, or an encrypted PKCS#8 block (PBES2 with PBKDF2 or scrypt,
/// and AES) decrypted with `password`.
fn private_key(pem: &str, password: Option<&[u8]>) -> Result<PrivateKeyDer<'static>, Error> {
    // Legacy OpenSSL encryption (PEM headers, MD5-derived key) is weak and not worth reading.
    if pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Error::NotSupported(format!(
            "private keys in OpenSSL's legacy encrypted format (Proc-Type: 4,ENCRYPTED): {CONVERT}"
        )));
    }
    let Some(start) = pem.find(ENCRYPTED_BEGIN) else {
        return PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| tls_err("reading the private key", e));
    };
    let end = pem[start..]
        .find(ENCRYPTED_END)
        .map(|i| start + i + ENCRYPTED_END.len())
        .ok_or_else(|| Error::Tls(format!("reading the encrypted private key: no {ENCRYPTED_END} line")))?;
    // Decoded to DER first: der's PEM reader cannot parse this structure in one pass.
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::Tls(format!(
            "reading the encrypted private key: {e} (readable: PBES2 with PBKDF2 or scrypt, and AES; {CONVERT})"
        ))
    };
    let (_, der) = Document::from_pem(&pem[start..end]).map_err(|e| unreadable(&e))?;
    let encrypted = EncryptedPrivateKeyInfoRef::try_from(der.as_bytes()).map_err(|e| unreadable(&e))?;
    let Some(password) = password else {
        return Err(Error::InvalidArgument(
            "the private key is encrypted (ENCRYPTED PRIVATE KEY): a password is needed to decrypt it".into(),
        ));
    };
    let wrong = |e: &dyn std::fmt::Display| {
        Error::Tls(format!("could not decrypt the private key: wrong password? ({e})"))
    };
    let plain = encrypted.decrypt(password).map_err(|e| match e {
        // A wrong password shows as bad padding, or rarely as plaintext that is not DER.
        pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::DecryptFailed) | pkcs8::Error::Asn1(_) => {
            wrong(&e)
        }
        _ => Error::Tls(format!("could not decrypt the private key: {e} ({CONVERT})")),
    })?;
    PrivateKeyInfoRef::try_from(plain.as_bytes()).map_err(|e| wrong(&e))?;
    Ok(PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into()))
}

/// A daemon's rustls configuration: trust exactly the given CA certificate(s).
pub fn client_config(ca_pem: &str) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem, "CA certificate")? {
        roots.add(cert).map_err(|e| tls_err("CA certificate", e))?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // As for the host: exported keys unique to the session, also under TLS 1.2.
    config.require_ems = true;
    Ok(Arc::new(config))
}

/// The name a daemon checks the host's certificate against: the URL's host.
pub fn server_name(url: &Url) -> Result<ServerName<'static>, Error> {
    let Some((host, _)) = url.host_port() else {
        return Err(Error::InvalidUrl(format!("{url}: TLS needs a tls+tcp:// or wss:// URL")));
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let bare = if bare.is_empty() { "127.0.0.1" } else { bare };
    ServerName::try_from(bare.to_string()).map_err(|e| Error::InvalidUrl(format!("{url}: {e}")))
}
