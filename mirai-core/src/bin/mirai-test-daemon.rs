//! Test fixture: a daemon process with a built-in evaluator, used by mirai-core's integration
//! tests. Not a user tool (the standalone `mirai-daemon` is). Usage:
//!
//! `mirai-test-daemon URL [--maxtasks=N] [--idletime=MS] [--walltime=MS] [--autoexit=true|na|false] [--retry]`
//!
//! Payloads are text commands: `echo:<text>` returns the text; `sleep:<ms>` sleeps (cancellable)
//! and returns `slept`; `spin:<ms>` busy-waits without looking at the interrupt; `fail:<msg>`
//! returns an evaluation error; `init` returns the daemon id and its stream words; `pid` returns
//! the process id; `everywhere` whether the task is a copy of an everywhere broadcast; `crash`
//! exits the process mid-task.

use std::time::{Duration, Instant};

use mirai_core::daemon::InitBundle;
use mirai_core::{AutoExit, Daemon, DaemonOptions, Evaluation, Evaluator, Interrupt};
use mirai_proto::Status;

#[derive(Default)]
struct TestEvaluator {
    init: Option<InitBundle>,
}

fn ok(text: impl Into<String>) -> Evaluation {
    Evaluation { status: Status::Value, payload: text.into().into_bytes() }
}

impl Evaluator for TestEvaluator {
    fn init(&mut self, bundle: &InitBundle) {
        self.init = Some(bundle.clone());
    }

    fn evaluate(&mut self, payload: Vec<u8>, everywhere: bool, interrupt: &Interrupt) -> Evaluation {
        let text = String::from_utf8_lossy(&payload).into_owned();
        let (cmd, arg) = text.split_once(':').unwrap_or((text.as_str(), ""));
        let ms = || Duration::from_millis(arg.parse().unwrap_or(0));
        match cmd {
            "echo" => ok(arg),
            "sleep" => {
                if interrupt.sleep(ms()) {
                    Evaluation { status: Status::Interrupted, payload: b"interrupted".to_vec() }
                } else {
                    ok("slept")
                }
            }
            "spin" => {
                let end = Instant::now() + ms();
                while Instant::now() < end {
                    std::hint::spin_loop();
                }
                ok("spun")
            }
            "fail" => Evaluation { status: Status::Error, payload: arg.as_bytes().to_vec() },
            "init" => ok(self
                .init
                .as_ref()
                .map(|i| format!("{} {:?}", i.daemon_id, i.rng_stream))
                .unwrap_or_default()),
            "pid" => ok(std::process::id().to_string()),
            "everywhere" => ok(everywhere.to_string()),
            "crash" => std::process::exit(70),
            _ => {
                Evaluation { status: Status::Error, payload: format!("unknown command '{cmd}'").into_bytes() }
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!(
            "usage: mirai-test-daemon URL [--maxtasks=N] [--idletime=MS] [--walltime=MS] [--autoexit=true|na|false] [--retry]"
        );
        std::process::exit(64);
    };
    let mut options = DaemonOptions { label: "mirai-test-daemon".into(), ..DaemonOptions::default() };
    for arg in args {
        let (key, value) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
        let num = || value.parse::<u64>().unwrap_or_else(|_| panic!("{key} needs a number"));
        match key {
            "--maxtasks" => options.maxtasks = Some(num()),
            "--idletime" => options.idletime = Some(Duration::from_millis(num())),
            "--walltime" => options.walltime = Some(Duration::from_millis(num())),
            "--retry" => options.retry = true,
            "--autoexit" => {
                options.autoexit = match value {
                    "true" => AutoExit::Exit { grace: Duration::from_millis(200) },
                    "na" => AutoExit::FinishTask,
                    "false" => AutoExit::Stay,
                    other => panic!("--autoexit takes true, na or false, not {other}"),
                }
            }
            other => panic!("unknown option {other}"),
        }
    }
    match Daemon::run(&url, options, &mut TestEvaluator::default()) {
        Ok(code) => std::process::exit(code as i32),
        Err(e) => {
            eprintln!("mirai-test-daemon: {e}");
            std::process::exit(69);
        }
    }
}
