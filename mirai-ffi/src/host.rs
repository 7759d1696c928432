//! Hosts: listen, submit, everywhere, counters, completion signals, launching, closing.

use std::ffi::{CString, c_char};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mirai_core::auth::Auth;
use mirai_core::launch::{CommandTemplate, LocalDaemon};
use mirai_core::tls::ServerIdentity;
use mirai_core::{Host, HostOptions, SubmitOptions};

use crate::boundary::{
    Failure, bytes, c_str, deref, guard, guard_value, invalid_enum, mirai_result, opt_c_bytes, opt_c_str, put,
};
use crate::buffer::mirai_buffer;
use crate::task::{c_callback, mirai_task, mirai_task_callback};

/// A host (one compute profile). Create with `mirai_host_listen`, release with `mirai_host_free`.
pub struct mirai_host {
    pub(crate) host: Host,
    url: CString,
    secret_hex: Option<CString>,
    tls_ca: Option<CString>,
    /// Processes started by each launch call, most recent last (shared, so a wait for them
    /// does not hold the lock).
    launches: Mutex<Vec<Arc<[LocalDaemon]>>>,
}

impl mirai_host {
    pub(crate) fn record_launch(&self, launched: Vec<LocalDaemon>) {
        self.launches.lock().unwrap_or_else(|e| e.into_inner()).push(launched.into());
    }

    /// The processes of the most recent launch call.
    pub(crate) fn latest_launch(&self) -> Arc<[LocalDaemon]> {
        self.launches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
            .unwrap_or_else(|| Arc::new([]))
    }
}

/// Settings for `mirai_host_listen`. Initialise with `mirai_host_options_init`, then change
/// fields; fields added in later versions come at the end.
#[repr(C)]
pub struct mirai_host_options {
    /// Cap on payload bytes waiting in the queue; 0 for none.
    pub memory_limit: u64,
    /// Largest frame accepted from a daemon, in bytes.
    pub max_frame: u64,
    /// Use `stream` (six MRG32k3a words) as the base of daemons' RNG streams; otherwise random.
    pub stream_set: bool,
    pub stream: [u32; 6],
    /// Opaque bytes every daemon receives in its init bundle (may be NULL with length 0).
    pub init_blob: *const u8,
    pub init_blob_len: usize,
    /// Milliseconds a daemon has to complete its handshake.
    pub handshake_timeout_ms: u64,
    /// Authentication: `MIRAI_AUTH_RANDOM` (default), `MIRAI_AUTH_SECRET` (use `secret`), or
    /// `MIRAI_AUTH_DISABLED` (trusted networks only).
    /// A `mirai_auth` value (an integer: values from C are checked, not trusted).
    pub auth: i32,
    pub secret: *const u8,
    pub secret_len: usize,
    /// For `tls+tcp://` with your own certificate: PEM chain, key, and the CA daemons should
    /// trust. All NULL generates a short-lived CA and certificate at start.
    pub tls_cert_chain_pem: *const c_char,
    pub tls_key_pem: *const c_char,
    pub tls_ca_pem: *const c_char,
    /// Password of an encrypted `tls_key_pem` (`ENCRYPTED PRIVATE KEY`, PKCS#8), any bytes up to
    /// the NUL (UTF-8 or not); NULL for none. Ignored when the key is not encrypted.
    pub tls_key_password: *const c_char,
}

/// How daemons authenticate to a host.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mirai_auth {
    Random = 0,
    Secret = 1,
    Disabled = 2,
}

/// Settings for one submission. Initialise with `mirai_submit_options_init`.
#[repr(C)]
pub struct mirai_submit_options {
    /// Resolve as timed out (5) after this many milliseconds; negative for no timeout.
    pub timeout_ms: i64,
    /// Queue the task's id for `mirai_host_take_completions` (and the completion fd).
    pub notify: bool,
    /// Called once when the task resolves (see `mirai_task_callback` for the thread).
    pub callback: mirai_task_callback,
    pub userdata: *mut std::ffi::c_void,
}

