//! A client that does its own handshake, maps the region itself and writes whatever
//! it likes: random bytes, torn writes, wrong stamps, huge lengths, floods. The
//! daemon must detach it with an error naming the check (or, for floods, just keep
//! going), never panic or hang, and keep serving a well-behaved client throughout.

mod common;

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{ECHO, Event, Rng, TestServer, with_timeout};
use memmap2::{MmapOptions, MmapRaw};
use rustix::net::{AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketAddrUnix, SocketType};
use trace2e_fastpath::layout::{Geometry, STATUS_OFFSET};
use trace2e_fastpath::{Check, Client, Corruption, ServerConfig};

struct Hostile {
    ctl: OwnedFd,
    memfd: OwnedFd,
    doorbell: OwnedFd,
    map: MmapRaw,
    geo: Geometry,
}

impl Hostile {
    fn connect(path: &std::path::Path) -> Self {
        let ctl = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        rustix::net::connect(&ctl, &SocketAddrUnix::new(path).unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg =
            rustix::net::recvmsg(&ctl, &mut [std::io::IoSliceMut::new(&mut buf)], &mut control, RecvFlags::empty())
                .unwrap();
        assert_eq!(msg.bytes, 32);
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(r) = m {
                fds.extend(r);
            }
        }
        let [memfd, doorbell]: [OwnedFd; 2] = fds.try_into().unwrap();
        let geo = Geometry::new(
            u16::from_le_bytes([buf[12], buf[13]]),
            u16::from_le_bytes([buf[14], buf[15]]),
            u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]),
        )
        .unwrap();
        let map = MmapOptions::new().len(geo.region_size()).map_raw(memfd.as_raw_fd()).unwrap();
        Self { ctl, memfd, doorbell, map, geo }
    }

    fn words(&self) -> &[AtomicU32] {
        // SAFETY: the mapping is page-aligned, `region_size` long and lives as long as
        // `self`; `AtomicU32` is valid for every bit pattern and every access to it
        // (ours and the daemon's) is atomic.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU32>(), self.geo.region_size() / 4) }
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        &self.words()[offset / 4]
    }

    fn slot(&self, lane: u16, index: u32) -> usize {
        self.geo.sq_offset(lane) + index as usize * 64
    }

    /// Writes a request slot's fields, then its stamp (Release), and rings.
    fn publish(&self, lane: u16, index: u32, stamp: u32, kind_flags: u32, len: u32, off: u32) {
        let s = self.slot(lane, index);
        self.word(s + 4).store(kind_flags, Ordering::Relaxed);
        self.word(s + 8).store(index, Ordering::Relaxed);
        self.word(s + 12).store(len, Ordering::Relaxed);
        self.word(s + 16).store(off, Ordering::Relaxed);
        self.word(s).store(stamp, Ordering::Release);
        self.ring();
    }

    fn ring(&self) {
        let _ = rustix::io::write(&self.doorbell, &1u64.to_ne_bytes());
    }

    fn closed_by_daemon(&self) -> bool {
        self.word(STATUS_OFFSET + 8).load(Ordering::Acquire) != 0
    }
}

/// A well-behaved client calling in a loop until stopped.
struct Good {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    handle: JoinHandle<Result<u64, String>>,
}

impl Good {
    fn start(client: Client) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, calls) = (stop.clone(), calls.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = vec![i as u8; (i % 300) as usize];
                    let r = client.call(ECHO, &body).map_err(|e| e.to_string())?;
                    if r.payload != body {
                        return Err(format!("wrong echo at call {i}"));
                    }
                    i += 1;
                    calls.store(i, Ordering::Relaxed);
                }
                Ok(i)
            })
        };
        Self { stop, calls, handle }
    }

    /// Waits until `n` more calls succeeded (hang guard: 60 s).
    fn wait_progress(&self, n: u64) {
        let target = self.calls.load(Ordering::Relaxed) + n;
        let start = Instant::now();
        while self.calls.load(Ordering::Relaxed) < target {
            assert!(!self.handle.is_finished(), "good client stopped");
            assert!(start.elapsed() < Duration::from_secs(60), "good client made no progress");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap().expect("good client failed")
    }
}

/// Sets up a daemon, a hostile client and a good one; runs `attack`; returns what
/// the daemon reported for the hostile channel, after checking the good client kept
/// being served.
fn scenario(attack: impl FnOnce(&Hostile, &Good) + Send + 'static) -> Event {
    with_timeout(Duration::from_secs(120), move || {
        let server = TestServer::start(ServerConfig::default());
        let hostile = Hostile::connect(&server.path);
        let bad_id = server.attached();
        let good = Good::start(Client::connect(&server.path).unwrap());
        let good_id = server.attached();
        good.wait_progress(10);
        attack(&hostile, &good);
        let event = match server.next_event(Duration::from_secs(30)) {
            e @ (Event::Corrupt { id, .. } | Event::Gone { id, .. }) if id == bad_id => e,
            other => panic!("unexpected event {other:?} (good client is {good_id})"),
        };
        if matches!(event, Event::Corrupt { .. }) {
            assert!(hostile.closed_by_daemon(), "region not marked closed");
            let mut fds = [rustix::event::PollFd::new(&hostile.ctl, rustix::event::PollFlags::RDHUP)];
            rustix::event::poll(&mut fds, None).unwrap();
            assert!(!fds[0].revents().is_empty(), "control socket not shut down");
        }
        good.wait_progress(50);
        assert!(good.finish() >= 60);
        event
    })
}

fn corruption(e: Event) -> Corruption {
    match e {
        Event::Corrupt { corruption, .. } => corruption,
        other => panic!("expected a detach, got {other:?}"),
    }
}

