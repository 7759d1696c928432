//! Buffers hold memory in proportion to what they carry: the payload buffer grows as bytes
//! arrive (a declared length reserves nothing like its size) and a payload read across every
//! growth step, by every read path, comes out intact; what a burst grew is returned after it. A
//! large payload's memory, once sent, receives the next payload, and is freed when none comes.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::mem::MaybeUninit;

use common::{Pair, encode_all};
use mirai_proto::conn::SPARE_KEEP;
use mirai_proto::decoder::Decoder;
use mirai_proto::outbox::Outbox;
use mirai_proto::{Config, HEADER_LEN, Hello, Identity, Kind, Message, Role, Status};
use proptest::prelude::*;

const MIB: usize = 1 << 20;

/// Tracks the bytes the current thread holds allocated, and their peak since the last reset.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    let _ = LIVE.try_with(|l| {
        l.set(l.get() + delta);
        let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns the most it held allocated at once beyond what was held before.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    f();
    (PEAK.with(|p| p.get()) - base) as usize
}

/// A Task header declaring `payload` bytes after a 1-byte control part (the task id).
fn task_header(payload: u64) -> Vec<u8> {
    let mut h = (payload + 1).to_le_bytes().to_vec();
    h.extend_from_slice(&[Kind::Task as u8, 0, 1, 0, 7]);
    h
}

#[test]
fn a_declared_16_gib_frame_with_10_bytes_holds_little() {
    let mut d = Decoder::new(16 << 30);
    let mut stream = task_header((16 << 30) - 1);
    stream.extend_from_slice(&[0xAB; 9]);
    let peak = peak_during(|| {
        let mut input = &stream[..];
        assert_eq!(d.decode(&mut input).unwrap(), None);
        assert!(input.is_empty());
    });
    // The payload buffer's first step (1 MiB, untouched beyond the bytes written) and the
    // control byte's small vector.
    assert!(peak <= (1 << 20) + 64, "10 bytes of a 16 GiB frame held {peak} bytes");
    let p = d.progress();
    assert_eq!((p.held, p.body_len, p.missing), (10, Some(16 << 30), (16 << 30) - 10));
    assert!(d.spare().unwrap().len() <= 1 << 20, "the direct-read slice is the buffer, not the declaration");
}

#[test]
fn memory_follows_the_bytes_received() {
    let mut d = Decoder::new(u64::MAX);
    let received = 3 << 20;
    let mut stream = task_header(64 << 20);
    stream.resize(HEADER_LEN + 1 + received, 0x5A);
    let peak = peak_during(|| {
        for chunk in stream.chunks(100_000) {
            let mut input = chunk;
            assert_eq!(d.decode(&mut input).unwrap(), None);
        }
    });
    // Doubling from 1 MiB: 3 MiB received sits in a 4 MiB buffer, whatever was declared.
    assert!(peak <= (4 << 20) + 4096, "3 MiB of a 64 MiB frame held {peak} bytes");
    assert_eq!(d.progress().held, received + 1);
}

/// How payload bytes reach the decoder.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// Through the caller's buffer (`decode`).
    Copy,
    /// Into a zero-filled window of the payload buffer (`window`, `commit`).
    Window,
    /// Into the uninitialised payload buffer (`spare`, `assume_filled`).
    Spare,
}

/// Decodes `stream` with payload bytes taken by `path`, each read at most the next of `reads`
/// (cycled) bytes, as a socket read would deliver them.
fn decode_by(stream: &[u8], path: Path, reads: &[usize]) -> Vec<Message> {
    let mut d = Decoder::new(u64::MAX);
    let mut input = stream;
    let mut out = Vec::new();
    let mut sizes = reads.iter().copied().cycle();
    while !input.is_empty() {
        let read = sizes.next().unwrap().max(1).min(input.len());
        // Headers and control parts always go through `decode`.
        let path = if d.payload_remaining() == 0 { Path::Copy } else { path };
        match path {
            Path::Copy => {
                let mut chunk = &input[..read];
                while let Some(m) = d.decode(&mut chunk).unwrap() {
                    out.push(m);
                }
                input = &input[read - chunk.len()..];
            }
            Path::Window => {
                let window = d.window().unwrap();
                assert!(!window.is_empty());
                let n = read.min(window.len());
                window[..n].copy_from_slice(&input[..n]);
                input = &input[n..];
                out.extend(d.commit(n).unwrap());
            }
            Path::Spare => {
                let spare = d.spare().unwrap();
                assert!(!spare.is_empty());
                let n = read.min(spare.len());
                for (slot, byte) in spare.iter_mut().zip(&input[..n]) {
                    *slot = MaybeUninit::new(*byte);
                }
                input = &input[n..];
                // SAFETY: the loop above initialised these `n` bytes of the slice.
                out.extend(unsafe { d.assume_filled(n) }.unwrap());
            }
        }
    }
    assert_eq!(d.progress().held, 0, "nothing is held between frames");
    out
}

