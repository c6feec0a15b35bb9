//! Federation cost in the steady state: a write to a TCP stream whose peer is another
//! managed node, std against trace2e.
//!
//! - `cross_node_stream_write/std/64B`: a 64 B write to a loopback stream drained by a
//!   sink thread.
//! - `cross_node_stream_write/trace2e/64B`: the same through `trace2e-io`, with two daemons
//!   on loopback (node-a on 127.0.0.2, the writer's; node-b on 127.0.0.3, owning the sink's
//!   address), federated over M2M. The first write reserves node-b's side of the stream and
//!   pushes the provenance (two M2M round trips); every later write of the unchanged
//!   provenance is decided by node-a alone (`Engine::shortcut` in the daemon), so this
//!   measures the local P2M cost, not M2M.
//!
//! Run: `cargo bench -p trace2e-benches --bench cross_node`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use criterion::{BenchmarkId, Throughput};
use trace2e_benches::daemon::binary;
use trace2e_benches::{MEASUREMENT, SAMPLES};

const SIZE: usize = 64;

/// A federated `trace2ed` (stopped on drop; its directory goes with it).
struct Node {
    /// Declared before `dir`: the daemon stops before its directory is removed.
    _running: trace2e_daemon::launch::Running,
    dir: tempfile::TempDir,
}

impl Node {
    fn start(name: &str, ip: &str, m2m: u16, peer: &str) -> Node {
        let dir = tempfile::Builder::new().prefix("trace2e-bench-").tempdir().unwrap();
        let mut cmd = Command::new(binary("trace2e-daemon", "trace2ed").unwrap());
        cmd.args(["--node", name, "--address", ip, "--m2m-listen", &format!("{ip}:{m2m}"), "--peer", peer])
            .arg("--p2m-socket")
            .arg(dir.path().join("p2m.sock"))
            .arg("--o2m-socket")
            .arg(dir.path().join("o2m.sock"))
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        let running = trace2e_daemon::launch::start(cmd, &dir.path().join("trace2ed.log"), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Node { _running: running, dir }
    }

    fn p2m(&self) -> PathBuf {
        self.dir.path().join("p2m.sock")
    }
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// A listener on `ip` whose connections are drained by a thread each.
fn sink(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

fn main() {
    let mut c = trace2e_benches::criterion(MEASUREMENT, SAMPLES);
    let (a_ip, b_ip) = ("127.0.0.2", "127.0.0.3");
    let (a_port, b_port) = (free_port(a_ip), free_port(b_ip));
    let a = Node::start("node-a", a_ip, a_port, &format!("node-b={b_ip}:{b_port}"));
    let _b = Node::start("node-b", b_ip, b_port, &format!("node-a={a_ip}:{a_port}"));
    // SAFETY: set before any thread of this process reads the environment (the sink
    // threads and trace2e-io's client start afterwards).
    unsafe {
        std::env::set_var("TRACE2E_SOCKET", a.p2m());
        std::env::set_var("TRACE2E_BIND_ADDR", a_ip);
    }
    let target = sink(b_ip);
    let data = [b'x'; SIZE];

    let mut group = c.benchmark_group("cross_node_stream_write");
    group.throughput(Throughput::Bytes(SIZE as u64));
    {
        let mut stream = std::net::TcpStream::connect(target).unwrap();
        stream.set_nodelay(true).unwrap();
        group.bench_function(BenchmarkId::new("std", "64B"), |b| {
            b.iter(|| stream.write_all(black_box(&data)).unwrap());
        });
    }
    {
        let mut stream = trace2e_io::net::TcpStream::connect(target).expect("connect through trace2e");
        // The first write pays the M2M protocol; the steady state is what is measured.
        stream.write_all(&data).unwrap();
        group.bench_function(BenchmarkId::new("trace2e", "64B"), |b| {
            b.iter(|| stream.write_all(black_box(&data)).unwrap());
        });
    }
    group.finish();
    c.final_summary();
}
