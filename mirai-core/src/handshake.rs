//! Each end's part in authenticating a connection, without sockets: what to answer to the
//! peer's `Hello`, and whether the peer's proof holds. The host proves itself first, so a
//! daemon holding the secret never gives a proof, nor takes a task, from a host that cannot.
//!
//! ```text
//! daemon ── Hello { auth: daemon_nonce } ────────────────▶ host
//! daemon ◀─ Hello { auth: host_nonce ‖ host_proof } ────── host   (empty: authentication off)
//! daemon ── Auth { proof: daemon_proof } ────────────────▶ host   (after checking host_proof)
//! ```

use std::fmt;

use mirai_proto::{Hello, Identity, Role};

use crate::auth::{self, LEN, Transcript};

/// Why one end refuses the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Host: the daemon's `Hello` carries no usable nonce.
    BadNonce,
    /// Host: the daemon's proof is wrong (another secret, or none).
    BadProof,
    /// Daemon: the host offers no proof, but this daemon holds a secret.
    HostUnauthenticated,
    /// Daemon: the host's proof is wrong, malformed or made for another channel.
    BadHostProof,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::BadNonce => "the daemon sent no valid nonce",
            Refusal::BadProof => "authentication failed",
            Refusal::HostUnauthenticated => {
                "the host does not authenticate itself, and this daemon only serves a host that \
                 proves it holds the secret"
            }
            Refusal::BadHostProof => "the host could not prove it holds the secret",
        })
    }
}

/// The host's side of one connection.
#[derive(Debug)]
pub struct HostHandshake {
    nonce: Vec<u8>,
    daemon_nonce: Vec<u8>,
    channel: Option<[u8; LEN]>,
}

impl Default for HostHandshake {
    fn default() -> Self {
        Self::new()
    }
}

impl HostHandshake {
    pub fn new() -> Self {
        HostHandshake { nonce: auth::random(LEN), daemon_nonce: Vec::new(), channel: None }
    }

    fn transcript(&self) -> Transcript<'_> {
        Transcript {
            daemon_nonce: &self.daemon_nonce,
            host_nonce: &self.nonce,
            channel: self.channel.as_ref().map(|c| &c[..]),
        }
    }

    /// The host's `Hello` answering the daemon's: its nonce and proof, or nothing when `secret`
    /// is `None` (authentication off). It carries no identity: a stranger learns nothing.
    pub fn answer(
        &mut self,
        secret: Option<&[u8]>,
        daemon: &Hello,
        channel: Option<[u8; LEN]>,
    ) -> Result<Hello, Refusal> {
        let mut hello = Hello { role: Role::Host, identity: Identity::default(), auth: Vec::new() };
        let Some(secret) = secret else { return Ok(hello) };
        if daemon.auth.len() != LEN {
            return Err(Refusal::BadNonce);
        }
        self.daemon_nonce = daemon.auth.clone();
        self.channel = channel;
        hello.auth = self.nonce.clone();
        hello.auth.extend(auth::prove(secret, Role::Host, &self.transcript()));
        Ok(hello)
    }

    /// Whether the daemon's proof, answering [`Self::answer`]'s `Hello`, holds.
    pub fn check(&self, secret: Option<&[u8]>, proof: &[u8]) -> Result<(), Refusal> {
        match secret {
            None => Ok(()),
            Some(_) if self.daemon_nonce.is_empty() => Err(Refusal::BadProof),
            Some(s) if auth::verify(s, Role::Daemon, &self.transcript(), proof) => Ok(()),
            Some(_) => Err(Refusal::BadProof),
        }
    }
}

/// The daemon's side of one connection.
#[derive(Debug)]
pub struct DaemonHandshake {
    nonce: Vec<u8>,
}

impl Default for DaemonHandshake {
    fn default() -> Self {
        Self::new()
    }
}

impl DaemonHandshake {
    pub fn new() -> Self {
        DaemonHandshake { nonce: auth::random(LEN) }
    }

    /// The daemon's `Hello`, which opens the connection.
    pub fn hello(&self, identity: Identity) -> Hello {
        Hello { role: Role::Daemon, identity, auth: self.nonce.clone() }
    }

