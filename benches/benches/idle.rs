//! The CPU an idle daemon uses: with no client, then with 100 attached idle clients (each
//! did one mediated 64 B read on its own file, then waits), per transport.
//!
//! The daemon's CPU time is the sum over its threads of the time they ran
//! (`/proc/<pid>/task/*/schedstat`, ns), over a 5 s window after a 1 s settling pause;
//! `/proc/<pid>/stat` utime+stime (clock ticks) is printed as a cross-check. The result is
//! in percent of one core, printed and written to `target/criterion/idle/summary.json`.
//!
//! Not a criterion bench (nothing to iterate): a plain `main`, run by
//! `cargo bench -p trace2e-benches --bench idle` (see `perf/README.md`).

use std::time::{Duration, Instant};

use serde_json::json;
use trace2e_benches::daemon::{Daemon, DaemonOptions};
use trace2e_benches::summary::write_summary;
use trace2e_benches::transport::Variants;
use trace2e_benches::workers::LoadWorker;
use trace2e_benches::{full_run, selected};

fn main() {
    if !selected("idle") {
        return;
    }
    let full = full_run();
    let (clients, settle, window) = if full {
        (100, Duration::from_secs(1), Duration::from_secs(5))
    } else {
        (5, Duration::ZERO, Duration::from_millis(200))
    };

    let mut results = Vec::new();
    let probe_daemon = Daemon::start(&DaemonOptions::default()).expect("start trace2ed");
    let variants = Variants::probe(&probe_daemon, &probe_daemon.workdir("probe").unwrap());
    drop(probe_daemon);

    for variant in variants.traced() {
        // A fresh daemon per transport: the other transport's clients leave no trace.
        let daemon = Daemon::start(&DaemonOptions::default()).expect("start trace2ed");
        let dir = daemon.workdir("idle").unwrap();
        std::thread::sleep(settle);
        let empty = daemon_cpu(daemon.pid(), window);
        println!("idle {variant}: daemon with 0 clients: {empty}");
        results.push(json!({ "variant": variant.id(), "clients": 0, "cpu_percent": empty.percent(),
                             "window_s": window.as_secs_f64() }));

        let start = Instant::now();
        let workers: Vec<LoadWorker> = (0..clients)
            .map(|i| {
                let file = dir.join(format!("idle-{i}.dat"));
                std::fs::write(&file, [b'i'; 64]).unwrap();
                LoadWorker::spawn(&daemon, variant, &file).expect("start t2e-load")
            })
            .collect();
        println!("idle {variant}: {clients} clients attached in {:.1?}", start.elapsed());
        std::thread::sleep(settle);
        let busy = daemon_cpu(daemon.pid(), window);
        println!("idle {variant}: daemon with {clients} idle clients: {busy}");
        results.push(json!({ "variant": variant.id(), "clients": clients, "cpu_percent": busy.percent(),
                             "window_s": window.as_secs_f64() }));
        drop(workers);
    }

    if full {
        let path = write_summary("idle", &json!({ "results": results })).expect("write the idle summary");
        println!("wrote {}", path.display());
    } else {
        println!("smoke test: idle summary not written");
    }
}

/// CPU a process used over a window.
#[derive(Debug, Clone, Copy)]
struct CpuUse {
    /// Sum of its threads' run time (schedstat), ns.
    run_ns: u64,
    /// utime + stime (stat), in seconds.
    ticks_s: f64,
    window: Duration,
}

impl CpuUse {
    /// Percent of one core, from the precise (schedstat) figure.
    fn percent(self) -> f64 {
        self.run_ns as f64 / self.window.as_nanos() as f64 * 100.0
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ticks = self.ticks_s / self.window.as_secs_f64() * 100.0;
        write!(f, "{:.3} % of a core (schedstat; utime+stime says {ticks:.2} %)", self.percent())
    }
}

/// Measures the CPU `pid` uses during `window`.
fn daemon_cpu(pid: u32, window: Duration) -> CpuUse {
    let (run0, ticks0) = (run_ns(pid), ticks_s(pid));
    let start = Instant::now();
    std::thread::sleep(window);
    let (run1, ticks1) = (run_ns(pid), ticks_s(pid));
    let window = start.elapsed();
    CpuUse { run_ns: run1.saturating_sub(run0), ticks_s: ticks1 - ticks0, window }
}

/// Total run time of the threads of `pid` (first field of each task's schedstat).
fn run_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// utime + stime of `pid` (all threads, including exited ones), in seconds.
fn ticks_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the parenthesised command name (which may contain spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (field(14) + field(15)) as f64 / hz
}
