//! `mirai-daemon`: a standalone daemon. It dials a host and evaluates tasks with a built-in
//! evaluator, so a pool can be used from the shell or from C without writing a daemon.

mod exec;
mod plugin;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use mirai_core::{AutoExit, Daemon, DaemonOptions, Evaluation, Evaluator, Interrupt};
use mirai_proto::Status;

/// Exit status when the daemon cannot start or connect (sysexits' EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(
    version,
    about = "Dial a mirai host and evaluate its tasks.",
    after_help = "Exit status: 0 connection ended, 1 idle time, 2 wall time, 3 max tasks, \
69 could not connect or was refused.\n\nThe host's secret is read from MIRAI_SECRET (hex) or \
--secret-file; the CA certificate for tls+tcp:// and wss:// from --tls-ca or MIRAI_TLS_CA."
)]
struct Cli {
    /// Host URL: ipc:///path, abstract://name, tcp://host:port, tls+tcp://host:port,
    /// ws://host:port[/path] or wss://host:port[/path] (WebSocket, through HTTP proxies).
    url: String,
    /// How tasks are evaluated.
    #[arg(long, value_enum, default_value_t = Kind::Echo)]
    evaluator: Kind,
    /// Shared library for `--evaluator plugin`, exporting `mirai_plugin_evaluate` (see mirai.h).
    #[arg(long, required_if_eq("evaluator", "plugin"))]
    plugin: Option<PathBuf>,
    /// Exit after this many tasks (exit status 3).
    #[arg(long)]
    maxtasks: Option<u64>,
    /// Exit when no task arrives for this many milliseconds (exit status 1).
    #[arg(long)]
    idletime: Option<u64>,
    /// Soft time limit in milliseconds, checked when a task arrives (exit status 2).
    #[arg(long)]
    walltime: Option<u64>,
    /// When the host goes: exit (true), finish the running task first (na), or stay and redial (false).
    #[arg(long, value_enum, default_value_t = Exit::True)]
    autoexit: Exit,
    /// Keep retrying until a host answers, instead of failing at once.
    #[arg(long)]
    retry: bool,
    /// PEM file with the host's CA certificate, for tls+tcp:// and wss://.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// File holding the host's secret in hex (instead of MIRAI_SECRET).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Print connection events on stderr.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// Return the payload unchanged.
    Echo,
    /// Run the command the payload describes (JSON; see README).
    Exec,
    /// Call a shared library's `mirai_plugin_evaluate`.
    Plugin,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Exit {
    True,
    Na,
    False,
}

struct Echo;

impl Evaluator for Echo {
    fn evaluate(&mut self, payload: Vec<u8>, _: bool, _: &Interrupt) -> Evaluation {
        Evaluation { status: Status::Value, payload }
    }
}

/// The daemon's options; `env_secret` is what `MIRAI_SECRET` held (an error only counts when
/// no `--secret-file` replaces it).
fn options(cli: &Cli, env_secret: Result<Option<Vec<u8>>, String>) -> Result<DaemonOptions, String> {
    let read =
        |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let secret = match &cli.secret_file {
        Some(path) => Some(mirai_core::auth::from_hex(&read(path)?).map_err(|e| e.to_string())?),
        None => env_secret?,
    };
    Ok(DaemonOptions {
        retry: cli.retry,
        autoexit: match cli.autoexit {
            Exit::True => AutoExit::Exit { grace: Duration::from_millis(200) },
            Exit::Na => AutoExit::FinishTask,
            Exit::False => AutoExit::Stay,
        },
        maxtasks: cli.maxtasks,
        idletime: cli.idletime.map(Duration::from_millis),
        walltime: cli.walltime.map(Duration::from_millis),
        tls_ca: cli.tls_ca.as_ref().map(read).transpose()?,
        secret,
        label: concat!("mirai-daemon ", env!("CARGO_PKG_VERSION")).into(),
        ..DaemonOptions::default()
    })
}

fn main() -> ExitCode {
    // First, while this is the only thread: no task, and no command a task runs, can read it.
    let env_secret = mirai_core::daemon::take_env_secret().map_err(|e| e.to_string());
    let cli = Cli::parse();
    if cli.verbose {
        mirai_core::stderr_log::install("mirai-daemon", log::LevelFilter::Info);
    }
    let result = options(&cli, env_secret).and_then(|mut options| match cli.evaluator {
        Kind::Echo => Daemon::run(&cli.url, options, &mut Echo).map_err(|e| e.to_string()),
        Kind::Exec => {
            let mut exec = exec::Exec::new();
            options.interrupt_hook = Some(exec.interrupt_hook());
            Daemon::run(&cli.url, options, &mut exec).map_err(|e| e.to_string())
        }
        Kind::Plugin => {
            let path = cli.plugin.as_ref().ok_or("--plugin is required")?;
            plugin::run(&cli.url, &options, path)
        }
    });
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("mirai-daemon: {e}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}
