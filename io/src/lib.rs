//! `trace2e-io`: drop-in replacements for [`std::fs`] and [`std::net`] whose every read
//! and write is mediated by the local trace2e daemon.
//!
//! Replace `use std::fs::File` with `use trace2e_io::fs::File` (and `std::net::TcpStream`
//! with `trace2e_io::net::TcpStream`): the names and signatures are std's. Opening a file
//! or a stream *enrolls* its descriptor with the daemon; each read or write is one
//! *flow*: the daemon is asked first, the std operation runs only if the flow is granted,
//! then its outcome is reported so the daemon can update provenance. Closing unenrolls.
//! The types implement [`Read`](std::io::Read)/[`Write`](std::io::Write) themselves, so
//! generic code (`io::copy`, `BufReader`, `serde_json::from_reader`) is mediated too.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use trace2e_io::fs::File;
//!
//! fn main() -> std::io::Result<()> {
//!     let mut cv = String::new();
//!     File::open("/data/cv.txt")?.read_to_string(&mut cv)?; // a read flow
//!     if let Err(e) = File::create("/tmp/copy.txt")?.write_all(cv.as_bytes()) {
//!         match trace2e_io::Denied::of(&e) {
//!             Some(denied) => eprintln!("refused: {denied}"), // e.g. secret data
//!             None => return Err(e),
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Errors
//!
//! Signatures are std's, so trace2e's failures are [`std::io::Error`]s:
//! - a refused flow: [`ErrorKind::PermissionDenied`](std::io::ErrorKind::PermissionDenied)
//!   carrying a [`Denied`] (policy, resource, reason); the I/O was not performed;
//! - a daemon that cannot be asked (not running, timed out, misconfigured client):
//!   [`ErrorKind::NotConnected`](std::io::ErrorKind::NotConnected) carrying a
//!   [`DaemonUnavailable`]; the I/O was not performed (fail closed), and opening fails too;
//! - a report that fails *after* the I/O happened is logged (`tracing` warning) and the
//!   I/O's result is returned: data is never lost to a bookkeeping failure;
//! - a daemon that goes away after this process attached (a restart, a crash) is waited
//!   for: the I/O retries attaching for up to `TRACE2E_TIMEOUT_MS`, then fails closed as
//!   above. Once it is back, open files and streams are enrolled again by themselves and
//!   the process keeps its provenance (its `process://PID.STARTTIME` is the same).
//!
//! # Configuration
//!
//! `TRACE2E_SOCKET` (daemon socket, default `/run/trace2e/p2m.sock`), `TRACE2E_TRANSPORT`
//! (`shm`, the default, or `grpc`), `TRACE2E_TIMEOUT_MS` (flow request deadline, default
//! 60 000) are read when the process-global client is created: on first use, and again in
//! a forked child (the daemon identifies processes by their socket's credentials, never by
//! a message field).
//! `TRACE2E_BIND_ADDR` sets the local address of outgoing connections (see [`net`]).
//!
//! # Where to look next
//!
//! [`fs`] and [`net`] for the replaced types; the crate's `transport` module for the
//! seam between this crate and the daemon.
//!
//! # Transports
//!
//! Requests and reports travel through lock-free rings in shared memory
//! (`trace2e-fastpath`): a memfd the daemon hands this process on first use, one lane per
//! thread. P2M over gRPC is the baseline that transport is measured against (`benches/`);
//! it is compiled only with this crate's `grpc` cargo feature, off by default so that an
//! application links no tonic, hyper, prost or tokio. Without the feature,
//! `TRACE2E_TRANSPORT=grpc` makes every mediated operation fail with
//! [`ErrorKind::NotConnected`](std::io::ErrorKind::NotConnected) and a
//! [`DaemonUnavailable`] of kind [`Misconfigured`](UnavailableKind::Misconfigured) that
//! says so.

pub mod fs;
pub mod net;

mod breakdown;
mod error;
mod mediation;
mod transport;

#[doc(hidden)]
pub use breakdown::breakdown_snapshot;
pub use error::{DaemonUnavailable, Denied, UnavailableKind};
pub use trace2e_proto::{Denial, Direction, LocalizedResource, PolicyKind};
#[doc(hidden)]
pub use transport::reset_client_for_benchmarks;

#[cfg(test)]
mod tests {
    fn shareable<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync_like_std() {
        shareable::<crate::fs::File>();
        shareable::<crate::fs::OpenOptions>();
        shareable::<crate::net::TcpStream>();
        shareable::<crate::net::TcpListener>();
        shareable::<crate::Denied>();
        shareable::<crate::DaemonUnavailable>();
    }
}
