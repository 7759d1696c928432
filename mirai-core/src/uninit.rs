//! Initialised memory handed to readers that write into possibly uninitialised memory (the
//! payload paths read with `read(2)` or from rustls' buffer), so one reader serves both.

use std::mem::MaybeUninit;

/// `buf` seen as possibly uninitialised. The readers it is given to only ever write bytes into
/// it, so it stays initialised.
pub(crate) fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: same layout; no caller writes `MaybeUninit::uninit()` into the slice.
    unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) }
}
