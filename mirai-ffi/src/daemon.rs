//! The daemon runtime: run a daemon on the calling thread with a C evaluator.

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use mirai_core::daemon::{InitBundle, InterruptHook};
use mirai_core::{Daemon, DaemonOptions, Evaluation, Evaluator, Interrupt};
use mirai_proto::Status;

use crate::boundary::{Failure, bytes, c_str, deref, guard, guard_value, mirai_result, put};
use crate::options::mirai_daemon_options;

/// How an evaluation ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mirai_eval_status {
    Value = 0,
    Error = 1,
    Interrupted = 2,
}

/// The cancellation state of the running task, lent to the evaluator for the duration of its
/// `evaluate` call. Threads: while that call runs, any thread may query it.
pub struct mirai_interrupt {
    inner: Interrupt,
}

/// Where the evaluator puts its result bytes (`mirai_output_set`), lent for the duration of its
/// `evaluate` call. Threads: one at a time (the evaluating thread, or one it hands it to).
pub struct mirai_output {
    payload: Vec<u8>,
    /// The task's bytes, which `evaluate` was given, until `mirai_output_release_task`.
    task: Vec<u8>,
}

/// Called once per connection, before any task, with the daemon's id, its RNG stream (six
/// MRG32k3a words) and the host's init blob.
pub type mirai_init_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        daemon_id: u64,
        stream: *const u32,
        blob: *const u8,
        len: usize,
    ),
>;

/// Evaluates one task (`len` bytes at `data`) and puts the result in `out`. `everywhere` marks
/// a copy of an everywhere broadcast. Should return soon after `intr` is set. It runs on the
/// thread that called `mirai_daemon_run` and must return normally (no longjmp across it).
pub type mirai_evaluate_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        data: *const u8,
        len: usize,
        everywhere: bool,
        intr: *const mirai_interrupt,
        out: *mut mirai_output,
    ) -> mirai_eval_status,
>;

/// Called after every task (R's `cleanup`), on the evaluating thread.
pub type mirai_cleanup_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// Called on the daemon's I/O thread the moment the running task is cancelled: it must be
/// thread-safe and quick (typically it sets a flag the evaluator's runtime polls).
pub type mirai_interrupt_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// A daemon's evaluator: callbacks plus the userdata passed to each. Only `evaluate` is required.
/// Read by `mirai_daemon_run`, and used until it returns. This struct keeps its fields in every
/// version (a new callback would come with a new function), as libmirai reads it.
#[repr(C)]
pub struct mirai_evaluator {
    pub userdata: *mut c_void,
    pub init: mirai_init_fn,
    pub evaluate: mirai_evaluate_fn,
    pub cleanup: mirai_cleanup_fn,
    pub interrupt: mirai_interrupt_fn,
}

/// `mirai_evaluate_fn` as the machine calls it: the status as the `int` it is.
type RawEvaluateFn = unsafe extern "C" fn(
    *mut c_void,
    *const u8,
    usize,
    bool,
    *const mirai_interrupt,
    *mut mirai_output,
) -> i32;

/// The signature a plugin library exports as `mirai_plugin_evaluate` for `mirai-daemon
/// --evaluator plugin` (its userdata is NULL). It may also export `mirai_plugin_init` with the
/// `mirai_init_fn` signature.
pub type mirai_plugin_evaluate_fn = unsafe extern "C" fn(
    userdata: *mut c_void,
    data: *const u8,
    len: usize,
    everywhere: bool,
    intr: *const mirai_interrupt,
    out: *mut mirai_output,
) -> mirai_eval_status;

/// Sets the evaluation's result bytes (copied).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_output_set(out: *mut mirai_output, data: *const u8, len: usize) -> mirai_result {
    guard(|| {
        // SAFETY: NULL or the output lent to the running evaluate call.
        let out = unsafe { out.as_mut() }.ok_or(Failure::Null("out"))?;
        let data = bytes(data, len, "data")?;
        // Into the memory already there, which may be the task's (see below).
        out.payload.clear();
        crate::buffer::append(&mut out.payload, data)
    })
}

