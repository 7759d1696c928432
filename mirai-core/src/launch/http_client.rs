//! A minimal HTTP/1.1 client for launch requests: one request per connection, over TLS
//! (`https://`, the server verified against the system's CA bundle) or plain `http://` to a
//! loopback address only, since requests carry tokens, cookies and the host's secret.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::error::Error;

/// How long a whole request may take: connecting, sending, and reading the answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read (head and body); launch APIs answer with a few hundred bytes.
const MAX_RESPONSE: usize = 1 << 20;

/// Where the system's CA bundle usually is (Debian and Ubuntu, Fedora and RHEL, SUSE, Alpine),
/// unless `SSL_CERT_FILE` names one, as for OpenSSL.
const CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// One request within 5 s: the status and the body (decoded from chunked transfer encoding;
/// bytes that are not UTF-8 replaced). `https://` verifies the server with the system's CA
/// bundle (or the file `SSL_CERT_FILE` names); `http://` must resolve to loopback addresses.
/// Header names, values and the method are refused if they could end a line early.
pub fn exchange(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: &str,
) -> Result<(u16, String), Error> {
    send(url, method, headers, body, None)
}

/// [`exchange`], trusting only `ca_pem` for `https://` when given.
fn send(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: &str,
    ca_pem: Option<&str>,
) -> Result<(u16, String), Error> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(Error::NotSupported(format!(
            "{url}: the HTTP launcher speaks https:// and http:// only"
        )));
    };
    let (authority, path) =
        rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    if authority.is_empty() || url.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(Error::InvalidArgument(format!("{url:?} is not a valid URL")));
    }
    check_token("method", method)?;
    for (k, v) in headers {
        check_token("header name", k)?;
        if v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(Error::InvalidArgument(format!("the value of header {k} holds a line break or NUL")));
        }
    }
    let (host, port) = host_port(authority, if tls { 443 } else { 80 })?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| Error::io(format!("cannot resolve {host}"), e))?
        .collect();
    if !tls && addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(Error::NotSupported(format!(
            "{url}: plain http:// is allowed only to this machine (a loopback address), since the \
             request carries credentials and the host's secret; use https://"
        )));
    }
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");

    let fail = |e| Error::io(format!("HTTP request to {url}"), e);
    let deadline = Instant::now() + TIMEOUT;
    let tcp = connect(&addrs, deadline).map_err(fail)?;
    tcp.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
    let timer = tcp.try_clone().map_err(fail)?;
    let response = if tls {
        let config = client_config(ca_pem)?;
        let name = ServerName::try_from(host.clone())
            .map_err(|e| Error::InvalidArgument(format!("{url}: {host} is not a server name: {e}")))?;
        let conn = ClientConnection::new(config, name).map_err(|e| Error::Tls(format!("{url}: {e}")))?;
        let mut stream = StreamOwned::new(conn, Plain(tcp));
        transfer(&mut stream, &timer, &head, body, deadline).map_err(fail)?
    } else {
        transfer(&mut Plain(tcp), &timer, &head, body, deadline).map_err(fail)?
    };
    parse_response(url, &response)
}

/// A method or header name: an HTTP token (letters, digits and ``!#$%&'*+-.^_`|~``).
fn check_token(what: &str, s: &str) -> Result<(), Error> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
        return Err(Error::InvalidArgument(format!("{s:?} is not a valid HTTP {what}")));
    }
    Ok(())
}

/// The host (without IPv6 brackets) and port of `authority`.
fn host_port(authority: &str, default: u16) -> Result<(String, u16), Error> {
    let bad = || Error::InvalidArgument(format!("{authority:?} is not host[:port]"));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, p.parse().map_err(|_| bad())?),
        _ => (authority, default),
    };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Trusts `ca_pem`, or else the system's CA bundle.
