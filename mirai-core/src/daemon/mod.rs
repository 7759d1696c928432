//! The daemon runtime: dial a host, receive tasks, evaluate each on the calling thread (R and
//! Julia must evaluate on their main thread), send results back. A background I/O thread keeps
//! the connection meanwhile, so a cancel reaches the evaluator's interrupt at once.

mod env_secret;
mod interrupt;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use mirai_proto::{ExitReason, Message, Status};

pub use env_secret::take_env_secret;
pub use interrupt::{Interrupt, InterruptHook};
use session::{Closed, Context, Event, Session};

use crate::error::Error;
use crate::tls;
use crate::url::Url;

/// What to do when the connection to the host ends (R's `autoexit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoExit {
    /// Exit. A task still running is interrupted, and if it has not stopped within the grace
    /// period the process is sent SIGTERM (`autoexit = TRUE`).
    Exit { grace: Duration },
    /// Finish the running task, then exit (`autoexit = NA`).
    FinishTask,
    /// Stay, and redial the same URL until a host answers (`autoexit = FALSE`). An explicit
    /// exit from the host still ends the daemon.
    Stay,
}

/// How a daemon ended, with R's mirai exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// The connection ended, or the host told the daemon to exit.
    ConnectionEnded = 0,
    /// No task arrived within the idle time (or the wall time ran out while idle).
    IdleTime = 1,
    /// The wall time was reached; the last task's reply was marked final.
    WallTime = 2,
    /// The task limit was reached; the last task's reply was marked final.
    MaxTasks = 3,
}

/// Daemon settings (R's `daemon()` arguments that the engine handles).
#[derive(Clone)]
pub struct DaemonOptions {
    /// Keep retrying the first dial until a host answers, instead of failing at once.
    pub retry: bool,
    pub autoexit: AutoExit,
    /// Exit after this many tasks.
    pub maxtasks: Option<u64>,
    /// Exit when no task arrives for this long.
    pub idletime: Option<Duration>,
    /// Soft limit: checked when a task arrives; that task still runs, its reply marked final.
    pub walltime: Option<Duration>,
    /// Largest frame accepted from the host.
    pub max_frame: u64,
    /// Called on the I/O thread when the running task is cancelled.
    pub interrupt_hook: Option<InterruptHook>,
    /// Free text sent to the host in the handshake.
    pub label: String,
    /// The host's secret; `None` takes it from `MIRAI_SECRET` (hex), if set, and removes it
    /// from the environment (see [`take_env_secret`]).
    pub secret: Option<Vec<u8>>,
    /// The CA certificate (PEM) to verify a `tls+tcp://` host with; `None` reads
    /// `MIRAI_TLS_CA` from the environment, if set.
    pub tls_ca: Option<String>,
    /// Give up on the host when nothing (heartbeats included) arrived from it for this long,
    /// then do as `autoexit` says: a host that was killed without its socket closing, stopped,
    /// or behind a vanished network. Applies only to hosts that heartbeat, and is at least
    /// three of their heartbeats.
    pub host_timeout: Option<Duration>,
    /// Over `ws://` and `wss://`: ping the host after this long without sending, so proxies
    /// and load balancers do not drop an idle connection.
    pub keepalive: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            retry: false,
            autoexit: AutoExit::Exit { grace: Duration::from_millis(200) },
            maxtasks: None,
            idletime: None,
            walltime: None,
            max_frame: mirai_proto::conn::DEFAULT_MAX_FRAME,
            interrupt_hook: None,
            label: concat!("mirai-core ", env!("CARGO_PKG_VERSION")).to_string(),
            secret: None,
            tls_ca: None,
            host_timeout: Some(Duration::from_secs(120)),
            keepalive: crate::ws::DEFAULT_KEEPALIVE,
        }
    }
}

/// What the host sent a daemon when it was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitBundle {
    pub daemon_id: u64,
    /// The six MRG32k3a words of this daemon's L'Ecuyer-CMRG stream.
    pub rng_stream: [u32; 6],
    pub blob: Vec<u8>,
}

/// The result of one evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    pub status: Status,
    pub payload: Vec<u8>,
}