/// The dispatcher's counters, as R's mirai `info()` reports them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mirai_counters {
    pub connections: u64,
    pub cumulative: u64,
    pub awaiting: u64,
    pub executing: u64,
    pub completed: u64,
}

/// Queue memory, in bytes; `limit` is 0 when there is no cap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mirai_memory {
    pub used: u64,
    pub peak: u64,
    pub limit: u64,
}

/// Fills `opts` with the defaults.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_options_init(opts: *mut mirai_host_options) -> mirai_result {
    guard(|| {
        let d = HostOptions::default();
        let value = mirai_host_options {
            memory_limit: 0,
            max_frame: d.max_frame,
            stream_set: false,
            stream: [0; 6],
            init_blob: std::ptr::null(),
            init_blob_len: 0,
            handshake_timeout_ms: d.handshake_timeout.as_millis() as u64,
            auth: mirai_auth::Random as i32,
            secret: std::ptr::null(),
            secret_len: 0,
            tls_cert_chain_pem: std::ptr::null(),
            tls_key_pem: std::ptr::null(),
            tls_ca_pem: std::ptr::null(),
            tls_key_password: std::ptr::null(),
        };
        put(opts, value, "opts")
    })
}

/// Fills `opts` with the defaults: no timeout, no notification, no callback.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_submit_options_init(opts: *mut mirai_submit_options) -> mirai_result {
    guard(|| {
        let value = mirai_submit_options {
            timeout_ms: -1,
            notify: false,
            callback: None,
            userdata: std::ptr::null_mut(),
        };
        put(opts, value, "opts")
    })
}

fn host_options(o: &mirai_host_options) -> Result<HostOptions, Failure> {
    let mut options = HostOptions {
        memory_limit: (o.memory_limit > 0).then_some(o.memory_limit),
        max_frame: o.max_frame,
        stream: o.stream_set.then_some(o.stream),
        init_blob: bytes(o.init_blob, o.init_blob_len, "init_blob")?.to_vec(),
        handshake_timeout: Duration::from_millis(o.handshake_timeout_ms),
        ..HostOptions::default()
    };
    options.auth = match o.auth {
        x if x == mirai_auth::Random as i32 => Auth::Random,
        x if x == mirai_auth::Secret as i32 => {
            Auth::Secret(bytes(o.secret, o.secret_len, "secret")?.to_vec())
        }
        x if x == mirai_auth::Disabled as i32 => Auth::Disabled,
        x => return Err(invalid_enum("auth", x)),
    };
    let chain = opt_c_str(o.tls_cert_chain_pem, "tls_cert_chain_pem")?;
    let key = opt_c_str(o.tls_key_pem, "tls_key_pem")?;
    let ca = opt_c_str(o.tls_ca_pem, "tls_ca_pem")?;
    options.tls = match (chain, key) {
        (Some(chain), Some(key)) => Some(ServerIdentity {
            cert_chain_pem: chain.into(),
            key_pem: key.into(),
            key_password: opt_c_bytes(o.tls_key_password).map(<[u8]>::to_vec),
            // Without a separate CA, daemons trust the chain's last certificate.
            ca_pem: ca.map(str::to_string).unwrap_or_else(|| last_pem_block(chain)),
        }),
        (None, None) => None,
        _ => {
            return Err(Failure::Code(
                mirai_result::InvalidArgument,
                "tls_cert_chain_pem and tls_key_pem go together".into(),
            ));
        }
    };
    Ok(options)
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

/// Starts a host listening at `url` (`ipc://`, `abstract://`, `tcp://`, `tls+tcp://`; port 0
/// picks a free port). `opts` may be NULL for the defaults. On success `*out` is the host.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_listen(
    url: *const c_char,
    opts: *const mirai_host_options,
    out: *mut *mut mirai_host,
) -> mirai_result {
    guard(|| {
        let url = c_str(url, "url")?;
        if out.is_null() {
            return Err(Failure::Null("out"));
        }
        let options = match (!opts.is_null()).then(|| deref(opts, "opts")).transpose()? {
            Some(o) => host_options(o)?,
            None => HostOptions::default(),
        };
        let host = Host::listen(url, options)?;
        let cstring = |s: &str| {
            CString::new(s).map_err(|_| Failure::Code(mirai_result::InvalidArgument, "NUL in string".into()))
        };
        let handle = mirai_host {
            url: cstring(&host.url())?,
            secret_hex: host.secret().map(|s| cstring(&mirai_core::auth::to_hex(s))).transpose()?,
            tls_ca: host.tls_ca_pem().map(cstring).transpose()?,
            launches: Mutex::new(Vec::new()),
            host,
        };
        put(out, Box::into_raw(Box::new(handle)), "out")
    })
}

