//! A connection: a socket and the protocol state machine that speaks over it. Reads drain the
//! socket to `WouldBlock` (edge-triggered readiness); writes are vectored and go out until
//! everything queued is written or the socket is full.

use std::io::{self, IoSlice, Read, Write};

use mirai_proto::{Conn, Message};

use crate::clock::now_ms;
use crate::error::Error;
use crate::transport::Stream;

/// Payload remainders at least this large are read straight into the payload buffer.
const DIRECT_READ_MIN: usize = 64 * 1024;

/// What a read found at the end of the available bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The socket is drained and still open.
    Open,
    /// The peer closed its end.
    Eof,
}

#[derive(Debug)]
pub struct Link {
    pub stream: Stream,
    pub proto: Conn,
}

impl Link {
    pub fn new(stream: Stream, proto: Conn) -> Self {
        Link { stream, proto }
    }

    /// Reads everything available into the state machine. Decoded messages wait in
    /// `proto.poll_event()`.
    pub fn read_available(&mut self, buf: &mut [u8]) -> Result<ReadEnd, Error> {
        loop {
            let window = if self.proto.recv_payload_remaining() >= DIRECT_READ_MIN {
                self.proto.recv_window()
            } else {
                None
            };
            let direct = window.is_some();
            let result = match window {
                Some(window) => self.stream.read(window),
                None => self.stream.read(buf),
            };
            match result {
                Ok(0) => {
                    if direct {
                        self.proto.recv_commit(now_ms(), 0)?;
                    }
                    self.proto.handle_eof()?;
                    return Ok(ReadEnd::Eof);
                }
                Ok(n) if direct => self.proto.recv_commit(now_ms(), n)?,
                Ok(n) => self.proto.feed(now_ms(), &buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if direct {
                        self.proto.recv_commit(now_ms(), 0)?;
                    }
                    return Ok(ReadEnd::Open);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if direct {
                        self.proto.recv_commit(now_ms(), 0)?;
                    }
                }
                Err(e) => return Err(io_error("read", e)),
            }
        }
    }

    /// Writes queued bytes until none are left (`Ok(true)`) or the socket is full (`Ok(false)`).
    pub fn flush(&mut self) -> Result<bool, Error> {
        while self.proto.pending_out() > 0 {
            let mut slices = [&[][..]; 64];
            let n = self.proto.transmit(&mut slices);
            let iov: [IoSlice<'_>; 64] = std::array::from_fn(|i| IoSlice::new(slices[i]));
            match self.stream.write_vectored(&iov[..n]) {
                Ok(0) => return Err(Error::io("write", io::ErrorKind::WriteZero.into())),
                Ok(n) => self.proto.transmitted(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("write", e)),
            }
        }
        // TLS may still hold records of its own (handshake, or data it could not write yet).
        match self.stream.flush() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(io_error("write", e)),
        }
    }

    /// Queues a message and writes what the socket takes now.
    pub fn send(&mut self, msg: Message) -> Result<bool, Error> {
        self.proto.send(msg)?;
        self.flush()
    }
}

/// A socket error, naming TLS failures (bad certificate, alert from the peer) as such.
fn io_error(context: &str, e: io::Error) -> Error {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => Error::Tls(tls.to_string()),
        None => Error::io(context, e),
    }
}
