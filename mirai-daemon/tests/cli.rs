//! The standalone daemon as users run it: its command line, and the exec evaluator's
//! cancellation of whole process groups.

use std::process::Command;
use std::time::{Duration, Instant};

use mirai_core::launch::CommandTemplate;
use mirai_core::{ErrorCode, Host, HostOptions, SubmitOptions, TaskStatus};

const BIN: &str = env!("CARGO_BIN_EXE_mirai-daemon");

fn host_with(n: usize, args: &[&str]) -> (Host, Vec<mirai_core::launch::LocalDaemon>) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n_url = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let url = format!("abstract://mirai-daemon-test-{}-{n_url}", std::process::id());
    let host = Host::listen(&url, HostOptions::default()).unwrap();
    let mut all = vec!["{url}"];
    all.extend_from_slice(args);
    let d = mirai_core::launch::launch_local(&host, n, &CommandTemplate::new(BIN, &all)).unwrap();
    assert!(host.wait_connections(n as u64, Some(Duration::from_secs(20))));
    (host, d)
}

fn result_text(t: &mirai_core::Task) -> (TaskStatus, String) {
    assert!(t.wait(Some(Duration::from_secs(20))));
    (t.status().unwrap(), String::from_utf8(t.take_payload().unwrap_or_default()).unwrap())
}

#[test]
fn help_and_usage_errors() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in
        ["--maxtasks", "--idletime", "--walltime", "--autoexit", "--evaluator", "--tls-ca", "MIRAI_SECRET"]
    {
        assert!(help.contains(needle), "help mentions {needle}");
    }
    let out = Command::new(BIN).args(["tcp://127.0.0.1:1", "--evaluator", "plugin"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--plugin"));
}

#[test]
fn unreachable_host_and_bad_urls_exit_69_with_a_message() {
    for url in ["tcp://127.0.0.1:1", "nonsense", "tls+tcp://127.0.0.1:1"] {
        let out = Command::new(BIN).arg(url).env_remove("MIRAI_TLS_CA").output().unwrap();
        assert_eq!(out.status.code(), Some(69), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("mirai-daemon: ") && err.len() > 20, "{url}: {err}");
    }
}

#[test]
fn echo_and_limits() {
    let (host, d) = host_with(1, &["--maxtasks", "2"]);
    for text in ["a", "b"] {
        let t = host.submit(text.as_bytes().to_vec(), SubmitOptions::default()).unwrap();
        assert_eq!(result_text(&t), (TaskStatus::Value, text.to_string()));
    }
    assert_eq!(d[0].wait(Duration::from_secs(20)).and_then(|s| s.code()), Some(3));
}

#[test]
fn exec_runs_commands_with_stdin_env_and_cwd() {
    let (host, _d) = host_with(1, &["--evaluator", "exec"]);
    let req = r#"{"argv": ["sh", "-c", "cat; echo \" $GREETING\"; pwd; echo err >&2; exit 3"],
                  "stdin": "hello", "env": {"GREETING": "world"}, "cwd": "/tmp"}"#;
    let t = host.submit(req.as_bytes().to_vec(), SubmitOptions::default()).unwrap();
    let (status, text) = result_text(&t);
    assert_eq!(status, TaskStatus::Value);
    assert!(text.contains(r#""exit":3"#), "{text}");
    assert!(text.contains(r#""stdout":"hello world\n/tmp\n""#), "{text}");
    assert!(text.contains(r#""stderr":"err\n""#), "{text}");
    let t = host.submit(br#"{"argv": ["/no/such/program"]}"#.to_vec(), SubmitOptions::default()).unwrap();
    let (status, text) = result_text(&t);
    assert_eq!(status, TaskStatus::Error);
    assert!(text.contains("cannot run /no/such/program"), "{text}");
}

#[test]
fn cancelling_exec_kills_the_process_group() {
    let (host, _d) = host_with(1, &["--evaluator", "exec"]);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    // A shell that starts a background grandchild, records both pids, and waits.
    let script = format!("sleep 60 & echo $$ $! > {}; wait", pidfile.display());
    let req = serde_json::json!({ "argv": ["sh", "-c", script] }).to_string();
    let t = host.submit(req.into_bytes(), SubmitOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let pids: Vec<i32> = loop {
        if let Ok(text) = std::fs::read_to_string(&pidfile)
            && text.ends_with('\n')
        {
            break text.split_whitespace().map(|p| p.parse().unwrap()).collect();
        }
        assert!(Instant::now() < deadline, "command did not start");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(t.cancel());
    assert_eq!(t.status(), Some(TaskStatus::Failed(ErrorCode::Canceled)));
    for pid in pids {
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: signal 0 only checks for existence.
        while unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid) {
            assert!(Instant::now() < deadline, "process {pid} survived the cancel");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The daemon is still there for the next command.
    let t = host.submit(br#"{"argv": ["true"]}"#.to_vec(), SubmitOptions::default()).unwrap();
    assert_eq!(result_text(&t).0, TaskStatus::Value);
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(") ").next().is_some_and(|rest| rest.starts_with('Z')))
        .unwrap_or(true)
}
