//! Remote launchers: SSH (with optional reverse tunnel) and a generic command that takes the
//! daemon's command line (R's `remote_config`: `srun`, `sbatch --wrap`, a container runner...).

use std::process::Command;

use super::local::{Group, spawn_watched};
use super::shell::{self, quote};
use super::{CommandTemplate, LocalDaemon, Target};
use crate::error::Error;
use crate::url::Url;

/// One daemon per remote: `ssh [-R port:127.0.0.1:port] -p PORT [user@]host COMMAND`.
#[derive(Clone, Debug)]
pub struct SshConfig {
    /// `ssh://[user@]host[:port]` (port 22 by default).
    pub remotes: Vec<String>,
    /// Daemons dial back through a reverse tunnel in the SSH connection, for hosts they cannot
    /// reach directly. The host must then listen on 127.0.0.1.
    pub tunnel: bool,
    /// The port the tunnel opens on the remote side (default: the host's own port).
    pub tunnel_port: Option<u16>,
    /// Seconds to wait for the SSH connection.
    pub timeout: u32,
    /// The ssh program.
    pub command: String,
    /// Extra ssh options, e.g. `["-F", "/path/config"]`.
    pub options: Vec<String>,
}

impl SshConfig {
    pub fn new(remotes: &[&str]) -> Self {
        SshConfig {
            remotes: remotes.iter().map(|r| r.to_string()).collect(),
            tunnel: false,
            tunnel_port: None,
            timeout: 10,
            command: "ssh".into(),
            options: Vec::new(),
        }
    }
}

/// `user@host` and port from `ssh://[user@]host[:port]`.
fn parse_remote(remote: &str) -> Result<(String, u16), Error> {
    let bad = || Error::InvalidArgument(format!("'{remote}': expected ssh://[user@]host[:port]"));
    let rest = remote.strip_prefix("ssh://").ok_or_else(bad)?;
    let (dest, port) = match rest.rsplit_once(':') {
        Some((d, p)) if !d.ends_with(']') || d.starts_with('[') => (d, p.parse().map_err(|_| bad())?),
        _ => (rest, 22),
    };
    if dest.is_empty() || dest.contains(['/', ' ']) {
        return Err(bad());
    }
    // ssh would take it for an option (`-oProxyCommand=...` runs a command here).
    if dest.starts_with('-') {
        return Err(Error::InvalidArgument(format!("'{remote}': a destination cannot start with '-'")));
    }
    Ok((dest.to_string(), port))
}

/// The URL daemons dial through a tunnel, and the `-R` forward that carries it.
fn tunnel(target: &Target, remote_port: Option<u16>) -> Result<(String, String), Error> {
    match Url::parse(&target.url)? {
        Url::Tcp { host, port, tls } if host == "127.0.0.1" => {
            let rport = remote_port.unwrap_or(port);
            let url = Url::Tcp { host, port: rport, tls }.to_string();
            Ok((url, format!("{rport}:127.0.0.1:{port}")))
        }
        Url::Ws { host, port, path, tls } if host == "127.0.0.1" => {
            let rport = remote_port.unwrap_or(port);
            let url = Url::Ws { host, port: rport, path, tls }.to_string();
            Ok((url, format!("{rport}:127.0.0.1:{port}")))
        }
        _ => Err(Error::InvalidArgument(
            "SSH tunnelling requires the host URL's hostname to be 127.0.0.1".into(),
        )),
    }
}

/// The ssh command line (program and arguments) for one remote.
pub fn ssh_command(
    target: &Target,
    daemon: &CommandTemplate,
    config: &SshConfig,
    remote: &str,
) -> Result<Vec<String>, Error> {
    let (dest, port) = parse_remote(remote)?;
    let mut target = target.clone();
    let mut args = vec![config.command.clone()];
    args.extend(config.options.iter().cloned());
    args.extend([
        "-o".into(),
        format!("ConnectTimeout={}", config.timeout),
        "-o".into(),
        "BatchMode=yes".into(),
    ]);
    if config.tunnel {
        let (url, forward) = tunnel(&target, config.tunnel_port)?;
        target.url = url;
        args.extend(["-o".into(), "ExitOnForwardFailure=yes".into(), "-R".into(), forward]);
    }
    // `--`: nothing after it is an option, whatever the destination looks like.
    args.extend(["-T".into(), "-p".into(), port.to_string(), "--".into(), dest]);
    args.push(shell::stdin_wrapped(daemon, &target));
    Ok(args)
}

