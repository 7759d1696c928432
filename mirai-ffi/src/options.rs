//! Option builders for hosts, submissions and daemons: opaque objects that the caller creates
//! with `_new`, changes with setters that validate, and frees with `_free`. Unlike a struct the
//! caller allocates, a builder can gain settings without a newer libmirai ever writing past an
//! older program's memory.

use std::ffi::{c_char, c_void};
use std::time::Duration;

use mirai_core::auth::Auth;
use mirai_core::tls::ServerIdentity;
use mirai_core::{AutoExit, DaemonOptions, HostOptions, SubmitOptions};

use crate::boundary::{
    Failure, bytes, c_str, guard, guard_value, invalid_enum, mirai_result, opt_c_bytes, opt_c_str,
};
use crate::task::{c_callback, mirai_task_callback};

/// A refusal of a value that would silently mean something else.
fn refuse(msg: &str) -> Failure {
    Failure::Code(mirai_result::InvalidArgument, msg.into())
}

/// `value`, or `refusal` when it is 0: settings where 0 would silently mean something else.
fn at_least_one<T: PartialEq + Default>(value: T, refusal: &str) -> Result<T, Failure> {
    if value == T::default() { Err(refuse(refusal)) } else { Ok(value) }
}

/// The builder behind a setter's pointer, or `Failure::Null`.
fn builder<'a, T>(ptr: *mut T) -> Result<&'a mut T, Failure> {
    // SAFETY: NULL or a builder from this library's `_new`, not used by another thread meanwhile
    // (the header's rule for builders).
    unsafe { ptr.as_mut() }.ok_or(Failure::Null("opts"))
}

fn new_builder<T>(value: T) -> *mut T {
    guard_value(std::ptr::null_mut(), || Box::into_raw(Box::new(value)))
}

fn free_builder<T>(ptr: *mut T) {
    guard_value((), || {
        if !ptr.is_null() {
            // SAFETY: a builder from this library's `_new`, freed once.
            drop(unsafe { Box::from_raw(ptr) });
        }
    })
}

// ---- host options ------------------------------------------------------------------------------

/// Settings for `mirai_host_listen`: create with `mirai_host_options_new` (the defaults), change
/// with the `mirai_host_options_set_*` functions, free with `mirai_host_options_free` (the host
/// keeps its own copy, so the options may be freed or reused right after listening).
/// Threads: a builder may move between threads, but only one may use it at a time.
pub struct mirai_host_options {
    pub(crate) inner: HostOptions,
}

/// New host options with the defaults: no queue memory cap, a random secret, a generated TLS
/// certificate for `tls+tcp://`, a random RNG stream, no init blob, 30 s to complete a handshake.
/// NULL only if memory ran out.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_new() -> *mut mirai_host_options {
    new_builder(mirai_host_options { inner: HostOptions::default() })
}

/// Frees host options. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_free(opts: *mut mirai_host_options) {
    free_builder(opts)
}

/// Caps the payload bytes waiting in the queue: `mirai_host_submit` blocks and
/// `mirai_host_try_submit` refuses while the queue holds this much. 0 is refused (for no cap,
/// do not call this).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_set_memory_limit(
    opts: *mut mirai_host_options,
    bytes: u64,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.inner.memory_limit =
            Some(at_least_one(bytes, "memory_limit must be at least 1 byte (for no cap, leave it unset)")?);
        Ok(())
    })
}

/// The largest frame accepted from a daemon, in bytes. 0 is refused (it would reject every frame).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_set_max_frame(
    opts: *mut mirai_host_options,
    bytes: u64,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.inner.max_frame = at_least_one(bytes, "max_frame must be at least 1 byte")?;
        Ok(())
    })
}

/// Makes `stream` (six MRG32k3a words) the base of daemons' RNG streams: the k-th daemon gets it
/// jumped k times. Without this call the base is random.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_set_stream(
    opts: *mut mirai_host_options,
    stream: *const u32,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        if stream.is_null() {
            return Err(Failure::Null("stream"));
        }
        // SAFETY: non-NULL, and the caller promises six readable words.
        let words = unsafe { std::slice::from_raw_parts(stream, 6) };
        let mut base = [0u32; 6];
        base.copy_from_slice(words);
        o.inner.stream = Some(base);
        Ok(())
    })
}

