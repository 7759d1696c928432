//! Quoting for the command lines and request bodies launchers build.

use super::{CommandTemplate, Target};

/// POSIX shell single-quoting: safe for any bytes but NUL.
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The daemon's command line for `url`, quoted for a POSIX shell.
pub fn command_line(daemon: &CommandTemplate, url: &str) -> String {
    std::iter::once(daemon.program.clone())
        .chain(daemon.render(url))
        .map(|a| quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A shell command that reads the secret (first line) and the TLS CA (the rest) from stdin into
/// the environment, then runs the daemon; nothing sensitive appears in any command line.
pub fn stdin_wrapped(daemon: &CommandTemplate, target: &Target) -> String {
    let mut script = String::new();
    if target.secret_hex.is_some() {
        script.push_str("IFS= read -r MIRAI_SECRET; export MIRAI_SECRET; ");
    }
    if target.tls_ca.is_some() {
        script.push_str("MIRAI_TLS_CA=$(cat); export MIRAI_TLS_CA; ");
    }
    script.push_str("exec ");
    script.push_str(&command_line(daemon, &target.url));
    script.push_str(" </dev/null");
    script
}

/// The stdin that `stdin_wrapped` expects.
pub fn stdin_payload(target: &Target) -> Vec<u8> {
    let mut out = String::new();
    if let Some(s) = &target.secret_hex {
        out.push_str(s);
        out.push('\n');
    }
    if let Some(ca) = &target.tls_ca {
        out.push_str(ca);
    }
    out.into_bytes()
}

/// Escapes text for a JSON string (backslash, quote, control characters).
pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("plain-arg_1"), "plain-arg_1");
        assert_eq!(quote("tcp://10.0.0.5:5555"), "tcp://10.0.0.5:5555");
        assert_eq!(quote("it's here"), r"'it'\''s here'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$HOME;rm"), "'$HOME;rm'");
    }

    #[test]
    fn json() {
        assert_eq!(json_escape("a \"b\" \\ c\nd\u{1}"), "a \\\"b\\\" \\\\ c\\nd\\u0001");
    }

    #[test]
    fn wrapped_command_keeps_secrets_off_the_command_line() {
        let daemon = CommandTemplate::new("mirai-daemon", &["{url}", "--maxtasks", "5"]);
        let target =
            Target { url: "tcp://h:1".into(), secret_hex: Some("ab".into()), tls_ca: Some("PEM".into()) };
        let cmd = stdin_wrapped(&daemon, &target);
        assert_eq!(
            cmd,
            "IFS= read -r MIRAI_SECRET; export MIRAI_SECRET; MIRAI_TLS_CA=$(cat); export MIRAI_TLS_CA; \
             exec mirai-daemon tcp://h:1 --maxtasks 5 </dev/null"
        );
        assert!(!cmd.contains("ab") && !cmd.contains("PEM"));
        assert_eq!(stdin_payload(&target), b"ab\nPEM");
    }
}
