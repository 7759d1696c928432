//! The host's I/O thread: accepts daemons, reads their messages, finishes writes that did not
//! fit in a socket, and fires timers. Edge-triggered: every ready socket is drained to
//! `WouldBlock`. It sleeps in `poll` until a socket, the waker or the next deadline needs it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Token};
use mirai_proto::{Conn, ExitReason, Identity, Message};
use slab::Slab;

use super::admission::{Admission, Admit};
use super::recv_budget::RecvBudget;
use super::{Shared, WAKER};
use crate::clock::{now_ms, until};
use crate::handshake::HostHandshake;
use crate::link::{Link, ReadEnd, Readiness};
use crate::peer_text::for_log;
use crate::transport::Listener;

const LISTENER: Token = Token(0);
const FIRST_LINK: usize = 2;
const READ_BUF: usize = 64 * 1024;
/// An unfinished handshake gives way to a newcomer only after this long (ms): a real daemon
/// finishes in a few round trips, and only a burst of more than `max_handshakes` at once makes
/// one give way.
const HANDSHAKE_GRACE: u64 = 250;
/// After `accept` failed for want of descriptors or memory, try again this soon (ms): the
/// listener is edge-triggered, so the daemons already queued would otherwise wait for a newcomer.
const ACCEPT_RETRY: u64 = 100;

struct Loop {
    shared: Arc<Shared>,
    poll: Poll,
    /// The poller's registry, shared with the links, which ask it for writability when full.
    registry: Arc<Registry>,
    listener: Listener,
    links: Slab<LinkSlot>,
    /// Protocol deadlines (handshake, heartbeat, peer timeout) by connection; stale entries
    /// are re-checked against the connection when reached.
    link_timers: BinaryHeap<Reverse<(u64, usize)>>,
    buf: Vec<u8>,
    /// Connections to close after the current batch of events (closing them mid-batch could
    /// let a reused slab key receive a stale event).
    closing: Vec<usize>,
    /// Connections still in their handshake.
    admission: Admission,
    /// Accept after the current batch of events: the listener fired, or a place came free.
    accept_wanted: bool,
    /// When accepting was put off (no place for a newcomer, or no descriptor).
    accept_retry: Option<u64>,
    /// Whether the last accept failed for want of resources (logged once per spell).
    starved: bool,
    budget: RecvBudget,
}

/// A connection, with its side of the authentication and who its daemon said it was.
struct LinkSlot {
    link: Arc<Mutex<Link>>,
    handshake: HostHandshake,
    identity: Option<Identity>,
}

pub(super) fn run(shared: Arc<Shared>, poll: Poll, mut listener: Listener) {
    if let Err(e) = poll.registry().register(&mut listener, LISTENER, Interest::READABLE) {
        log::error!("host {}: cannot watch the listener: {e}", shared.url);
        return;
    }
    let registry = match poll.registry().try_clone() {
        Ok(r) => Arc::new(r),
        Err(e) => {
            log::error!("host {}: cannot share the poller: {e}", shared.url);
            return;
        }
    };
    let shared_max_handshakes = shared.max_handshakes;
    let mut lp = Loop {
        poll,
        registry,
        listener,
        links: Slab::new(),
        link_timers: BinaryHeap::new(),
        buf: vec![0; READ_BUF],
        closing: Vec::new(),
        admission: Admission::new(shared_max_handshakes, HANDSHAKE_GRACE),
        accept_wanted: false,
        accept_retry: None,
        starved: false,
        budget: RecvBudget::new(shared.recv.limit()),
        shared,
    };
    let mut events = Events::with_capacity(256);
    loop {
        let timeout = {
            let mut core = lp.shared.lock();
            if core.is_closing() {
                break;
            }
            let next = [core.poll_timeout(), lp.link_timers.peek().map(|r| r.0.0), lp.accept_retry]
                .into_iter()
                .flatten()
                .min();
            // Stored under the core's lock, so a submitter's deadline is compared with it in order.
            lp.shared.wake_at.store(next.unwrap_or(u64::MAX), Ordering::Release);
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
                LISTENER => lp.accept_wanted = true,
                WAKER => {}
                Token(t) => lp.service(t - FIRST_LINK, event),
            }
        }
        lp.fire_timers();
        lp.rearm();
        // Connections a submitter could not write to, and daemons dropped by the core.
        let broken = lp.shared.lock().take_broken();
        lp.closing.extend(broken);
        for key in lp.budget.take_resumable() {
            lp.serve(key, Some(Readiness::Unknown));
        }
        lp.close_pending();
        if lp.accept_retry.is_some_and(|t| now_ms() >= t) {
            lp.accept_retry = None;
            lp.accept_wanted = true;
        }
        if lp.accept_wanted {
            lp.accept_wanted = false;
            lp.accept_all();
            // Evicted handshakes.
            lp.close_pending();
        }
    }
    lp.shutdown();
}

