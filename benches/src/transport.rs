//! The three ways every bench performs its operation ([`Variant`]), switching trace2e's
//! transport inside the bench process, and opening files and streams the chosen way.
//!
//! Switching sets `TRACE2E_SOCKET` and `TRACE2E_TRANSPORT` and drops trace2e-io's
//! process-global client, so the next mediated operation creates a client of the new
//! transport. Descriptors enrolled through the old client are not re-enrolled: open
//! files and streams *after* switching.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::daemon::Daemon;

/// trace2e's transports, in the order the benches run them.
pub const TRANSPORTS: [&str; 2] = ["shm", "grpc"];

/// One way of performing a bench's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `std::fs` / `std::net`, no daemon: the baseline.
    Std,
    /// `trace2e_io` over the named transport.
    Traced(&'static str),
}

impl Variant {
    /// The criterion function id: `std`, `shm` or `grpc`.
    pub fn id(self) -> &'static str {
        match self {
            Variant::Std => "std",
            Variant::Traced(t) => t,
        }
    }

    /// Makes this variant's transport the current one (nothing for [`Variant::Std`]).
    /// Open files and streams after this call.
    pub fn activate(self, daemon: &Daemon) {
        if let Variant::Traced(transport) = self {
            switch_transport(daemon, transport);
        }
    }

    /// Opens `path` for reading this variant's way.
    pub fn open(self, path: &Path) -> io::Result<BenchFile> {
        Ok(match self {
            Variant::Std => BenchFile::Std(std::fs::File::open(path)?),
            Variant::Traced(_) => BenchFile::Traced(trace2e_io::fs::File::open(path)?),
        })
    }

    /// Opens `path` for writing (creating it, not truncating it) this variant's way.
    pub fn open_write(self, path: &Path) -> io::Result<BenchFile> {
        Ok(match self {
            Variant::Std => {
                BenchFile::Std(std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?)
            }
            Variant::Traced(_) => BenchFile::Traced(
                trace2e_io::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?,
            ),
        })
    }

    /// Connects to `addr` this variant's way, with `TCP_NODELAY`.
    pub fn connect(self, addr: SocketAddr) -> io::Result<BenchStream> {
        let stream = match self {
            Variant::Std => BenchStream::Std(std::net::TcpStream::connect(addr)?),
            Variant::Traced(_) => BenchStream::Traced(trace2e_io::net::TcpStream::connect(addr)?),
        };
        match &stream {
            BenchStream::Std(s) => s.set_nodelay(true)?,
            BenchStream::Traced(s) => s.set_nodelay(true)?,
        }
        Ok(stream)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Points trace2e-io at `daemon` over `transport` and drops its current client.
pub fn switch_transport(daemon: &Daemon, transport: &str) {
    // SAFETY: called from a bench's main thread between measurements, when no other
    // thread of this process reads the environment (the trace2e-io client that could is
    // dropped right after, and the peer threads of the TCP benches do not read it).
    unsafe {
        std::env::set_var("TRACE2E_SOCKET", daemon.socket_for(transport));
        std::env::set_var("TRACE2E_TRANSPORT", transport);
        std::env::remove_var("TRACE2E_GRPC_SOCKET");
    }
    trace2e_io::reset_client_for_benchmarks();
}

/// The variants a bench runs: `std`, then every transport trace2e-io can create now.
#[derive(Debug, Clone)]
pub struct Variants {
    /// `std` first, then the transports in [`TRANSPORTS`] order.
    pub all: Vec<Variant>,
}

impl Variants {
    /// Probes each transport with one mediated operation (opening a file in `dir`) and
    /// keeps those that work. A transport trace2e-io does not know yet (its client fails
    /// as misconfigured) is skipped with a note; any other failure is skipped with a
    /// warning, so that one broken transport does not hide the others' numbers.
    pub fn probe(daemon: &Daemon, dir: &Path) -> Variants {
        let probe = dir.join("transport-probe");
        std::fs::write(&probe, b"probe").expect("write the probe file");
        let mut all = vec![Variant::Std];
        for transport in TRANSPORTS {
            switch_transport(daemon, transport);
            match trace2e_io::fs::File::open(&probe) {
                Ok(_) => all.push(Variant::Traced(transport)),
                Err(e) => match trace2e_io::DaemonUnavailable::of(&e) {
                    Some(u) if u.kind() == trace2e_io::UnavailableKind::Misconfigured => {
                        println!("note: transport {transport:?} skipped: trace2e-io cannot create it yet ({u})");
                    }
                    _ => println!("WARNING: transport {transport:?} skipped: it failed: {e}"),
                },
            }
        }
        trace2e_io::reset_client_for_benchmarks();
        let ids: Vec<_> = all.iter().map(|v| v.id()).collect();
        println!("variants: {}", ids.join(", "));
        Variants { all }
    }

    /// The mediated variants only.
    pub fn traced(&self) -> impl Iterator<Item = Variant> + '_ {
        self.all.iter().copied().filter(|v| *v != Variant::Std)
    }
}

/// A file opened the std way or the trace2e way. Every variant goes through this same
/// enum, so the dispatch costs the same in all of them.
#[derive(Debug)]
pub enum BenchFile {
    /// A std file.
    Std(std::fs::File),
    /// A trace2e-io file.
    Traced(trace2e_io::fs::File),
}

impl BenchFile {
    /// `pread`: one flow for trace2e.
    #[inline]
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            BenchFile::Std(f) => f.read_at(buf, offset),
            BenchFile::Traced(f) => f.read_at(buf, offset),
        }
    }

    /// `pwrite`: one flow for trace2e.
    #[inline]
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        match self {
            BenchFile::Std(f) => f.write_at(buf, offset),
            BenchFile::Traced(f) => f.write_at(buf, offset),
        }
    }
}

/// A TCP stream opened the std way or the trace2e way.
#[derive(Debug)]
pub enum BenchStream {
    /// A std stream.
    Std(std::net::TcpStream),
    /// A trace2e-io stream.
    Traced(trace2e_io::net::TcpStream),
}

impl Read for BenchStream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BenchStream::Std(s) => s.read(buf),
            BenchStream::Traced(s) => s.read(buf),
        }
    }
}

impl Write for BenchStream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BenchStream::Std(s) => s.write(buf),
            BenchStream::Traced(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
