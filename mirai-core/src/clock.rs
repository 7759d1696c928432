//! Milliseconds on a monotonic clock, the time base the protocol state machines are fed.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the first call in this process.
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// The `Duration` from now until `deadline_ms` (zero if it has passed).
pub fn until(deadline_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(now_ms()))
}

/// The instant `timeout` from now: `None` (no deadline) for no timeout or one too far away to
/// represent, so "wait forever" can never overflow.
pub fn instant_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// A deadline `d` from now, in the same milliseconds; saturates rather than overflows.
pub fn deadline_after(d: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
