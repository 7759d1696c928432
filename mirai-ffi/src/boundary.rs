//! The boundary every export goes through: panics caught, errors turned into result codes with
//! a message kept per thread.

use std::cell::RefCell;
use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use mirai_core::{Error, ErrorCode};

/// Outcome of a call. Codes 1-31 keep R's mirai (NNG) meaning; 100 and up are the C ABI's own.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mirai_result {
    Ok = 0,
    OutOfMemory = 2,
    InvalidArgument = 3,
    TimedOut = 5,
    ConnectionRefused = 6,
    /// The host was closed.
    ObjectClosed = 7,
    /// The queue is at its memory cap (`mirai_host_try_submit`).
    TryAgain = 8,
    NotSupported = 9,
    AddressInUse = 10,
    IncorrectState = 11,
    ProtocolError = 13,
    AddressInvalid = 15,
    PermissionDenied = 16,
    MessageTooLarge = 17,
    ConnectionAborted = 18,
    ConnectionReset = 19,
    Cryptographic = 26,
    AuthenticationFailed = 27,
    /// A pointer argument was NULL.
    NullParameter = 100,
    /// A string argument was not valid UTF-8.
    InvalidUtf8 = 101,
    /// libmirai panicked; this is a bug, please report it with `mirai_last_error`'s message.
    Panic = 102,
}

impl mirai_result {
    fn from_code(code: ErrorCode) -> Self {
        use mirai_result::*;
        match code {
            ErrorCode::OutOfMemory => OutOfMemory,
            ErrorCode::TimedOut => TimedOut,
            ErrorCode::ConnectionRefused => ConnectionRefused,
            ErrorCode::ObjectClosed => ObjectClosed,
            ErrorCode::TryAgain => TryAgain,
            ErrorCode::NotSupported => NotSupported,
            ErrorCode::AddressInUse => AddressInUse,
            ErrorCode::IncorrectState => IncorrectState,
            ErrorCode::ProtocolError => ProtocolError,
            ErrorCode::AddressInvalid => AddressInvalid,
            ErrorCode::PermissionDenied => PermissionDenied,
            ErrorCode::MessageTooLarge => MessageTooLarge,
            ErrorCode::ConnectionReset => ConnectionReset,
            ErrorCode::Cryptographic => Cryptographic,
            ErrorCode::AuthenticationFailed => AuthenticationFailed,
            ErrorCode::InvalidArgument => InvalidArgument,
            _ => ConnectionAborted,
        }
    }
}

/// What went wrong inside an export.
pub(crate) enum Failure {
    Null(&'static str),
    Utf8(&'static str),
    Core(Error),
    Code(mirai_result, String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Core(e)
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(msg: String) {
    LAST_ERROR.with(|l| *l.borrow_mut() = msg);
}

/// Runs an export's body: catches panics, maps failures to codes and records their message.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Failure>) -> mirai_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => mirai_result::Ok,
        Ok(Err(f)) => {
            let (code, msg) = match f {
                Failure::Null(what) => (mirai_result::NullParameter, format!("{what} is NULL")),
                Failure::Utf8(what) => (mirai_result::InvalidUtf8, format!("{what} is not valid UTF-8")),
                Failure::Core(e) => (mirai_result::from_code(e.code()), e.to_string()),
                Failure::Code(code, msg) => (code, msg),
            };
            set_last_error(msg);
            code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_last_error(format!("panic inside libmirai: {what}"));
            mirai_result::Panic
        }
    }
}

/// Like [`guard`] for exports that return a plain value: `fallback` on panic.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        set_last_error("panic inside libmirai".into());
        fallback
    })
}

/// A reference from a pointer, or `Failure::Null`.
pub(crate) fn deref<'a, T>(ptr: *const T, what: &'static str) -> Result<&'a T, Failure> {
    // SAFETY: the caller passes a pointer obtained from this library (or NULL, checked here).
    unsafe { ptr.as_ref() }.ok_or(Failure::Null(what))
}

/// A string from a NUL-terminated pointer.
pub(crate) fn c_str<'a>(ptr: *const c_char, what: &'static str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::Null(what));
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
    unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|_| Failure::Utf8(what))
}

/// An optional string: NULL is `None`.
pub(crate) fn opt_c_str<'a>(ptr: *const c_char, what: &'static str) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() { Ok(None) } else { c_str(ptr, what).map(Some) }
}