/// Tells libmirai that the evaluator has read the task's bytes (`data` and `len` of its
/// `evaluate` call): their memory is freed, or becomes the result's while no result bytes have
/// been written yet, so a daemon does not hold a large task while it evaluates it and writes
/// its result, and the result is written into memory already in use instead of fresh pages.
/// `data` must not be read after this call. A second call does nothing.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_output_release_task(out: *mut mirai_output) -> mirai_result {
    guard(|| {
        // SAFETY: NULL or the output lent to the running evaluate call.
        let out = unsafe { out.as_mut() }.ok_or(Failure::Null("out"))?;
        let mut task = std::mem::take(&mut out.task);
        if out.payload.is_empty() && task.capacity() > out.payload.capacity() {
            task.clear();
            out.payload = task;
        }
        Ok(())
    })
}

/// Appends `len` bytes at `data` to the evaluation's result: for evaluators that write their
/// result in pieces (a serializer) instead of building it first.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_output_write(out: *mut mirai_output, data: *const u8, len: usize) -> mirai_result {
    guard(|| {
        // SAFETY: NULL or the output lent to the running evaluate call.
        let out = unsafe { out.as_mut() }.ok_or(Failure::Null("out"))?;
        crate::buffer::append(&mut out.payload, bytes(data, len, "data")?)
    })
}

/// Whether the running task has been cancelled. False if `intr` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_interrupt_is_set(intr: *const mirai_interrupt) -> bool {
    guard_value(false, || deref(intr, "intr").is_ok_and(|i| i.inner.is_set()))
}

/// Sleeps up to `ms` milliseconds, returning early (true) if the task is cancelled.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_interrupt_sleep(intr: *const mirai_interrupt, ms: u64) -> bool {
    guard_value(false, || deref(intr, "intr").is_ok_and(|i| i.inner.sleep(Duration::from_millis(ms))))
}

struct UserData(*mut c_void);
// SAFETY: the header documents that the interrupt callback runs on another thread, so the
// caller's userdata must tolerate being passed there.
unsafe impl Send for UserData {}
// SAFETY: as above; only the pointer value is shared.
unsafe impl Sync for UserData {}

/// A C evaluator seen as an engine `Evaluator` (also used by `mirai-daemon`'s plugin loader).
pub struct CEvaluator<'a> {
    ev: &'a mirai_evaluator,
}

impl<'a> CEvaluator<'a> {
    pub fn new(ev: &'a mirai_evaluator) -> Self {
        CEvaluator { ev }
    }
}

impl Evaluator for CEvaluator<'_> {
    fn init(&mut self, bundle: &InitBundle) {
        if let Some(init) = self.ev.init {
            // SAFETY: the caller's callback, with its own userdata and pointers valid for the call.
            unsafe {
                init(
                    self.ev.userdata,
                    bundle.daemon_id,
                    bundle.rng_stream.as_ptr(),
                    bundle.blob.as_ptr(),
                    bundle.blob.len(),
                )
            };
        }
    }

    fn evaluate(&mut self, payload: Vec<u8>, everywhere: bool, interrupt: &Interrupt) -> Evaluation {
        let Some(evaluate) = self.ev.evaluate else {
            return Evaluation { status: Status::Error, payload: b"no evaluate callback".to_vec() };
        };
        // A C evaluator may return any int, and an out-of-range value must not be taken for a
        // Rust enum; a C enum has the ABI of `int`, so the same function returns an i32.
        // SAFETY: the two signatures differ only in the return type, `mirai_eval_status`
        // (repr(C), so a C `int`) against `i32`.
        let evaluate: RawEvaluateFn = unsafe { std::mem::transmute(evaluate) };
        let intr = mirai_interrupt { inner: interrupt.clone() };
        let (data, len) = (payload.as_ptr(), payload.len());
        let mut out = mirai_output { payload: Vec::new(), task: payload };
        // SAFETY: the caller's callback; every pointer is valid for the duration of the call,
        // `data` until the callback releases the task (which it then no longer reads).
        let status = unsafe { evaluate(self.ev.userdata, data, len, everywhere, &intr, &mut out) };
        let status = match status {
            x if x == mirai_eval_status::Value as i32 => Status::Value,
            x if x == mirai_eval_status::Error as i32 => Status::Error,
            x if x == mirai_eval_status::Interrupted as i32 => Status::Interrupted,
            x => {
                let msg = format!("the evaluator returned {x}, which is not a mirai_eval_status");
                log::error!("{msg}");
                return Evaluation { status: Status::Error, payload: msg.into_bytes() };
            }
        };
        Evaluation { status, payload: out.payload }
    }

    fn cleanup(&mut self) {
        if let Some(cleanup) = self.ev.cleanup {
            // SAFETY: the caller's callback with its own userdata.
            unsafe { cleanup(self.ev.userdata) };
        }
    }
}

