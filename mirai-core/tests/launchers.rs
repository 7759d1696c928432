//! Launchers against the real thing: SSH to a real sshd (with and without a reverse tunnel),
//! Slurm jobs on a real single-node cluster, HTTP to a local API server; SGE, PBS and LSF
//! scripts against expected files and run through a stand-in submit command.
//!
//! Wherever daemons are launched, the host's secret is in no process's command line, nor in
//! the request line or command text the HTTP API receives.
//!
//! The SSH and Slurm tests need the services `ci/slurm-sshd.sh up` starts; `scripts/test.sh`
//! starts them and sets `MIRAI_TEST_SERVICES=1`, and without it these tests fail rather than
//! pass silently.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::submit as submit_text;
use common::*;
use mirai_core::launch::cluster::{ClusterConfig, Scheduler, job_script, submit};
use mirai_core::launch::http::{HttpConfig, launch_http};
use mirai_core::launch::remote::{RemoteConfig, SshConfig, launch_remote, launch_ssh};
use mirai_core::launch::{CommandTemplate, Target, spawn_local, wait_for_daemons};
use mirai_core::{Error, Host, HostOptions};

fn daemon() -> CommandTemplate {
    CommandTemplate::new(daemon_bin(), &["{url}"])
}

fn services() -> bool {
    let on = std::env::var("MIRAI_TEST_SERVICES").is_ok_and(|v| v == "1");
    assert!(
        on || std::env::var("MIRAI_SKIP_SERVICES").is_ok(),
        "start sshd and Slurm with `bash ci/slurm-sshd.sh up` and set MIRAI_TEST_SERVICES=1 \
         (or set MIRAI_SKIP_SERVICES=1 to skip these tests knowingly)"
    );
    on
}

/// The secret of `host`, hex.
fn secret(host: &Host) -> String {
    mirai_core::auth::to_hex(host.secret().expect("authentication is on by default"))
}

/// Fails if any process's command line (`/proc/*/cmdline`) holds `host`'s secret.
fn assert_no_command_line_has_the_secret(host: &Host) {
    let secret = secret(host);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(!text.contains(&secret), "process {:?} has the secret: {text}", entry.file_name());
        }
    }
}

fn ssh_config(tunnel: bool) -> SshConfig {
    let port = std::env::var("CI_SSH_PORT").unwrap_or_else(|_| "2222".into());
    let mut config = SshConfig::new(&[&format!("ssh://root@127.0.0.1:{port}")]);
    config.options = vec!["-F".into(), std::env::var("CI_SSH_CONFIG").expect("CI_SSH_CONFIG")];
    config.tunnel = tunnel;
    config
}

