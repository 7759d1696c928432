//! How this process introduces itself to peers.

use mirai_proto::Identity;

/// This process: its pid, the machine's host name, and the library version.
pub fn local_identity() -> Identity {
    Identity {
        pid: std::process::id(),
        hostname: hostname(),
        label: concat!("mirai-core ", env!("CARGO_PKG_VERSION")).to_string(),
    }
}

/// The machine's host name, or an empty string when it cannot be read.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the live buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
