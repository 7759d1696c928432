//! Errors of the engine's public API, each mapped to the NNG-numbered code bindings report.

use std::fmt;
use std::io;

use mirai_proto::{ErrorCode, ProtoError};

#[derive(Debug)]
pub enum Error {
    /// The URL is malformed or names an unsupported scheme.
    InvalidUrl(String),
    /// A feature the URL or options ask for is not available in this build.
    NotSupported(String),
    /// An operating-system error, with what was being done.
    Io { context: String, source: io::Error },
    /// A protocol error on a connection.
    Proto(ProtoError),
    /// The host or daemon has been closed.
    Closed,
    /// `try_submit` found the memory cap reached.
    Full,
    /// A wait ran out of time.
    TimedOut,
    /// An argument is out of range or inconsistent.
    InvalidArgument(String),
    /// The peer refused the connection or the authentication.
    Refused(String),
    /// TLS failed: bad certificate material, or a handshake the peer or we rejected.
    Tls(String),
    /// A launcher (ssh, a scheduler's submit command, an HTTP API) failed.
    Launch(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }

    /// The NNG-numbered code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidUrl(_) => ErrorCode::AddressInvalid,
            Error::NotSupported(_) => ErrorCode::NotSupported,
            Error::Io { source, .. } => match source.kind() {
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => ErrorCode::ConnectionRefused,
                io::ErrorKind::AddrInUse => ErrorCode::AddressInUse,
                io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
                io::ErrorKind::TimedOut => ErrorCode::TimedOut,
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => ErrorCode::ConnectionReset,
                io::ErrorKind::AddrNotAvailable => ErrorCode::AddressInvalid,
                _ => ErrorCode::ConnectionAborted,
            },
            Error::Proto(e) => e.code(),
            Error::Closed => ErrorCode::ObjectClosed,
            Error::Full => ErrorCode::TryAgain,
            Error::TimedOut => ErrorCode::TimedOut,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Refused(_) => ErrorCode::AuthenticationFailed,
            Error::Tls(_) => ErrorCode::Cryptographic,
            Error::Launch(_) => ErrorCode::ConnectionRefused,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidUrl(m) => write!(f, "invalid URL {m}"),
            Error::NotSupported(m) => write!(f, "not supported: {m}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Proto(e) => write!(f, "protocol error: {e}"),
            Error::Closed => f.write_str("object closed"),
            Error::Full => f.write_str("queue memory limit reached"),
            Error::TimedOut => f.write_str("timed out"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::Refused(m) => write!(f, "refused: {m}"),
            Error::Tls(m) => write!(f, "TLS: {m}"),
            Error::Launch(m) => write!(f, "launch failed: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Proto(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ProtoError> for Error {
    fn from(e: ProtoError) -> Self {
        Error::Proto(e)
    }
}