#[test]
fn ssh_launches_daemons() {
    if !services() {
        return;
    }
    let host = Host::listen("tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    let launched = launch_ssh(&Target::of(&host), &daemon(), &ssh_config(false)).unwrap();
    wait_for_daemons(&host, 1, &launched, Some(PATIENCE)).unwrap();
    assert_eq!(value(&submit_text(&host, "echo:over ssh")), "over ssh");
    assert_no_command_line_has_the_secret(&host);
    drop(host);
    assert!(launched[0].wait(PATIENCE).is_some(), "ssh ends with its daemon");
}

#[test]
fn ssh_tunnel_carries_the_connection() {
    if !services() {
        return;
    }
    // TLS too: the daemon verifies the host through the tunnel (the name is 127.0.0.1).
    let host = Host::listen("tls+tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    let remote_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = ssh_config(true);
    config.tunnel_port = Some(remote_port);
    let launched = launch_ssh(&Target::of(&host), &daemon(), &config).unwrap();
    wait_for_daemons(&host, 1, &launched, Some(PATIENCE)).unwrap();
    assert_eq!(value(&submit_text(&host, "echo:tunnelled")), "tunnelled");
    assert_no_command_line_has_the_secret(&host);
}

#[test]
fn ssh_failure_is_reported() {
    if !services() {
        return;
    }
    let host = Host::listen("tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    let mut config = ssh_config(false);
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    config.remotes = vec![format!("ssh://root@127.0.0.1:{closed}")];
    let launched = launch_ssh(&Target::of(&host), &daemon(), &config).unwrap();
    match wait_for_daemons(&host, 1, &launched, Some(PATIENCE)) {
        Err(Error::Launch(msg)) => assert!(msg.contains("Connection refused"), "{msg}"),
        other => panic!("expected a launch error, got {other:?}"),
    }
    // A tunnel needs a host on 127.0.0.1.
    let public = Host::listen("tcp://0.0.0.0:0", HostOptions::default()).unwrap();
    let err = launch_ssh(&Target::of(&public), &daemon(), &ssh_config(true)).err().unwrap();
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

/// The files under `dir` (recursively) that hold `needle`.
fn files_with(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_with(&path, needle));
        } else if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        {
            found.push(path);
        }
    }
    found
}

/// Where slurmctld saves its jobs (scripts and environments).
fn slurm_state_dir() -> std::path::PathBuf {
    let out = Command::new("scontrol").args(["show", "config"]).output().expect("scontrol");
    let config = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = config.lines().find(|l| l.starts_with("StateSaveLocation")).expect("StateSaveLocation");
    line.split_once('=').unwrap().1.trim().into()
}

fn squeue_jobs() -> String {
    let out = Command::new("squeue").args(["-h", "-o", "%i"]).output().expect("squeue");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn slurm_jobs_serve_and_are_cancelled() {
    if !services() {
        return;
    }
    let host = Host::listen("tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    let config =
        ClusterConfig::new(Scheduler::Slurm, &["--partition=debug", "--ntasks=1", "--output=/dev/null"]);
    let mut jobs = submit(&Target::of(&host), &daemon(), &config, 2).unwrap();
    assert!(host.wait_connections(2, Some(Duration::from_secs(60))), "Slurm daemons: {:?}", host.counters());
    let tasks: Vec<_> = (0..20).map(|i| submit_text(&host, &format!("echo:{i}"))).collect();
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(value(t), i.to_string());
    }
    assert!(!squeue_jobs().is_empty());
    assert_no_command_line_has_the_secret(&host);
    let stored = files_with(&slurm_state_dir(), &secret(&host));
    assert!(stored.is_empty(), "Slurm stored the secret: {stored:?}");
    let home = std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".mirai");
    let left = files_with(&home, &secret(&host));
    assert!(left.is_empty(), "the started jobs' secret files are gone: {left:?}");
    jobs.cancel().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !squeue_jobs().is_empty() {
        assert!(Instant::now() < deadline, "jobs still queued: {}", squeue_jobs());
        std::thread::sleep(Duration::from_millis(200));
    }
    // sbatch rejecting a script surfaces as an error.
    let bad = ClusterConfig::new(Scheduler::Slurm, &["--partition=no-such-partition"]);
    match submit(&Target::of(&host), &daemon(), &bad, 1) {
        Err(Error::Launch(msg)) => assert!(msg.contains("sbatch rejected"), "{msg}"),
        other => panic!("expected a launch error, got {other:?}"),
    }
}

#[test]
fn job_scripts_match_expected_files() {
    let d = CommandTemplate::new("mirai-daemon", &["{url}", "--idletime", "60000"]);
    let url = "tcp://10.0.0.1:5555";
    let cases = [
        (Scheduler::Slurm, vec!["--partition=debug", "--mem=1G"], include_str!("data/job-slurm.sh")),
        (Scheduler::Sge, vec!["-l h_rt=01:00:00"], include_str!("data/job-sge.sh")),
        (Scheduler::Pbs, vec!["-l walltime=01:00:00"], include_str!("data/job-pbs.sh")),
        (Scheduler::Lsf, vec!["-W 60"], include_str!("data/job-lsf.sh")),
    ];
    for (scheduler, options, expected) in cases {
        let config = ClusterConfig::new(scheduler, &options);
        assert_eq!(job_script(&config, &d, url, 4, None), expected, "{scheduler:?}");
    }
}

#[test]
fn job_script_keeps_commands_after_the_directives() {
    let d = CommandTemplate::new("mirai-daemon", &["{url}"]);
    let options = ["module load R", "--mem=1G", "#SBATCH --time=10", "", "export X=1"];
    let script = job_script(&ClusterConfig::new(Scheduler::Slurm, &options), &d, "tcp://h:1", 1, None);
    assert_eq!(
        script,
        "#!/bin/sh\n#SBATCH --job-name=mirai\n#SBATCH --mem=1G\n#SBATCH --time=10\nmodule load R\nexport X=1\n\
         exec mirai-daemon tcp://h:1\n"
    );
}

#[test]
fn sge_pbs_lsf_through_a_stand_in_submit_command() {
    let fake = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-submit.sh");
    for (scheduler, name) in [(Scheduler::Sge, "sge"), (Scheduler::Pbs, "pbs"), (Scheduler::Lsf, "lsf")] {
        let host = Host::listen(&unique_url(), HostOptions::default()).unwrap();
        // The stand-in takes the scheduler's style as its argument: wrap it in `sh -c`.
        let wrapper = std::env::temp_dir().join(format!("mirai-submit-{name}-{}", std::process::id()));
        std::fs::write(&wrapper, format!("#!/bin/sh\nexec {fake} {name}\n")).unwrap();
        // Cancelling kills the job's process; PBS ids carry a server suffix to strip.
        let cancel = std::env::temp_dir().join(format!("mirai-cancel-{name}-{}", std::process::id()));
        std::fs::write(&cancel, "#!/bin/sh\nfor id; do kill \"${id%%.*}\"; done\n").unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&wrapper).arg(&cancel).status().unwrap();
        let mut config = ClusterConfig::new(scheduler, &[]);
        config.submit_command = Some(wrapper.display().to_string());
        config.cancel_command = Some(cancel.display().to_string());
        let mut jobs = submit(&Target::of(&host), &daemon(), &config, 1).unwrap();
        assert!(jobs.ids[0].chars().next().unwrap().is_ascii_digit(), "{name}: {:?}", jobs.ids);
        assert!(host.wait_connections(1, Some(PATIENCE)), "{name}");
        assert_eq!(value(&submit_text(&host, "echo:job")), "job");
        assert_no_command_line_has_the_secret(&host);
        jobs.cancel().unwrap();
        let deadline = Instant::now() + PATIENCE;
        while host.counters().connections > 0 {
            assert!(Instant::now() < deadline, "{name}: cancelled job's daemon still connected");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::remove_file(wrapper).unwrap();
        std::fs::remove_file(cancel).unwrap();
    }
}

#[test]
fn generic_remote_command() {
    let host = host();
    let config = RemoteConfig { command: "sh".into(), args: vec!["-c".into(), ".".into()], quote: false };
    let launched = launch_remote(&Target::of(&host), &daemon(), &config, 2).unwrap();
    wait_for_daemons(&host, 2, &launched, Some(PATIENCE)).unwrap();
    assert_eq!(value(&submit_text(&host, "echo:via sh")), "via sh");
    assert_no_command_line_has_the_secret(&host);
    let bad = RemoteConfig { command: "sh".into(), args: vec!["-c".into()], quote: false };
    assert!(launch_remote(&Target::of(&host), &daemon(), &bad, 1).is_err());
}

#[test]
fn a_chatty_process_keeps_only_the_end_of_its_stderr() {
    let script = "head -c 10000000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 3";
    let launched = spawn_local("tcp://unused:1", &CommandTemplate::new("sh", &["-c", script]), 1).unwrap();
    assert_eq!(launched[0].wait(PATIENCE).and_then(|s| s.code()), Some(3));
    let stderr = launched[0].stderr();
    assert!(stderr.len() <= 64 * 1024 + 16 && stderr.ends_with("xxxEND\n"), "{} bytes", stderr.len());
}

/// A minimal launch API: takes `{"cmd": "...", "environment": [{"name": ..., "value": ...}]}`,
/// runs the command with that environment, answers 200; or answers with `status` without
/// running anything. Fails if `secret` is in the request line or the command.
fn api_server(status: u16, secret: String) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&request).into_owned();
        assert!(text.contains("Authorization: Bearer t0ken") && text.contains("Cookie: c=1"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(!head.contains(&secret), "the secret is in the request's head: {head}");
        let job: serde_json::Value = serde_json::from_str(body).unwrap();
        let cmd = job["cmd"].as_str().unwrap();
        assert!(!cmd.contains(&secret), "the secret is in the command: {cmd}");
        let env = job["environment"].as_array().unwrap();
        let pair = |v: &serde_json::Value| {
            (v["name"].as_str().unwrap().to_string(), v["value"].as_str().unwrap().to_string())
        };
        let env: Vec<(String, String)> = env.iter().map(pair).collect();
        assert!(env.contains(&("MIRAI_SECRET".into(), secret.clone())), "{env:?}");
        if status == 200 {
            Command::new("sh").args(["-c", &format!("{cmd} &")]).envs(env).status().unwrap();
        }
        let reply = if status == 200 { "{\"launched\": true}" } else { "no capacity" };
        write!(
            s,
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
            reply.len()
        )
        .unwrap();
    });
    (port, handle)
}