/// The URL daemons dial (with the actual port for port 0). Valid until the host is freed;
/// NULL if `host` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_url(host: *const mirai_host) -> *const c_char {
    guard_value(std::ptr::null(), || deref(host, "host").map(|h| h.url.as_ptr()).unwrap_or(std::ptr::null()))
}

/// The secret daemons must know, hex-encoded, as launchers pass it in `MIRAI_SECRET`; NULL when
/// authentication is disabled. Valid until the host is freed.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_secret_hex(host: *const mirai_host) -> *const c_char {
    guard_value(std::ptr::null(), || {
        deref(host, "host").ok().and_then(|h| h.secret_hex.as_ref()).map_or(std::ptr::null(), |s| s.as_ptr())
    })
}

/// The CA certificate (PEM) daemons verify a `tls+tcp://` host with; NULL otherwise. Valid until
/// the host is freed.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_tls_ca(host: *const mirai_host) -> *const c_char {
    guard_value(std::ptr::null(), || {
        deref(host, "host").ok().and_then(|h| h.tls_ca.as_ref()).map_or(std::ptr::null(), |s| s.as_ptr())
    })
}

fn submit_options(opts: *const mirai_submit_options) -> Result<SubmitOptions, Failure> {
    if opts.is_null() {
        return Ok(SubmitOptions::default());
    }
    let o = deref(opts, "opts")?;
    let callback = o.callback.map(|cb| c_callback(cb, o.userdata));
    Ok(SubmitOptions {
        timeout: u64::try_from(o.timeout_ms).ok().map(Duration::from_millis),
        notify: o.notify,
        callback,
    })
}

fn submit_with(
    host: *const mirai_host,
    data: *const u8,
    len: usize,
    opts: *const mirai_submit_options,
    out: *mut *mut mirai_task,
    blocking: bool,
) -> mirai_result {
    guard(|| {
        let payload = bytes(data, len, "data")?.to_vec();
        submit_payload(host, payload, opts, out, blocking)
    })
}

fn submit_payload(
    host: *const mirai_host,
    payload: Vec<u8>,
    opts: *const mirai_submit_options,
    out: *mut *mut mirai_task,
    blocking: bool,
) -> Result<(), Failure> {
    let h = deref(host, "host")?;
    if out.is_null() {
        return Err(Failure::Null("out"));
    }
    let options = submit_options(opts)?;
    let task =
        if blocking { h.host.submit(payload, options)? } else { h.host.try_submit(payload, options)? };
    put(out, mirai_task::new(task), "out")
}

/// Like `mirai_host_submit`, with the payload in `buf` (filled with `mirai_buffer_write`), which
/// is taken without a copy. `buf` is consumed whatever the result: do not use or free it after.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_submit_buffer(
    host: *const mirai_host,
    buf: *mut mirai_buffer,
    opts: *const mirai_submit_options,
    out: *mut *mut mirai_task,
) -> mirai_result {
    guard(|| {
        if buf.is_null() {
            return Err(Failure::Null("buf"));
        }
        // SAFETY: a buffer from mirai_buffer_new, handed over by the caller.
        let payload = unsafe { Box::from_raw(buf) }.bytes;
        submit_payload(host, payload, opts, out, true)
    })
}

/// Submits `len` bytes at `data` as a task; `*out` is its handle (free with `mirai_task_free`).
/// Blocks only while the queue is at its memory cap. `opts` may be NULL.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_submit(
    host: *const mirai_host,
    data: *const u8,
    len: usize,
    opts: *const mirai_submit_options,
    out: *mut *mut mirai_task,
) -> mirai_result {
    submit_with(host, data, len, opts, out, true)
}

