//! Hosts: listen, submit, everywhere, counters, completion signals, launching, closing.

use std::ffi::{CString, c_char};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mirai_core::launch::{CommandTemplate, LocalDaemon};
use mirai_core::{Host, HostOptions, SubmitOptions};

use crate::boundary::{Failure, bytes, c_str, deref, guard, guard_value, mirai_result, put};
use crate::buffer::mirai_buffer;
use crate::options::{mirai_host_options, mirai_submit_options};
use crate::task::mirai_task;

/// A host (one compute profile). Create with `mirai_host_listen`, release with `mirai_host_free`.
/// Threads: any number of threads may call functions on one host at once. `mirai_host_free`
/// must not race any other call on the host: stop using it everywhere first.
pub struct mirai_host {
    pub(crate) host: Host,
    url: CString,
    secret_hex: Option<CString>,
    tls_ca: Option<CString>,
    /// The processes of the most recent launch call, the only ones `mirai_host_wait_launched`
    /// watches. Earlier launches are dropped (their reapers keep running), so repeated launches
    /// do not grow the host. Shared, so a wait for them does not hold the lock.
    latest_launch: Mutex<Arc<[LocalDaemon]>>,
}

impl mirai_host {
    pub(crate) fn record_launch(&self, launched: Vec<LocalDaemon>) {
        *self.latest_launch.lock().unwrap_or_else(|e| e.into_inner()) = launched.into();
    }

    /// The processes of the most recent launch call.
    pub(crate) fn latest_launch(&self) -> Arc<[LocalDaemon]> {
        self.latest_launch.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The dispatcher's counters, as R's mirai `info()` reports them. This struct keeps its fields
/// in every version (later counters come through new functions), as libmirai writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mirai_counters {
    pub connections: u64,
    pub cumulative: u64,
    pub awaiting: u64,
    pub executing: u64,
    pub completed: u64,
}

/// What the host's reliability measures did: tasks handed to another daemon because theirs
/// left without evaluating them, tasks run again after their daemon died, tasks given up
/// (error 18) after being at `quarantine` dead daemons, daemons dropped because they did not
/// stop a cancelled task within the grace period, and `everywhere` copies resolved with 19
/// because the daemons they waited for left. This struct keeps its fields in every version, as
/// libmirai writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mirai_recoveries {
    pub requeued: u64,
    pub retried: u64,
    pub quarantined: u64,
    pub escalated: u64,
    pub surplus_copies: u64,
}

/// Queue memory, in bytes; `limit` is 0 when there is no cap. This struct keeps its fields in
/// every version, as libmirai writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mirai_memory {
    pub used: u64,
    pub peak: u64,
    pub limit: u64,
}

/// Starts a host listening at `url` (`ipc://`, `abstract://`, `tcp://`, `tls+tcp://`, `ws://`,
/// `wss://`; port 0 picks a free port), with `opts` from `mirai_host_options_new` (read, not kept), or NULL for
/// the defaults. On success `*out` is the host.
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
        // SAFETY: NULL or options from mirai_host_options_new, not changed meanwhile.
        let options = unsafe { opts.as_ref() }.map_or_else(HostOptions::default, |o| o.inner.clone());
        let host = Host::listen(url, options)?;
        let cstring = |s: &str| {
            CString::new(s).map_err(|_| Failure::Code(mirai_result::InvalidArgument, "NUL in string".into()))
        };
        let handle = mirai_host {
            url: cstring(&host.url())?,
            secret_hex: host.secret().map(|s| cstring(&mirai_core::auth::to_hex(s))).transpose()?,
            tls_ca: host.tls_ca_pem().map(cstring).transpose()?,
            latest_launch: Mutex::new(Arc::new([])),
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

fn submit_options(opts: *const mirai_submit_options) -> SubmitOptions {
    // SAFETY: NULL or options from mirai_submit_options_new, not changed meanwhile.
    unsafe { opts.as_ref() }.map_or_else(SubmitOptions::default, mirai_submit_options::for_task)
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
    let options = submit_options(opts);
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
/// Blocks only while the queue is at its memory cap. `opts` (from `mirai_submit_options_new`,
/// read and not kept) may be NULL for the defaults.
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

/// What requeueing, retry, quarantine, escalation and barrier lifting did so far.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_recoveries(host: *const mirai_host, out: *mut mirai_recoveries) -> mirai_result {
    guard(|| {
        let r = deref(host, "host")?.host.recoveries();
        let value = mirai_recoveries {
            requeued: r.requeued,
            retried: r.retried,
            quarantined: r.quarantined,
            escalated: r.escalated,
            surplus_copies: r.surplus_copies,
        };
        put(out, value, "out")
    })
}

/// Copies of an `everywhere` broadcast still waiting for a daemon (tasks submitted after it wait
/// behind them).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_barrier(host: *const mirai_host, out: *mut u64) -> mirai_result {
    guard(|| {
        let c = deref(host, "host")?.host.counters();
        put(out, c.barrier, "out")
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
        // Skipped when empty: `ids` may then be NULL, which copy_nonoverlapping never accepts.
        if !done.is_empty() {
            // SAFETY: the caller promises room for `cap` ids; `done.len() <= cap`.
            unsafe { std::ptr::copy_nonoverlapping(done.as_ptr(), ids, done.len()) };
        }
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
        let daemons = mirai_core::launch::launch_local(&h.host, n, &template)?;
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

/// Closes the host: unresolved tasks resolve as connection reset (19), the listener closes, and
/// no callback runs once this returns. Later calls on the host return
/// `MIRAI_RESULT_OBJECT_CLOSED`; task handles stay valid. Closing twice is harmless. The host's
/// thread then tells the daemons and closes their connections, which `mirai_host_free` waits for.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_close(host: *const mirai_host) -> mirai_result {
    guard(|| {
        deref(host, "host")?.host.close();
        Ok(())
    })
}

/// Closes (if needed) and frees the host, once its thread has told every daemon and ended.
/// NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_free(host: *mut mirai_host) {
    guard_value((), || {
        if !host.is_null() {
            // SAFETY: a pointer from mirai_host_listen, freed once.
            drop(unsafe { Box::from_raw(host) });
        }
    })
}