/// Starts one daemon per remote over SSH. The secret and CA travel on ssh's stdin. Each `ssh`
/// process lives as long as its daemon (and carries its tunnel); wait for the daemons with
/// [`super::wait_for_daemons`], which reports ssh's own error output if it fails.
pub fn launch_ssh(
    target: &Target,
    daemon: &CommandTemplate,
    config: &SshConfig,
) -> Result<Vec<LocalDaemon>, Error> {
    let group = std::sync::Arc::new(Group::default());
    config
        .remotes
        .iter()
        .map(|remote| {
            let argv = ssh_command(target, daemon, config, remote)?;
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            spawn_watched(cmd, false, Some(shell::stdin_payload(target)), &group)
        })
        .collect()
}

/// A command that runs the daemon's command line given as one of its arguments (R's
/// `remote_config`): the argument equal to `"."` is replaced by the command line, quoted when
/// `quote` is set. The secret and CA go in the command's environment (so wrappers that pass
/// their environment on, like `srun` or `env`, hand them over).
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    pub command: String,
    pub args: Vec<String>,
    pub quote: bool,
}

pub fn launch_remote(
    target: &Target,
    daemon: &CommandTemplate,
    config: &RemoteConfig,
    n: usize,
) -> Result<Vec<LocalDaemon>, Error> {
    if !config.args.iter().any(|a| a == ".") {
        return Err(Error::InvalidArgument("`.` must be an element of the remote command's args".into()));
    }
    let line = shell::command_line(daemon, &target.url);
    let line = if config.quote { quote(&line) } else { line };
    let group = std::sync::Arc::new(Group::default());
    (0..n)
        .map(|_| {
            let mut cmd = Command::new(&config.command);
            cmd.args(config.args.iter().map(|a| if a == "." { line.as_str() } else { a.as_str() }));
            cmd.envs(target.env());
            spawn_watched(cmd, false, None, &group)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target { url: url.into(), secret_hex: Some("00ff".into()), tls_ca: None }
    }

    #[test]
    fn remotes_parse() {
        assert_eq!(parse_remote("ssh://alice@node1:2222").unwrap(), ("alice@node1".into(), 2222));
        assert_eq!(parse_remote("ssh://node1").unwrap(), ("node1".into(), 22));
        assert!(parse_remote("node1").is_err());
        assert!(parse_remote("ssh://node1:x").is_err());
        let err = parse_remote("ssh://-oProxyCommand=touch%20x").unwrap_err();
        assert!(err.to_string().contains("cannot start with '-'"), "{err}");
        assert!(parse_remote("ssh://-oProxyCommand=x@h:22").is_err());
    }

    #[test]
    fn ssh_command_lines() {
        let daemon = CommandTemplate::new("mirai-daemon", &["{url}"]);
        let mut config = SshConfig::new(&["ssh://u@h:2222"]);
        let argv = ssh_command(&target("tcp://10.0.0.1:5000"), &daemon, &config, "ssh://u@h:2222").unwrap();
        assert_eq!(
            argv[..10],
            ["ssh", "-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "-T", "-p", "2222", "--", "u@h"]
        );
        assert!(argv[10].ends_with("exec mirai-daemon tcp://10.0.0.1:5000 </dev/null"));
        assert!(!argv.concat().contains("00ff"), "the secret is not on the command line");

        config.tunnel = true;
        let err = ssh_command(&target("tcp://10.0.0.1:5000"), &daemon, &config, "ssh://h").unwrap_err();
        assert!(err.to_string().contains("127.0.0.1"));
        config.tunnel_port = Some(6000);
        let argv = ssh_command(&target("tls+tcp://127.0.0.1:5000"), &daemon, &config, "ssh://h").unwrap();
        assert!(argv.windows(2).any(|w| w == ["-R", "6000:127.0.0.1:5000"]));
        assert!(argv.last().unwrap().contains("tls+tcp://127.0.0.1:6000"));
    }
}