/// Like `mirai_host_submit`, but returns `MIRAI_RESULT_TRY_AGAIN` at once when the queue is at
/// its memory cap.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_try_submit(
    host: *const mirai_host,
    data: *const u8,
    len: usize,
    opts: *const mirai_submit_options,
    out: *mut *mut mirai_task,
) -> mirai_result {
    submit_with(host, data, len, opts, out, false)
}

/// Sends a copy of the task to every connected daemon, and at least `min` copies. `*out_tasks`
/// receives an array of `*out_n` task handles; free it with `mirai_task_array_free`.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_everywhere(
    host: *const mirai_host,
    data: *const u8,
    len: usize,
    min: usize,
    out_tasks: *mut *mut *mut mirai_task,
    out_n: *mut usize,
) -> mirai_result {
    guard(|| {
        let h = deref(host, "host")?;
        let payload = bytes(data, len, "data")?;
        if out_tasks.is_null() || out_n.is_null() {
            return Err(Failure::Null("out_tasks or out_n"));
        }
        let tasks = h.host.everywhere(payload, min)?;
        let handles: Box<[*mut mirai_task]> = tasks.into_iter().map(mirai_task::new).collect();
        let n = handles.len();
        put(out_n, n, "out_n")?;
        put(out_tasks, Box::into_raw(handles).cast(), "out_tasks")
    })
}

/// The dispatcher's counters.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_counters(host: *const mirai_host, out: *mut mirai_counters) -> mirai_result {
    guard(|| {
        let c = deref(host, "host")?.host.counters();
        let value = mirai_counters {
            connections: c.connections,
            cumulative: c.cumulative,
            awaiting: c.awaiting,
            executing: c.executing,
            completed: c.completed,
        };
        put(out, value, "out")
    })
}

/// Queue memory use.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_memory(host: *const mirai_host, out: *mut mirai_memory) -> mirai_result {
    guard(|| {
        let m = deref(host, "host")?.host.memory();
        put(out, mirai_memory { used: m.used, peak: m.peak, limit: m.limit.unwrap_or(0) }, "out")
    })
}

fn timeout(ms: i64) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

/// Waits until at least `n` daemons are connected; `timeout_ms` negative waits forever.
/// `MIRAI_RESULT_TIMED_OUT` if the time ran out, `MIRAI_RESULT_OBJECT_CLOSED` if the host closed.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_wait_connections(
    host: *const mirai_host,
    n: u64,
    timeout_ms: i64,
) -> mirai_result {
    guard(|| {
        let h = deref(host, "host")?;
        if h.host.wait_connections(n, timeout(timeout_ms)) {
            Ok(())
        } else if h.host.is_closed() {
            Err(Failure::Core(mirai_core::Error::Closed))
        } else {
            Err(Failure::Core(mirai_core::Error::TimedOut))
        }
    })
}

/// Waits until the queue is below its memory cap (for an interruptible blocking submit: wait in
/// slices, then `mirai_host_try_submit`). `MIRAI_RESULT_TIMED_OUT` if still at the cap.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_wait_capacity(host: *const mirai_host, timeout_ms: i64) -> mirai_result {
    guard(|| {
        let h = deref(host, "host")?;
        if h.host.wait_capacity(timeout(timeout_ms)) {
            Ok(())
        } else {
            Err(Failure::Core(mirai_core::Error::TimedOut))
        }
    })
}

