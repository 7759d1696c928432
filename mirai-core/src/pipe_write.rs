//! Writing to a pipe (a launched child's stdin; standard error, when it is a pipe to a reader
//! such as `ssh` that may have gone) so that a reader that already exited gives an error
//! (`EPIPE`), never a SIGPIPE: a C or R program embedding libmirai keeps the default
//! disposition, which would kill it.

use std::io::{self, Write};

/// `write_all` with SIGPIPE blocked on this thread. A SIGPIPE the write raised is consumed
/// before the mask is restored, unless one was already pending (that one is not ours to take).
pub(crate) fn write_all(pipe: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: sigset_t is plain data that sigemptyset/sigaddset initialise; the mask calls
    // affect only this thread and are undone below on every path.
    unsafe {
        let mut sigpipe: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut sigpipe);
        libc::sigaddset(&mut sigpipe, libc::SIGPIPE);
        let mut old: libc::sigset_t = std::mem::zeroed();
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &sigpipe, &mut old);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let pending_before = pending();
        let result = pipe.write_all(bytes);
        if !pending_before && result.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe) {
            let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            libc::sigtimedwait(&sigpipe, std::ptr::null_mut(), &zero);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}

/// Whether a SIGPIPE is pending for this thread or the process.
fn pending() -> bool {
    // SAFETY: sigpending fills a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set) == 0 && libc::sigismember(&set, libc::SIGPIPE) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    const MODE: &str = "MIRAI_PIPE_TEST_MODE";

    /// The stdin of a child that has exited, so writing to it fails.
    fn dead_stdin() -> std::process::ChildStdin {
        let mut child = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        child.wait().unwrap();
        stdin
    }

    /// Runs `in_a_child_with_default_sigpipe` in a fresh copy of this test binary.
    fn run_child(mode: &str) -> std::process::ExitStatus {
        Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "pipe_write::tests::in_a_child_with_default_sigpipe"])
            .args(["--test-threads=1", "--nocapture"])
            .env(MODE, mode)
            .stdout(Stdio::null())
            .status()
            .unwrap()
    }

    #[test]
    #[ignore = "run by the tests below, in a child process with SIGPIPE at its default"]
    fn in_a_child_with_default_sigpipe() {
        // SAFETY: resetting a disposition, as a C program starts with it.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let big = vec![0u8; 1 << 20];
        match std::env::var(MODE).unwrap().as_str() {
            "plain" => {
                let _ = dead_stdin().write_all(&big);
            }
            "guarded" => {
                let err = write_all(&mut dead_stdin(), &big).unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
                assert!(!pending(), "the write's SIGPIPE was consumed");
                // SAFETY: reading this thread's mask into a set we own.
                let blocked = unsafe {
                    let mut cur: libc::sigset_t = std::mem::zeroed();
                    libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
                    libc::sigismember(&cur, libc::SIGPIPE) == 1
                };
                assert!(!blocked, "the mask is restored");
                // A SIGPIPE pending before the write is left pending.
                // SAFETY: blocking then raising a signal on this thread, consumed below.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGPIPE);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    libc::pthread_kill(libc::pthread_self(), libc::SIGPIPE);
                    assert!(write_all(&mut dead_stdin(), &big).is_err());
                    assert!(pending(), "an earlier SIGPIPE stays pending");
                    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                    assert_eq!(libc::sigtimedwait(&set, std::ptr::null_mut(), &zero), libc::SIGPIPE);
                    libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                }
            }
            other => panic!("unknown mode {other}"),
        }
    }

    #[test]
    fn a_plain_write_to_an_exited_child_kills_a_process_with_default_sigpipe() {
        assert_eq!(run_child("plain").signal(), Some(libc::SIGPIPE));
    }

    #[test]
    fn a_guarded_write_to_an_exited_child_is_an_error() {
        let status = run_child("guarded");
        assert!(status.success(), "{status:?}");
    }
}