/// Opaque bytes every daemon receives in its init bundle (copied; NULL only with `len` 0).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_set_init_blob(
    opts: *mut mirai_host_options,
    blob: *const u8,
    len: usize,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.inner.init_blob = bytes(blob, len, "blob")?.to_vec();
        Ok(())
    })
}

/// Milliseconds a daemon has to complete its handshake. 0 is refused (every handshake would fail).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_set_handshake_timeout_ms(
    opts: *mut mirai_host_options,
    ms: u64,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.inner.handshake_timeout =
            Duration::from_millis(at_least_one(ms, "handshake_timeout_ms must be at least 1")?);
        Ok(())
    })
}

/// Heartbeats, both ways, when a connection carried nothing else for `ms` milliseconds
/// (default 10000); 0 turns them off, and with them the peer timeout, which needs them. Checked
/// against the peer timeout when the host starts listening.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_set_heartbeat_ms(
    opts: *mut mirai_host_options,
    ms: u64,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.inner.heartbeat = (ms > 0).then(|| Duration::from_millis(ms));
        if ms == 0 {
            o.inner.peer_timeout = None;
        }
        Ok(())
    })
}

/// Drop a daemon from which nothing (heartbeats included) arrived for `ms` milliseconds
/// (default 120000; at least three heartbeats); 0 turns it off.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_set_peer_timeout_ms(
    opts: *mut mirai_host_options,
    ms: u64,
) -> mirai_result {
    guard(|| {
        builder(opts)?.inner.peer_timeout = (ms > 0).then(|| Duration::from_millis(ms));
        Ok(())
    })
}

/// Run a task lost with a daemon that died (error 19) again on another daemon, up to `retry`
/// times (default 0, as R's mirai); a task that was at `quarantine` daemons that died (default
/// 3) resolves with 18 and never runs again. 0 for `quarantine` is refused.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_set_retry(
    opts: *mut mirai_host_options,
    retry: u32,
    quarantine: u32,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        let quarantine = at_least_one(quarantine, "quarantine must be at least 1")?;
        o.inner.retry = retry;
        o.inner.quarantine = quarantine;
        Ok(())
    })
}

/// A task cancelled (or timed out) at a daemon must have stopped within `ms` milliseconds
/// (default 30000): a daemon whose evaluator ignores the interrupt is then dropped, and its
/// process ended if this host launched it. 0 leaves such daemons be.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_set_cancel_grace_ms(
    opts: *mut mirai_host_options,
    ms: u64,
) -> mirai_result {
    guard(|| {
        builder(opts)?.inner.cancel_grace = (ms > 0).then(|| Duration::from_millis(ms));
        Ok(())
    })
}

/// Connections allowed in their handshake at once (default 1024). Past it, the oldest one that
/// has had 250 ms gives way to a newcomer, so strangers hold few descriptors. 0 is refused.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_set_max_handshakes(
    opts: *mut mirai_host_options,
    n: usize,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.inner.max_handshakes = at_least_one(n, "max_handshakes must be at least 1")?;
        Ok(())
    })
}

/// How daemons authenticate: `auth` is a `mirai_auth` value. `MIRAI_AUTH_SECRET` takes the
/// `secret_len` bytes at `secret` (copied; at least 16); `MIRAI_AUTH_RANDOM` (the default) and
/// `MIRAI_AUTH_DISABLED` (trusted networks only) take NULL and 0.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_set_auth(
    opts: *mut mirai_host_options,
    auth: i32,
    secret: *const u8,
    secret_len: usize,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        let given = bytes(secret, secret_len, "secret")?;
        o.inner.auth = match auth {
            x if x == mirai_auth::Secret as i32 => {
                if given.len() < 16 {
                    return Err(refuse("a secret needs at least 16 bytes"));
                }
                Auth::Secret(given.to_vec())
            }
            x if x == mirai_auth::Random as i32 || x == mirai_auth::Disabled as i32 => {
                if !given.is_empty() {
                    return Err(refuse("only MIRAI_AUTH_SECRET takes a secret"));
                }
                if x == mirai_auth::Random as i32 { Auth::Random } else { Auth::Disabled }
            }
            x => return Err(invalid_enum("auth", x)),
        };
        Ok(())
    })
}

