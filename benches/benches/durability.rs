//! What durability costs a mediated 64 B read: the same read against a daemon started
//! `--ephemeral` (memory only), with `--data-dir` at the default flush interval (100 ms:
//! every grant is written into the journal's shared mapping before it is answered), and
//! with `--fsync-interval-ms 0` (every grant waits for a group-commit `fdatasync`).
//!
//! - `durability_read/<mode>/<placement>`: the 64 B `pread`, bench pinned to one CPU and
//!   the daemon to another (`other-core`), or both left to the scheduler (`unpinned`);
//!   `std` is the baseline under the same placement.
//! - `durability_throughput/<mode>/4`: four client processes (`t2e-load`) each reading
//!   its own file, one iteration being one read in every process at once.
//!
//! Besides criterion's output it prints each mode's overhead (trace2e − std, same run)
//! and the ratio to the ephemeral one, and writes
//! `target/criterion/durability/summary.json`.
//!
//! Run: `cargo bench -p trace2e-benches --bench durability` (see `perf/README.md`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Throughput};
use serde_json::json;
use trace2e_benches::daemon::{Daemon, DaemonOptions};
use trace2e_benches::placement::{CpuSet, Placement};
use trace2e_benches::summary::{criterion_median_ns, human_ns, write_summary};
use trace2e_benches::transport::Variant;
use trace2e_benches::workers::{LoadWorker, run_together};
use trace2e_benches::{FEW_SAMPLES, MEASUREMENT, SAMPLES};

/// The daemon's modes: (id, flags).
const MODES: [(&str, &[&str]); 3] =
    [("ephemeral", &["--ephemeral"]), ("durable", &[]), ("sync", &["--fsync-interval-ms", "0"])];
const PLACEMENTS: [&str; 2] = ["other-core", "unpinned"];
const PROCESSES: usize = 4;
const SHM: Variant = Variant::Traced("shm");

fn main() {
    let mut c = trace2e_benches::criterion(MEASUREMENT, SAMPLES);
    if !trace2e_benches::selected("durability") {
        return;
    }
    let original = CpuSet::of_current_thread().expect("sched_getaffinity");
    let mut group = c.benchmark_group("durability_read");
    group.throughput(Throughput::Bytes(64));
    for placement in PLACEMENTS {
        let cpus = match placement {
            "other-core" => match Placement::OtherCore.cpus(original) {
                Some(cpus) => Some(cpus),
                None => {
                    println!("note: placement other-core skipped: this process may use only CPUs {original:?}");
                    continue;
                }
            },
            _ => None,
        };
        if let Some((bench, _)) = cpus {
            bench.pin_current_thread().expect("pin the bench thread");
        }
        let mut std_done = false;
        for (mode, flags) in MODES {
            let options = DaemonOptions {
                cpus: cpus.map(|(_, daemon)| daemon),
                args: flags.iter().map(|f| (*f).to_owned()).collect(),
                ..DaemonOptions::default()
            };
            let daemon = Daemon::start(&options).expect("start trace2ed");
            let dir = daemon.workdir("durability").unwrap();
            let path = dir.join("read.dat");
            std::fs::write(&path, vec![b'r'; 4096]).unwrap();
            let variants: &[Variant] = if std_done { &[SHM] } else { &[Variant::Std, SHM] };
            for &variant in variants {
                variant.activate(&daemon);
                let file = variant.open(&path).unwrap();
                let mut buf = [0u8; 64];
                let id = if variant == Variant::Std { "std".to_owned() } else { mode.to_owned() };
                group.bench_function(BenchmarkId::new(id, placement), |b| {
                    b.iter(|| {
                        let n = file.read_at(&mut buf, 0).unwrap();
                        assert_eq!(n, 64);
                        black_box(&buf);
                    })
                });
            }
            std_done = true;
            trace2e_io::reset_client_for_benchmarks();
            drop(daemon);
        }
        original.pin_current_thread().expect("restore the bench thread's CPUs");
    }
    group.finish();

    let mut group = c.benchmark_group("durability_throughput");
    group.sample_size(FEW_SAMPLES).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(PROCESSES as u64));
    for (mode, flags) in MODES {
        let options = DaemonOptions { args: flags.iter().map(|f| (*f).to_owned()).collect(), ..Default::default() };
        let daemon = Daemon::start(&options).expect("start trace2ed");
        let dir = daemon.workdir("durability").unwrap();
        let mut workers: Vec<LoadWorker> = (0..PROCESSES)
            .map(|i| {
                let file = dir.join(format!("{mode}-{i}.dat"));
                std::fs::write(&file, vec![b't'; 4096]).unwrap();
                LoadWorker::spawn(&daemon, SHM, &file).expect("start t2e-load")
            })
            .collect();
        group.bench_function(BenchmarkId::new(mode, PROCESSES), |b| {
            b.iter_custom(|iters| run_together(&mut workers, iters).unwrap())
        });
        drop(workers);
        drop(daemon);
    }
    group.finish();
    summarize();
    c.final_summary();
}

/// Prints and writes each mode's overhead and throughput (criterion's medians).
fn summarize() {
    let mut reads = Vec::new();
    for placement in PLACEMENTS {
        let Some(std_ns) = criterion_median_ns("durability_read", "std", Some(placement)) else { continue };
        let ephemeral = criterion_median_ns("durability_read", "ephemeral", Some(placement)).map(|ns| ns - std_ns);
        for (mode, _) in MODES {
            let Some(ns) = criterion_median_ns("durability_read", mode, Some(placement)) else { continue };
            let overhead = ns - std_ns;
            let ratio = ephemeral.map(|e| overhead / e);
            println!(
                "durability 64 B read, {placement}, {mode}: {} ({} over std){}",
                human_ns(ns),
                human_ns(overhead),
                ratio.map_or(String::new(), |r| format!(", {r:.2}× the ephemeral overhead"))
            );
            reads.push(json!({"placement": placement, "mode": mode, "median_ns": ns, "overhead_ns": overhead,
                "ratio_to_ephemeral": ratio}));
        }
    }
    let mut throughput = Vec::new();
    for (mode, _) in MODES {
        let Some(ns) = criterion_median_ns("durability_throughput", mode, Some(&PROCESSES.to_string())) else {
            continue;
        };
        let per_sec = PROCESSES as f64 * 1e9 / ns;
        println!("durability throughput, {mode}, {PROCESSES} processes: {per_sec:.0} reads/s");
        throughput.push(json!({"mode": mode, "processes": PROCESSES, "reads_per_sec": per_sec}));
    }
    if reads.is_empty() && throughput.is_empty() {
        println!("no criterion estimates (test mode?): durability summary not written");
        return;
    }
    let path = write_summary("durability", &json!({"reads": reads, "throughput": throughput}))
        .expect("write the durability summary");
    println!("wrote {}", path.display());
}
