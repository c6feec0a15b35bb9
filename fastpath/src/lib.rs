//! Shared-memory request/response channels between a daemon and the processes it
//! serves, which it does not trust.
//!
//! `trace2e-fastpath` moves opaque messages — a `u16` kind, a `u32` tag and up to a
//! few KiB of bytes — between application processes and a per-node daemon at
//! memory speed (~0.3 µs per round trip when the daemon polls on another CPU,
//! ~2 µs when both block on one CPU; `research/fastpath.md`). It knows nothing about
//! what the messages mean.
//!
//! - The daemon binds a [`Listener`]; each client [`Client::connect`]s to it.
//! - The daemon learns who the client is from the socket (`SO_PEERCRED`, plus a
//!   pidfd), never from a message, then creates one sealed memfd region and one
//!   doorbell eventfd per client and passes both with `SCM_RIGHTS`
//!   ([`Incoming::attach`]).
//! - Every client thread gets its own *lane*: a pair of single-producer,
//!   single-consumer rings, requests one way and responses the other.
//! - A client [`call`](Client::call)s (request, then waits for the response with
//!   the same tag) or [`post`](Client::post)s (one-way, no response).
//! - The daemon [`poll_requests`](Channel::poll_requests) and
//!   [`respond`](Channel::respond)s, or runs [`Channel::serve`].
//!
//! # Example
//!
//! ```
//! use trace2e_fastpath::{Client, Listener, ServerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("fastpath-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("daemon.sock");
//! # let _ = std::fs::remove_file(&path);
//! let listener = Listener::bind(&path, ServerConfig::default())?;
//!
//! // The daemon: accept, check who it is, attach, serve until the client leaves.
//! let daemon = std::thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     let incoming = listener.accept()?;
//!     assert_eq!(incoming.peer().pid, std::process::id());
//!     let mut channel = incoming.attach()?;
//!     let mut echo = |req: &trace2e_fastpath::Request<'_>, reply: &mut Vec<u8>| {
//!         reply.extend_from_slice(req.payload);
//!         Some(req.kind + 1)
//!     };
//!     loop {
//!         match channel.serve(None, &mut echo) {
//!             Ok(_) => {}
//!             Err(trace2e_fastpath::ServeError::PeerGone) => return Ok(()),
//!             Err(e) => return Err(e.into()),
//!         }
//!     }
//! });
//!
//! // The application.
//! let client = Client::connect(&path)?;
//! let response = client.call(7, b"hello")?;
//! assert_eq!((response.kind, &response.payload[..]), (8, &b"hello"[..]));
//! client.post(9, b"fire and forget")?;
//! drop(client); // closes the control socket: the daemon sees PeerGone
//! daemon.join().unwrap().map_err(|e| e.to_string())?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Protocol
//!
//! The region layout is in [`layout`]; the ring protocol (stamps, wake-up
//! handshakes) is described in `src/ring.rs` and summed up here.
//!
//! - **Stamps.** Each slot (one cache line) carries a sequence stamp; each side
//!   keeps its ring position privately. A producer at position `p` may write the
//!   slot when its stamp is `p`, and publishes by storing `p + 1` (`Release`); the
//!   consumer at `p` reads when the stamp is `p + 1` (`Acquire`), copies the slot
//!   out, and frees it by storing `p + slots`. Any other stamp value is corruption.
//! - **Payloads.** Up to [`layout::INLINE_MAX`] bytes ride in the slot. Longer ones
//!   go in the lane's data area (one per ring, `data_bytes` long), a circular buffer
//!   of 8-aligned extents; the slot carries `(offset, length)`, which the reader
//!   checks against its own geometry. The producer alone keeps the books and takes
//!   an extent back once the consumer frees the slot that referred to it.
//! - **Lanes.** A thread takes a free lane (the lowest) on its first call and gives
//!   it back when it exits; lanes are single-producer in each direction, so no
//!   compare-and-swap touches shared memory. Messages on one lane are handled in
//!   order. A polling daemon scans the lanes used so far, and every lane each 16th
//!   empty scan.
//! - **Client → daemon wake-up.** After publishing, the client reads the daemon's
//!   `polling` flag (after a `SeqCst` fence) and writes the doorbell eventfd only if
//!   it is 0. A daemon that stops polling clears the flag, fences, and scans once
//!   more.
//! - **Daemon → client wake-up.** A caller spins for its response only if the
//!   daemon is polling *on another CPU* (spinning against a peer on your own CPU
//!   costs 25 µs instead of 2), and for a few µs at most. If the daemon polls on the
//!   caller's own CPU (yielding between scans, see [`Placement::Here`]), the caller
//!   `sched_yield`s instead, up to [`ClientConfig::yield_budget`]: the daemon's
//!   thread runs at once and no one sleeps. Then it sets its lane's
//!   `waiting` flag, fences, re-checks the stamp, and `FUTEX_WAIT`s on it with a
//!   timeout (50 ms) after which it checks the daemon is still there. The daemon,
//!   after publishing, fences and `FUTEX_WAKE`s only if `waiting` is set. Idle
//!   costs no CPU on either side.
//! - **Hostile clients.** The daemon copies each slot and payload out before
//!   checking it, keeps its own positions and geometry, never holds a reference to
//!   non-atomic client-writable memory, handles at most `max` requests per call, and
//!   on the first impossible value detaches the client with a [`Corruption`] that
//!   names the [`Check`] — without panicking and without affecting other channels.
//! - **Death and forks.** The daemon watches each client's control socket and
//!   pidfd; when either fires it drops the [`Channel`], which releases everything.
//!   A forked child cannot use its parent's channel (the region is `MADV_DONTFORK`;
//!   [`Client::is_valid_in_this_process`] turns false and calls fail with
//!   [`CallError::Forked`]): it connects again and is known by its own pid.
//!
//! # Where to look next
//!
//! - [`Client`] for the application side, [`Listener`] → [`Incoming`] →
//!   [`Channel`] for the daemon side.
//! - [`layout`] for the region ABI.
//! - `tests/hostile_peer.rs` for what a malicious client can and cannot do.
//! - The loom models at the bottom of `src/ring.rs`:
//!   `RUSTFLAGS="--cfg loom" cargo test -p trace2e-fastpath --release --lib loom`.
//! - `fuzz/` for the cargo-fuzz target over the daemon's slot parsing, on the stable
//!   toolchain: `RUSTC_BOOTSTRAP=1 cargo fuzz run server_slots` from `fastpath/`.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![cfg(target_os = "linux")]

pub mod layout;
mod ring;
mod sync;

#[cfg(not(loom))]
mod client;
#[cfg(not(loom))]
mod data;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod region;
#[cfg(not(loom))]
mod server;
#[cfg(not(loom))]
mod sys;
#[cfg(not(loom))]
pub mod ticks;

#[cfg(not(loom))]
pub use client::{Client, ClientConfig, Response};
#[cfg(not(loom))]
pub use error::{
    AcceptError, CallError, Check, ConnectError, Corruption, Lane, OsError, RespondError, ServeError, Tag,
};
#[cfg(not(loom))]
pub use server::{Channel, Incoming, Listener, PeerCredentials, Placement, Request, ServerConfig};

#[cfg(all(not(loom), any(fuzzing, test)))]
#[doc(hidden)]
pub mod fuzz_support;
