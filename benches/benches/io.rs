//! Mediated I/O against std, on real files and loopback TCP: each group runs the same
//! operation as `std`, `shm` (trace2e over shared memory) and `grpc` (trace2e over gRPC).
//!
//! - `file_read/<variant>/{64B,4KiB,1MiB}`: `pread` at offset 0 of a page-cached file.
//! - `file_write/<variant>/{64B,4KiB,1MiB}`: `pwrite` at offset 0 (no fsync).
//! - `file_open_close/<variant>`: open a file for reading and close it (enroll + unenroll).
//! - `tcp_write/<variant>/64B`: a 64 B write to a loopback stream drained by a sink thread.
//! - `tcp_read/<variant>/64B`: a 64 B read from a loopback stream a source thread keeps full.
//! - `file_read_placement/<variant>/{other-core,same-core}`: the 64 B read with the bench
//!   pinned to one CPU and the daemon pinned to another CPU, or to the same one. The
//!   daemon's placement is irrelevant to `std`, measured under the same pinning. The
//!   daemon runs with its defaults in both: its channel thread polls for the next call
//!   (20 µs) only while the client runs on another CPU, so it polls in the first case
//!   and sleeps at once in the second.
//!
//! Run: `cargo bench -p trace2e-benches --bench io` (see `perf/README.md`).

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, measurement::WallTime};
use trace2e_benches::daemon::{Daemon, DaemonOptions};
use trace2e_benches::placement::{CpuSet, Placement};
use trace2e_benches::transport::Variants;
use trace2e_benches::{FEW_SAMPLES, MEASUREMENT, SAMPLES};

const SIZES: [(&str, usize); 3] = [("64B", 64), ("4KiB", 4096), ("1MiB", 1 << 20)];
const TCP_SIZE: usize = 64;

fn main() {
    let mut c = trace2e_benches::criterion(MEASUREMENT, SAMPLES);
    let daemon = Daemon::start(&DaemonOptions::default()).expect("start trace2ed");
    let dir = daemon.workdir("io").expect("bench directory");
    let variants = Variants::probe(&daemon, &dir);

    file_read(&mut c, &daemon, &variants, &dir);
    file_write(&mut c, &daemon, &variants, &dir);
    file_open_close(&mut c, &daemon, &variants, &dir);
    tcp_write(&mut c, &daemon, &variants);
    tcp_read(&mut c, &daemon, &variants);
    drop(daemon);
    file_read_placement(&mut c);

    c.final_summary();
}

/// Sets the group's sample count for an operation of `size` bytes.
fn samples_for(group: &mut BenchmarkGroup<'_, WallTime>, size: usize) {
    group.sample_size(if size >= 1 << 20 { FEW_SAMPLES } else { SAMPLES });
}

fn file_read(c: &mut Criterion, daemon: &Daemon, variants: &Variants, dir: &Path) {
    let path = dir.join("read.dat");
    std::fs::write(&path, vec![b'r'; 1 << 20]).unwrap();
    let mut group = c.benchmark_group("file_read");
    for (name, size) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        samples_for(&mut group, size);
        for &variant in &variants.all {
            variant.activate(daemon);
            let file = variant.open(&path).unwrap();
            let mut buf = vec![0u8; size];
            group.bench_function(BenchmarkId::new(variant.id(), name), |b| {
                b.iter(|| {
                    let n = file.read_at(&mut buf, 0).unwrap();
                    assert_eq!(n, size);
                    black_box(&buf);
                })
            });
        }
    }
    group.finish();
}

fn file_write(c: &mut Criterion, daemon: &Daemon, variants: &Variants, dir: &Path) {
    let mut group = c.benchmark_group("file_write");
    for (name, size) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        samples_for(&mut group, size);
        for &variant in &variants.all {
            // Same starting state for every variant: a fresh file of the written size.
            let path = dir.join(format!("write-{name}-{variant}.dat"));
            std::fs::write(&path, vec![0u8; size]).unwrap();
            variant.activate(daemon);
            let file = variant.open_write(&path).unwrap();
            let buf = vec![b'w'; size];
            group.bench_function(BenchmarkId::new(variant.id(), name), |b| {
                b.iter(|| {
                    let n = file.write_at(black_box(&buf), 0).unwrap();
                    assert_eq!(n, size);
                })
            });
        }
    }
    group.finish();
}

