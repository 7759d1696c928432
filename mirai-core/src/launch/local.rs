//! Launching daemons as local processes from a command template, and watching them exit.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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
    /// Let the daemon write to this process's stdout and stderr (otherwise stdout is discarded
    /// and stderr kept for error reports).
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

#[derive(Default)]
struct Status {
    exit: Option<ExitStatus>,
    stderr: String,
}

/// Exit reports of a group of processes started together, so one can wait for "any of them".
#[derive(Default)]
pub(crate) struct Group {
    status: Mutex<Vec<Status>>,
    cv: Condvar,
    /// Called after any process of the group exits (e.g. to wake a host's waiters).
    subscribers: Mutex<Vec<Arc<dyn Fn() + Send + Sync>>>,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, Vec<Status>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` after every exit in the group from now on (and once now, in case one exited
    /// already).
    pub(crate) fn subscribe(&self, f: Arc<dyn Fn() + Send + Sync>) {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(f.clone());
        f();
    }

    /// The first process of the group that exited in failure: its status and stderr.
    pub(crate) fn failed(&self) -> Option<(ExitStatus, String)> {
        self.lock().iter().find_map(|s| s.exit.filter(|e| !e.success()).map(|e| (e, s.stderr.clone())))
    }
}

/// A process started by a launcher: a local daemon, or the `ssh`/`sbatch`/... command that
/// starts a remote one.
pub struct LocalDaemon {
    pid: u32,
    index: usize,
    group: Arc<Group>,
}

impl LocalDaemon {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, once the process has exited. Never blocks.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.group.lock()[self.index].exit
    }

    /// What the process wrote to stderr (when not inherited), complete once it has exited.
    pub fn stderr(&self) -> String {
        self.group.lock()[self.index].stderr.clone()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = crate::clock::instant_after(Some(timeout));
        let mut st = self.group.lock();
        while st[self.index].exit.is_none() {
            st = match deadline {
                None => self.group.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.group.cv.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
        st[self.index].exit
    }

    /// Sends a signal to the process, if it still runs.
    pub fn signal(&self, signal: i32) {
        if self.exit_status().is_none() {
            // SAFETY: kill(2) on a pid we spawned and have not yet reaped, so it is not reused.
            unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        }
    }

    pub(crate) fn group(&self) -> &Arc<Group> {
        &self.group
    }
}

/// Starts `n` daemons from `template` for the host at `url`. Each is reaped by a small watcher
/// thread that records its exit status.
pub fn spawn_local(url: &str, template: &CommandTemplate, n: usize) -> Result<Vec<LocalDaemon>, Error> {
    let group = Arc::new(Group::default());
    (0..n)
        .map(|_| {
            let mut cmd = Command::new(&template.program);
            cmd.args(template.render(url)).envs(template.env.iter().map(|(k, v)| (k, v)));
            spawn_watched(cmd, template.inherit_output, None, &group)
        })
        .collect()
}

/// Starts `cmd`, writes `stdin` to it (then closes it), and watches it in the group.
pub(crate) fn spawn_watched(
    mut cmd: Command,
    inherit_output: bool,
    stdin: Option<Vec<u8>>,
    group: &Arc<Group>,
) -> Result<LocalDaemon, Error> {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    if !inherit_output {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().map_err(|e| Error::io(format!("cannot start '{program}'"), e))?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A process that exits without reading its input is reported through its status.
        let _ = pipe.write_all(&bytes);
    }
    let index = {
        let mut st = group.lock();
        st.push(Status::default());
        st.len() - 1
    };
    Ok(watch(child, index, group.clone()))
}

fn watch(mut child: Child, index: usize, group: Arc<Group>) -> LocalDaemon {
    let pid = child.id();
    let g = group.clone();
    let spawned = std::thread::Builder::new().name(format!("mirai-reap-{pid}")).stack_size(64 * 1024).spawn(
        move || {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            let status = child.wait();
            let mut st = g.lock();
            st[index].stderr = stderr;
            if let Ok(s) = status {
                st[index].exit = Some(s);
            }
            drop(st);
            g.cv.notify_all();
            let subscribers = g.subscribers.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for f in subscribers {
                f();
            }
        },
    );
    if let Err(e) = spawned {
        log::warn!("cannot watch daemon {pid}: {e}");
    }
    LocalDaemon { pid, index, group }
}