/// How daemons authenticate to a host.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mirai_auth {
    Random = 0,
    Secret = 1,
    Disabled = 2,
}

/// For `tls+tcp://` with your own certificate (copied): the PEM chain (leaf first) and key,
/// both required; `ca_pem`, the CA daemons should trust, or NULL for the chain's last
/// certificate; `key_password` for an encrypted key (`ENCRYPTED PRIVATE KEY`, PKCS#8), any
/// bytes up to the NUL (UTF-8 or not), or NULL. Without this call a short-lived CA and
/// certificate are generated at start.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_set_tls(
    opts: *mut mirai_host_options,
    cert_chain_pem: *const c_char,
    key_pem: *const c_char,
    ca_pem: *const c_char,
    key_password: *const c_char,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        let chain = c_str(cert_chain_pem, "cert_chain_pem")?;
        let key = c_str(key_pem, "key_pem")?;
        let ca = opt_c_str(ca_pem, "ca_pem")?;
        o.inner.tls = Some(ServerIdentity {
            cert_chain_pem: chain.into(),
            key_pem: key.into(),
            key_password: opt_c_bytes(key_password).map(<[u8]>::to_vec),
            ca_pem: ca.map(str::to_string).unwrap_or_else(|| last_pem_block(chain)),
        });
        Ok(())
    })
}

/// The last certificate of a PEM chain (its root, by convention), and nothing else: the text may
/// also hold the private key, which must not reach daemons.
fn last_pem_block(chain: &str) -> String {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let Some(start) = chain.rfind(BEGIN) else { return String::new() };
    match chain[start..].find(END) {
        Some(end) => format!("{}\n", &chain[start..start + end + END.len()]),
        None => String::new(),
    }
}

// ---- submit options ----------------------------------------------------------------------------

/// Settings for submissions (`mirai_host_submit` and friends), which read them and do not keep
/// them: one object may serve any number of submissions, so none needs an allocation of its own.
/// Create with `mirai_submit_options_new`, free with `mirai_submit_options_free`.
/// Threads: several threads may submit with the same options at once, as long as no thread
/// changes them meanwhile; changing them is for one thread at a time.
pub struct mirai_submit_options {
    timeout: Option<Duration>,
    retry: Option<u32>,
    notify: bool,
    callback: mirai_task_callback,
    userdata: *mut c_void,
}

impl mirai_submit_options {
    /// The engine's options for one submission.
    pub(crate) fn for_task(&self) -> SubmitOptions {
        SubmitOptions {
            timeout: self.timeout,
            retry: self.retry,
            notify: self.notify,
            callback: self.callback.map(|cb| c_callback(cb, self.userdata)),
        }
    }
}

/// New submit options with the defaults: no timeout, no notification, no callback. NULL only if
/// memory ran out.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_submit_options_new() -> *mut mirai_submit_options {
    new_builder(mirai_submit_options {
        timeout: None,
        retry: None,
        notify: false,
        callback: None,
        userdata: std::ptr::null_mut(),
    })
}

/// Frees submit options. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_submit_options_free(opts: *mut mirai_submit_options) {
    free_builder(opts)
}

/// Retries for these tasks, instead of the host's (`mirai_host_options_set_retry`); negative
/// goes back to the host's.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_submit_options_set_retry(
    opts: *mut mirai_submit_options,
    retry: i64,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.retry = match retry {
            r if r < 0 => None,
            r => Some(u32::try_from(r).map_err(|_| refuse("retry must be below 2^32"))?),
        };
        Ok(())
    })
}

/// Tasks resolve as timed out (5) after `ms` milliseconds; negative for no timeout (the default).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_submit_options_set_timeout_ms(
    opts: *mut mirai_submit_options,
    ms: i64,
) -> mirai_result {
    guard(|| {
        builder(opts)?.timeout = u64::try_from(ms).ok().map(Duration::from_millis);
        Ok(())
    })
}

/// Whether tasks' ids are queued for `mirai_host_take_completions` (and the completion fd).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_submit_options_set_notify(
    opts: *mut mirai_submit_options,
    notify: bool,
) -> mirai_result {
    guard(|| {
        builder(opts)?.notify = notify;
        Ok(())
    })
}

