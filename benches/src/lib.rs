//! Benchmark support for trace2e: a real `trace2ed` to measure against, the switch between
//! trace2e's transports inside one bench process, CPU placement, helper client processes,
//! and the JSON summaries the report generator (`perf/report.py`) reads.
//!
//! Every bench pairs the same operation three ways: `std` (the baseline, no daemon),
//! `shm` (trace2e over shared memory) and `grpc` (trace2e over its gRPC transport). A
//! transport the io crate cannot create yet is skipped with a printed note
//! ([`transport::Variants::probe`]), so a new transport shows up in the benches as soon
//! as `trace2e-io` accepts its `TRACE2E_TRANSPORT` value.
//!
//! The benches are in `benches/benches/`; how to run them and produce the report is in
//! `perf/README.md`.

pub mod daemon;
pub mod placement;
pub mod summary;
pub mod transport;
pub mod workers;

use std::time::Duration;

/// Whether the bench runs for real (`cargo bench`, which passes `--bench`) rather than as
/// a smoke test (`cargo test --benches`, or `-- --test`/`--list`). Expensive setups use
/// smaller sizes when this is false, so that a smoke test stays quick.
pub fn full_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// Whether the benchmarks named `name` (a group, e.g. `throughput`) are selected by the
/// command line's filter (`cargo bench -- FILTER`), so that a bench can skip an expensive
/// setup whose results would be filtered out. Criterion's filter is a regex; a plain
/// substring match in either direction approximates it well enough for that purpose.
pub fn selected(name: &str) -> bool {
    // criterion's options that take a value: their value is not a filter.
    const VALUED: [&str; 16] = [
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--format",
        "--color",
        "--output-format",
        "--plotting-backend",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters = Vec::new();
    let mut skip_next = false;
    for arg in &args {
        if skip_next {
            skip_next = false;
        } else if arg.starts_with('-') {
            skip_next = VALUED.contains(&arg.as_str());
        } else {
            filters.push(arg.as_str());
        }
    }
    filters.is_empty() || filters.iter().any(|f| name.contains(f) || f.contains(name))
}

/// Criterion timing shared by the benches: short enough that the whole suite takes a few
/// minutes on a 2-core machine. Warm-up per benchmark.
pub const WARM_UP: Duration = Duration::from_secs(1);
/// Measurement time per benchmark.
pub const MEASUREMENT: Duration = Duration::from_secs(3);
/// Samples per benchmark.
pub const SAMPLES: usize = 40;
/// Samples for benchmarks whose iterations are long (1 MiB I/O, multi-process runs).
pub const FEW_SAMPLES: usize = 15;

/// A criterion runner with the shared warm-up, this measurement time and sample count,
/// then the command line's settings (which win).
pub fn criterion(measurement: Duration, samples: usize) -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(WARM_UP)
        .measurement_time(measurement)
        .sample_size(samples)
        .configure_from_args()
}