/// Waits until one of `n` tasks is resolved; `*out_index` is the first resolved in array order.
/// `MIRAI_RESULT_TIMED_OUT` if none resolved in time (negative `timeout_ms` waits forever). An
/// empty race (`n` 0) is `MIRAI_RESULT_INVALID_ARGUMENT`: nothing could ever win it.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_race(
    host: *const mirai_host,
    tasks: *const *const mirai_task,
    n: usize,
    timeout_ms: i64,
    out_index: *mut usize,
) -> mirai_result {
    guard(|| {
        let h = deref(host, "host")?;
        if out_index.is_null() {
            return Err(Failure::Null("out_index"));
        }
        if n == 0 {
            return Err(Failure::Code(mirai_result::InvalidArgument, "a race of no tasks".into()));
        }
        if tasks.is_null() {
            return Err(Failure::Null("tasks"));
        }
        // SAFETY: the caller promises `n` task pointers at `tasks`.
        let ptrs = unsafe { std::slice::from_raw_parts(tasks, n) };
        let list =
            ptrs.iter().map(|&t| deref(t, "task").map(|t| t.task.clone())).collect::<Result<Vec<_>, _>>()?;
        match h.host.race(&list, timeout(timeout_ms)) {
            Some(i) => put(out_index, i, "out_index"),
            None => Err(Failure::Core(mirai_core::Error::TimedOut)),
        }
    })
}

/// A file descriptor that is readable while completions of `notify` tasks are queued; for event
/// loops (R's `later`, Julia's `poll_fd`, Python's asyncio). Do not read or close it. -1 if
/// `host` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_completion_fd(host: *const mirai_host) -> i32 {
    guard_value(-1, || deref(host, "host").map(|h| h.host.completion_fd()).unwrap_or(-1))
}

/// Takes up to `cap` queued completion ids, in order of resolution, into `ids`; `*out_n` is how
/// many. The fd stays readable while more remain.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_take_completions(
    host: *const mirai_host,
    ids: *mut u64,
    cap: usize,
    out_n: *mut usize,
) -> mirai_result {
    guard(|| {
        let h = deref(host, "host")?;
        if (cap > 0 && ids.is_null()) || out_n.is_null() {
            return Err(Failure::Null("ids or out_n"));
        }
        let done = h.host.take_completions(cap);
        // SAFETY: the caller promises room for `cap` ids; `done.len() <= cap`.
        unsafe { std::ptr::copy_nonoverlapping(done.as_ptr(), ids, done.len()) };
        put(out_n, done.len(), "out_n")
    })
}

/// Starts `n` local daemon processes: `argv[0]` is the program and `{url}` in any argument is
/// replaced by the host's URL; the secret and TLS CA go in their environment. `argc` counts
/// `argv`'s entries. With `inherit_output` false their output is discarded.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_launch_local(
    host: *const mirai_host,
    argv: *const *const c_char,
    argc: usize,
    n: usize,
    inherit_output: bool,
) -> mirai_result {
    guard(|| {
        let h = deref(host, "host")?;
        if argv.is_null() || argc == 0 {
            return Err(Failure::Null("argv"));
        }
        // SAFETY: the caller promises `argc` string pointers at `argv`.
        let args = unsafe { std::slice::from_raw_parts(argv, argc) };
        let args = args.iter().map(|&a| c_str(a, "argv entry")).collect::<Result<Vec<_>, _>>()?;
        let mut template = CommandTemplate::new(args[0], &args[1..]);
        template.inherit_output = inherit_output;
        let daemons = h.host.launch_local(n, &template)?;
        h.record_launch(daemons);
        Ok(())
    })
}

/// Tells every connected daemon to exit (even those set to outlive their host).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_exit_daemons(host: *const mirai_host) -> mirai_result {
    guard(|| {
        deref(host, "host")?.host.exit_daemons();
        Ok(())
    })
}

/// Closes the host: unresolved tasks resolve as connection reset (19), daemons are told, the
/// listener closes. Later calls on the host return `MIRAI_RESULT_OBJECT_CLOSED`; task handles
/// stay valid. Closing twice is harmless.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_close(host: *const mirai_host) -> mirai_result {
    guard(|| {
        deref(host, "host")?.host.close();
        Ok(())
    })
}

/// Closes (if needed) and frees the host. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_free(host: *mut mirai_host) {
    guard_value((), || {
        if !host.is_null() {
            // SAFETY: a pointer from mirai_host_listen, freed once.
            drop(unsafe { Box::from_raw(host) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::last_pem_block;

    #[test]
    fn the_ca_from_a_chain_never_carries_the_key() {
        let pem = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n\
                   -----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n";
        assert_eq!(last_pem_block(pem), "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n");
        assert_eq!(last_pem_block("-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n"), "");
    }
}
