//! Launchers for remote daemons: SSH (optionally tunnelled), HPC schedulers, an HTTP API, or
//! any command that takes the daemon's command line. The daemon command is an argv whose
//! `{url}` is replaced; the host's secret and TLS CA are passed by each launcher's safest route.

use std::ffi::c_char;
use std::time::Duration;

use mirai_core::launch::cluster::{self, ClusterConfig, Jobs, Scheduler};
use mirai_core::launch::http::{HttpConfig, exchange, launch_http};
use mirai_core::launch::remote::{RemoteConfig, SshConfig, launch_remote, launch_ssh};
use mirai_core::launch::{CommandTemplate, Target, wait_for_daemons};

use crate::boundary::{
    Failure, c_str, deref, guard, guard_value, invalid_enum, mirai_result, opt_c_str, put,
};
use crate::bytes::mirai_bytes;
use crate::host::mirai_host;

/// A batch scheduler.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mirai_scheduler {
    /// `sbatch` / `scancel`
    Slurm = 0,
    /// `qsub` / `qdel` (SGE)
    Sge = 1,
    /// `qsub` / `qdel` (PBS)
    Pbs = 2,
    /// `bsub` / `bkill`
    Lsf = 3,
}

/// Jobs submitted by `mirai_host_launch_cluster`. Freeing cancels them.
/// Threads: jobs may move between threads, but only one may use them at a time.
pub struct mirai_jobs {
    jobs: Jobs,
}

fn strings(ptr: *const *const c_char, n: usize, what: &'static str) -> Result<Vec<String>, Failure> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if ptr.is_null() {
        return Err(Failure::Null(what));
    }
    // SAFETY: the caller promises `n` string pointers at `ptr`.
    let items = unsafe { std::slice::from_raw_parts(ptr, n) };
    items.iter().map(|&p| c_str(p, what).map(str::to_string)).collect()
}

fn daemon(argv: *const *const c_char, argc: usize) -> Result<CommandTemplate, Failure> {
    let args = strings(argv, argc, "daemon_argv")?;
    let Some((program, rest)) = args.split_first() else { return Err(Failure::Null("daemon_argv")) };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    Ok(CommandTemplate::new(program.clone(), &rest))
}

/// Starts one daemon per `ssh://[user@]host[:port]` remote. With `tunnel`, daemons dial back
/// through `-R` (the host must listen on 127.0.0.1; `tunnel_port` 0 uses the host's port on the
/// remote side too). `ssh_options` (may be empty) go to ssh first, e.g. `-F`, `config-file`.
/// The secret and CA travel on ssh's stdin. Wait with `mirai_host_wait_launched`.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_launch_ssh(
    host: *const mirai_host,
    remotes: *const *const c_char,
    n_remotes: usize,
    tunnel: bool,
    tunnel_port: u16,
    timeout_s: u32,
    ssh_options: *const *const c_char,
    n_options: usize,
    daemon_argv: *const *const c_char,
    daemon_argc: usize,
) -> mirai_result {
    guard(|| {
        let h = deref(host, "host")?;
        let config = SshConfig {
            remotes: strings(remotes, n_remotes, "remotes")?,
            tunnel,
            tunnel_port: (tunnel_port > 0).then_some(tunnel_port),
            timeout: timeout_s,
            command: "ssh".into(),
            options: strings(ssh_options, n_options, "ssh_options")?,
        };
        let launched = launch_ssh(&Target::of(&h.host), &daemon(daemon_argv, daemon_argc)?, &config)?;
        h.record_launch(launched);
        Ok(())
    })
}

/// Starts `n` daemons through `command args...`, where the argument `"."` is replaced by the
/// daemon's command line (shell-quoted as one word when `quote`). The secret and CA go in the
/// command's environment.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_launch_remote(
    host: *const mirai_host,
    command: *const c_char,
    args: *const *const c_char,
    n_args: usize,
    quote: bool,
    daemon_argv: *const *const c_char,
    daemon_argc: usize,
    n: usize,
) -> mirai_result {
    guard(|| {
        let h = deref(host, "host")?;
        let config = RemoteConfig {
            command: c_str(command, "command")?.to_string(),
            args: strings(args, n_args, "args")?,
            quote,
        };
        let launched = launch_remote(&Target::of(&h.host), &daemon(daemon_argv, daemon_argc)?, &config, n)?;
        h.record_launch(launched);
        Ok(())
    })
}

