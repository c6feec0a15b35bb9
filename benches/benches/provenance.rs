//! Does a source's provenance size change the cost of reading it? Mediated 64 B reads of a
//! source whose provenance holds 0, 100 or 10 000 files (`provenance/<variant>/<n>`),
//! against the std read (`provenance/std`, once: std does not know about provenance).
//!
//! The provenance is built by real flows: the `t2e-prov` helper process reads n distinct
//! files, then writes the source (so its provenance is the n files plus that process);
//! the 0 source is written with std. The count the daemon reports is printed.
//!
//! Order matters and is the same for every transport: sizes ascending, transports inside,
//! because each read also adds the source's provenance to the bench process's own.
//!
//! Run: `cargo bench -p trace2e-benches --bench provenance` (see `perf/README.md`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use criterion::{BenchmarkId, Throughput};
use trace2e_benches::daemon::{Daemon, DaemonOptions, binary};
use trace2e_benches::transport::{Variant, Variants};
use trace2e_benches::{MEASUREMENT, SAMPLES, full_run};

fn main() {
    let mut c = trace2e_benches::criterion(MEASUREMENT, SAMPLES);
    if !trace2e_benches::selected("provenance") {
        return;
    }
    // A smoke test (`cargo test --benches`) builds a small provenance only.
    let sizes: [usize; 3] = if full_run() { [0, 100, 10_000] } else { [0, 10, 100] };
    let daemon = Daemon::start(&DaemonOptions::default()).expect("start trace2ed");
    let dir = daemon.workdir("provenance").expect("bench directory");
    let variants = Variants::probe(&daemon, &dir);
    let builder = variants.traced().next().expect("no trace2e transport works: nothing to measure");

    let sources: Vec<(usize, PathBuf)> =
        sizes.iter().map(|&n| (n, source_with_provenance(&daemon, builder, &dir, n))).collect();

    let mut group = c.benchmark_group("provenance");
    group.throughput(Throughput::Bytes(64));
    let mut buf = [0u8; 64];
    let std_file = Variant::Std.open(&sources[0].1).unwrap();
    group.bench_function(BenchmarkId::from_parameter("std"), |b| {
        b.iter(|| {
            assert_eq!(std_file.read_at(&mut buf, 0).unwrap(), 64);
            black_box(&buf);
        })
    });
    for (n, source) in &sources {
        for variant in variants.traced() {
            variant.activate(&daemon);
            let file = variant.open(source).unwrap();
            group.bench_function(BenchmarkId::new(variant.id(), n), |b| {
                b.iter(|| {
                    assert_eq!(file.read_at(&mut buf, 0).unwrap(), 64);
                    black_box(&buf);
                })
            });
        }
    }
    group.finish();
    c.final_summary();
}

/// A 4 KiB source file whose provenance holds `n` files (and, for n > 0, the process that
/// wrote it), built by real flows over `builder`'s transport.
fn source_with_provenance(daemon: &Daemon, builder: Variant, dir: &Path, n: usize) -> PathBuf {
    let source = dir.join(format!("source-{n}.dat"));
    if n == 0 {
        std::fs::write(&source, vec![b's'; 4096]).unwrap();
    } else {
        let inputs = dir.join(format!("inputs-{n}"));
        std::fs::create_dir_all(&inputs).unwrap();
        for i in 0..n {
            std::fs::write(inputs.join(format!("{i:05}.dat")), [b'i'; 64]).unwrap();
        }
        let helper = binary("trace2e-benches", "t2e-prov").unwrap();
        let start = Instant::now();
        let out = Command::new(helper)
            .arg(&inputs)
            .arg(&source)
            .env("TRACE2E_SOCKET", daemon.socket_for(builder.id()))
            .env("TRACE2E_TRANSPORT", builder.id())
            .env_remove("TRACE2E_GRPC_SOCKET")
            .output()
            .unwrap();
        assert!(out.status.success(), "t2e-prov failed: {}", String::from_utf8_lossy(&out.stderr));
        println!("provenance of {n} files built over {builder} in {:.1?}", start.elapsed());
    }
    match daemon.cli_json(&["provenance", source.to_str().unwrap()]) {
        Ok(answer) => {
            let count = answer.get("provenance").and_then(|p| p.as_array()).map(Vec::len);
            match count {
                Some(count) => println!("source-{n}: the daemon reports {count} provenance entries"),
                None => println!("source-{n}: unexpected provenance answer: {answer}"),
            }
        }
        Err(e) => println!("source-{n}: could not query its provenance: {e}"),
    }
    source
}
