//! Byte buffers handed to C: a result's payload, moved out of the engine without a copy.

/// Bytes owned by the caller once returned; release with `mirai_bytes_free`, never with `free()`
/// (libmirai allocated them). An empty result has `len` 0 and `data` possibly non-NULL (not to be
/// read). This struct keeps its two fields in every version.
#[repr(C)]
pub struct mirai_bytes {
    pub data: *mut u8,
    pub len: usize,
}

impl mirai_bytes {
    pub(crate) fn from_vec(v: Vec<u8>) -> Self {
        // A payload read by the engine has exactly its length as capacity, so this does not copy.
        let boxed: Box<[u8]> = v.into_boxed_slice();
        let len = boxed.len();
        mirai_bytes { data: Box::into_raw(boxed).cast(), len }
    }
}

/// Frees the bytes of `b` and sets it to empty. NULL, and an empty `b`, are no-ops.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_bytes_free(b: *mut mirai_bytes) {
    crate::boundary::guard_value((), || {
        // SAFETY: NULL or a mirai_bytes the caller got from this library.
        let Some(b) = (unsafe { b.as_mut() }) else { return };
        if !b.data.is_null() {
            // SAFETY: `data`/`len` came from `from_vec`'s Box<[u8]> and are freed once (reset below).
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(b.data, b.len)) });
        }
        b.data = std::ptr::null_mut();
        b.len = 0;
    })
}