/// Submits a job array of `n` daemons to a batch scheduler (a `mirai_scheduler` value).
/// `options` are lines of the job script: a line starting with `-` is a directive written after
/// the scheduler's prefix (e.g. `--partition=debug`), one starting with `#` a directive written
/// as it is, any other a command run before the daemon (e.g. `module load R`).
/// `submit_command` and `cancel_command` may be NULL for the scheduler's own. On success `*out` holds the jobs: `mirai_jobs_cancel` or
/// `mirai_jobs_free` cancels them.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_launch_cluster(
    host: *const mirai_host,
    scheduler: i32,
    options: *const *const c_char,
    n_options: usize,
    submit_command: *const c_char,
    cancel_command: *const c_char,
    daemon_argv: *const *const c_char,
    daemon_argc: usize,
    n: usize,
    out: *mut *mut mirai_jobs,
) -> mirai_result {
    guard(|| {
        let h = deref(host, "host")?;
        if out.is_null() {
            return Err(Failure::Null("out"));
        }
        let config = ClusterConfig {
            scheduler: match scheduler {
                x if x == mirai_scheduler::Slurm as i32 => Scheduler::Slurm,
                x if x == mirai_scheduler::Sge as i32 => Scheduler::Sge,
                x if x == mirai_scheduler::Pbs as i32 => Scheduler::Pbs,
                x if x == mirai_scheduler::Lsf as i32 => Scheduler::Lsf,
                x => return Err(invalid_enum("scheduler", x)),
            },
            options: strings(options, n_options, "options")?,
            submit_command: opt_c_str(submit_command, "submit_command")?.map(str::to_string),
            cancel_command: opt_c_str(cancel_command, "cancel_command")?.map(str::to_string),
        };
        let jobs = cluster::submit(&Target::of(&h.host), &daemon(daemon_argv, daemon_argc)?, &config, n)?;
        put(out, Box::into_raw(Box::new(mirai_jobs { jobs })), "out")
    })
}

/// Cancels the jobs (idempotent).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_jobs_cancel(jobs: *mut mirai_jobs) -> mirai_result {
    guard(|| {
        // SAFETY: NULL or a pointer from mirai_host_launch_cluster.
        let j = unsafe { jobs.as_mut() }.ok_or(Failure::Null("jobs"))?;
        j.jobs.cancel()?;
        Ok(())
    })
}

/// Cancels (if not yet) and frees the jobs. NULL is a no-op. This blocks: it runs the cancel
/// command (`scancel`, `qdel`, `bkill`) and waits for it, which on a busy cluster can take
/// seconds; a failure is only logged (see `mirai_log_to_stderr`). Where that must not block (a
/// garbage collector's finalizer, an event loop), use `mirai_jobs_free_background`.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_jobs_free(jobs: *mut mirai_jobs) {
    guard_value((), || {
        if !jobs.is_null() {
            // SAFETY: a pointer from mirai_host_launch_cluster, freed once.
            drop(unsafe { Box::from_raw(jobs) });
        }
    })
}

/// Like `mirai_jobs_free`, but returns at once: the jobs are cancelled on a thread of their own.
/// Nothing waits for that thread, so a process that exits right after may leave the jobs
/// running: before exiting, use `mirai_jobs_free`. If no thread can be started, the jobs are
/// cancelled before this returns. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_jobs_free_background(jobs: *mut mirai_jobs) {
    guard_value((), || {
        if jobs.is_null() {
            return;
        }
        // SAFETY: a pointer from mirai_host_launch_cluster, freed once.
        let jobs = unsafe { Box::from_raw(jobs) };
        // Dropping the jobs cancels them. If the spawn fails, std drops the closure, and with it
        // the jobs, before returning the error: the synchronous fallback.
        let spawned = std::thread::Builder::new().name("mirai-cancel-jobs".into()).spawn(move || drop(jobs));
        if let Err(e) = spawned {
            log::warn!("cancelled the jobs on the calling thread: cannot start a thread: {e}");
        }
    })
}

