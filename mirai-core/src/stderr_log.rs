//! A logger writing the engine's log records to standard error, one line each, for programs and
//! bindings that have no logger of their own (the standalone daemon, the R package).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

struct Stderr {
    prefix: &'static str,
}

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, r: &log::Record) {
        // One write per line, so lines from several threads do not interleave; a failed write
        // to stderr has nowhere better to go. Stderr may be a pipe whose reader is gone (a
        // daemon started over ssh): no SIGPIPE for that.
        let line = format!("{}: {} {}\n", self.prefix, r.level(), r.args());
        let _ = crate::pipe_write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: OnceLock<Stderr> = OnceLock::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Sends log records up to `level` to standard error, each line starting with `prefix` (the
/// first call's). Returns false if the process has another logger (only the level changes then).
pub fn install(prefix: &'static str, level: log::LevelFilter) -> bool {
    let logger = LOGGER.get_or_init(|| Stderr { prefix });
    if log::set_logger(logger).is_ok() {
        INSTALLED.store(true, Ordering::Relaxed);
    }
    log::set_max_level(level);
    INSTALLED.load(Ordering::Relaxed)
}
