//! Byte-stream transports behind one type each for listening and connected sockets, so the
//! host and daemon never care which one they use: Unix-domain (path or abstract) and TCP.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::SocketAddr as UnixAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::error::Error;
use crate::url::Url;

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    /// The path is removed when the listener is dropped (None for abstract sockets).
    Unix(UnixListener, Option<PathBuf>),
}

/// A connected, non-blocking socket.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> io::Result<UnixAddr> {
    use std::os::linux::net::SocketAddrExt;
    UnixAddr::from_abstract_name(name.as_bytes())
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &str) -> io::Result<UnixAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

impl Listener {
    /// Binds `url` and returns the listener with the URL daemons should dial (the actual port
    /// when port 0 was asked for).
    pub fn bind(url: &Url) -> Result<(Listener, Url), Error> {
        match url {
            Url::Tcp { tls: true, .. } => Err(Error::NotSupported(format!(
                "{url}: TLS is not available in this build of mirai-core"
            ))),
            Url::Tcp { .. } => {
                let mut last = None;
                for addr in url.socket_addrs()? {
                    match TcpListener::bind(addr) {
                        Ok(l) => {
                            let port = l
                                .local_addr()
                                .map_err(|e| Error::io(format!("{url}: local address"), e))?
                                .port();
                            return Ok((Listener::Tcp(l), url.with_port(port)));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(Error::io(
                    format!("cannot listen at {url}"),
                    last.unwrap_or_else(|| io::Error::other("no address")),
                ))
            }
            Url::Ipc(path) => {
                remove_stale_socket(path);
                let l = UnixListener::bind(path)
                    .map_err(|e| Error::io(format!("cannot listen at {url}"), e))?;
                Ok((Listener::Unix(l, Some(path.clone())), url.clone()))
            }
            Url::Abstract(name) => {
                let addr = abstract_addr(name)
                    .map_err(|e| Error::io(format!("cannot listen at {url}"), e))?;
                let l = UnixListener::bind_addr(&addr)
                    .map_err(|e| Error::io(format!("cannot listen at {url}"), e))?;
                Ok((Listener::Unix(l, None), url.clone()))
            }
        }
    }

    /// Accepts one pending connection (`WouldBlock` when there is none).
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                tune_tcp(&s);
                Ok(Stream::Tcp(s))
            }
            Listener::Unix(l, _) => Ok(Stream::Unix(l.accept()?.0)),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, Some(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes a socket file left by a process that died, but never a live one's.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket
        && let Err(e) = std::os::unix::net::UnixStream::connect(path)
        && e.kind() == io::ErrorKind::ConnectionRefused
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Low latency over throughput for small messages; keepalive to notice vanished peers.
fn tune_tcp(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a pointer to a live c_int of the stated size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Connects to `url`, failing fast (no retry) when nobody listens there.
pub fn dial(url: &Url, timeout: Duration) -> Result<Stream, Error> {
    let fail = |e| Error::io(format!("cannot connect to {url}"), e);
    match url {
        Url::Tcp { tls: true, .. } => Err(Error::NotSupported(format!(
            "{url}: TLS is not available in this build of mirai-core"
        ))),
        Url::Tcp { .. } => {
            let mut last = None;
            for addr in url.socket_addrs()? {
                match std::net::TcpStream::connect_timeout(&addr, timeout) {
                    Ok(s) => {
                        s.set_nonblocking(true).map_err(fail)?;
                        let s = TcpStream::from_std(s);
                        tune_tcp(&s);
                        return Ok(Stream::Tcp(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(fail(last.unwrap_or_else(|| io::Error::other("no address"))))
        }
        Url::Ipc(path) => {
            let s = std::os::unix::net::UnixStream::connect(path).map_err(fail)?;
            s.set_nonblocking(true).map_err(fail)?;
            Ok(Stream::Unix(UnixStream::from_std(s)))
        }
        Url::Abstract(name) => {
            let addr = abstract_addr(name).map_err(fail)?;
            let s = std::os::unix::net::UnixStream::connect_addr(&addr).map_err(fail)?;
            s.set_nonblocking(true).map_err(fail)?;
            Ok(Stream::Unix(UnixStream::from_std(s)))
        }
    }
}

impl Stream {
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

macro_rules! delegate_source {
    ($ty:ty, $($variant:ident $(, $extra:tt)?);+) => {
        impl Source for $ty {
            fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                match self { $(Self::$variant(s $(, $extra)?) => s.register(r, t, i),)+ }
            }
            fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                match self { $(Self::$variant(s $(, $extra)?) => s.reregister(r, t, i),)+ }
            }
            fn deregister(&mut self, r: &Registry) -> io::Result<()> {
                match self { $(Self::$variant(s $(, $extra)?) => s.deregister(r),)+ }
            }
        }
    };
}

delegate_source!(Stream, Tcp; Unix);
delegate_source!(Listener, Tcp; Unix, _);
