//! Shared test scaffolding: a single-threaded reactor daemon over many channels, a
//! hang guard, waits on observable state, and the peer binary as a child process.
#![allow(dead_code)]

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use trace2e_fastpath::{Channel, Corruption, Lane, Listener, ServerConfig, Tag};

mod kinds;

pub use kinds::{BLACKHOLE, DETACH_ME, ECHO, POSTS_SEEN};

pub fn socket_path(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fastpath-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("d.sock")
}

/// Runs `f` on a thread and fails the test if it does not finish within `limit`
/// (a hang guard, not a timing assertion).
pub fn with_timeout<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = channel();
    let handle = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(limit) {
        Ok(()) => handle.join().unwrap(),
        Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(RecvTimeoutError::Timeout) => panic!("test body did not finish within {limit:?}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Attached { id: u32, pid: u32 },
    Gone { id: u32, at: Instant },
    Corrupt { id: u32, corruption: Corruption },
}

pub struct TestServer {
    pub path: PathBuf,
    pub events: Receiver<Event>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// Requests handled, all channels.
    pub handled: Arc<Mutex<u64>>,
}

impl TestServer {
    pub fn start(config: ServerConfig) -> Self {
        let path = socket_path("srv");
        let listener = Listener::bind(&path, config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, events) = channel();
        let handled = Arc::new(Mutex::new(0));
        let handle = {
            let (stop, handled) = (stop.clone(), handled.clone());
            std::thread::spawn(move || reactor(listener, stop, tx, handled))
        };
        Self { path, events, stop, handle: Some(handle), handled }
    }

    /// The next event, failing the test after `limit`.
    pub fn next_event(&self, limit: Duration) -> Event {
        self.events.recv_timeout(limit).unwrap_or_else(|e| panic!("no server event within {limit:?}: {e}"))
    }

    /// Requests (calls and posts) the reactor has read so far, all channels.
    pub fn handled(&self) -> u64 {
        *self.handled.lock().unwrap()
    }

    /// Waits for the `Attached` event of a new client and returns its channel id.
    pub fn attached(&self) -> u32 {
        match self.next_event(Duration::from_secs(10)) {
            Event::Attached { id, .. } => id,
            other => panic!("expected Attached, got {other:?}"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

struct Served {
    id: u32,
    channel: Channel,
    posts: u64,
}

/// A daemon event loop in the style the real daemon will use: one `poll` over the
/// listener and every channel's doorbell, control socket and pidfd; a bounded
/// batch per channel per wake-up.
fn reactor(listener: Listener, stop: Arc<AtomicBool>, tx: Sender<Event>, handled: Arc<Mutex<u64>>) {
    const MAX_PER_WAKE: usize = 32;
    listener.set_nonblocking(true).unwrap();
    let mut channels: Vec<Served> = Vec::new();
    let mut next_id = 0;
    let mut busy = false;
    let mut batch: Vec<(Lane, Tag, u16, bool, Vec<u8>)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        {
            let mut watched: Vec<(BorrowedFd<'_>, PollFlags)> = vec![(listener_fd(&listener), PollFlags::IN)];
            for s in &channels {
                watched.push((s.channel.doorbell(), PollFlags::IN));
                watched.push((s.channel.control(), PollFlags::RDHUP));
                if let Some(p) = s.channel.pidfd() {
                    watched.push((p, PollFlags::IN));
                }
            }
            let mut fds: Vec<PollFd<'_>> = watched.iter().map(|(fd, fl)| PollFd::new(fd, *fl)).collect();
            let timeout =
                if busy { Timespec { tv_sec: 0, tv_nsec: 0 } } else { Timespec { tv_sec: 0, tv_nsec: 50_000_000 } };
            let _ = poll(&mut fds, Some(&timeout));
        }
        while let Ok(incoming) = listener.accept() {
            let pid = incoming.peer().pid;
            if let Ok(channel) = incoming.attach() {
                next_id += 1;
                channels.push(Served { id: next_id, channel, posts: 0 });
                let _ = tx.send(Event::Attached { id: next_id, pid });
            }
        }
        busy = false;
        channels.retain_mut(|s| {
            if s.channel.peer_gone() {
                let _ = tx.send(Event::Gone { id: s.id, at: Instant::now() });
                return false;
            }
            s.channel.clear_doorbell();
            batch.clear();
            let posts = &mut s.posts;
            let result = s.channel.poll_requests(MAX_PER_WAKE, |req| {
                if req.posted {
                    *posts += 1;
                } else {
                    batch.push((req.lane, req.tag, req.kind, req.posted, req.payload.to_vec()));
                }
            });
            let n = match result {
                Ok(n) => n,
                Err(corruption) => {
                    let _ = tx.send(Event::Corrupt { id: s.id, corruption });
                    return false;
                }
            };
            *handled.lock().unwrap() += n as u64;
            busy |= n == MAX_PER_WAKE;
            for (lane, tag, kind, _, payload) in batch.drain(..) {
                let r = match kind {
                    ECHO => s.channel.respond(lane, tag, kind + 1, &payload),
                    POSTS_SEEN => s.channel.respond(lane, tag, kind, &s.posts.to_le_bytes()),
                    BLACKHOLE => Ok(()),
                    DETACH_ME => {
                        s.channel.detach();
                        Ok(())
                    }
                    _ => s.channel.respond(lane, tag, kind, &[]),
                };
                match r {
                    Ok(()) | Err(trace2e_fastpath::RespondError::Full) => {}
                    Err(trace2e_fastpath::RespondError::Corrupt(corruption)) => {
                        let _ = tx.send(Event::Corrupt { id: s.id, corruption });
                        return false;
                    }
                    Err(_) => {}
                }
            }
            true
        });
    }
}

fn listener_fd(l: &Listener) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    l.as_fd()
}

/// Starts the peer binary (`tests/bin/peer.rs`) in `role` on the socket `path`, with
/// its stdout piped.
pub fn spawn_role(role: &str, path: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_fastpath-test-peer"))
        .arg(role)
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `done` every millisecond until it holds; fails the test, naming `what`, if it
/// does not within `limit`.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Deterministic pseudo-random numbers (xorshift64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A child process that is killed and reaped when the test ends, however it ends.
pub struct Reaped(pub std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
