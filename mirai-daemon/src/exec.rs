//! The exec evaluator: each task is a command to run.
//!
//! Payload (JSON): `{"argv": ["prog", "arg", ...], "stdin": "text", "env": {"K": "V"}, "cwd": "/dir"}`
//! with only `argv` required. Result (JSON): `{"exit": 0, "signal": null, "stdout": "...",
//! "stderr": "..."}`; `stdout` and `stderr` are UTF-8 (invalid bytes replaced). A command that
//! ran is a value whatever its exit status; a malformed request or a command that cannot start
//! is an evaluation error whose payload is the message. Cancelling a task kills the command's
//! whole process group.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use mirai_core::daemon::InterruptHook;
use mirai_core::{Evaluation, Evaluator, Interrupt};
use mirai_proto::Status;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    argv: Vec<String>,
    #[serde(default)]
    stdin: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Serialize)]
struct Response {
    exit: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The process group of the running command (0 when none), shared with the interrupt hook.
/// The hook and the reaping of the child take the same lock, so a group id is never signalled
/// after its process was reaped (when the id could be reused).
pub struct Exec {
    group: Arc<Mutex<i32>>,
}

impl Exec {
    pub fn new() -> Self {
        Exec { group: Arc::new(Mutex::new(0)) }
    }

    /// Kills the running command's process group when its task is cancelled.
    pub fn interrupt_hook(&self) -> InterruptHook {
        let group = self.group.clone();
        Arc::new(move || kill_group(*group.lock().unwrap_or_else(|e| e.into_inner())))
    }

    fn run(&self, req: Request, interrupt: &Interrupt) -> Result<Response, String> {
        let (program, args) = req.argv.split_first().ok_or("argv is empty")?;
        let mut cmd = Command::new(program);
        // The daemon took the secret out of its own environment already; this keeps it out
        // even for a daemon whose secret was set some other way.
        cmd.env_remove(mirai_core::auth::SECRET_ENV);
        cmd.args(args).envs(&req.env).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0);
        if let Some(dir) = &req.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
        let pid = child.id() as i32;
        *self.group.lock().unwrap_or_else(|e| e.into_inner()) = pid;
        if interrupt.is_set() {
            // Cancelled before the group id was published.
            kill_group(pid);
        }
        let output = collect(&mut child, req.stdin.into_bytes());
        // Wait without reaping, forget the group under the lock, then reap.
        wait_no_reap(pid);
        *self.group.lock().unwrap_or_else(|e| e.into_inner()) = 0;
        let status = child.wait().map_err(|e| format!("waiting for {program}: {e}"))?;
        let (stdout, stderr) = output;
        Ok(Response {
            exit: status.code(),
            signal: status.signal(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }
}

fn kill_group(group: i32) {
    if group > 0 {
        // SAFETY: signalling a process group we created and have not yet reaped.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

/// Feeds stdin and drains stdout and stderr concurrently, so no pipe fills up and blocks.
fn collect(child: &mut Child, stdin: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut input = child.stdin.take();
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(i) = input.as_mut() {
                // A command that does not read its stdin closes the pipe: not an error.
                let _ = i.write_all(&stdin);
            }
        });
        let e = s.spawn(move || {
            let mut buf = Vec::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut buf);
            }
            buf
        });
        let mut stdout = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut stdout);
        }
        (stdout, e.join().unwrap_or_default())
    })
}

/// Blocks until `pid` has exited, leaving it a zombie (so its id cannot be reused yet).
fn wait_no_reap(pid: i32) {
    loop {
        // SAFETY: waitid with WNOWAIT on our own child; `info` is a plain output struct.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

impl Evaluator for Exec {
    fn evaluate(&mut self, payload: Vec<u8>, _: bool, interrupt: &Interrupt) -> Evaluation {
        let req: Request = match serde_json::from_slice(&payload) {
            Ok(r) => r,
            Err(e) => {
                return Evaluation {
                    status: Status::Error,
                    payload: format!("invalid exec request: {e}").into_bytes(),
                };
            }
        };
        match self.run(req, interrupt) {
            Ok(_) if interrupt.is_set() => Evaluation { status: Status::Interrupted, payload: Vec::new() },
            Ok(resp) => {
                Evaluation { status: Status::Value, payload: serde_json::to_vec(&resp).unwrap_or_default() }
            }
            Err(msg) => Evaluation { status: Status::Error, payload: msg.into_bytes() },
        }
    }
}
