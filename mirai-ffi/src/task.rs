//! Task handles: resolution, waiting, results, cancellation.

use mirai_core::{Task, TaskStatus};

use crate::boundary::{Failure, deref, guard, guard_value, mirai_result, put};
use crate::bytes::mirai_bytes;

/// A submitted task. Free with `mirai_task_free` (freeing does not cancel it).
/// Threads: any number of threads may call functions on one task handle at once (and on clones
/// of it). `mirai_task_free` must not race another call on the same handle.
pub struct mirai_task {
    pub(crate) task: Task,
}

impl mirai_task {
    pub(crate) fn new(task: Task) -> *mut mirai_task {
        Box::into_raw(Box::new(mirai_task { task }))
    }
}

/// Where a task stands.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mirai_status {
    /// Not resolved yet.
    Unresolved = 0,
    /// The result is the value.
    Value = 1,
    /// Evaluation raised an error; the result is the evaluator's error object.
    Error = 2,
    /// Evaluation was interrupted on the daemon; the result is the evaluator's interrupt object.
    Interrupted = 3,
    /// Resolved without a result; the code says why: 5 timed out, 19 connection reset (daemon
    /// lost, or host closed), 20 cancelled.
    Failed = 4,
}

/// Called once when a task resolves, with the `userdata` given at submission. It runs on the
/// thread that resolved the task: the host's I/O thread for results, timeouts and lost daemons;
/// the calling thread for `mirai_task_cancel` and `mirai_host_close`. It must not block, and
/// may call libmirai (no lock is held); on the I/O thread, calls that would wait for the host
/// return at once (a task wait as timed out, a submission at the memory cap refused).
/// `code` is the NNG code for `MIRAI_STATUS_FAILED`, else 0.
pub type mirai_task_callback =
    Option<unsafe extern "C" fn(userdata: *mut std::ffi::c_void, id: u64, status: mirai_status, code: i32)>;

/// A raw pointer the caller vouches may cross threads with its callback.
pub(crate) struct SendPtr(pub *mut std::ffi::c_void);
// SAFETY: the C caller passes userdata to a callback that runs on another thread; the header
// documents that the callback (and so its userdata) must be usable from that thread.
unsafe impl Send for SendPtr {}

/// A C callback and its userdata as a core callback.
pub(crate) fn c_callback(
    cb: unsafe extern "C" fn(*mut std::ffi::c_void, u64, mirai_status, i32),
    userdata: *mut std::ffi::c_void,
) -> mirai_core::Callback {
    let userdata = SendPtr(userdata);
    Box::new(move |id: u64, status: TaskStatus| {
        let userdata = &userdata;
        let (status, code) = split_status(Some(status));
        // SAFETY: the caller registered this function and userdata for this task.
        unsafe { cb(userdata.0, id, status, code) }
    })
}

pub(crate) fn split_status(status: Option<TaskStatus>) -> (mirai_status, i32) {
    match status {
        None => (mirai_status::Unresolved, 0),
        Some(TaskStatus::Value) => (mirai_status::Value, 0),
        Some(TaskStatus::Error) => (mirai_status::Error, 0),
        Some(TaskStatus::Interrupted) => (mirai_status::Interrupted, 0),
        Some(TaskStatus::Failed(code)) => (mirai_status::Failed, i32::from(code.code())),
    }
}

/// The task's id: unique and increasing within its host. 0 if `task` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_task_id(task: *const mirai_task) -> u64 {
    guard_value(0, || deref(task, "task").map(|t| t.task.id()).unwrap_or(0))
}

/// Whether the task has resolved. Never blocks. False if `task` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_task_is_resolved(task: *const mirai_task) -> bool {
    guard_value(false, || deref(task, "task").is_ok_and(|t| t.task.is_resolved()))
}

