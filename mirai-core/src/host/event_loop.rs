//! The host's I/O thread: accepts daemons, reads their messages, finishes writes that did not
//! fit in a socket, and fires timers. Edge-triggered: every ready socket is drained to
//! `WouldBlock`. It sleeps in `poll` until a socket, the waker or the next deadline needs it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use mirai_proto::{Conn, ErrorCode, ExitReason, Hello, Identity, Message, Role};
use slab::Slab;

use super::recv_budget::RecvBudget;
use super::{Completions, Shared, WAKER};
use crate::auth;
use crate::clock::{now_ms, until};
use crate::identity::local_identity;
use crate::link::{Link, ReadEnd};
use crate::transport::Listener;

const LISTENER: Token = Token(0);
const FIRST_LINK: usize = 2;
const READ_BUF: usize = 64 * 1024;

struct Loop {
    shared: Arc<Shared>,
    poll: Poll,
    listener: Listener,
    links: Slab<LinkSlot>,
    /// Protocol deadlines (handshake, heartbeat, peer timeout) by connection; stale entries
    /// are re-checked against the connection when reached.
    link_timers: BinaryHeap<Reverse<(u64, usize)>>,
    buf: Vec<u8>,
    /// Connections to close after the current batch of events (closing them mid-batch could
    /// let a reused slab key receive a stale event).
    closing: Vec<usize>,
    budget: RecvBudget,
}

/// A connection, with the challenge its daemon must answer and who it said it was.
struct LinkSlot {
    link: Arc<Mutex<Link>>,
    challenge: Vec<u8>,
    identity: Option<Identity>,
}

pub(super) fn run(shared: Arc<Shared>, poll: Poll, mut listener: Listener) {
    if let Err(e) = poll.registry().register(&mut listener, LISTENER, Interest::READABLE) {
        log::error!("host {}: cannot watch the listener: {e}", shared.url);
        return;
    }
    let mut lp = Loop {
        poll,
        listener,
        links: Slab::new(),
        link_timers: BinaryHeap::new(),
        buf: vec![0; READ_BUF],
        closing: Vec::new(),
        budget: RecvBudget::new(shared.recv.limit()),
        shared,
    };
    let mut events = Events::with_capacity(256);
    loop {
        let timeout = {
            let mut st = lp.shared.lock();
            if st.closing {
                break;
            }
            let next = [lp.shared.next_deadline(&mut st), lp.link_timers.peek().map(|r| r.0.0)]
                .into_iter()
                .flatten()
                .min();
            st.wake_at = next;
            // Paused connections to read again come before sleeping.
            if lp.budget.wants_resume() { Some(Duration::ZERO) } else { next.map(until) }
        };
        if let Err(e) = lp.poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("host {}: poll failed, stopping: {e}", lp.shared.url);
            break;
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => lp.accept_all(),
                WAKER => {}
                Token(t) => lp.service(t - FIRST_LINK, event),
            }
        }
        let dead: Vec<usize> = lp.shared.lock().dead.drain(..).collect();
        lp.closing.extend(dead);
        lp.fire_timers();
        for key in lp.budget.take_resumable() {
            lp.serve(key, true, false);
        }
        lp.close_pending();
    }
    lp.shutdown();
}

