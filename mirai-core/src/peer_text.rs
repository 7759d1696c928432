//! Text a peer chose (a daemon's host name, an `Exit`'s detail), made fit for a log line: control
//! characters escaped so it cannot forge lines or terminal sequences, and cut short so a peer
//! cannot fill the log.

/// Characters of peer text kept in a log line.
const MAX_CHARS: usize = 200;

/// `text` with control characters, quotes and backslashes escaped, at most [`MAX_CHARS`]
/// characters of it, and `…` when cut.
pub fn for_log(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_truncates() {
        assert_eq!(for_log("node-1"), "node-1");
        assert_eq!(for_log("a\nWARN forged\x1b[2J"), "a\\nWARN forged\\u{1b}[2J");
        let long = "x".repeat(70_000);
        let shown = for_log(&long);
        assert_eq!(shown.chars().count(), MAX_CHARS + 1);
        assert!(shown.ends_with('…'));
    }
}
