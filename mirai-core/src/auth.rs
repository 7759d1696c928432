//! Daemon authentication: a challenge-response with HMAC-SHA256 over a per-connection random
//! challenge, so the secret never travels and a recorded proof cannot be replayed.

use ring::hmac;

use crate::error::Error;

/// Environment variable through which launchers hand the secret to the daemons they start
/// (hex). Environment, unlike the command line, is not visible to other users in `ps`.
pub const SECRET_ENV: &str = "MIRAI_SECRET";

/// Domain separation, so a proof for this protocol is useless anywhere else.
const CONTEXT: &[u8] = b"mirai-auth-v1";

/// Secret and challenge length, in bytes.
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

/// A fresh challenge for one connection.
pub(crate) fn challenge() -> Vec<u8> {
    random(LEN)
}

/// The daemon's answer to `challenge`. An empty challenge (authentication off) gets an empty
/// proof.
pub fn proof(secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    if challenge.is_empty() {
        return Vec::new();
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(CONTEXT);
    ctx.update(challenge);
    ctx.sign().as_ref().to_vec()
}

/// Checks a proof in constant time.
pub(crate) fn verify(secret: &[u8], challenge: &[u8], proof: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut msg = CONTEXT.to_vec();
    msg.extend_from_slice(challenge);
    hmac::verify(&key, &msg, proof).is_ok()
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
    fn proofs_verify_only_with_the_secret_and_challenge() {
        let secret = random(LEN);
        let c = challenge();
        let p = proof(&secret, &c);
        assert_eq!(p.len(), 32);
        assert!(verify(&secret, &c, &p));
        assert!(!verify(&secret, &challenge(), &p), "replay on another challenge");
        assert!(!verify(&random(LEN), &c, &p), "another secret");
        assert!(!verify(&secret, &c, &p[..31]));
    }

    #[test]
    fn hex_round_trip() {
        let s = random(LEN);
        assert_eq!(from_hex(&to_hex(&s)).unwrap(), s);
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }
}