/// The binding's side of a daemon. Every method runs on the thread that called [`Daemon::run`].
pub trait Evaluator {
    /// Called once per connection, before any task.
    fn init(&mut self, _bundle: &InitBundle) {}
    /// Evaluates a task. `everywhere` marks a copy of an `everywhere` broadcast (bindings take
    /// their cleanup snapshot after it). Should return soon after `interrupt` is set.
    fn evaluate(&mut self, payload: Vec<u8>, everywhere: bool, interrupt: &Interrupt) -> Evaluation;
    /// Called after every task (R's `cleanup`).
    fn cleanup(&mut self) {}
}

/// Runs daemons.
pub struct Daemon;

impl Daemon {
    /// Connects to the host at `url` and serves tasks until a limit is reached or the host
    /// goes (per `autoexit`). Fails if the first connection or handshake fails (with `retry`,
    /// only if the handshake is refused). Without `options.secret` it first takes the secret out
    /// of the environment: call it before other threads use the environment.
    pub fn run(url: &str, options: DaemonOptions, evaluator: &mut dyn Evaluator) -> Result<ExitCode, Error> {
        let url = Url::parse(url)?;
        let secret = match options.secret.clone() {
            Some(s) => Some(s),
            None => take_env_secret()?,
        };
        let tls = if url.is_tls() {
            let ca = options.tls_ca.clone().or_else(|| std::env::var(tls::CA_ENV).ok()).ok_or_else(|| {
                Error::Tls(format!("{url}: the host's CA certificate is needed (tls_ca or {})", tls::CA_ENV))
            })?;
            Some(tls::client_config(&ca)?)
        } else {
            None
        };
        let config = mirai_proto::Config { max_frame: options.max_frame, ..mirai_proto::Config::default() };
        let ctx = Context {
            interrupt: Interrupt::new(options.interrupt_hook.clone()),
            evaluating: Arc::new(AtomicBool::new(false)),
            terminate_grace: match options.autoexit {
                AutoExit::Exit { grace } => Some(grace),
                _ => None,
            },
            label: options.label.clone(),
            secret: secret.map(Arc::new),
            tls,
            host_timeout: options.host_timeout,
            keepalive: options.keepalive,
        };
        let mut runner = Runner { options, ctx, started: Instant::now(), tasks: 0, evaluator };
        let mut session = runner.connect(&url, config, runner.options.retry)?;
        loop {
            match runner.serve(&session)? {
                Outcome::Exit(code, reason) => {
                    session.close(reason);
                    return Ok(code);
                }
                Outcome::Reconnect => {
                    session.close(None);
                    session = runner.connect(&url, config, true)?;
                }
            }
        }
    }
}

/// A failed handshake, with a hint when the failure looks like TLS spoken to plain TCP or the
/// other way round.
fn handshake_error(url: &Url, e: Error) -> Error {
    let text = e.to_string();
    if url.is_tls() && (text.contains("InvalidContentType") || text.contains("corrupt message")) {
        let plain = if matches!(url, Url::Ws { .. }) { "ws" } else { "tcp" };
        return Error::Tls(format!("{text} (is the host listening without TLS? dial {plain}://)"));
    }
    if !url.is_tls() && matches!(url, Url::Tcp { .. } | Url::Ws { .. }) {
        let secure = if matches!(url, Url::Ws { .. }) { "wss" } else { "tls+tcp" };
        return Error::Refused(format!(
            "handshake with {url} failed: {text} (if the host uses TLS, dial {secure}://)"
        ));
    }
    e
}

enum Outcome {
    /// Exit with this code, sending `Exit` with the reason if given.
    Exit(ExitCode, Option<ExitReason>),
    /// The host went away and the daemon stays: dial again.
    Reconnect,
}

struct Runner<'a> {
    options: DaemonOptions,
    ctx: Context,
    started: Instant,
    tasks: u64,
    evaluator: &'a mut dyn Evaluator,
}

