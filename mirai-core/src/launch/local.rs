//! Launching daemons as local processes from a command template, and watching them exit.

use std::collections::VecDeque;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
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
    /// Called after any process of the group exits (e.g. to wake a host's waiters). Weak, so
    /// a waiter that gave up is dropped instead of piling up.
    subscribers: Mutex<Vec<Weak<dyn Fn() + Send + Sync>>>,
}

/// How much of a launched process's stderr is kept: the last 64 KiB.
const STDERR_TAIL: usize = 64 * 1024;

impl Group {
    fn lock(&self) -> MutexGuard<'_, Vec<Status>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` after every exit in the group from now on, as long as the caller keeps `f`
    /// alive (and once now, in case one exited already). Subscribing the same `f` again adds
    /// nothing.
    pub(crate) fn subscribe(&self, f: &Arc<dyn Fn() + Send + Sync>) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|w| w.strong_count() > 0);
        if !subscribers.iter().any(|w| std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(f))) {
            subscribers.push(Arc::downgrade(f));
        }
        drop(subscribers);
        f();
    }

    /// The subscribers still alive, pruning the others.
    fn live_subscribers(&self) -> Vec<Arc<dyn Fn() + Send + Sync>> {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|w| w.strong_count() > 0);
        subscribers.iter().filter_map(Weak::upgrade).collect()
    }

    /// The first process of the group that exited in failure: its status and stderr.
    pub(crate) fn failed(&self) -> Option<(ExitStatus, String)> {
        self.lock().iter().find_map(|s| s.exit.filter(|e| !e.success()).map(|e| (e, s.stderr.clone())))
    }
}

/// A process started by a launcher: a local daemon, or the `ssh`/`sbatch`/... command that
/// starts a remote one. Clones refer to the same process.
#[derive(Clone)]
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

    /// The last 64 KiB the process wrote to stderr (when not inherited), once it has exited.
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
        let _ = crate::pipe_write::write_all(&mut pipe, &bytes);
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
            let stderr = child.stderr.take().map(|pipe| read_tail(pipe, STDERR_TAIL)).unwrap_or_default();
            let status = child.wait();
            let mut st = g.lock();
            st[index].stderr = stderr;
            if let Ok(s) = status {
                st[index].exit = Some(s);
            }
            drop(st);
            g.cv.notify_all();
            for f in g.live_subscribers() {
                f();
            }
        },
    );
    if let Err(e) = spawned {
        log::warn!("cannot watch daemon {pid}: {e}");
    }
    LocalDaemon { pid, index, group }
}

/// Reads `pipe` to its end, keeping only the last `limit` bytes (marked when some were dropped).
fn read_tail(mut pipe: impl Read, limit: usize) -> String {
    let mut tail = VecDeque::with_capacity(limit.min(8192));
    let mut dropped = false;
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                tail.extend(&buf[..n]);
                if tail.len() > limit {
                    tail.drain(..tail.len() - limit);
                    dropped = true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(tail.make_contiguous()).into_owned();
    if dropped { format!("[...] {text}") } else { text }
}

impl crate::host::Process for LocalDaemon {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn has_exited(&self) -> bool {
        self.exit_status().is_some()
    }

    fn end(&self) {
        self.signal(libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_keeps_its_last_bytes() {
        let mut long = vec![b'a'; 200_000];
        long.extend_from_slice(b"the end");
        let tail = read_tail(&long[..], 1000);
        assert!(tail.starts_with("[...] ") && tail.ends_with("aaathe end"), "{tail}");
        assert_eq!(tail.len(), "[...] ".len() + 1000);
        assert_eq!(read_tail(&b"short"[..], 1000), "short");
    }

    #[test]
    fn subscribers_are_deduplicated_and_dropped_with_their_owner() {
        let group = Group::default();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let f: Arc<dyn Fn() + Send + Sync> =
            Arc::new(move || _ = c.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        for _ in 0..100 {
            group.subscribe(&f);
        }
        assert_eq!(group.live_subscribers().len(), 1);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 100, "each subscribe calls once");
        for _ in 0..100 {
            let g: Arc<dyn Fn() + Send + Sync> = Arc::new(|| {});
            group.subscribe(&g);
        }
        drop(f);
        assert!(group.live_subscribers().is_empty());
        assert_eq!(group.subscribers.lock().unwrap().len(), 0, "dead subscribers are pruned");
    }
}
