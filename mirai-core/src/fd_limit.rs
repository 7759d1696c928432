//! Raising this process's soft limit on open descriptors to its hard limit when a host starts:
//! every daemon costs the host one descriptor (and a local daemon one more for its stderr), so
//! the usual soft limit of 1,024 would stop a host far below what it can serve.

use std::sync::Once;

/// Programs that walk every possible descriptor (closing them before `exec`, say) slow down
/// with an enormous limit; a million is beyond any host's needs.
const CEILING: libc::rlim_t = 1 << 20;

/// Raises the soft limit, once per process. Failure leaves the limit as it was.
pub(crate) fn raise() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit read and write the rlimit struct passed by reference.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return;
            }
            let target = lim.rlim_max.min(CEILING);
            if lim.rlim_cur < target {
                let old = lim.rlim_cur;
                lim.rlim_cur = target;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                    log::debug!("descriptor limit raised from {old} to {target}");
                }
            }
        }
    });
}