impl Runner<'_> {
    /// Dials and waits for the init bundle. With `retry`, failed dials are retried with
    /// exponential backoff (10 ms doubling to 1 s) until a host answers.
    fn connect(&mut self, url: &Url, config: mirai_proto::Config, retry: bool) -> Result<Session, Error> {
        let mut backoff = Duration::from_millis(10);
        let mut warned = false;
        loop {
            match Session::open(url, config, self.ctx.clone()) {
                Ok(session) => {
                    let failure = match session.recv(None) {
                        Ok(Event::Init { daemon_id, rng_stream, blob }) => {
                            self.evaluator.init(&InitBundle { daemon_id, rng_stream, blob });
                            return Ok(session);
                        }
                        Ok(Event::Closed(Closed::Exit(reason, detail))) => {
                            // An explicit refusal: retrying cannot help.
                            session.close(None);
                            return Err(Error::Refused(format!(
                                "host refused the daemon: {reason:?} {detail}"
                            )));
                        }
                        Ok(Event::Closed(Closed::HostRefused(refusal))) => {
                            // Whoever answers at the URL is not our host (an impostor, or a
                            // host with another secret); the real one may come back.
                            let text = format!("refusing the host at {url}: {refusal}");
                            if warned {
                                log::debug!("{text}");
                            } else {
                                log::warn!("{text}");
                                warned = true;
                            }
                            Error::Refused(text)
                        }
                        Ok(Event::Closed(Closed::Failed(e))) => handshake_error(url, e),
                        Ok(Event::Closed(Closed::Eof)) | Ok(Event::Task { .. }) | Err(_) => handshake_error(
                            url,
                            Error::Refused("the host closed the connection during the handshake".into()),
                        ),
                    };
                    session.close(None);
                    if !retry {
                        return Err(failure);
                    }
                }
                Err(e) if !retry || matches!(e, Error::InvalidUrl(_) | Error::NotSupported(_)) => {
                    return Err(e);
                }
                Err(_) => {}
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Serves one connection.
    fn serve(&mut self, session: &Session) -> Result<Outcome, Error> {
        loop {
            match session.recv(self.wait_limit()) {
                Ok(Event::Task { id, everywhere, payload }) => {
                    let last = self.options.maxtasks.is_some_and(|m| self.tasks + 1 >= m)
                        || self.options.walltime.is_some_and(|w| self.started.elapsed() >= w);
                    self.ctx.evaluating.store(true, Ordering::Release);
                    let result = self.evaluator.evaluate(payload, everywhere, &self.ctx.interrupt);
                    self.ctx.evaluating.store(false, Ordering::Release);
                    self.tasks += 1;
                    let reply = Message::Result { id, status: result.status, last, payload: result.payload };
                    // A failed send means the host is gone; the I/O thread reports how.
                    let _ = session.send(reply);
                    self.evaluator.cleanup();
                    if last {
                        return Ok(self.retire(session));
                    }
                }
                Ok(Event::Init { .. }) => {}
                Ok(Event::Closed(closed)) => return Ok(self.on_closed(closed)),
                Err(RecvTimeoutError::Timeout) => {
                    let reason =
                        if self.walltime_passed() { ExitReason::WallTime } else { ExitReason::IdleTime };
                    return Ok(Outcome::Exit(ExitCode::IdleTime, Some(reason)));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Ok(Outcome::Exit(ExitCode::ConnectionEnded, None));
                }
            }
        }
    }

    /// After the final reply: wait for the host's word (or its disconnect), then exit.
    fn retire(&self, session: &Session) -> Outcome {
        let code = if self.options.maxtasks.is_some_and(|m| self.tasks >= m) {
            ExitCode::MaxTasks
        } else {
            ExitCode::WallTime
        };
        loop {
            match session.recv(None) {
                Ok(Event::Closed(_)) | Err(_) => return Outcome::Exit(code, None),
                Ok(_) => {}
            }
        }
    }

    fn on_closed(&self, closed: Closed) -> Outcome {
        match (&closed, self.options.autoexit) {
            (Closed::Exit(ExitReason::Shutdown, _), _) => Outcome::Exit(ExitCode::ConnectionEnded, None),
            (_, AutoExit::Stay) => {
                log::info!("host connection ended ({closed:?}); redialling");
                Outcome::Reconnect
            }
            _ => Outcome::Exit(ExitCode::ConnectionEnded, None),
        }
    }

    fn walltime_passed(&self) -> bool {
        self.options.walltime.is_some_and(|w| self.started.elapsed() >= w)
    }

    /// How long to wait for each next task, as R's mirai does: the idle time, or the wall
    /// time when that is shorter (the wall time itself is only checked when a task arrives).
    fn wait_limit(&self) -> Option<Duration> {
        [self.options.idletime, self.options.walltime].into_iter().flatten().min()
    }
}
