//! Listen and dial addresses: `ipc:///path`, `abstract://name`, `tcp://host:port`,
//! `tls+tcp://host:port`, and the WebSocket forms `ws://host:port[/path]` and
//! `wss://host:port[/path]`. Parsing is strict, so a typo fails before anything starts.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::error::Error;

/// A parsed mirai URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Url {
    /// A Unix-domain socket at a filesystem path.
    Ipc(PathBuf),
    /// A Linux abstract Unix-domain socket (no file).
    Abstract(String),
    /// TCP, optionally wrapped in TLS.
    Tcp { host: String, port: u16, tls: bool },
    /// A WebSocket over TCP (optionally TLS) at an HTTP path, which always starts with `/`.
    Ws { host: String, port: u16, path: String, tls: bool },
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, Error> {
        let bad = |why: &str| Error::InvalidUrl(format!("'{text}': {why}"));
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(bad("expected scheme://address"));
        };
        match scheme {
            "ipc" => {
                if rest.is_empty() {
                    return Err(bad("missing socket path"));
                }
                Ok(Url::Ipc(PathBuf::from(rest)))
            }
            "abstract" => {
                if !cfg!(target_os = "linux") {
                    return Err(bad("abstract sockets exist only on Linux"));
                }
                if rest.is_empty() || rest.contains('\0') {
                    return Err(bad("missing or invalid socket name"));
                }
                Ok(Url::Abstract(rest.to_string()))
            }
            "tcp" | "tls+tcp" => {
                let (host, port) = split_host_port(rest).ok_or_else(|| bad("expected host:port"))?;
                let port: u16 = port.parse().map_err(|_| bad("port must be 0 to 65535"))?;
                if host.is_empty() {
                    // `tcp://:0` listens on every interface, as in R's mirai.
                    return Ok(Url::Tcp { host: String::new(), port, tls: scheme == "tls+tcp" });
                }
                if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
                    return Err(bad("invalid host"));
                }
                Ok(Url::Tcp { host: host.to_string(), port, tls: scheme == "tls+tcp" })
            }
            "ws" | "wss" => {
                // The path starts at the first '/', which no host (bracketed IPv6 included) holds.
                let (authority, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, "/"),
                };
                if path.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#') {
                    return Err(bad("invalid path"));
                }
                let Url::Tcp { host, port, .. } = Url::parse(&format!("tcp://{authority}"))
                    .map_err(|_| bad("expected host:port[/path]"))?
                else {
                    return Err(bad("expected host:port[/path]"));
                };
                Ok(Url::Ws { host, port, path: path.to_string(), tls: scheme == "wss" })
            }
            other => Err(bad(&format!(
                "unsupported scheme '{other}' (use ipc, abstract, tcp, tls+tcp, ws or wss)"
            ))),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Url::Tcp { tls: true, .. } | Url::Ws { tls: true, .. })
    }

    /// The host and port of a TCP-based URL (tcp, tls+tcp, ws, wss).
    pub fn host_port(&self) -> Option<(&str, u16)> {
        match self {
            Url::Tcp { host, port, .. } | Url::Ws { host, port, .. } => Some((host, *port)),
            _ => None,
        }
    }

    /// Socket addresses for a TCP URL; an empty host means every interface (for listening).
    pub fn socket_addrs(&self) -> Result<Vec<SocketAddr>, Error> {
        let Some((host, port)) = self.host_port() else {
            return Err(Error::InvalidUrl(format!("{self} is not a TCP URL")));
        };
        if host.is_empty() {
            return Ok(vec![SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port)]);
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = (bare, port)
            .to_socket_addrs()
            .map_err(|e| Error::InvalidUrl(format!("{self}: cannot resolve host: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(Error::InvalidUrl(format!("{self}: host resolves to no address")));
        }
        Ok(addrs)
    }

    /// The same URL with another port (used to report the port a `:0` listener got).
    pub fn with_port(&self, new_port: u16) -> Url {
        match self {
            Url::Tcp { host, tls, .. } => Url::Tcp { host: host.clone(), port: new_port, tls: *tls },
            Url::Ws { host, path, tls, .. } => {
                Url::Ws { host: host.clone(), port: new_port, path: path.clone(), tls: *tls }
            }
            other => other.clone(),
        }
    }
}

/// Splits `host:port`, where an IPv6 host is bracketed: `[::1]:5555`.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('[') {
        let close = s.find(']')?;
        let port = s[close + 1..].strip_prefix(':')?;
        Some((&s[..=close], port))
    } else {
        let (host, port) = s.rsplit_once(':')?;
        if host.contains(':') {
            return None; // an unbracketed IPv6 address
        }
        Some((host, port))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Url::Ipc(path) => write!(f, "ipc://{}", path.display()),
            Url::Abstract(name) => write!(f, "abstract://{name}"),
            Url::Tcp { host, port, tls } => {
                write!(f, "{}://{host}:{port}", if *tls { "tls+tcp" } else { "tcp" })
            }
            Url::Ws { host, port, path, tls } => {
                write!(f, "{}://{host}:{port}{path}", if *tls { "wss" } else { "ws" })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(Url::parse("ipc:///tmp/x.sock").unwrap(), Url::Ipc("/tmp/x.sock".into()));
        assert_eq!(Url::parse("abstract://mirai1").unwrap(), Url::Abstract("mirai1".into()));
        assert_eq!(
            Url::parse("tcp://127.0.0.1:5555").unwrap(),
            Url::Tcp { host: "127.0.0.1".into(), port: 5555, tls: false }
        );
        assert_eq!(
            Url::parse("tls+tcp://[::1]:0").unwrap(),
            Url::Tcp { host: "[::1]".into(), port: 0, tls: true }
        );
        assert_eq!(Url::parse("tcp://:0").unwrap(), Url::Tcp { host: "".into(), port: 0, tls: false });
        assert_eq!(Url::parse("tcp://[::1]:7").unwrap().to_string(), "tcp://[::1]:7");
        assert_eq!(
            Url::parse("ws://:0").unwrap(),
            Url::Ws { host: "".into(), port: 0, path: "/".into(), tls: false }
        );
        let wss = Url::parse("wss://[::1]:5555/mirai/pool").unwrap();
        assert_eq!(wss, Url::Ws { host: "[::1]".into(), port: 5555, path: "/mirai/pool".into(), tls: true });
        assert!(wss.is_tls());
        assert_eq!(wss.to_string(), "wss://[::1]:5555/mirai/pool");
        assert_eq!(Url::parse("ws://h:1").unwrap().with_port(9).to_string(), "ws://h:9/");
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "localhost:5555",
            "http://x:1",
            "tcp://host",
            "tcp://host:99999",
            "tcp://host:abc",
            "tcp://::1:5555",
            "tcp://[::1]5555",
            "ipc://",
            "abstract://",
            "tcp://a b:1",
            "ws://host",
            "ws://host/path",
            "wss://host:1/a b",
            "ws://host:1/p?q",
            "ws://::1:1/",
        ] {
            let err = Url::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl(_)), "{bad}");
            assert!(err.to_string().contains(bad), "message names the URL: {err}");
        }
    }

    #[test]
    fn resolves_addresses() {
        let url = Url::parse("tcp://[::1]:80").unwrap();
        assert_eq!(url.socket_addrs().unwrap(), vec!["[::1]:80".parse().unwrap()]);
        let url = Url::parse("tcp://localhost:80").unwrap();
        assert!(url.socket_addrs().unwrap().iter().all(|a| a.ip().is_loopback()));
    }
}