#[test]
fn http_launcher_starts_daemons_through_an_api() {
    let host = host();
    let (port, server) = api_server(200, secret(&host));
    let config = HttpConfig {
        url: format!("http://127.0.0.1:{port}/api/launch_job"),
        method: "POST".into(),
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: "{\"cmd\": \"%s\", \"environment\": %e}".into(),
        cookie: Some("c=1".into()),
        token: Some("t0ken".into()),
    };
    let replies = launch_http(&Target::of(&host), &daemon(), &config, 1).unwrap();
    assert_eq!(replies, vec!["{\"launched\": true}".to_string()]);
    server.join().unwrap();
    assert!(host.wait_connections(1, Some(PATIENCE)));
    assert_eq!(value(&submit_text(&host, "echo:http")), "http");
    assert_no_command_line_has_the_secret(&host);

    let (port, server) = api_server(503, secret(&host));
    let config = HttpConfig { url: format!("http://127.0.0.1:{port}/"), ..config };
    match launch_http(&Target::of(&host), &daemon(), &config, 1) {
        Err(Error::Launch(msg)) => assert!(msg.contains("503") && msg.contains("no capacity"), "{msg}"),
        other => panic!("expected a launch error, got {other:?}"),
    }
    server.join().unwrap();

    // With authentication on, a template that cannot carry the environment is refused.
    let config = HttpConfig { body: "{\"cmd\": \"%s\"}".into(), ..config };
    match launch_http(&Target::of(&host), &daemon(), &config, 1) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("%e"), "{msg}"),
        other => panic!("expected the template to be refused, got {other:?}"),
    }
}