impl Loop {
    fn accept_all(&mut self) {
        loop {
            let mut stream = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: the pending connection stays queued and
                    // the listener fires again when the next one arrives.
                    log::warn!("host {}: accept failed: {e}", self.shared.url);
                    return;
                }
            };
            let key = self.links.vacant_key();
            let token = Token(key + FIRST_LINK);
            if let Err(e) =
                self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                log::warn!("host {}: cannot watch a new connection: {e}", self.shared.url);
                continue;
            }
            let challenge = if self.shared.secret.is_some() { auth::challenge() } else { Vec::new() };
            // The daemon speaks first; nothing to send until its Hello arrives.
            let link = Link::new(stream, Conn::host(self.shared.proto, now_ms()));
            if let Some(t) = link.proto.poll_timeout() {
                self.link_timers.push(Reverse((t, key)));
            }
            self.links.insert(LinkSlot { link: Arc::new(Mutex::new(link)), challenge, identity: None });
        }
    }

    /// Readiness on one connection; see [`Self::serve`].
    fn service(&mut self, key: usize, event: &Event) {
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        self.serve(key, readable, event.is_writable());
    }

    /// Handles readiness on one connection: read (within the receive budget) and flush under
    /// its own lock, then apply the decoded messages under the state lock.
    fn serve(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(link) = self.links.get(key).map(|s| s.link.clone()) else {
            return;
        };
        let mut guard = link.lock().unwrap_or_else(|e| e.into_inner());
        let mut failure = None;
        let mut eof = false;
        if readable {
            match guard.read_within(&mut self.buf, self.budget.limit_for(key)) {
                Ok(Some(ReadEnd::Open)) => {}
                Ok(Some(ReadEnd::Eof)) => eof = true,
                Ok(None) => self.budget.pause(key),
                Err(e) => failure = Some(e),
            }
            self.budget.update(key, guard.proto.recv_progress(), &self.shared.recv);
        }
        if writable
            && failure.is_none()
            && let Err(e) = guard.flush()
        {
            failure = Some(e);
        }
        let mut msgs = Vec::new();
        while let Some(m) = guard.proto.poll_event() {
            msgs.push(m);
        }
        if failure.is_some() {
            // Tell the peer why, if the socket still takes it.
            let _ = guard.flush();
        }
        if let Some(t) = guard.proto.poll_timeout() {
            self.link_timers.push(Reverse((t, key)));
        }
        drop(guard);

        let mut completions = Completions::new();
        if !msgs.is_empty() {
            let shared = self.shared.clone();
            let mut st = shared.lock();
            for msg in msgs {
                if !self.apply(&mut st, key, &link, msg, &mut completions) {
                    self.closing.push(key);
                    break;
                }
            }
        }
        self.shared.finish(completions);
        if let Some(e) = failure {
            log::warn!("host {}: closing connection {key}: {e}", self.shared.url);
            self.closing.push(key);
        } else if eof {
            self.closing.push(key);
        }
    }

    /// Applies one message from a daemon; false means close the connection.
    fn apply(
        &mut self,
        st: &mut super::State,
        key: usize,
        link: &Arc<Mutex<Link>>,
        msg: Message,
        completions: &mut Completions,
    ) -> bool {
        match msg {
            Message::Hello(hello) => {
                let Some(slot) = self.links.get_mut(key) else { return false };
                slot.identity = Some(hello.identity);
                let reply =
                    Hello { role: Role::Host, identity: local_identity(), auth: slot.challenge.clone() };
                let mut guard = link.lock().unwrap_or_else(|e| e.into_inner());
                match guard.send(Message::Hello(reply)) {
                    Ok(_) => true,
                    Err(e) => {
                        log::warn!("host {}: closing connection {key}: {e}", self.shared.url);
                        false
                    }
                }
            }
            Message::Auth { proof } => {
                let Some(slot) = self.links.get(key) else { return false };
                let identity = slot.identity.clone().unwrap_or_default();
                let genuine = match &self.shared.secret {
                    None => true,
                    Some(secret) => auth::verify(secret, &slot.challenge, &proof),
                };
                if !genuine {
                    log::warn!(
                        "host {}: connection {key} from {} pid {} failed authentication",
                        self.shared.url,
                        identity.hostname,
                        identity.pid
                    );
                    let mut guard = link.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = guard.send(Message::Exit {
                        reason: ExitReason::AuthFailed,
                        detail: "authentication failed".into(),
                    });
                    return false;
                }
                match self.shared.accept(st, key, link, identity) {
                    Ok(()) => true,
                    Err(e) => {
                        log::warn!("host {}: cannot initialise daemon: {e}", self.shared.url);
                        false
                    }
                }
            }
            Message::Result { status, last, payload, .. } => {
                self.shared.on_result(st, key, status.into(), last, payload, completions);
                true
            }
            Message::Exit { reason, detail } => {
                let daemon = st.daemons.get(&key).map(|d| d.info.daemon_id);
                match reason {
                    ExitReason::ProtocolViolation | ExitReason::VersionMismatch => {
                        log::warn!("host {}: daemon {daemon:?} left: {reason:?} {detail}", self.shared.url)
                    }
                    _ => log::debug!("daemon {daemon:?} left: {reason:?} {detail}"),
                }
                false
            }
            // The protocol state machine lets nothing else through on the host side.
            _ => true,
        }
    }

    fn fire_timers(&mut self) {
        let now = now_ms();
        let expired = {
            let mut st = self.shared.lock();
            self.shared.expired(&mut st, now)
        };
        for id in expired {
            self.shared.cancel(id, ErrorCode::TimedOut);
        }
        while let Some(&Reverse((due, key))) = self.link_timers.peek() {
            if due > now {
                break;
            }
            self.link_timers.pop();
            let Some(link) = self.links.get(key).map(|s| &s.link) else {
                continue;
            };
            let mut guard = link.lock().unwrap_or_else(|e| e.into_inner());
            if guard.proto.poll_timeout().is_none_or(|t| t > now) {
                continue; // stale entry; the current deadline has its own entry
            }
            if self.budget.is_paused(key) {
                // Its peer is not silent: the host is the one not reading.
                guard.proto.recv_held_back(now);
            }
            let result = guard.proto.handle_timeout(now);
            let flushed = guard.flush();
            if let Some(t) = guard.proto.poll_timeout() {
                self.link_timers.push(Reverse((t, key)));
            }
            match (result, flushed) {
                (Err(e), _) => {
                    log::warn!("host {}: closing connection {key}: {e}", self.shared.url);
                    self.closing.push(key);
                }
                (_, Err(e)) => {
                    log::warn!("host {}: closing connection {key}: {e}", self.shared.url);
                    self.closing.push(key);
                }
                _ => {}
            }
        }
    }

    fn close_pending(&mut self) {
        if self.closing.is_empty() {
            return;
        }
        let mut completions = Completions::new();
        let mut st = self.shared.lock();
        for key in self.closing.drain(..) {
            let Some(LinkSlot { link, .. }) = self.links.try_remove(key) else {
                continue;
            };
            self.budget.remove(key, &self.shared.recv);
            let mut guard = link.lock().unwrap_or_else(|e| e.into_inner());
            let _ = self.poll.registry().deregister(&mut guard.stream);
            guard.stream.shutdown();
            drop(guard);
            self.shared.disconnect(&mut st, key, &mut completions);
        }
        drop(st);
        self.shared.finish(completions);
    }

    /// The host is closing: tell every daemon so and close every connection.
    fn shutdown(&mut self) {
        for (_, slot) in self.links.iter() {
            let mut guard = slot.link.lock().unwrap_or_else(|e| e.into_inner());
            let _ = guard.send(Message::Exit { reason: ExitReason::Closing, detail: String::new() });
            let _ = self.poll.registry().deregister(&mut guard.stream);
            guard.stream.shutdown();
        }
        self.links.clear();
        let mut st = self.shared.lock();
        st.daemons.clear();
    }
}
