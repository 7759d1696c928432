//! The HTTP launcher: one request per daemon to an API that starts processes (R's
//! `http_config`; e.g. Posit Workbench's launcher). The body template's `%s` receives the
//! daemon's command line, JSON-escaped. The API runs the command, so the secret and CA travel in
//! it (as `env` assignments): use this launcher only with an API you trust, over a trusted
//! network.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::shell::{self, quote};
use super::{CommandTemplate, Target};
use crate::error::Error;

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `http://host:port/path`.
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    /// The request body, with `%s` where the command goes.
    pub body: String,
    /// Sent as `Cookie:`.
    pub cookie: Option<String>,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
}

/// The command the API should run: `env MIRAI_SECRET=... daemon URL`.
pub fn api_command(target: &Target, daemon: &CommandTemplate) -> String {
    let env: Vec<String> = target.env().iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
    let line = shell::command_line(daemon, &target.url);
    if env.is_empty() { line } else { format!("env {} {line}", env.join(" ")) }
}

/// Sends `n` launch requests; returns the response bodies. A status other than 2xx fails.
pub fn launch_http(
    target: &Target,
    daemon: &CommandTemplate,
    config: &HttpConfig,
    n: usize,
) -> Result<Vec<String>, Error> {
    if !config.body.contains("%s") {
        return Err(Error::InvalidArgument("the HTTP body template needs a %s for the command".into()));
    }
    let body = config.body.replacen("%s", &shell::json_escape(&api_command(target, daemon)), 1);
    (0..n).map(|_| request(config, &body)).collect()
}

fn request(config: &HttpConfig, body: &str) -> Result<String, Error> {
    let mut headers = config.headers.clone();
    if let Some(c) = &config.cookie {
        headers.push(("Cookie".into(), c.clone()));
    }
    if let Some(t) = &config.token {
        headers.push(("Authorization".into(), format!("Bearer {t}")));
    }
    let (status, content) = exchange(&config.url, &config.method, &headers, body)?;
    if !(200..300).contains(&status) {
        return Err(Error::Launch(format!("{} answered {status}: {}", config.url, content.trim())));
    }
    Ok(content)
}

/// How long a whole request may take: connecting, sending, and reading the answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// One HTTP/1.1 request to a plain `http://` URL, within 5 s: the status and the body (decoded
/// from chunked transfer encoding; bytes that are not UTF-8 replaced). Bindings whose launch
/// requests are built differently (R's `http_config`) use it directly.
pub fn exchange(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: &str,
) -> Result<(u16, String), Error> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::NotSupported(format!("{url}: the HTTP launcher speaks plain http:// only")))?;
    let (authority, path) =
        rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let fail = |e| Error::io(format!("HTTP request to {url}"), e);
    let deadline = Instant::now() + TIMEOUT;
    let mut stream = connect(authority, deadline).map_err(fail)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes())).map_err(fail)?;
    let response = read_until_closed(&mut stream, deadline).map_err(fail)?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, content) = match split {
        Some(i) => (String::from_utf8_lossy(&response[..i]).into_owned(), &response[i + 4..]),
        None => (String::from_utf8_lossy(&response).into_owned(), &response[..0]),
    };
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let content = if chunked { dechunk(content) } else { content.to_vec() };
    Ok((status, String::from_utf8_lossy(&content).into_owned()))
}

/// Connects to the first address of `authority` that answers before `deadline`.
fn connect(authority: &str, deadline: Instant) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in authority.to_socket_addrs()? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Reads until the server closes the connection (the request said `Connection: close`).
fn read_until_closed(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no complete answer within 5 s"));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
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

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(dechunk(b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\n\r\n"), b"Wikipedia ");
        assert_eq!(dechunk(b"4\r\nWi"), b"Wi", "a cut-off body keeps what arrived");
        assert_eq!(dechunk(b"zz\r\nxx"), b"", "a malformed size ends it");
    }

    #[test]
    fn command_for_the_api() {
        let daemon = CommandTemplate::new("mirai-daemon", &["{url}"]);
        let target =
            Target { url: "tcp://10.1.1.1:5555".into(), secret_hex: Some("abcd".into()), tls_ca: None };
        assert_eq!(api_command(&target, &daemon), "env MIRAI_SECRET=abcd mirai-daemon tcp://10.1.1.1:5555");
    }
}