fn task(id: u64, len: usize, seed: u8) -> Message {
    let payload = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    Message::Task { id, everywhere: false, payload }
}

#[test]
fn payloads_at_every_growth_boundary_come_out_intact() {
    let sizes = [0, 1, MIB - 1, MIB, MIB + 1, 2 * MIB - 1, 2 * MIB, 2 * MIB + 1, 4 * MIB + 1];
    for path in [Path::Copy, Path::Window, Path::Spare] {
        for reads in [&[4093usize][..], &[65_536 + 7, 1_500_000][..], &[usize::MAX][..]] {
            for &size in &sizes {
                let msgs = vec![task(1, size, size as u8), Message::Cancel { id: 1 }, task(2, size / 3, 9)];
                let got = decode_by(&encode_all(&msgs), path, reads);
                assert!(got == msgs, "payload of {size} bytes by {path:?}, reads of {reads:?}");
            }
        }
    }
}

fn arb_path() -> impl Strategy<Value = Path> {
    prop_oneof![Just(Path::Copy), Just(Path::Window), Just(Path::Spare)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn any_sizes_any_reads_any_path(
        sizes in proptest::collection::vec(0usize..3 << 20, 1..4),
        reads in proptest::collection::vec(512usize..3 << 20, 1..8),
        path in arb_path(),
    ) {
        let msgs: Vec<Message> =
            sizes.iter().enumerate().map(|(i, &len)| task(i as u64, len, i as u8)).collect();
        prop_assert!(decode_by(&encode_all(&msgs), path, &reads) == msgs);
    }
}

#[test]
fn a_large_control_part_is_not_kept() {
    let hostname = "h".repeat(60_000);
    let hello = Message::Hello(Hello {
        role: Role::Daemon,
        identity: Identity { pid: 1, hostname, label: String::new() },
        auth: Vec::new(),
    });
    let stream = encode_all(&[hello]);
    let mut d = Decoder::new(u64::MAX);
    let before = LIVE.with(|l| l.get());
    let mut input = &stream[..];
    drop(d.decode(&mut input).unwrap().expect("a whole Hello"));
    let kept = LIVE.with(|l| l.get()) - before;
    assert!(kept <= 1 << 10, "the decoder kept {kept} bytes after a 60 KB control part");
}

#[test]
fn the_outbox_returns_what_a_burst_grew() {
    let mut outbox = Outbox::default();
    let before = LIVE.with(|l| l.get());
    for id in 0..2_000 {
        outbox.push(Message::Task { id, everywhere: false, payload: vec![1; 1000] }).unwrap();
    }
    assert!(LIVE.with(|l| l.get()) - before > 2_000_000, "the burst is queued inline");
    outbox.consume(outbox.pending(), drop);
    assert_eq!(outbox.pending(), 0);
    let kept = LIVE.with(|l| l.get()) - before;
    assert!(kept <= 16 << 10, "the outbox kept {kept} bytes after a 2 MB burst");
}

fn payload_of(msg: &Message) -> &[u8] {
    match msg {
        Message::Task { payload, .. } | Message::Result { payload, .. } => payload,
        other => panic!("no payload in {other:?}"),
    }
}

fn result(id: u64, len: usize, seed: u8) -> Message {
    let Message::Task { payload, .. } = task(id, len, seed) else { unreachable!() };
    Message::Result { id, status: Status::Value, last: false, payload }
}

/// A host and daemon past the handshake, with no timer of their own running.
fn quiet_pair() -> Pair {
    let mut p = Pair::new(Config { handshake_timeout: None, ..Config::default() });
    p.handshake();
    assert_eq!((p.host.poll_timeout(), p.daemon.poll_timeout()), (None, None));
    p
}

/// A quiet pair whose host has sent a task of `len` bytes, which the daemon received: the host
/// keeps that payload's memory as its spare.
fn host_holding_a_spare(len: usize) -> Pair {
    let mut p = quiet_pair();
    p.host.send(task(1, len, 1)).unwrap();
    p.drive().unwrap();
    drop(p.daemon.poll_event());
    p
}

#[test]
fn a_large_payload_once_sent_receives_the_next_one_in_its_memory() {
    let mut p = quiet_pair();
    let sent = task(1, 3 * MIB, 1);
    let task_memory = payload_of(&sent).as_ptr();
    p.host.send(sent).unwrap();
    p.drive().unwrap();
    assert_eq!(p.host.poll_timeout(), Some(SPARE_KEEP), "the sent payload is kept that long");
    let got = p.daemon.poll_event().unwrap();
    assert!(got == task(1, 3 * MIB, 1));

    // The result (between half the spare's size and all of it) lands where the task was.
    let reply = result(1, 2 * MIB, 2);
    let result_memory = payload_of(&reply).as_ptr();
    p.daemon.send(reply).unwrap();
    p.drive().unwrap();
    let back = p.host.poll_event().unwrap();
    assert!(back == result(1, 2 * MIB, 2), "the result is intact");
    assert_eq!(payload_of(&back).as_ptr(), task_memory, "received into the task's memory");
    assert_eq!(p.host.poll_timeout(), None, "the spare was used");

    // And the daemon's next task lands where its result was.
    p.host.send(task(2, 2 * MIB, 3)).unwrap();
    p.drive().unwrap();
    let next = p.daemon.poll_event().unwrap();
    assert!(next == task(2, 2 * MIB, 3), "the task is intact");
    assert_eq!(payload_of(&next).as_ptr(), result_memory, "received into the result's memory");
}

#[test]
fn a_spare_no_payload_fits_is_freed_when_its_time_is_up() {
    let mut p = host_holding_a_spare(4 * MIB);
    // Under half the spare's size, then over all of it: neither takes it.
    for (id, len) in [(1, 2 * MIB - 1), (2, 4 * MIB + 1)] {
        p.daemon.send(result(id, len, 5)).unwrap();
        p.drive().unwrap();
        assert!(p.host.poll_event().unwrap() == result(id, len, 5), "{len} bytes intact");
        assert_eq!(p.host.poll_timeout(), Some(SPARE_KEEP), "the spare is still kept");
        p.host.send(task(id + 1, 0, 0)).unwrap();
        p.drive().unwrap();
        drop(p.daemon.poll_event());
    }
    let before = LIVE.with(|l| l.get());
    p.host.handle_timeout(SPARE_KEEP - 1).unwrap();
    assert_eq!(LIVE.with(|l| l.get()), before, "kept until its time");
    p.host.handle_timeout(SPARE_KEEP).unwrap();
    let freed = before - LIVE.with(|l| l.get());
    assert!(freed >= 4 * MIB as isize, "freed {freed} bytes");
    assert_eq!(p.host.poll_timeout(), None);
}

#[test]
fn payloads_under_a_mebibyte_keep_nothing_once_sent() {
    let mut p = quiet_pair();
    let before = LIVE.with(|l| l.get());
    p.host.send(task(1, MIB - 1, 1)).unwrap();
    p.drive().unwrap();
    assert_eq!(p.host.poll_timeout(), None);
    drop(p.daemon.poll_event());
    assert!(LIVE.with(|l| l.get()) - before < 64 << 10, "the sent payload was freed");
}

#[test]
fn a_payload_cut_short_in_the_spare_fails_as_any_truncated_frame() {
    let mut p = host_holding_a_spare(2 * MIB);
    // The daemon's result declares 2 MiB, which the spare fits, and 1,000 bytes come.
    let reply = encode_all(&[result(1, 2 * MIB, 2)]);
    p.host.feed(0, &reply[..reply.len() - 2 * MIB + 1000]).unwrap();
    assert_eq!(p.host.poll_timeout(), None, "the payload took the spare");
    let err = p.host.handle_eof().unwrap_err();
    assert!(matches!(err, mirai_proto::ProtoError::Truncated { .. }), "{err:?}");
    assert_eq!(p.host.poll_event(), None, "nothing of the cut payload is delivered");
}
