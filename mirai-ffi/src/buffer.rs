//! Payload buffers filled by the caller and then handed to libmirai without a copy: a binding
//! serializes a task straight into one (growing it as it goes) and submits it with
//! `mirai_host_submit_buffer`.

use crate::boundary::{Failure, bytes, guard, guard_value};

/// A growable byte buffer owned by libmirai (opaque).
/// Threads: a buffer may move between threads, but only one may use it at a time.
pub struct mirai_buffer {
    pub(crate) bytes: Vec<u8>,
}

/// Appends to `bytes`, failing cleanly (instead of aborting) when memory runs out. A buffer
/// that grows large gets huge pages: a serializer fills it once, start to end.
pub(crate) fn append(bytes: &mut Vec<u8>, data: &[u8]) -> Result<(), Failure> {
    let capacity = bytes.capacity();
    bytes.try_reserve(data.len()).map_err(|_| {
        Failure::Code(
            crate::mirai_result::OutOfMemory,
            format!("cannot grow a buffer by {} bytes", data.len()),
        )
    })?;
    if bytes.capacity() != capacity {
        mirai_core::huge_pages::advise_vec(bytes);
    }
    bytes.extend_from_slice(data);
    Ok(())
}

/// A new, empty buffer with room for `capacity` bytes (it grows as needed); NULL when that
/// much memory is not available. Free with `mirai_buffer_free`, unless submitted.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_buffer_new(capacity: usize) -> *mut mirai_buffer {
    guard_value(std::ptr::null_mut(), || {
        let mut bytes = Vec::new();
        if bytes.try_reserve_exact(capacity).is_err() {
            return std::ptr::null_mut();
        }
        mirai_core::huge_pages::advise_vec(&bytes);
        Box::into_raw(Box::new(mirai_buffer { bytes }))
    })
}

/// Appends `len` bytes at `data` to `buf`.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_buffer_write(
    buf: *mut mirai_buffer,
    data: *const u8,
    len: usize,
) -> crate::mirai_result {
    guard(|| {
        // SAFETY: NULL or a buffer from mirai_buffer_new that the caller still owns.
        let buf = unsafe { buf.as_mut() }.ok_or(Failure::Null("buf"))?;
        append(&mut buf.bytes, bytes(data, len, "data")?)
    })
}

/// The number of bytes in `buf` (0 if NULL).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_buffer_len(buf: *const mirai_buffer) -> usize {
    // SAFETY: NULL or a live buffer from mirai_buffer_new.
    guard_value(0, || unsafe { buf.as_ref() }.map_or(0, |b| b.bytes.len()))
}

/// Frees a buffer that was not submitted. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_buffer_free(buf: *mut mirai_buffer) {
    guard_value((), || {
        if !buf.is_null() {
            // SAFETY: a buffer from mirai_buffer_new, freed once.
            drop(unsafe { Box::from_raw(buf) });
        }
    })
}