#[test]
fn wrong_stamp() {
    let c = corruption(scenario(|h, _| h.publish(3, 0, 7, u32::from(ECHO), 0, 0)));
    assert_eq!(c.lane.0, 3);
    assert_eq!(c.check, Check::RequestStamp { expected: 1, found: 7 });
}

#[test]
fn huge_length() {
    let c = corruption(scenario(|h, _| h.publish(0, 0, 1, u32::from(ECHO), u32::MAX, 0)));
    assert!(matches!(c.check, Check::Length { len: u32::MAX, .. }), "{c}");
}

#[test]
fn offset_past_the_data_area() {
    let c = corruption(scenario(|h, _| {
        let end = h.geo.data_bytes();
        h.publish(1, 0, 1, u32::from(ECHO), 100, end - 8)
    }));
    assert!(matches!(c.check, Check::Offset { len: 100, .. }), "{c}");
}

#[test]
fn misaligned_offset() {
    let c = corruption(scenario(|h, _| h.publish(1, 0, 1, u32::from(ECHO), 100, 4)));
    assert_eq!(c.check, Check::Offset { off: 4, len: 100 });
}

#[test]
fn unknown_flags() {
    let c = corruption(scenario(|h, _| h.publish(2, 0, 1, u32::from(ECHO) | 0x8000_0000, 3, 0)));
    assert_eq!(c.check, Check::UnknownFlags(0x8000));
}

#[test]
fn random_bytes_everywhere() {
    for seed in 1..4u64 {
        corruption(scenario(move |h, _| {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for w in h.words() {
                w.store(rng.next() as u32, Ordering::Relaxed);
            }
            h.ring();
        }));
    }
}

#[test]
fn torn_writes_while_the_daemon_reads() {
    corruption(scenario(|h, _| {
        let mut rng = Rng(42);
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut index = 0u32;
        // Publish correctly stamped slots and keep rewriting their bodies while the
        // daemon may be copying them out.
        while Instant::now() < deadline && !h.closed_by_daemon() {
            let s = h.slot(0, index % 8);
            h.word(s + 4).store(u32::from(ECHO), Ordering::Relaxed);
            h.word(s + 12).store(rng.next() as u32 % 64, Ordering::Relaxed);
            h.word(s).store(index + 1, Ordering::Release);
            h.ring();
            for _ in 0..50 {
                h.word(s + 12).store(rng.next() as u32, Ordering::Relaxed);
                h.word(s + 16).store(rng.next() as u32, Ordering::Relaxed);
                h.word(s + 20).store(rng.next() as u32, Ordering::Relaxed);
            }
            // Move on once the daemon freed it (stamp = index + 8).
            if h.word(s).load(Ordering::Acquire) == index + 8 {
                index += 1;
            }
        }
        // However that went, end with a certain violation.
        for lane in 0..h.geo.lanes() {
            h.word(h.slot(lane, 0)).store(0xDEAD_BEEF, Ordering::Release);
        }
        h.ring();
    }));
}

#[test]
fn garbage_in_the_response_ring() {
    let c = corruption(scenario(|h, _| {
        h.word(h.geo.cq_offset(0)).store(0xBAD, Ordering::Relaxed);
        h.publish(0, 0, 1, u32::from(ECHO), 0, 0);
    }));
    assert_eq!(c.check, trace2e_fastpath::Check::ResponseStamp { expected: 0, found: 0xBAD });
}

#[test]
fn flooding_with_valid_requests_does_not_starve_others() {
    let e = scenario(|h, good| {
        // A correct producer on every lane that never reads a response.
        let mut pos = vec![0u32; usize::from(h.geo.lanes())];
        let target = good.calls.load(Ordering::Relaxed) + 200;
        let start = Instant::now();
        let mut published = 0u64;
        while good.calls.load(Ordering::Relaxed) < target {
            assert!(start.elapsed() < Duration::from_secs(60), "good client starved");
            for lane in 0..h.geo.lanes() {
                let p = &mut pos[usize::from(lane)];
                let s = h.slot(lane, *p % 8);
                if h.word(s).load(Ordering::Acquire) == *p {
                    h.publish(lane, *p % 8, *p + 1, u32::from(ECHO), 8, 0);
                    *p += 1;
                    published += 1;
                }
            }
        }
        assert!(published > 0);
        // Then hang up: the daemon must see a departure, not corruption.
        rustix::net::shutdown(&h.ctl, rustix::net::Shutdown::Both).unwrap();
    });
    assert!(matches!(e, Event::Gone { .. }), "{e:?}");
}

#[test]
fn doorbell_storm_is_harmless() {
    let e = scenario(|h, good| {
        let target = good.calls.load(Ordering::Relaxed) + 100;
        while good.calls.load(Ordering::Relaxed) < target {
            for _ in 0..100 {
                h.ring();
            }
            std::thread::yield_now();
        }
        rustix::net::shutdown(&h.ctl, rustix::net::Shutdown::Both).unwrap();
    });
    assert!(matches!(e, Event::Gone { .. }), "{e:?}");
}

#[test]
fn the_region_cannot_be_resized() {
    let server = TestServer::start(ServerConfig::default());
    let h = Hostile::connect(&server.path);
    let size = h.geo.region_size() as u64;
    assert_eq!(rustix::fs::ftruncate(&h.memfd, 0), Err(rustix::io::Errno::PERM));
    assert_eq!(rustix::fs::ftruncate(&h.memfd, size * 2), Err(rustix::io::Errno::PERM));
    assert_eq!(rustix::fs::fcntl_add_seals(&h.memfd, rustix::fs::SealFlags::WRITE), Err(rustix::io::Errno::PERM));
    assert_eq!(rustix::fs::fstat(&h.memfd).unwrap().st_size as u64, size);
    let _ = h.ctl.as_fd();
}