/// The engine's options for a run: the caller's settings (or the defaults) and the evaluator's
/// interrupt hook.
fn daemon_options(opts: *const mirai_daemon_options, ev: &mirai_evaluator) -> DaemonOptions {
    // SAFETY: NULL or options from mirai_daemon_options_new, not changed meanwhile.
    let mut options = unsafe { opts.as_ref() }.map_or_else(DaemonOptions::default, |o| o.inner.clone());
    if let Some(hook) = ev.interrupt {
        let userdata = UserData(ev.userdata);
        let hook: InterruptHook = Arc::new(move || {
            let userdata = &userdata;
            // SAFETY: the caller's thread-safe interrupt callback with its own userdata.
            unsafe { hook(userdata.0) }
        });
        options.interrupt_hook = Some(hook);
    }
    options
}

/// Runs a daemon on the calling thread: dials `url`, evaluates tasks with `evaluator` until a
/// limit is reached or the host goes, per `opts` (from `mirai_daemon_options_new`, read and not
/// kept; NULL for the defaults). `*out_exit_code` gets R's
/// mirai exit code: 0 connection ended, 1 idle time, 2 wall time, 3 max tasks.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_run(
    url: *const c_char,
    opts: *const mirai_daemon_options,
    evaluator: *const mirai_evaluator,
    out_exit_code: *mut i32,
) -> mirai_result {
    guard(|| {
        let url = c_str(url, "url")?;
        let ev = deref(evaluator, "evaluator")?;
        if ev.evaluate.is_none() {
            return Err(Failure::Null("evaluator->evaluate"));
        }
        if out_exit_code.is_null() {
            return Err(Failure::Null("out_exit_code"));
        }
        let code = Daemon::run(url, daemon_options(opts, ev), &mut CEvaluator { ev })?;
        put(out_exit_code, code as i32, "out_exit_code")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Releases the task, then writes its first byte back in pieces.
    unsafe extern "C" fn release_then_write(
        _userdata: *mut c_void,
        data: *const u8,
        _len: usize,
        _everywhere: bool,
        _intr: *const mirai_interrupt,
        out: *mut mirai_output,
    ) -> mirai_eval_status {
        // SAFETY: the task's bytes, read before they are released.
        let first = unsafe { *data };
        assert_eq!(mirai_output_release_task(out), mirai_result::Ok);
        assert_eq!(mirai_output_write(out, &first, 1), mirai_result::Ok);
        assert_eq!(mirai_output_write(out, b"!".as_ptr(), 1), mirai_result::Ok);
        mirai_eval_status::Value
    }

    /// Writes a result, and only then releases the task.
    unsafe extern "C" fn write_then_release(
        _userdata: *mut c_void,
        _data: *const u8,
        _len: usize,
        _everywhere: bool,
        _intr: *const mirai_interrupt,
        out: *mut mirai_output,
    ) -> mirai_eval_status {
        assert_eq!(mirai_output_set(out, b"kept".as_ptr(), 4), mirai_result::Ok);
        assert_eq!(mirai_output_release_task(out), mirai_result::Ok);
        mirai_eval_status::Value
    }

    fn evaluate_with(evaluate: mirai_evaluate_fn, task: Vec<u8>) -> Evaluation {
        let ev = mirai_evaluator {
            userdata: std::ptr::null_mut(),
            init: None,
            evaluate,
            cleanup: None,
            interrupt: None,
        };
        CEvaluator::new(&ev).evaluate(task, false, &Interrupt::default())
    }

    #[test]
    fn a_released_task_lends_its_memory_to_the_result() {
        let result = evaluate_with(Some(release_then_write), vec![b'x'; 1 << 20]);
        assert_eq!(result.payload, b"x!");
        assert!(result.payload.capacity() >= 1 << 20, "the task's allocation, reused");
    }

    #[test]
    fn a_result_written_before_the_release_is_kept() {
        let result = evaluate_with(Some(write_then_release), vec![0; 1 << 20]);
        assert_eq!(result.payload, b"kept");
        assert!(result.payload.capacity() < 1 << 20, "the task's allocation was freed");
    }
}
