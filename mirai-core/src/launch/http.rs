//! The HTTP launcher: one request per daemon to an API that starts processes (R's
//! `http_config`; e.g. Posit Workbench's job launcher). In the body template, `%s` receives
//! the daemon's command line and `%e` the environment the API should give it (the secret and
//! TLS CA), both as JSON. The secret goes only in `%e`, never in the command, which APIs store
//! and show.

use super::shell::{self, quote};
use super::{CommandTemplate, Target};
use crate::error::Error;

pub use super::http_client::exchange;

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `https://host[:port]/path`, or `http://` to a loopback address.
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    /// The request body, with `%s` where the command goes and `%e` where the environment goes.
    pub body: String,
    /// Sent as `Cookie:`.
    pub cookie: Option<String>,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
}

/// The environment as a JSON array of `{"name": ..., "value": ...}`, the shape of the
/// `environment` of a Posit Job Launcher job.
pub fn environment_json(env: &[(String, String)]) -> String {
    let items: Vec<String> = env
        .iter()
        .map(|(k, v)| {
            format!("{{\"name\": \"{}\", \"value\": \"{}\"}}", shell::json_escape(k), shell::json_escape(v))
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// The request body for one daemon: `template` with its first `%s` replaced by the daemon's
/// command line and its first `%e` by the environment (both JSON). Without `%e`, a TLS CA
/// (public) goes into the command as `env MIRAI_TLS_CA=...`, and a secret is refused.
pub fn request_body(target: &Target, daemon: &CommandTemplate, template: &str) -> Result<String, Error> {
    if !template.contains("%s") {
        return Err(Error::InvalidArgument("the HTTP body template needs a %s for the command".into()));
    }
    let line = shell::command_line(daemon, &target.url);
    let command = if template.contains("%e") {
        line
    } else if target.secret_hex.is_some() {
        return Err(Error::InvalidArgument(
            "authentication is on, and the HTTP body template has no %e for the daemon's environment \
             (e.g. \"environment\": %e), so the secret could travel only in the command, which the API \
             stores: add %e, or launch without authentication"
                .into(),
        ));
    } else {
        match &target.tls_ca {
            Some(ca) => format!("env {}={} {line}", crate::tls::CA_ENV, quote(ca)),
            None => line,
        }
    };
    Ok(fill(template, &shell::json_escape(&command), &environment_json(&target.env())))
}

/// `template` with its first `%s` and first `%e` replaced, in one pass (so nothing inserted
/// is taken for a placeholder).
fn fill(template: &str, command: &str, env: &str) -> String {
    let mut out = String::with_capacity(template.len() + command.len() + env.len());
    let (mut command, mut env) = (Some(command), Some(env));
    let mut rest = template;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let insert = match after.as_bytes().first() {
            Some(b's') => command.take(),
            Some(b'e') => env.take(),
            _ => None,
        };
        match insert {
            Some(text) => {
                out.push_str(text);
                rest = &after[1..];
            }
            None => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Sends `n` launch requests; returns the response bodies. A status other than 2xx fails.
pub fn launch_http(
    target: &Target,
    daemon: &CommandTemplate,
    config: &HttpConfig,
    n: usize,
) -> Result<Vec<String>, Error> {
    let body = request_body(target, daemon, &config.body)?;
    (0..n).map(|_| request(config, &body)).collect()
}

fn request(config: &HttpConfig, body: &str) -> Result<String, Error> {
    let mut headers = config.headers.clone();
    if let Some(c) = &config.cookie {
        headers.push(("Cookie".into(), c.clone()));
    }
    if let Some(t) = &config.token {
        headers.push(("Authorization".into(), format!("Bearer {t}")));
    }
    let (status, content) = exchange(&config.url, &config.method, &headers, body)?;
    if !(200..300).contains(&status) {
        return Err(Error::Launch(format!("{} answered {status}: {}", config.url, content.trim())));
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(secret: Option<&str>, ca: Option<&str>) -> Target {
        Target {
            url: "tcp://10.1.1.1:5555".into(),
            secret_hex: secret.map(Into::into),
            tls_ca: ca.map(Into::into),
        }
    }

    #[test]
    fn the_secret_goes_in_the_environment_not_the_command() {
        let daemon = CommandTemplate::new("mirai-daemon", &["{url}"]);
        let template = "{\"cmd\": \"%s\", \"environment\": %e, \"note\": \"100%\"}";
        let body = request_body(&target(Some("abcd"), None), &daemon, template).unwrap();
        assert_eq!(
            body,
            "{\"cmd\": \"mirai-daemon tcp://10.1.1.1:5555\", \
             \"environment\": [{\"name\": \"MIRAI_SECRET\", \"value\": \"abcd\"}], \"note\": \"100%\"}"
        );
        let err = request_body(&target(Some("abcd"), None), &daemon, "{\"cmd\": \"%s\"}").unwrap_err();
        assert!(err.to_string().contains("%e"), "{err}");
        assert!(request_body(&target(None, None), &daemon, "{}").is_err(), "%s is required");
    }

    #[test]
    fn without_authentication_the_template_needs_no_environment() {
        let daemon = CommandTemplate::new("mirai-daemon", &["{url}"]);
        let body = request_body(&target(None, Some("PEM")), &daemon, "{\"cmd\": \"%s\"}").unwrap();
        assert_eq!(body, "{\"cmd\": \"env MIRAI_TLS_CA=PEM mirai-daemon tcp://10.1.1.1:5555\"}");
        let body = request_body(&target(None, None), &daemon, "[\"%s\", %e]").unwrap();
        assert_eq!(body, "[\"mirai-daemon tcp://10.1.1.1:5555\", []]");
    }

    #[test]
    fn placeholders_are_filled_once_and_not_inside_what_was_inserted() {
        assert_eq!(fill("%s %s %e %e %%", "c%e", "E"), "c%e %s E %e %%");
    }
}