/// The callback each task runs once when it resolves, with `userdata` (see
/// `mirai_task_callback` for the thread); a NULL `callback` sets none. For a userdata per task,
/// set it before each submission (no allocation), or use `mirai_task_set_callback`.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_submit_options_set_callback(
    opts: *mut mirai_submit_options,
    callback: mirai_task_callback,
    userdata: *mut c_void,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.callback = callback;
        o.userdata = userdata;
        Ok(())
    })
}

// ---- daemon options ----------------------------------------------------------------------------

/// Settings for `mirai_daemon_run`: create with `mirai_daemon_options_new` (the defaults), change
/// with the `mirai_daemon_options_set_*` functions, free with `mirai_daemon_options_free` once
/// `mirai_daemon_run` has returned (it may be reused for another run).
/// Threads: a builder may move between threads, but only one may use it at a time.
pub struct mirai_daemon_options {
    pub(crate) inner: DaemonOptions,
}

/// What a daemon does when its host goes away (R's `autoexit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mirai_autoexit {
    /// Exit; a running task is interrupted, and the process gets SIGTERM if it has not returned
    /// within the grace period (`autoexit = TRUE`).
    Exit = 0,
    /// Finish the running task, then exit (`autoexit = NA`).
    FinishTask = 1,
    /// Stay and redial the same URL until a host answers (`autoexit = FALSE`).
    Stay = 2,
}

/// New daemon options with the defaults: fail fast if the first dial fails, autoexit with a
/// 200 ms grace, no task, idle or wall time limit, the secret and CA read from `MIRAI_SECRET`
/// and `MIRAI_TLS_CA`. NULL only if memory ran out.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_new() -> *mut mirai_daemon_options {
    new_builder(mirai_daemon_options { inner: DaemonOptions::default() })
}

/// Frees daemon options. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_free(opts: *mut mirai_daemon_options) {
    free_builder(opts)
}

/// Keep retrying the first dial until a host answers, instead of failing at once (R's `asyncdial`).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_set_retry(
    opts: *mut mirai_daemon_options,
    retry: bool,
) -> mirai_result {
    guard(|| {
        builder(opts)?.inner.retry = retry;
        Ok(())
    })
}

/// What the daemon does when its host goes away: `mode` is a `mirai_autoexit` value;
/// `grace_ms`, for `MIRAI_AUTOEXIT_EXIT`, is how long a running task has to return before
/// SIGTERM (ignored for the other modes).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_set_autoexit(
    opts: *mut mirai_daemon_options,
    mode: i32,
    grace_ms: u64,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.inner.autoexit = match mode {
            x if x == mirai_autoexit::Exit as i32 => {
                AutoExit::Exit { grace: Duration::from_millis(grace_ms) }
            }
            x if x == mirai_autoexit::FinishTask as i32 => AutoExit::FinishTask,
            x if x == mirai_autoexit::Stay as i32 => AutoExit::Stay,
            x => return Err(invalid_enum("autoexit", x)),
        };
        Ok(())
    })
}

/// Exit (code 3) after this many tasks. 0 is refused (for no limit, do not call this).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_set_maxtasks(opts: *mut mirai_daemon_options, n: u64) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.inner.maxtasks =
            Some(at_least_one(n, "maxtasks must be at least 1 (for no limit, leave it unset)")?);
        Ok(())
    })
}

/// Give up on a host from which nothing (heartbeats included) arrived for `ms` milliseconds
/// (default 120000), then do as `autoexit` says. Applies only to hosts that heartbeat, and is at
/// least three of their heartbeats; 0 turns it off.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_set_host_timeout_ms(
    opts: *mut mirai_daemon_options,
    ms: u64,
) -> mirai_result {
    guard(|| {
        builder(opts)?.inner.host_timeout = (ms > 0).then(|| Duration::from_millis(ms));
        Ok(())
    })
}

/// Exit (code 1) when no task arrives for `ms` milliseconds.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_set_idletime_ms(
    opts: *mut mirai_daemon_options,
    ms: u64,
) -> mirai_result {
    guard(|| {
        builder(opts)?.inner.idletime = Some(Duration::from_millis(ms));
        Ok(())
    })
}