fn client_config(ca_pem: Option<&str>) -> Result<Arc<ClientConfig>, Error> {
    let pem = match ca_pem {
        Some(p) => p.as_bytes().to_vec(),
        None => {
            let path = std::env::var("SSL_CERT_FILE")
                .ok()
                .or_else(|| {
                    CA_BUNDLES.iter().find(|p| std::path::Path::new(p).exists()).map(|p| p.to_string())
                })
                .ok_or_else(|| {
                    Error::Tls("no CA bundle found for https://: set SSL_CERT_FILE to one (PEM)".into())
                })?;
            std::fs::read(&path).map_err(|e| Error::io(format!("cannot read the CA bundle {path}"), e))?
        }
    };
    let mut roots = RootCertStore::empty();
    // A system bundle may hold certificates webpki cannot use; the others still count.
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
    if roots.is_empty() {
        return Err(Error::Tls("the CA bundle holds no usable certificate".into()));
    }
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to the first of `addrs` that answers before `deadline`.
fn connect(addrs: &[SocketAddr], deadline: Instant) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"));
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A socket written with `write` only: std sends that with `MSG_NOSIGNAL`, while the
/// `write_vectored` rustls would use is a plain `writev`, which raises SIGPIPE in a process
/// (a C or R host) that has not ignored it.
struct Plain(TcpStream);

impl Read for Plain {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Plain {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the request and reads until the server closes the connection (the request said
/// `Connection: close`), at most `MAX_RESPONSE` bytes.
fn transfer(
    stream: &mut (impl Read + Write),
    timer: &TcpStream,
    head: &str,
    body: &str,
    deadline: Instant,
) -> std::io::Result<Vec<u8>> {
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no complete answer within 5 s"));
        }
        timer.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            // A TLS server that closes without close_notify; a cut-off body is caught by its length.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(out),
            Ok(n) if out.len() + n > MAX_RESPONSE => {
                return Err(std::io::Error::other(format!("the answer exceeds {} KiB", MAX_RESPONSE / 1024)));
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The status and body of a response.
fn parse_response(url: &str, response: &[u8]) -> Result<(u16, String), Error> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, content) = match split {
        Some(i) => (String::from_utf8_lossy(&response[..i]).into_owned(), &response[i + 4..]),
        None => (String::from_utf8_lossy(response).into_owned(), &response[..0]),
    };
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
        })
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if !chunked {
        let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
        if length.is_some_and(|n| content.len() < n) {
            return Err(Error::Launch(format!("{url}: the answer was cut off")));
        }
    }
    let content = if chunked { dechunk(content) } else { content.to_vec() };
    Ok((status, String::from_utf8_lossy(&content).into_owned()))
}

/// The body of a chunked transfer: each chunk is a hex size line, the bytes, CRLF; a zero
/// size ends it. A malformed or cut-off body yields what was read up to there.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else { return out };
        let line = String::from_utf8_lossy(&data[..eol]);
        let size = line.split(';').next().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size.filter(|&n| n > 0) else { return out };
        let start = eol + 2;
        let end = start.saturating_add(size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = data.get(end + 2..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(dechunk(b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\n\r\n"), b"Wikipedia ");
        assert_eq!(dechunk(b"4\r\nWi"), b"Wi", "a cut-off body keeps what arrived");
        assert_eq!(dechunk(b"zz\r\nxx"), b"", "a malformed size ends it");
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(host_port("example.org", 443).unwrap(), ("example.org".into(), 443));
        assert_eq!(host_port("example.org:8443", 443).unwrap(), ("example.org".into(), 8443));
        assert_eq!(host_port("[::1]:80", 443).unwrap(), ("::1".into(), 80));
        assert_eq!(host_port("[::1]", 443).unwrap(), ("::1".into(), 443));
        assert!(host_port("h:x", 80).is_err());
    }

    /// A server answering one connection with `reply` after reading the request's head;
    /// returns its port and the request it read.
    fn serve_once(reply: Vec<u8>) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // The whole request, body included: closing with bytes unread would reset the
            // connection under the client's feet.
            let complete = |r: &[u8]| {
                let Some(end) = r.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
                let head = String::from_utf8_lossy(&r[..end]).to_ascii_lowercase();
                let body: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                r.len() >= end + 4 + body
            };
            while !complete(&request) {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed mid-request");
                request.extend_from_slice(&buf[..n]);
            }
            let _ = s.write_all(&reply);
            request
        });
        (port, handle)
    }

    #[test]
    fn line_breaks_in_headers_and_methods_are_refused() {
        let url = "http://127.0.0.1:1/";
        let inject = vec![("X-A".to_string(), "1\r\nX-Injected: 2".to_string())];
        let err = exchange(url, "GET", &inject, "").unwrap_err();
        assert!(err.to_string().contains("line break"), "{err}");
        let bad_name = vec![("X-A\r\nX-B".to_string(), "1".to_string())];
        assert!(matches!(exchange(url, "GET", &bad_name, ""), Err(Error::InvalidArgument(_))));
        assert!(matches!(exchange(url, "GET /x HTTP/1.1\r\n", &[], ""), Err(Error::InvalidArgument(_))));
        assert!(matches!(exchange("http://127.0.0.1:1/a b", "GET", &[], ""), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn plain_http_goes_only_to_loopback() {
        let err = exchange("http://192.0.2.1:80/launch", "GET", &[], "").unwrap_err();
        assert!(matches!(err, Error::NotSupported(_)) && err.to_string().contains("https://"), "{err}");
        assert!(matches!(exchange("ftp://h/", "GET", &[], ""), Err(Error::NotSupported(_))));
        let (port, server) = serve_once(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok".to_vec());
        let answer = exchange(&format!("http://localhost:{port}/x"), "POST", &[], "body").unwrap();
        assert_eq!(answer, (201, "ok".to_string()));
        let request = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(request.starts_with("POST /x HTTP/1.1\r\n"), "{request}");
    }

    #[test]
    fn answers_are_limited_and_checked_for_length() {
        let mut big = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        big.resize(MAX_RESPONSE + 100_000, b'a');
        let (port, server) = serve_once(big);
        let err = exchange(&format!("http://127.0.0.1:{port}/"), "GET", &[], "").unwrap_err();
        assert!(err.to_string().contains("exceeds 1024 KiB"), "{err}");
        server.join().unwrap();
        let (port, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec());
        let err = exchange(&format!("http://127.0.0.1:{port}/"), "GET", &[], "").unwrap_err();
        assert!(err.to_string().contains("cut off"), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn https_verifies_the_server() {
        let id = crate::tls::generate(&crate::Url::parse("tls+tcp://127.0.0.1:0").unwrap()).unwrap();
        let config = crate::tls::server_config(&id.cert_chain_pem, &id.key_pem, None).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (tcp, _) = listener.accept().unwrap();
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut s = StreamOwned::new(conn, tcp);
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(n) if n > 0 => request.extend_from_slice(&buf[..n]),
                        // The second client rejects the certificate.
                        _ => break,
                    }
                }
                if !request.is_empty() {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure");
                    s.conn.send_close_notify();
                    let _ = s.flush();
                }
            }
        });
        let url = format!("https://127.0.0.1:{port}/launch");
        let answer = send(&url, "POST", &[], "{}", Some(&id.ca_pem)).unwrap();
        assert_eq!(answer, (200, "secure".to_string()));
        let other = crate::tls::generate(&crate::Url::parse("tls+tcp://127.0.0.1:0").unwrap()).unwrap();
        let err = send(&url, "POST", &[], "{}", Some(&other.ca_pem)).unwrap_err();
        assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
        server.join().unwrap();
    }
}