impl Loop {
    /// Accepts the connections queued at the listener while there is room for their handshakes.
    fn accept_all(&mut self) {
        loop {
            let now = now_ms();
            let evict = match self.admission.admit(now) {
                Admit::Yes => None,
                Admit::Evict(key) => Some(key),
                Admit::Wait(until) => {
                    self.accept_retry = Some(until);
                    return;
                }
            };
            let stream = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.starved = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: the connection stays queued. A stalled
                    // handshake gives its descriptor up at once; otherwise try again soon rather
                    // than when the next connection arrives.
                    if !self.starved {
                        log::warn!("host {}: accept failed, retrying: {e}", self.shared.url);
                        self.starved = true;
                    }
                    let retry = match self.admission.evictable(now) {
                        Some(key) => {
                            self.admission.ended(key);
                            self.closing.push(key);
                            now
                        }
                        None => now + ACCEPT_RETRY,
                    };
                    self.accept_retry = Some(retry);
                    return;
                }
            };
            self.starved = false;
            // Only for a newcomer: with none queued, the handshakes under way all go on.
            if let Some(key) = evict {
                log::debug!("host {}: dropping connection {key}, still in its handshake", self.shared.url);
                self.admission.ended(key);
                self.closing.push(key);
            }
            let key = self.links.vacant_key();
            let token = Token(key + FIRST_LINK);
            // The daemon speaks first; nothing to send until its Hello arrives.
            let proto = Conn::host(self.shared.proto, now);
            let link = match Link::watched(stream, proto, self.registry.clone(), token) {
                Ok(link) => link,
                Err(e) => {
                    log::warn!("host {}: cannot watch a new connection: {e}", self.shared.url);
                    continue;
                }
            };
            if let Some(t) = link.proto.poll_timeout() {
                self.link_timers.push(Reverse((t, key)));
            }
            self.links.insert(LinkSlot {
                link: Arc::new(Mutex::new(link)),
                handshake: HostHandshake::new(),
                identity: None,
            });
            self.admission.opened(key, now);
        }
    }

    /// Readiness on one connection; see [`Self::serve`].
    fn service(&mut self, key: usize, event: &Event) {
        self.serve(key, Readiness::after(event));
    }

    /// Handles readiness on one connection: read (within the receive budget, when `read` says
    /// how) and flush under its own lock, then apply the decoded messages under the state lock.
    fn serve(&mut self, key: usize, read: Option<Readiness>) {
        let Some(link) = self.links.get(key).map(|s| s.link.clone()) else {
            return;
        };
        let mut guard = link.lock().unwrap_or_else(|e| e.into_inner());
        let mut failure = None;
        let mut eof = false;
        if let Some(ready) = read {
            match guard.read_within(&mut self.buf, self.budget.limit_for(key), ready) {
                Ok(Some(ReadEnd::Open)) => {}
                Ok(Some(ReadEnd::Eof)) => eof = true,
                Ok(None) => self.budget.pause(key),
                Err(e) => failure = Some(e),
            }
            self.budget.update(key, guard.proto.recv_progress(), &self.shared.recv);
        }
        // Also after a read alone: a TLS stream may have records of its own to send (handshake,
        // key update), and the socket is watched for writability only once a write is left over.
        if failure.is_none()
            && let Err(e) = guard.flush()
        {
            failure = Some(e);
        }
        let mut msgs = Vec::new();
        while let Some(m) = guard.proto.poll_event() {
            msgs.push(m);
        }
        let returned: Vec<_> = std::iter::from_fn(|| guard.proto.take_returned()).collect();
        if failure.is_some() {
            // Tell the peer why, if the socket still takes it.
            let _ = guard.flush();
        }
        if let Some(t) = guard.proto.poll_timeout() {
            self.link_timers.push(Reverse((t, key)));
        }
        drop(guard);

        if !returned.is_empty() {
            self.shared.with_core(|c| returned.into_iter().for_each(|(id, payload)| c.returned(id, payload)));
        }
        for msg in msgs {
            if !self.apply(key, &link, msg) {
                self.closing.push(key);
                break;
            }
        }
        if failure.is_some() || eof {
            // Out of the pool at once; the connection closes after this batch of events.
            self.shared.with_core(|c| c.retire(key));
        }
        if let Some(e) = failure {
            log::warn!("host {}: closing connection {key}: {e}", self.shared.url);
            self.closing.push(key);
        } else if eof {
            self.closing.push(key);
        }
    }

    /// Applies one message from a daemon; false means close the connection.
    fn apply(&mut self, key: usize, link: &Arc<Mutex<Link>>, msg: Message) -> bool {
        match msg {
            Message::Hello(hello) => {
                let Some(slot) = self.links.get_mut(key) else { return false };
                let mut guard = link.lock().unwrap_or_else(|e| e.into_inner());
                let sent = guard.stream.channel_binding().and_then(|channel| {
                    match slot.handshake.answer(self.shared.secret.as_deref(), &hello, channel) {
                        Ok(reply) => guard.send(Message::Hello(reply)),
                        Err(refusal) => {
                            let detail = refusal.to_string();
                            let _ = guard.send(Message::Exit { reason: ExitReason::AuthFailed, detail });
                            Err(crate::Error::Refused(refusal.to_string()))
                        }
                    }
                });
                slot.identity = Some(hello.identity);
                match sent {
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
                if let Err(refusal) = slot.handshake.check(self.shared.secret.as_deref(), &proof) {
                    log::warn!(
                        "host {}: connection {key} from {} pid {} failed authentication",
                        self.shared.url,
                        for_log(&identity.hostname),
                        identity.pid
                    );
                    let mut guard = link.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = guard
                        .send(Message::Exit { reason: ExitReason::AuthFailed, detail: refusal.to_string() });
                    return false;
                }
                if self.admission.ended(key) {
                    // A place for the next newcomer, which may be waiting in the kernel.
                    self.accept_wanted = true;
                }
                self.shared.with_core(|c| c.connected(key, super::LinkRef(link.clone()), identity));
                true
            }
            Message::Result { status, last, payload, .. } => {
                self.shared.with_core(|c| c.result(key, status.into(), last, payload));
                true
            }
            Message::Exit { reason, detail } => {
                // Out of the pool at once: nothing more goes to a daemon that is leaving.
                self.shared.with_core(|c| c.exiting(key, reason));
                match reason {
                    ExitReason::ProtocolViolation | ExitReason::VersionMismatch => {
                        log::warn!(
                            "host {}: daemon connection {key} left: {reason:?} {}",
                            self.shared.url,
                            for_log(&detail)
                        )
                    }
                    ExitReason::AuthFailed => {
                        let identity =
                            self.links.get(key).and_then(|s| s.identity.clone()).unwrap_or_default();
                        log::warn!(
                            "host {}: connection {key} from {} pid {} failed authentication: the daemon \
                             refused this host's proof (it holds another secret, or none is set here)",
                            self.shared.url,
                            for_log(&identity.hostname),
                            identity.pid
                        )
                    }
                    _ => log::debug!("daemon connection {key} left: {reason:?} {}", for_log(&detail)),
                }
                false
            }
            // The protocol state machine lets nothing else through on the host side.
            _ => true,
        }
    }

    /// Takes up the deadlines that writes on other threads brought forward.
    fn rearm(&mut self) {
        for key in self.shared.take_rearmed() {
            let Some(slot) = self.links.get(key) else { continue };
            if let Some(t) = slot.link.lock().unwrap_or_else(|e| e.into_inner()).proto.poll_timeout() {
                self.link_timers.push(Reverse((t, key)));
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = now_ms();
        self.shared.with_core(|c| c.handle_timeout(now));
        let mut returned = Vec::new();
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
            // Kept after the loop: the state lock is never taken under a connection's lock.
            returned.extend(std::iter::from_fn(|| guard.proto.take_returned()));
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
        if !returned.is_empty() {
            self.shared.with_core(|c| returned.into_iter().for_each(|(id, payload)| c.returned(id, payload)));
        }
    }

    fn close_pending(&mut self) {
        if self.closing.is_empty() {
            return;
        }
        let mut ended = Vec::with_capacity(self.closing.len());
        for key in self.closing.drain(..) {
            let Some(LinkSlot { link, .. }) = self.links.try_remove(key) else {
                continue;
            };
            if self.admission.ended(key) {
                self.accept_wanted = true;
            }
            self.budget.remove(key, &self.shared.recv);
            let mut guard = link.lock().unwrap_or_else(|e| e.into_inner());
            let _ = self.poll.registry().deregister(&mut guard.stream);
            guard.stream.shutdown();
            ended.push((key, guard.proto.reclaim_unsent()));
        }
        self.shared.with_core(|c| ended.into_iter().for_each(|(key, unsent)| c.disconnected(key, unsent)));
    }

    /// The host is closing: close the listener, let `close` return, then tell every daemon so
    /// and close every connection. Each `Exit` wakes a daemon, which on a busy machine takes the
    /// CPU this thread needs (with 1,000 daemons, hundreds of ms): `close` need not wait for that.
    fn shutdown(self) {
        let Loop { shared, poll, listener, links, .. } = self;
        drop(listener);
        shared.with_core(|c| c.forget_daemons());
        shared.stop_serving();
        for (_, slot) in links.iter() {
            let mut guard = slot.link.lock().unwrap_or_else(|e| e.into_inner());
            let _ = guard.send(Message::Exit { reason: ExitReason::Closing, detail: String::new() });
            let _ = poll.registry().deregister(&mut guard.stream);
            guard.stream.shutdown();
        }
    }
}
