//! The host's secret stays out of reach of tasks: a locally launched `mirai-daemon` takes it out
//! of its environment (and its initial environment block) before the first task, so neither
//! the commands the exec evaluator runs nor anything they read can see it, and no process's
//! command line holds it.

use std::time::Duration;

use mirai_core::launch::CommandTemplate;
use mirai_core::{Host, HostOptions, SubmitOptions, TaskStatus};

const BIN: &str = env!("CARGO_BIN_EXE_mirai-daemon");

/// The exec evaluator's stdout for `argv`.
fn run(host: &Host, argv: &[&str]) -> String {
    let request = serde_json::json!({ "argv": argv }).to_string();
    let t = host.submit(request.into_bytes(), SubmitOptions::default()).unwrap();
    assert!(t.wait(Some(Duration::from_secs(20))));
    assert_eq!(t.status().unwrap(), TaskStatus::Value);
    let reply: serde_json::Value = serde_json::from_slice(&t.take_payload().unwrap()).unwrap();
    assert_eq!(reply["exit"], 0, "{reply}");
    reply["stdout"].as_str().unwrap().to_string()
}

/// Every process's command line that holds `needle`.
fn command_lines_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn tasks_cannot_read_the_secret() {
    let url = format!("abstract://mirai-secrets-test-{}", std::process::id());
    let host = Host::listen(&url, HostOptions::default()).unwrap();
    let secret = mirai_core::auth::to_hex(host.secret().expect("authentication is on by default"));
    let _daemons = mirai_core::launch::launch_local(
        &host,
        1,
        &CommandTemplate::new(BIN, &["{url}", "--evaluator", "exec"]),
    )
    .unwrap();
    assert!(host.wait_connections(1, Some(Duration::from_secs(20))), "the daemon authenticated");

    let env = run(&host, &["env"]);
    assert!(env.contains("PATH="), "env ran: {env}");
    assert!(!env.contains("MIRAI_SECRET") && !env.contains(&secret), "{env}");
    // What /proc shows of the daemon's (the parent's) environment, as it was at exec.
    let environ = run(&host, &["sh", "-c", "tr '\\0' '\\n' < /proc/$PPID/environ"]);
    assert!(environ.contains("PATH="), "the daemon's environment was read: {environ}");
    assert!(!environ.contains(&secret), "{environ}");
    assert!(command_lines_with(&secret).is_empty(), "{:?}", command_lines_with(&secret));
}
