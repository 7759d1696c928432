//! Taking the secret a launcher left in `MIRAI_SECRET` out of the daemon's environment, so that
//! no task (nor any process a task starts) can read it.

use crate::auth::{self, SECRET_ENV};
use crate::error::Error;

/// The secret in `MIRAI_SECRET` (hex), if set, removed from the environment. Its bytes in the
/// process's initial environment block, which `/proc/<pid>/environ` shows and which unsetting
/// leaves as it was, are overwritten first.
///
/// Call it before other threads read or change the environment (a daemon's `main` does it
/// first thing): no operating system makes `unsetenv` safe against a concurrent `getenv`.
pub fn take_env_secret() -> Result<Option<Vec<u8>>, Error> {
    let Some(value) = std::env::var_os(SECRET_ENV) else { return Ok(None) };
    scrub_initial_block();
    // SAFETY: Rust readers of the environment are serialised with this by std's lock; C code
    // on other threads is excluded by this function's contract. And glibc and musl never free
    // the strings of the initial environment, so a reader that breaks the contract reads stale
    // text, not freed memory.
    unsafe { std::env::remove_var(SECRET_ENV) };
    let hex = value
        .into_string()
        .map_err(|_| Error::InvalidArgument(format!("{SECRET_ENV} is not hexadecimal")))?;
    auth::from_hex(&hex).map(Some)
}

/// Overwrites the value of `MIRAI_SECRET` with `x` if it lies in the initial environment block.
/// A value set later (`setenv`, `putenv`) lives elsewhere, possibly read-only, and is not shown
/// in `/proc`, so it is left alone.
fn scrub_initial_block() {
    let Some((start, end)) = initial_block() else { return };
    // SAFETY: getenv's answer is a NUL-terminated string; it is written only when it lies
    // entirely inside the initial environment block, which is the process's own writable
    // memory (the top of the main thread's stack).
    unsafe {
        let value = libc::getenv(c"MIRAI_SECRET".as_ptr());
        if value.is_null() {
            return;
        }
        let len = libc::strlen(value);
        let at = value as usize;
        if at >= start && at.saturating_add(len) < end {
            std::ptr::write_bytes(value, b'x', len);
        }
    }
}

/// Where the initial environment block is: `env_start` and `env_end`, fields 50 and 51 of
/// `/proc/self/stat` (counted after the command name, which may hold spaces and parentheses).
fn initial_block() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(47);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_environment_block_is_found() {
        let (start, end) = initial_block().unwrap();
        assert!(start > 0 && end > start);
        let environ = std::fs::read("/proc/self/environ").unwrap();
        assert_eq!(end - start, environ.len(), "the block is what /proc shows");
    }
}
