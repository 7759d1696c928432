//! Shared-secret authentication, both ways: the host and the daemon each prove they hold the
//! secret with HMAC-SHA256 over both ends' fresh nonces, the prover's role and, over TLS, a value
//! exported from the TLS session. The secret never travels, a recorded proof is useless on
//! another connection, one side's proof cannot stand in for the other's, and a proof relayed
//! between two TLS sessions does not verify.

use mirai_proto::Role;
use ring::hmac;

use crate::error::Error;

/// Environment variable through which launchers hand the secret to the daemons they start
/// (hex). Environment, unlike the command line, is not visible to other users in `ps`.
pub const SECRET_ENV: &str = "MIRAI_SECRET";

/// Domain separation, so a proof for this protocol is useless anywhere else.
const CONTEXT: &[u8] = b"mirai-auth-v2";

/// Secret, nonce and proof length, in bytes.
pub const LEN: usize = 32;

/// How a host authenticates daemons.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// A fresh random 256-bit secret (the default); launchers pass it on.
    Random,
    /// A secret of the user's (at least 16 bytes).
    Secret(Vec<u8>),
    /// No authentication: anyone who reaches the port is a daemon. For trusted networks only.
    Disabled,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Random => "Random",
            Auth::Secret(_) => "Secret(..)",
            Auth::Disabled => "Disabled",
        })
    }
}

impl Auth {
    /// The secret this setting means, drawing a random one for `Random`.
    pub(crate) fn resolve(&self) -> Result<Option<Vec<u8>>, Error> {
        match self {
            Auth::Random => Ok(Some(random(LEN))),
            Auth::Secret(s) if s.len() < 16 => {
                Err(Error::InvalidArgument("a secret needs at least 16 bytes".into()))
            }
            Auth::Secret(s) => Ok(Some(s.clone())),
            Auth::Disabled => Ok(None),
        }
    }
}

/// `n` bytes from the operating system's CSPRNG.
pub(crate) fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    // Without a CSPRNG no secret is safe; refusing to run beats handing out a guessable one.
    getrandom::getrandom(&mut v).expect("the operating system's random number generator failed");
    v
}

/// What both proofs of one connection cover.
#[derive(Clone, Copy, Debug)]
pub struct Transcript<'a> {
    pub daemon_nonce: &'a [u8],
    pub host_nonce: &'a [u8],
    /// Keying material exported from the TLS session, when there is one.
    pub channel: Option<&'a [u8]>,
}

/// The bytes a proof signs.
fn signed(prover: Role, t: &Transcript<'_>) -> Vec<u8> {
    let mut msg = Vec::with_capacity(CONTEXT.len() + 1 + 3 * LEN);
    msg.extend_from_slice(CONTEXT);
    msg.push(match prover {
        Role::Host => 0,
        Role::Daemon => 1,
    });
    // Nonces are checked to be LEN bytes before a proof is made or checked, so the parts cannot
    // shift into one another.
    msg.extend_from_slice(t.daemon_nonce);
    msg.extend_from_slice(t.host_nonce);
    msg.extend_from_slice(t.channel.unwrap_or_default());
    msg
}

/// `prover`'s proof that it holds `secret`, for this transcript.
pub fn prove(secret: &[u8], prover: Role, t: &Transcript<'_>) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::sign(&key, &signed(prover, t)).as_ref().to_vec()
}

/// Checks `prover`'s proof in constant time.
pub fn verify(secret: &[u8], prover: Role, t: &Transcript<'_>, proof: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &signed(prover, t), proof).is_ok()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(text: &str) -> Result<Vec<u8>, Error> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return Err(Error::InvalidArgument("a hex secret needs an even number of digits".into()));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| Error::InvalidArgument("the secret is not hexadecimal".into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_for_their_secret_role_nonces_and_channel() {
        let secret = random(LEN);
        let (d, h, c) = (random(LEN), random(LEN), random(LEN));
        let t = Transcript { daemon_nonce: &d, host_nonce: &h, channel: Some(&c) };
        let p = prove(&secret, Role::Daemon, &t);
        assert_eq!(p.len(), LEN);
        assert!(verify(&secret, Role::Daemon, &t, &p));
        assert!(!verify(&secret, Role::Host, &t, &p), "a daemon's proof is not a host's");
        assert!(!verify(&random(LEN), Role::Daemon, &t, &p), "another secret");
        assert!(!verify(&secret, Role::Daemon, &t, &p[..31]));
        let other = random(LEN);
        for changed in [
            Transcript { daemon_nonce: &other, ..t },
            Transcript { host_nonce: &other, ..t },
            Transcript { channel: Some(&other), ..t },
            Transcript { channel: None, ..t },
        ] {
            assert!(!verify(&secret, Role::Daemon, &changed, &p), "{changed:?}");
        }
    }

    #[test]
    fn hex_round_trip() {
        let s = random(LEN);
        assert_eq!(from_hex(&to_hex(&s)).unwrap(), s);
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }
}
