//! The daemon runtime: run a daemon on the calling thread with a C evaluator.

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use mirai_core::daemon::{InitBundle, InterruptHook};
use mirai_core::{AutoExit, Daemon, DaemonOptions, Evaluation, Evaluator, Interrupt};
use mirai_proto::Status;

use crate::boundary::{
    Failure, bytes, c_str, deref, guard, guard_value, invalid_enum, mirai_result, opt_c_str, put,
};

/// What a daemon does when its host goes away (R's `autoexit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mirai_autoexit {
    /// Exit; a running task is interrupted, and the process gets SIGTERM if it has not returned
    /// within `grace_ms` (`autoexit = TRUE`).
    Exit = 0,
    /// Finish the running task, then exit (`autoexit = NA`).
    FinishTask = 1,
    /// Stay and redial the same URL until a host answers (`autoexit = FALSE`).
    Stay = 2,
}

/// Daemon settings. Initialise with `mirai_daemon_options_init`.
#[repr(C)]
pub struct mirai_daemon_options {
    /// Keep retrying the first dial instead of failing at once (R's `asyncdial`).
    pub retry: bool,
    /// A `mirai_autoexit` value (an integer: values from C are checked, not trusted).
    pub autoexit: i32,
    pub grace_ms: u64,
    /// Exit after this many tasks; 0 for no limit.
    pub maxtasks: u64,
    /// Exit when no task arrives for this long; negative for no limit.
    pub idletime_ms: i64,
    /// Soft time limit, checked when a task arrives; negative for no limit.
    pub walltime_ms: i64,
    /// Largest frame accepted from the host.
    pub max_frame: u64,
    /// The host's secret, hex-encoded; NULL takes `MIRAI_SECRET` out of the environment (so
    /// tasks cannot read it): then no other thread may use the environment meanwhile.
    pub secret_hex: *const c_char,
    /// The host's CA certificate (PEM) for `tls+tcp://`; NULL reads `MIRAI_TLS_CA`.
    pub tls_ca_pem: *const c_char,
    /// Free text sent to the host in the handshake; NULL for the default.
    pub label: *const c_char,
}

/// How an evaluation ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mirai_eval_status {
    Value = 0,
    Error = 1,
    Interrupted = 2,
}

/// The cancellation state of the running task, lent to the evaluator.
pub struct mirai_interrupt {
    inner: Interrupt,
}

/// Where the evaluator puts its result bytes (`mirai_output_set`).
pub struct mirai_output {
    payload: Vec<u8>,
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
#[repr(C)]
pub struct mirai_evaluator {
    pub userdata: *mut c_void,
    pub init: mirai_init_fn,
    pub evaluate: mirai_evaluate_fn,
    pub cleanup: mirai_cleanup_fn,
    pub interrupt: mirai_interrupt_fn,
}

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

fn default_options() -> mirai_daemon_options {
    mirai_daemon_options {
        retry: false,
        autoexit: mirai_autoexit::Exit as i32,
        grace_ms: 200,
        maxtasks: 0,
        idletime_ms: -1,
        walltime_ms: -1,
        max_frame: DaemonOptions::default().max_frame,
        secret_hex: std::ptr::null(),
        tls_ca_pem: std::ptr::null(),
        label: std::ptr::null(),
    }
}

/// Fills `opts` with the defaults: fail fast, autoexit with a 200 ms grace, no limits.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_daemon_options_init(opts: *mut mirai_daemon_options) -> mirai_result {
    guard(|| put(opts, default_options(), "opts"))
}

/// Sets the evaluation's result bytes (copied).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_output_set(out: *mut mirai_output, data: *const u8, len: usize) -> mirai_result {
    guard(|| {
        // SAFETY: NULL or the output lent to the running evaluate call.
        let out = unsafe { out.as_mut() }.ok_or(Failure::Null("out"))?;
        out.payload = bytes(data, len, "data")?.to_vec();
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
        let intr = mirai_interrupt { inner: interrupt.clone() };
        let mut out = mirai_output { payload: Vec::new() };
        // SAFETY: the caller's callback; every pointer is valid for the duration of the call.
        let status = unsafe {
            evaluate(self.ev.userdata, payload.as_ptr(), payload.len(), everywhere, &intr, &mut out)
        };
        let status = match status {
            mirai_eval_status::Value => Status::Value,
            mirai_eval_status::Error => Status::Error,
            mirai_eval_status::Interrupted => Status::Interrupted,
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

fn daemon_options(o: &mirai_daemon_options, ev: &mirai_evaluator) -> Result<DaemonOptions, Failure> {
    let ms = |v: i64| u64::try_from(v).ok().map(Duration::from_millis);
    let mut options = DaemonOptions {
        retry: o.retry,
        autoexit: match o.autoexit {
            x if x == mirai_autoexit::Exit as i32 => {
                AutoExit::Exit { grace: Duration::from_millis(o.grace_ms) }
            }
            x if x == mirai_autoexit::FinishTask as i32 => AutoExit::FinishTask,
            x if x == mirai_autoexit::Stay as i32 => AutoExit::Stay,
            x => return Err(invalid_enum("autoexit", x)),
        },
        maxtasks: (o.maxtasks > 0).then_some(o.maxtasks),
        idletime: ms(o.idletime_ms),
        walltime: ms(o.walltime_ms),
        max_frame: o.max_frame,
        ..DaemonOptions::default()
    };
    if let Some(hex) = opt_c_str(o.secret_hex, "secret_hex")? {
        options.secret = Some(mirai_core::auth::from_hex(hex)?);
    }
    options.tls_ca = opt_c_str(o.tls_ca_pem, "tls_ca_pem")?.map(str::to_string);
    if let Some(label) = opt_c_str(o.label, "label")? {
        options.label = label.to_string();
    }
    if let Some(hook) = ev.interrupt {
        let userdata = UserData(ev.userdata);
        let hook: InterruptHook = Arc::new(move || {
            let userdata = &userdata;
            // SAFETY: the caller's thread-safe interrupt callback with its own userdata.
            unsafe { hook(userdata.0) }
        });
        options.interrupt_hook = Some(hook);
    }
    Ok(options)
}

/// Runs a daemon on the calling thread: dials `url`, evaluates tasks with `evaluator` until a
/// limit is reached or the host goes, per `opts` (NULL for defaults). `*out_exit_code` gets R's
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
        let options = if opts.is_null() {
            daemon_options(&default_options(), ev)?
        } else {
            daemon_options(deref(opts, "opts")?, ev)?
        };
        let code = Daemon::run(url, options, &mut CEvaluator { ev })?;
        put(out_exit_code, code as i32, "out_exit_code")
    })
}