/// The bytes of an optional NUL-terminated string, UTF-8 or not (passwords): NULL is `None`.
pub(crate) fn opt_c_bytes<'a>(ptr: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
    (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// Bytes from a (pointer, length) pair; NULL is allowed only with length 0.
pub(crate) fn bytes<'a>(ptr: *const u8, len: usize, what: &'static str) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::Null(what));
    }
    // SAFETY: non-NULL, and the caller promises `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Writes an out-parameter (only ever on success).
pub(crate) fn put<T>(out: *mut T, value: T, what: &'static str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::Null(what));
    }
    // SAFETY: non-NULL, and the caller promises it points to writable storage for a T.
    unsafe { out.write(value) };
    Ok(())
}

/// Copies this thread's last error message into `buf` (NUL-terminated, truncated to `len`) and
/// returns the message's full length. With `buf` NULL or `len` 0, only returns the length.
/// A later successful call does not clear it (as with errno): read it only right after a call
/// failed. Each thread has its own message.
#[unsafe(no_mangle)]
pub extern "C" fn mirai_last_error(buf: *mut c_char, len: usize) -> usize {
    guard_value(0, || {
        LAST_ERROR.with(|l| {
            let msg = l.borrow();
            if !buf.is_null() && len > 0 {
                let n = msg.len().min(len - 1);
                // SAFETY: the caller promises `len` writable bytes at `buf`; we write n + 1 <= len.
                unsafe {
                    std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast(), n);
                    *buf.add(n) = 0;
                }
            }
            msg.len()
        })
    })
}

/// A value given for a C enum that has no such member.
pub(crate) fn invalid_enum(what: &str, value: i32) -> Failure {
    Failure::Code(mirai_result::InvalidArgument, format!("{value} is not a valid {what}"))
}

/// A static description of a result code (a `mirai_result` value; others are "unknown").
#[unsafe(no_mangle)]
pub extern "C" fn mirai_strerror(result: i32) -> *const c_char {
    // Matched as an integer: a C caller may pass any int, which must not be taken for an enum.
    let known = [
        mirai_result::Ok,
        mirai_result::NullParameter,
        mirai_result::InvalidUtf8,
        mirai_result::Panic,
        mirai_result::OutOfMemory,
        mirai_result::InvalidArgument,
        mirai_result::TimedOut,
        mirai_result::ConnectionRefused,
        mirai_result::ObjectClosed,
        mirai_result::TryAgain,
        mirai_result::NotSupported,
        mirai_result::AddressInUse,
        mirai_result::IncorrectState,
        mirai_result::ProtocolError,
        mirai_result::AddressInvalid,
        mirai_result::PermissionDenied,
        mirai_result::MessageTooLarge,
        mirai_result::ConnectionAborted,
        mirai_result::ConnectionReset,
        mirai_result::Cryptographic,
        mirai_result::AuthenticationFailed,
    ];
    let Some(&result) = known.iter().find(|&&r| r as i32 == result) else {
        return c"unknown result code".as_ptr();
    };
    let text: &'static CStr = match result {
        mirai_result::Ok => c"OK",
        mirai_result::NullParameter => c"NULL parameter",
        mirai_result::InvalidUtf8 => c"string is not valid UTF-8",
        mirai_result::Panic => c"panic inside libmirai",
        mirai_result::OutOfMemory => c"Out of memory",
        mirai_result::InvalidArgument => c"Invalid argument",
        mirai_result::TimedOut => c"Timed out",
        mirai_result::ConnectionRefused => c"Connection refused",
        mirai_result::ObjectClosed => c"Object closed",
        mirai_result::TryAgain => c"Try again",
        mirai_result::NotSupported => c"Not supported",
        mirai_result::AddressInUse => c"Address in use",
        mirai_result::IncorrectState => c"Incorrect state",
        mirai_result::ProtocolError => c"Protocol error",
        mirai_result::AddressInvalid => c"Address invalid",
        mirai_result::PermissionDenied => c"Permission denied",
        mirai_result::MessageTooLarge => c"Message too large",
        mirai_result::ConnectionAborted => c"Connection aborted",
        mirai_result::ConnectionReset => c"Connection reset",
        mirai_result::Cryptographic => c"Cryptographic error",
        mirai_result::AuthenticationFailed => c"Peer could not be authenticated",
    };
    text.as_ptr()
}

/// The library version, e.g. "0.1.0" (the header's `MIRAI_VERSION` names the one compiled against).
#[unsafe(no_mangle)]
pub extern "C" fn mirai_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}
