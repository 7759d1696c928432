//! libmirai's log lines (refused daemons, lost connections, failed accepts) for C programs and
//! bindings that want them on standard error.

use crate::boundary::{Failure, guard, mirai_result};

/// Writes libmirai's log lines up to `level` to standard error, each starting with "mirai: "
/// and the level: 0 none, 1 errors, 2 and warnings (a daemon refused, a connection closed on an
/// error), 3 and information, 4 and debugging detail. May be called again to change the level.
/// `MIRAI_RESULT_INVALID_ARGUMENT` for another level, or when the process has a logger of its
/// own (Rust programs linking libmirai). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_log_to_stderr(level: i32) -> mirai_result {
    guard(|| {
        let filter = match level {
            0 => log::LevelFilter::Off,
            1 => log::LevelFilter::Error,
            2 => log::LevelFilter::Warn,
            3 => log::LevelFilter::Info,
            4 => log::LevelFilter::Debug,
            _ => return Err(crate::boundary::invalid_enum("log level (0 to 4)", level)),
        };
        if mirai_core::stderr_log::install("mirai", filter) {
            Ok(())
        } else {
            Err(Failure::Code(mirai_result::InvalidArgument, "the process has a logger of its own".into()))
        }
    })
}
