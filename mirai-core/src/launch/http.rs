//! The HTTP launcher: one request per daemon to an API that starts processes (R's
//! `http_config`; e.g. Posit Workbench's launcher). The body template's `%s` receives the
//! daemon's command line, JSON-escaped. The API runs the command, so the secret and CA travel in
//! it (as `env` assignments): use this launcher only with an API you trust, over a trusted
//! network.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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

/// One HTTP/1.1 request to a plain `http://` URL (5 s read timeout): the status and the body.
/// Bindings whose launch requests are built differently (R's `http_config`) use it directly.
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
    let mut stream = TcpStream::connect(authority).map_err(fail)?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(fail)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes())).map_err(fail)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(fail)?;
    let status: u16 = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let content = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Ok((status, content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_for_the_api() {
        let daemon = CommandTemplate::new("mirai-daemon", &["{url}"]);
        let target =
            Target { url: "tcp://10.1.1.1:5555".into(), secret_hex: Some("abcd".into()), tls_ca: None };
        assert_eq!(api_command(&target, &daemon), "env MIRAI_SECRET=abcd mirai-daemon tcp://10.1.1.1:5555");
    }
}
