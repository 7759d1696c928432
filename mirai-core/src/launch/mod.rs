//! Launching daemons: as local processes, over SSH (optionally tunnelled), as HPC batch jobs
//! (Slurm, SGE, PBS, LSF), through an HTTP API, or with any command that takes the daemon's
//! command line. Every launcher hands daemons the host's secret and TLS CA the safest way it
//! allows: in the environment, on stdin, in a one-use private file (batch jobs) or in the
//! environment field of an API's job; never on a command line that `ps` shows, nor in a
//! command or script that a scheduler or API stores.

pub mod cluster;
pub mod http;
mod http_client;
mod local;
pub mod remote;
mod secret_dir;
pub mod shell;

pub use local::{CommandTemplate, LocalDaemon, spawn_local};

use std::time::Duration;

use crate::error::Error;
use crate::host::Host;

/// What a remote daemon needs to reach a host.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL the daemon dials (for an SSH tunnel, the remote end of the tunnel).
    pub url: String,
    /// The host's secret, hex-encoded.
    pub secret_hex: Option<String>,
    /// The CA certificate (PEM) of a TLS host.
    pub tls_ca: Option<String>,
}

impl Target {
    pub fn of(host: &Host) -> Target {
        Target {
            url: host.url(),
            secret_hex: host.secret().map(crate::auth::to_hex),
            tls_ca: host.tls_ca_pem().map(str::to_string),
        }
    }

    /// The environment variables carrying the secret and CA.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(s) = &self.secret_hex {
            env.push((crate::auth::SECRET_ENV.to_string(), s.clone()));
        }
        if let Some(ca) = &self.tls_ca {
            env.push((crate::tls::CA_ENV.to_string(), ca.clone()));
        }
        env
    }
}

/// The environment variables a daemon of `host` needs: the secret and the TLS CA.
pub fn daemon_env(host: &Host) -> Vec<(String, String)> {
    Target::of(host).env()
}

/// Starts `n` local daemon processes of `host` from `template`, with the host's URL filled in
/// and the secret and TLS CA passed in their environment. The host adopts them (see
/// [`Host::adopt_process`]).
pub fn launch_local(host: &Host, n: usize, template: &CommandTemplate) -> Result<Vec<LocalDaemon>, Error> {
    let mut t = template.clone();
    t.env.extend(daemon_env(host));
    let daemons = spawn_local(&host.url(), &t, n)?;
    for d in &daemons {
        host.adopt_process(Box::new(d.clone()));
    }
    Ok(daemons)
}

/// Waits until `n` daemons are connected to `host`. Fails early, with the launcher's own error
/// output, when one of the launched processes (all from one launch call) exits in failure
/// first; `TimedOut` when neither happens within `timeout` (`None`: no limit). Both events
/// wake the wait: no polling.
pub fn wait_for_daemons(
    host: &Host,
    n: u64,
    launched: &[LocalDaemon],
    timeout: Option<Duration>,
) -> Result<(), Error> {
    let group = launched.first().map(|d| d.group().clone());
    // Subscribed as long as this call waits.
    let waker = host.waker();
    if let Some(g) = &group {
        g.subscribe(&waker);
    }
    let failed = || group.as_ref().and_then(|g| g.failed());
    if host.wait_connections_unless(n, timeout, || failed().is_some()) {
        return Ok(());
    }
    match failed() {
        Some((status, stderr)) => {
            Err(Error::Launch(format!("launch command failed ({status}): {}", stderr.trim())))
        }
        None => Err(Error::TimedOut),
    }
}