    /// The proof answering the host's `Hello`, once the host has proved itself. A daemon without
    /// a secret trusts any host and answers with an empty proof, which only a host with
    /// authentication off accepts.
    ///
    /// The binding covers the session the host terminates. A host behind a proxy that ends the
    /// daemon's TLS (`wss://` to nginx, `ws://` on to the host) sees no TLS and binds to
    /// nothing, so when the host's proof does not hold for this daemon's own session, it is
    /// checked unbound too, and the daemon answers in the same form. No relay gains from this:
    /// it cannot turn a proof bound to one session into an unbound one without the secret.
    pub fn answer(
        &self,
        secret: Option<&[u8]>,
        host: &Hello,
        channel: Option<[u8; LEN]>,
    ) -> Result<Vec<u8>, Refusal> {
        let Some(secret) = secret else { return Ok(Vec::new()) };
        if host.auth.is_empty() {
            return Err(Refusal::HostUnauthenticated);
        }
        if host.auth.len() != 2 * LEN {
            return Err(Refusal::BadHostProof);
        }
        let (host_nonce, host_proof) = host.auth.split_at(LEN);
        let bound =
            Transcript { daemon_nonce: &self.nonce, host_nonce, channel: channel.as_ref().map(|c| &c[..]) };
        let unbound = Transcript { channel: None, ..bound };
        let t = [bound, unbound]
            .into_iter()
            .find(|t| auth::verify(secret, Role::Host, t, host_proof))
            .ok_or(Refusal::BadHostProof)?;
        Ok(auth::prove(secret, Role::Daemon, &t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a secret of at least sixteen bytes";

    fn exchange(
        host_secret: Option<&[u8]>,
        daemon_secret: Option<&[u8]>,
        host_channel: Option<[u8; LEN]>,
        daemon_channel: Option<[u8; LEN]>,
    ) -> Result<(), Refusal> {
        let daemon = DaemonHandshake::new();
        let mut host = HostHandshake::new();
        let reply = host.answer(host_secret, &daemon.hello(Identity::default()), host_channel)?;
        assert_eq!(reply.identity, Identity::default(), "no host identity before authentication");
        let proof = daemon.answer(daemon_secret, &reply, daemon_channel)?;
        host.check(host_secret, &proof)
    }

    #[test]
    fn both_ends_with_the_secret_authenticate_each_other() {
        assert_eq!(exchange(Some(SECRET), Some(SECRET), None, None), Ok(()));
        let c = [7; LEN];
        assert_eq!(exchange(Some(SECRET), Some(SECRET), Some(c), Some(c)), Ok(()));
        assert_eq!(exchange(None, None, None, None), Ok(()), "authentication off at both ends");
    }

    #[test]
    fn a_daemon_with_a_secret_refuses_hosts_that_cannot_prove_it() {
        let other: &[u8] = b"another secret, also long enough";
        assert_eq!(exchange(None, Some(SECRET), None, None), Err(Refusal::HostUnauthenticated));
        assert_eq!(exchange(Some(other), Some(SECRET), None, None), Err(Refusal::BadHostProof));
        // A relay between two TLS sessions: each end exported different keying material.
        assert_eq!(
            exchange(Some(SECRET), Some(SECRET), Some([1; LEN]), Some([2; LEN])),
            Err(Refusal::BadHostProof)
        );
        assert_eq!(exchange(Some(SECRET), Some(SECRET), Some([1; LEN]), None), Err(Refusal::BadHostProof));
    }

    #[test]
    fn a_host_behind_a_proxy_ending_the_daemons_tls_binds_to_nothing() {
        // The daemon's TLS ends at the proxy; the host listens without TLS.
        assert_eq!(exchange(Some(SECRET), Some(SECRET), None, Some([3; LEN])), Ok(()));
        // The other way round the host binds to a session the daemon is not in: refused.
        assert_eq!(exchange(Some(SECRET), Some(SECRET), Some([3; LEN]), None), Err(Refusal::BadHostProof));
    }

    #[test]
    fn a_host_refuses_daemons_without_the_secret() {
        assert_eq!(exchange(Some(SECRET), None, None, None), Err(Refusal::BadProof));
        let mut host = HostHandshake::new();
        let no_nonce = Hello { role: Role::Daemon, identity: Identity::default(), auth: vec![] };
        assert_eq!(host.answer(Some(SECRET), &no_nonce, None), Err(Refusal::BadNonce));
        assert_eq!(host.check(Some(SECRET), &[0; LEN]), Err(Refusal::BadProof));
    }

    #[test]
    fn the_host_proof_cannot_be_reflected_as_the_daemon_proof() {
        let daemon = DaemonHandshake::new();
        let mut host = HostHandshake::new();
        let reply = host.answer(Some(SECRET), &daemon.hello(Identity::default()), None).unwrap();
        assert_eq!(host.check(Some(SECRET), &reply.auth[LEN..]), Err(Refusal::BadProof));
    }

    #[test]
    fn malformed_host_answers_are_refused() {
        let daemon = DaemonHandshake::new();
        for len in [1, LEN, 2 * LEN - 1, 2 * LEN + 1] {
            let host = Hello { role: Role::Host, identity: Identity::default(), auth: vec![0; len] };
            assert_eq!(daemon.answer(Some(SECRET), &host, None), Err(Refusal::BadHostProof), "{len}");
        }
    }
}
