//! The C ABI of mirai: `libmirai.so` and `libmirai.a`, declared in `include/mirai.h`.
//!
//! Conventions, for every function:
//! - Fallible functions return a `mirai_result`; `MIRAI_RESULT_OK` is 0 and the other codes keep
//!   R's mirai (NNG) numbering where one fits. `mirai_last_error` gives this thread's last message.
//! - No panic crosses the boundary: each export catches it and returns `MIRAI_RESULT_PANIC`.
//! - Pointer arguments are checked; NULL gives `MIRAI_RESULT_NULL_PARAMETER`.
//! - Out-parameters are written only on success.
//! - Every handle has a `_free` that accepts NULL. Do not free a handle twice.
//! - Payloads are `(pointer, length)` pairs; strings are NUL-terminated UTF-8.
//! - Settings go through opaque builders (`*_options_new`, setters, `*_options_free`), never
//!   structs the caller allocates, so a newer library never writes past an older program's memory.
//! - Each handle's doc says which threads may use it; no `_free` may race a call on its handle.
#![allow(non_camel_case_types)]
// C callers hand us raw pointers by design; every dereference is NULL-checked and its contract
// is stated in the header, so marking the exports `unsafe` would add nothing for C.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod boundary;
mod buffer;
mod bytes;
mod daemon;
mod host;
mod launch;
mod logging;
mod options;
mod task;

pub use boundary::{mirai_last_error, mirai_result, mirai_strerror, mirai_version};
pub use buffer::*;
pub use bytes::{mirai_bytes, mirai_bytes_free};
pub use daemon::CEvaluator;
pub use daemon::*;
pub use host::*;
pub use launch::*;
pub use logging::mirai_log_to_stderr;
pub use options::*;
pub use task::*;
