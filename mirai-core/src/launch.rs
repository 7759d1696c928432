//! Launching daemons as local processes from a command template, and watching them exit.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;

/// A daemon command: a program and its arguments, where `{url}` in any argument is replaced by
/// the host's URL. Example: `mirai-daemon {url} --maxtasks 10`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandTemplate {
    pub program: String,
    pub args: Vec<String>,
    /// Extra environment variables for the daemon.
    pub env: Vec<(String, String)>,
    /// Let the daemon write to this process's stdout and stderr (otherwise they are discarded).
    pub inherit_output: bool,
}

impl CommandTemplate {
    pub fn new(program: impl Into<String>, args: &[&str]) -> Self {
        CommandTemplate {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            inherit_output: false,
        }
    }

    /// The argument list with `{url}` filled in.
    pub fn render(&self, url: &str) -> Vec<String> {
        self.args.iter().map(|a| a.replace("{url}", url)).collect()
    }
}

struct Watch {
    status: Mutex<Option<ExitStatus>>,
    cv: Condvar,
}

/// A daemon process started by [`spawn_local`].
pub struct LocalDaemon {
    pid: u32,
    watch: Arc<Watch>,
}

impl LocalDaemon {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, once the process has exited. Never blocks.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.watch.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut st = self.watch.status.lock().unwrap_or_else(|e| e.into_inner());
        while st.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self.watch.cv.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        *st
    }

    /// Sends a signal to the process, if it still runs.
    pub fn signal(&self, signal: i32) {
        if self.exit_status().is_none() {
            // SAFETY: kill(2) on a pid we spawned and have not yet reaped, so it is not reused.
            unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        }
    }
}

/// Starts `n` daemons from `template` for the host at `url`. Each is reaped by a small watcher
/// thread that records its exit status.
pub fn spawn_local(url: &str, template: &CommandTemplate, n: usize) -> Result<Vec<LocalDaemon>, Error> {
    (0..n)
        .map(|_| {
            let mut cmd = Command::new(&template.program);
            cmd.args(template.render(url)).stdin(Stdio::null());
            if !template.inherit_output {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
            for (k, v) in &template.env {
                cmd.env(k, v);
            }
            let child = cmd
                .spawn()
                .map_err(|e| Error::io(format!("cannot start daemon '{}'", template.program), e))?;
            Ok(watch(child))
        })
        .collect()
}

fn watch(mut child: Child) -> LocalDaemon {
    let pid = child.id();
    let watch = Arc::new(Watch { status: Mutex::new(None), cv: Condvar::new() });
    let w = watch.clone();
    let spawned = std::thread::Builder::new().name(format!("mirai-reap-{pid}")).stack_size(64 * 1024).spawn(
        move || {
            let status = child.wait();
            if let Ok(s) = status {
                *w.status.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                w.cv.notify_all();
            }
        },
    );
    if let Err(e) = spawned {
        log::warn!("cannot watch daemon {pid}: {e}");
    }
    LocalDaemon { pid, watch }
}