fn file_open_close(c: &mut Criterion, daemon: &Daemon, variants: &Variants, dir: &Path) {
    let path = dir.join("open.dat");
    std::fs::write(&path, b"open").unwrap();
    let mut group = c.benchmark_group("file_open_close");
    group.throughput(Throughput::Elements(1));
    for &variant in &variants.all {
        variant.activate(daemon);
        group.bench_function(BenchmarkId::from_parameter(variant.id()), |b| {
            b.iter(|| drop(black_box(variant.open(&path).unwrap())))
        });
    }
    group.finish();
}

/// A loopback listener whose accepted connections are handled by `peer` in a thread.
fn loopback_peer(peer: fn(std::net::TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || peer(stream));
        }
    });
    addr
}

/// Reads and discards everything until the client closes.
fn sink(mut stream: std::net::TcpStream) {
    let mut buf = vec![0u8; 1 << 16];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

/// Writes data until the client closes: the client's reads find data waiting.
fn source(mut stream: std::net::TcpStream) {
    let buf = vec![b's'; 1 << 16];
    while stream.write_all(&buf).is_ok() {}
}

fn tcp_write(c: &mut Criterion, daemon: &Daemon, variants: &Variants) {
    let addr = loopback_peer(sink);
    let mut group = c.benchmark_group("tcp_write");
    group.throughput(Throughput::Bytes(TCP_SIZE as u64));
    let buf = [b'w'; TCP_SIZE];
    for &variant in &variants.all {
        variant.activate(daemon);
        let mut stream = variant.connect(addr).unwrap();
        group.bench_function(BenchmarkId::new(variant.id(), "64B"), |b| {
            b.iter(|| {
                let n = stream.write(black_box(&buf)).unwrap();
                assert_eq!(n, TCP_SIZE);
            })
        });
    }
    group.finish();
}

fn tcp_read(c: &mut Criterion, daemon: &Daemon, variants: &Variants) {
    let addr = loopback_peer(source);
    let mut group = c.benchmark_group("tcp_read");
    group.throughput(Throughput::Bytes(TCP_SIZE as u64));
    let mut buf = [0u8; TCP_SIZE];
    for &variant in &variants.all {
        variant.activate(daemon);
        let mut stream = variant.connect(addr).unwrap();
        group.bench_function(BenchmarkId::new(variant.id(), "64B"), |b| {
            b.iter(|| {
                // One read, one flow; the source keeps the socket full, so a short read
                // is rare (and counted as one read all the same, in every variant).
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0);
                black_box(&buf);
            })
        });
    }
    group.finish();
}

fn file_read_placement(c: &mut Criterion) {
    let original = CpuSet::of_current_thread().expect("sched_getaffinity");
    let mut group = c.benchmark_group("file_read_placement");
    group.throughput(Throughput::Bytes(64));
    for placement in [Placement::OtherCore, Placement::SameCore] {
        let Some((bench_cpus, daemon_cpus)) = placement.cpus(original) else {
            println!("note: placement {} skipped: this process may use only CPUs {original:?}", placement.id());
            continue;
        };
        bench_cpus.pin_current_thread().expect("pin the bench thread");
        let options = DaemonOptions { cpus: Some(daemon_cpus), ..DaemonOptions::default() };
        let daemon = Daemon::start(&options).expect("start a pinned trace2ed");
        let dir = daemon.workdir("placement").unwrap();
        let path = dir.join("read.dat");
        std::fs::write(&path, vec![b'r'; 4096]).unwrap();
        println!("placement {}: bench on CPUs {bench_cpus:?}, daemon on CPUs {daemon_cpus:?}", placement.id());
        let variants = Variants::probe(&daemon, &dir);
        for &variant in &variants.all {
            // Activating after pinning: the client's threads inherit the bench's CPUs.
            variant.activate(&daemon);
            let file = variant.open(&path).unwrap();
            let mut buf = [0u8; 64];
            group.bench_function(BenchmarkId::new(variant.id(), placement.id()), |b| {
                b.iter(|| {
                    let n = file.read_at(&mut buf, 0).unwrap();
                    assert_eq!(n, 64);
                    black_box(&buf);
                })
            });
        }
        trace2e_io::reset_client_for_benchmarks();
        drop(daemon);
    }
    original.pin_current_thread().expect("restore the bench thread's CPUs");
    group.finish();
}