/// Exit (code 2) once `ms` milliseconds have passed: a soft limit, checked when a task arrives
/// (that task still runs).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_set_walltime_ms(
    opts: *mut mirai_daemon_options,
    ms: u64,
) -> mirai_result {
    guard(|| {
        builder(opts)?.inner.walltime = Some(Duration::from_millis(ms));
        Ok(())
    })
}

/// The largest frame accepted from the host, in bytes. 0 is refused (it would reject every frame).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_set_max_frame(
    opts: *mut mirai_daemon_options,
    bytes: u64,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.inner.max_frame = at_least_one(bytes, "max_frame must be at least 1 byte")?;
        Ok(())
    })
}

/// The host's secret, hex-encoded (checked here). Without this call the daemon takes
/// `MIRAI_SECRET` out of its environment (so tasks cannot read it): no other thread may use the
/// environment meanwhile.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_set_secret_hex(
    opts: *mut mirai_daemon_options,
    hex: *const c_char,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        let secret = mirai_core::auth::from_hex(c_str(hex, "hex")?)?;
        if secret.is_empty() {
            return Err(refuse("the secret is empty"));
        }
        o.inner.secret = Some(secret);
        Ok(())
    })
}

/// The host's CA certificate (PEM) for `tls+tcp://`. Without this call the daemon reads
/// `MIRAI_TLS_CA` from its environment.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_set_tls_ca(
    opts: *mut mirai_daemon_options,
    ca_pem: *const c_char,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.inner.tls_ca = Some(c_str(ca_pem, "ca_pem")?.to_string());
        Ok(())
    })
}

/// Free text sent to the host in the handshake.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_set_label(
    opts: *mut mirai_daemon_options,
    label: *const c_char,
) -> mirai_result {
    guard(|| {
        let o = builder(opts)?;
        o.inner.label = c_str(label, "label")?.to_string();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_from_a_chain_never_carries_the_key() {
        let pem = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n\
                   -----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n";
        assert_eq!(last_pem_block(pem), "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n");
        assert_eq!(last_pem_block("-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n"), "");
    }

    #[test]
    fn setters_keep_what_they_accept_and_leave_the_rest_on_refusal() {
        let o = mirai_host_options_new();
        assert_eq!(mirai_host_options_set_memory_limit(o, 0), mirai_result::InvalidArgument);
        assert_eq!(mirai_host_options_set_memory_limit(o, 10), mirai_result::Ok);
        assert_eq!(mirai_host_options_set_memory_limit(o, 0), mirai_result::InvalidArgument);
        let secret = [7u8; 16];
        assert_eq!(mirai_host_options_set_auth(o, 1, secret.as_ptr(), 15), mirai_result::InvalidArgument);
        assert_eq!(mirai_host_options_set_auth(o, 2, secret.as_ptr(), 16), mirai_result::InvalidArgument);
        assert_eq!(mirai_host_options_set_auth(o, 1, secret.as_ptr(), 16), mirai_result::Ok);
        // SAFETY: a live builder from mirai_host_options_new, used by this thread only.
        let inner = unsafe { &(*o).inner };
        assert_eq!(inner.memory_limit, Some(10));
        assert!(matches!(&inner.auth, Auth::Secret(s) if s.as_slice() == secret));
        mirai_host_options_free(o);

        let d = mirai_daemon_options_new();
        assert_eq!(mirai_daemon_options_set_secret_hex(d, c"0g".as_ptr()), mirai_result::InvalidArgument);
        assert_eq!(mirai_daemon_options_set_secret_hex(d, c"".as_ptr()), mirai_result::InvalidArgument);
        assert_eq!(mirai_daemon_options_set_secret_hex(d, c"00ff".as_ptr()), mirai_result::Ok);
        assert_eq!(mirai_daemon_options_set_autoexit(d, 3, 0), mirai_result::InvalidArgument);
        assert_eq!(mirai_daemon_options_set_autoexit(d, 1, 0), mirai_result::Ok);
        // SAFETY: as above.
        let inner = unsafe { &(*d).inner };
        assert_eq!(inner.secret.as_deref(), Some(&[0u8, 255][..]));
        assert!(matches!(inner.autoexit, AutoExit::FinishTask));
        mirai_daemon_options_free(d);
    }
}
