//! Socket writes that report a lost peer as `EPIPE`, never as SIGPIPE. The process embedding
//! libmirai (a C, R or Julia host or daemon) may keep SIGPIPE at its default action, which
//! kills it; std's `write_vectored` on a socket is a plain `writev`, which raises the signal.
//!
//! Linux and the BSDs refuse the signal per call (`MSG_NOSIGNAL`). Apple systems have no such
//! flag: there `forbid_sigpipe` sets `SO_NOSIGPIPE` on every socket, at accept and at dial.

use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd};

#[cfg(not(target_vendor = "apple"))]
const FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(target_vendor = "apple")]
const FLAGS: libc::c_int = 0;

/// Slices per call that Linux (UIO_MAXIOV) and macOS (IOV_MAX) accept; more fail the call.
const MAX_SLICES: usize = 1024;

/// Writes `bufs` in order, like `writev`, and as with any socket write possibly only part.
pub fn send_vectored(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let bufs = &bufs[..bufs.len().min(MAX_SLICES)];
    // SAFETY: all-zero is a valid msghdr: no address, no control data, no slices yet.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix; sendmsg only reads through the pointer.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    // SAFETY: the fd is open for the borrow; `msg` points at `bufs`, alive during the call.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, FLAGS) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// A socket as the `Write` that rustls's `write_tls` writes its records to.
pub struct Sender<'a>(pub BorrowedFd<'a>);

impl Write for Sender<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_vectored(self.0, &[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        send_vectored(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Makes every write on the socket immune to SIGPIPE, where flags on the call cannot.
#[cfg(target_vendor = "apple")]
pub fn forbid_sigpipe(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: an open socket and a pointer to a live c_int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `MSG_NOSIGNAL` on each send already covers the socket.
#[cfg(not(target_vendor = "apple"))]
pub fn forbid_sigpipe(_fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn writes_every_slice_in_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let parts = [IoSlice::new(b"lost "), IoSlice::new(b""), IoSlice::new(b"peer")];
        assert_eq!(send_vectored(a.as_fd(), &parts).unwrap(), 9);
        assert_eq!(Sender(a.as_fd()).write(b"!").unwrap(), 1);
        drop(a);
        let mut got = String::new();
        b.read_to_string(&mut got).unwrap();
        assert_eq!(got, "lost peer!");
    }

    /// Rust programs start with SIGPIPE ignored, so the check runs in a copy of this test
    /// process that first restores the default action, as a C program has it: there a signal
    /// kills the copy instead of failing an assertion.
    #[test]
    fn a_closed_peer_is_an_error_not_a_signal() {
        const CHILD: &str = "MIRAI_TEST_SIGPIPE_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let copy = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "nosigpipe::tests::a_closed_peer_is_an_error_not_a_signal"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            assert!(
                copy.status.success(),
                "the copy with SIGPIPE at its default: {}\n{}{}",
                copy.status,
                String::from_utf8_lossy(&copy.stdout),
                String::from_utf8_lossy(&copy.stderr)
            );
            return;
        }
        // SAFETY: restores the default action; no handler involved.
        assert_ne!(unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) }, libc::SIG_ERR);
        let (a, b) = UnixStream::pair().unwrap();
        forbid_sigpipe(a.as_fd()).unwrap();
        drop(b);
        let e = send_vectored(a.as_fd(), &[IoSlice::new(b"x")]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        let e = Sender(a.as_fd()).write_vectored(&[IoSlice::new(b"y")]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn more_slices_than_the_kernel_takes_are_a_partial_write() {
        let (a, _b) = UnixStream::pair().unwrap();
        let parts = vec![IoSlice::new(b"z"); MAX_SLICES + 10];
        assert_eq!(send_vectored(a.as_fd(), &parts).unwrap(), MAX_SLICES);
    }
}