/// Sends `n` requests to an HTTP API that starts daemons: `method` to `url` (https://, or
/// http:// to a loopback address), with `headers` given as `"Name: value"` strings, and `body`
/// in which `%s` is replaced by the JSON-escaped daemon command and `%e` by its environment (a
/// JSON array of `{"name", "value"}`; required when the host authenticates). `cookie` and
/// `token` (may be NULL) become `Cookie:` and
/// `Authorization: Bearer` headers. A response other than 2xx fails with its body in the message.
/// `responses` is NULL, or an array of `n` that receives each response body (e.g. the API's job
/// ids) on success, each freed with `mirai_bytes_free`; on failure it is left untouched.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_launch_http(
    host: *const mirai_host,
    url: *const c_char,
    method: *const c_char,
    headers: *const *const c_char,
    n_headers: usize,
    body: *const c_char,
    cookie: *const c_char,
    token: *const c_char,
    daemon_argv: *const *const c_char,
    daemon_argc: usize,
    n: usize,
    responses: *mut mirai_bytes,
) -> mirai_result {
    guard(|| {
        let h = deref(host, "host")?;
        let config = HttpConfig {
            url: c_str(url, "url")?.to_string(),
            method: c_str(method, "method")?.to_string(),
            headers: header_pairs(headers, n_headers)?,
            body: c_str(body, "body")?.to_string(),
            cookie: opt_c_str(cookie, "cookie")?.map(str::to_string),
            token: opt_c_str(token, "token")?.map(str::to_string),
        };
        let replies = launch_http(&Target::of(&h.host), &daemon(daemon_argv, daemon_argc)?, &config, n)?;
        if !responses.is_null() {
            for (i, reply) in replies.into_iter().enumerate() {
                // SAFETY: the caller promises room for `n` entries, and there is one reply per daemon.
                unsafe { responses.add(i).write(mirai_bytes::from_vec(reply.into_bytes())) };
            }
        }
        Ok(())
    })
}

/// `"Name: value"` strings as pairs.
fn header_pairs(headers: *const *const c_char, n: usize) -> Result<Vec<(String, String)>, Failure> {
    strings(headers, n, "headers")?
        .into_iter()
        .map(|line| match line.split_once(':') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
            None => Err(Failure::Code(mirai_result::InvalidArgument, format!("header '{line}' has no ':'"))),
        })
        .collect()
}

/// One HTTP request (https://, or http:// to loopback; 5 s timeout), for bindings that build
/// their own launch requests: `headers` as `"Name: value"` strings, `body` sent as is. Any
/// answer is success: its status goes to `status` and its body to `response` (free with
/// `mirai_bytes_free`). No answer (refused, timed out, plain http:// to another machine) fails,
/// leaving both untouched.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_http_request(
    url: *const c_char,
    method: *const c_char,
    headers: *const *const c_char,
    n_headers: usize,
    body: *const c_char,
    status: *mut u16,
    response: *mut mirai_bytes,
) -> mirai_result {
    guard(|| {
        if status.is_null() {
            return Err(Failure::Null("status"));
        }
        if response.is_null() {
            return Err(Failure::Null("response"));
        }
        let headers = header_pairs(headers, n_headers)?;
        let (code, content) =
            exchange(c_str(url, "url")?, c_str(method, "method")?, &headers, c_str(body, "body")?)?;
        // SAFETY: both checked non-null above; the caller promises they point to writable memory.
        unsafe {
            status.write(code);
            response.write(mirai_bytes::from_vec(content.into_bytes()));
        }
        Ok(())
    })
}

/// Waits until `n` daemons are connected. Fails early (`MIRAI_RESULT_CONNECTION_REFUSED`, with
/// the launcher's error output in `mirai_last_error`) when a process of the most recent
/// `mirai_host_launch_*` call exits in failure first; `MIRAI_RESULT_TIMED_OUT` after
/// `timeout_ms` (negative waits forever).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_host_wait_launched(host: *const mirai_host, n: u64, timeout_ms: i64) -> mirai_result {
    guard(|| {
        let h = deref(host, "host")?;
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        wait_for_daemons(&h.host, n, &h.latest_launch(), timeout)?;
        Ok(())
    })
}
