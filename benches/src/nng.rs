//! NNG req/rep (vendored NNG 1.11 through nng-sys), the transport R's mirai is built on.

use std::ffi::CString;

use nng_sys::*;

fn check(rc: i32, what: &str) {
    assert!(rc == 0, "{what}: NNG error {rc}");
}

/// A REQ socket dialled to a REP server.
pub struct Req {
    sock: nng_socket,
}

impl Req {
    pub fn dial(url: &str) -> Self {
        let url = CString::new(url).unwrap();
        // SAFETY: plain NNG calls on a socket we own; the URL outlives the call.
        unsafe {
            let mut sock = std::mem::zeroed::<nng_socket>();
            check(nng_req0_open(&mut sock), "nng_req0_open");
            check(nng_dial(sock, url.as_ptr(), std::ptr::null_mut(), 0), "nng_dial");
            Req { sock }
        }
    }

    /// Sends `payload` and receives the reply into `buf`.
    pub fn roundtrip(&self, payload: &[u8], buf: &mut Vec<u8>) {
        // SAFETY: NNG copies the send buffer; the receive buffer is NNG-allocated and freed here.
        unsafe {
            check(nng_send(self.sock, payload.as_ptr() as *mut _, payload.len(), 0), "nng_send");
            let mut data: *mut u8 = std::ptr::null_mut();
            let mut len = 0usize;
            check(
                nng_recv(self.sock, (&mut data as *mut *mut u8).cast(), &mut len, NNG_FLAG_ALLOC as i32),
                "nng_recv",
            );
            buf.clear();
            buf.extend_from_slice(std::slice::from_raw_parts(data, len));
            nng_free(data.cast(), len);
        }
    }
}

impl Drop for Req {
    fn drop(&mut self) {
        // SAFETY: closing a socket we own, once.
        unsafe { nng_close(self.sock) };
    }
}

/// Listens at `url` and echoes every request; calls `ready` once listening. Never returns.
pub fn serve_rep(url: &str, ready: impl FnOnce()) -> ! {
    let url = CString::new(url).unwrap();
    // SAFETY: plain NNG calls on a socket we own; received buffers are freed by nng_send.
    unsafe {
        let mut sock = std::mem::zeroed::<nng_socket>();
        check(nng_rep0_open(&mut sock), "nng_rep0_open");
        check(nng_listen(sock, url.as_ptr(), std::ptr::null_mut(), 0), "nng_listen");
        ready();
        loop {
            let mut data: *mut u8 = std::ptr::null_mut();
            let mut len = 0usize;
            check(
                nng_recv(sock, (&mut data as *mut *mut u8).cast(), &mut len, NNG_FLAG_ALLOC as i32),
                "nng_recv",
            );
            // With NNG_FLAG_ALLOC, nng_send takes ownership of the buffer.
            check(nng_send(sock, data.cast(), len, NNG_FLAG_ALLOC as i32), "nng_send");
        }
    }
}