/// Waits for the task to resolve; negative `timeout_ms` waits forever. `MIRAI_RESULT_TIMED_OUT`
/// if it had not resolved in time.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_task_wait(task: *const mirai_task, timeout_ms: i64) -> mirai_result {
    guard(|| {
        let t = deref(task, "task")?;
        let timeout = u64::try_from(timeout_ms).ok().map(std::time::Duration::from_millis);
        if t.task.wait(timeout) { Ok(()) } else { Err(Failure::Core(mirai_core::Error::TimedOut)) }
    })
}

/// The task's status, and for `MIRAI_STATUS_FAILED` its NNG code in `*out_code` (else 0).
/// `out_code` may be NULL.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_task_status(
    task: *const mirai_task,
    out_status: *mut mirai_status,
    out_code: *mut i32,
) -> mirai_result {
    guard(|| {
        let (status, code) = split_status(deref(task, "task")?.task.status());
        put(out_status, status, "out_status")?;
        if !out_code.is_null() {
            put(out_code, code, "out_code")?;
        }
        Ok(())
    })
}

/// Moves the result's bytes into `*out` (free with `mirai_bytes_free`); the engine keeps no
/// copy, so a second call yields `MIRAI_RESULT_INCORRECT_STATE`, as does a call before the task
/// resolved. A task that failed (status `MIRAI_STATUS_FAILED`) has empty bytes.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_task_take_result(task: *const mirai_task, out: *mut mirai_bytes) -> mirai_result {
    guard(|| {
        let t = deref(task, "task")?;
        if out.is_null() {
            return Err(Failure::Null("out"));
        }
        match t.task.take_payload() {
            Some(payload) => put(out, mirai_bytes::from_vec(payload), "out"),
            None => Err(Failure::Code(
                mirai_result::IncorrectState,
                if t.task.is_resolved() { "result already taken" } else { "task not resolved" }.into(),
            )),
        }
    })
}

/// Cancels the task (R's `stop_mirai`): a queued task leaves the queue, a running one is
/// interrupted on its daemon. It resolves at once as failed with code 20. Returns true if it
/// was queued or running, false if it had already resolved (or `task` is NULL).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_task_cancel(task: *const mirai_task) -> bool {
    guard_value(false, || deref(task, "task").is_ok_and(|t| t.task.cancel()))
}

/// Sets the callback run once when the task resolves (see `mirai_task_callback` for the
/// thread), replacing any given at submission: for callers that decide late that they want one.
/// If the task has already resolved, `callback` runs at once on the calling thread. A NULL
/// `callback` is an error.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_task_set_callback(
    task: *const mirai_task,
    callback: mirai_task_callback,
    userdata: *mut std::ffi::c_void,
) -> mirai_result {
    guard(|| {
        let t = deref(task, "task")?;
        let cb = callback.ok_or(Failure::Null("callback"))?;
        t.task.on_resolved(c_callback(cb, userdata));
        Ok(())
    })
}

/// A second handle to the same task (free each with `mirai_task_free`). NULL if `task` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_task_clone(task: *const mirai_task) -> *mut mirai_task {
    guard_value(std::ptr::null_mut(), || {
        deref(task, "task").map(|t| mirai_task::new(t.task.clone())).unwrap_or(std::ptr::null_mut())
    })
}

/// Frees a task handle (the task itself goes on). NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_task_free(task: *mut mirai_task) {
    guard_value((), || {
        if !task.is_null() {
            // SAFETY: a pointer from this library, freed once.
            drop(unsafe { Box::from_raw(task) });
        }
    })
}

/// Frees an array from `mirai_host_everywhere` and the `n` task handles in it. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_task_array_free(tasks: *mut *mut mirai_task, n: usize) {
    guard_value((), || {
        if tasks.is_null() {
            return;
        }
        // SAFETY: an array of `n` handles from mirai_host_everywhere, freed once.
        let array = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(tasks, n)) };
        for &t in array.iter() {
            mirai_task_free(t);
        }
    })
}
