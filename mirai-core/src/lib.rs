//! The mirai engine: a host that queues tasks FIFO and dispatches each to an idle daemon, the
//! daemon runtime that evaluates them, the transports between them, and local launching.
//!
//! Payloads are opaque bytes: bindings serialize, evaluate and build error values; the engine
//! moves bytes, schedules, cancels and counts.

pub mod auth;
pub mod clock;
mod condvar;
pub mod daemon;
pub mod error;
mod fd_limit;
pub mod handshake;
pub mod host;
pub mod huge_pages;
pub mod identity;
pub mod launch;
pub mod link;
mod nosigpipe;
mod notify;
mod peer_text;
mod pipe_write;
pub mod rng;
pub mod stderr_log;
pub mod task;
pub mod tls;
pub mod transport;
mod uninit;
pub mod url;
pub mod ws;

pub use daemon::{AutoExit, Daemon, DaemonOptions, Evaluation, Evaluator, ExitCode, Interrupt};
pub use error::Error;
pub use host::{Counters, DaemonInfo, Host, HostOptions, Memory, Process, Recoveries, SubmitOptions};
pub use mirai_proto::ErrorCode;
pub use task::{Callback, Task, TaskStatus};
pub use url::Url;
