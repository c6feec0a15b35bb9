//! Total mediated 64 B reads per second with 1, 2 and 4 client processes, each reading its
//! own file (`throughput/<variant>/<processes>`), std processes as the baseline.
//!
//! The workers (`t2e-load`) are started, attached and warmed before measuring; one
//! criterion iteration is one 64 B read *in every worker at once*, timed by the bench
//! from "go" to the last worker's "done" (so the throughput is `processes` reads per
//! iteration). Nothing is pinned: the scheduler places workers and daemon.
//!
//! Besides criterion's own output, the reads/s are printed and written to
//! `target/criterion/throughput/summary.json` for the report.
//!
//! Run: `cargo bench -p trace2e-benches --bench throughput` (see `perf/README.md`).

use std::time::Duration;

use criterion::{BenchmarkId, Throughput};
use serde_json::json;
use trace2e_benches::FEW_SAMPLES;
use trace2e_benches::daemon::{Daemon, DaemonOptions};
use trace2e_benches::summary::{criterion_median_ns, write_summary};
use trace2e_benches::transport::Variants;
use trace2e_benches::workers::{LoadWorker, READ_SIZE, run_together};

const PROCESSES: [usize; 3] = [1, 2, 4];

fn main() {
    let mut c = trace2e_benches::criterion(Duration::from_secs(4), FEW_SAMPLES);
    if !trace2e_benches::selected("throughput") {
        return;
    }
    let daemon = Daemon::start(&DaemonOptions::default()).expect("start trace2ed");
    let dir = daemon.workdir("throughput").expect("bench directory");
    let variants = Variants::probe(&daemon, &dir);

    let mut group = c.benchmark_group("throughput");
    for &variant in &variants.all {
        for processes in PROCESSES {
            let mut workers: Vec<LoadWorker> = (0..processes)
                .map(|i| {
                    let file = dir.join(format!("{variant}-{processes}-{i}.dat"));
                    std::fs::write(&file, vec![b't'; 4096]).unwrap();
                    LoadWorker::spawn(&daemon, variant, &file).expect("start t2e-load")
                })
                .collect();
            group.throughput(Throughput::Elements(processes as u64));
            group.bench_function(BenchmarkId::new(variant.id(), processes), |b| {
                b.iter_custom(|iters| run_together(&mut workers, iters).unwrap())
            });
        }
    }
    group.finish();

    let mut results = Vec::new();
    for &variant in &variants.all {
        for processes in PROCESSES {
            let Some(ns) = criterion_median_ns("throughput", variant.id(), Some(&processes.to_string())) else {
                continue;
            };
            let reads_per_sec = processes as f64 * 1e9 / ns;
            println!("throughput {variant} × {processes} processes: {reads_per_sec:.0} reads/s of {READ_SIZE} B");
            results.push(json!({ "variant": variant.id(), "processes": processes, "reads_per_sec": reads_per_sec }));
        }
    }
    if results.is_empty() {
        println!("no criterion estimates (test mode?): throughput summary not written");
    } else {
        let summary = json!({ "read_size": READ_SIZE, "cpus": available_cpus(), "results": results });
        let path = write_summary("throughput", &summary).expect("write the throughput summary");
        println!("wrote {}", path.display());
    }
    c.final_summary();
}

fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
