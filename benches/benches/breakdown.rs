//! Where the time of one mediated 64 B file read goes (the paper's Fig. 10): per transport,
//! the std read, the whole mediated read, and the overhead split into stages, printed as
//! a table and written to `target/criterion/breakdown/summary.json`.
//!
//! Both sides run with `TRACE2E_BREAKDOWN=1` and keep cumulative time per stage; the bench
//! takes the difference around its measurement and divides by the number of reads:
//! - the client (this process): `trace2e_io::breakdown_snapshot()` — `client_encode`,
//!   `client_round_trip` (hand the request to the transport … have the answer);
//! - the daemon: the `breakdown` field of `trace2e status --format json`,
//!   `{"stages": [{"name", "total_ns", "count"}]}` — `daemon_to_answer` (take a flow
//!   request … publish its answer), `daemon_service` (all the daemon does for a message,
//!   requests and reports) and, inside it, `daemon_codec`, `reservation`, `compliance`,
//!   `provenance_update`, `audit_append`. (`{"name": {"total_ns": …}}` and
//!   `{"name": ns}` maps are accepted too.)
//!
//! The overhead is split two ways, because not all of the daemon's work is in the
//! client's wait: reports are posted one-way, and a grant is answered before its audit
//! record is written, so with the daemon on another CPU that work runs beside the
//! client's own.
//! - **The client's critical path** ([`critical_path`]), disjoint parts that add up to
//!   the overhead: client encode; hand-off and wait = client round trip − daemon to
//!   answer (which includes the daemon finishing the previous report when the next
//!   request comes right behind it); daemon to answer; client rest = overhead − those
//!   (decoding the answer, posting the report — over gRPC a second call — and the
//!   library's bookkeeping; with daemon and client on one CPU, also the daemon's work
//!   that runs while the client waits for the CPU).
//! - **The daemon's work per read** ([`daemon_work`]), by stage: codec, reservation,
//!   compliance, provenance update, audit append, other (service − those), and the
//!   service total, which may exceed what the client waits for.
//!
//! Timing adds two clock reads per stage, so the mediated totals here are slightly above
//! the `io` bench's.
//!
//! Not a criterion bench (its result is a split, not a distribution): a plain `main`, run
//! by `cargo bench -p trace2e-benches --bench breakdown` (see `perf/README.md`).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trace2e_benches::daemon::{Daemon, DaemonOptions};
use trace2e_benches::summary::{human_ns, write_summary};
use trace2e_benches::transport::{BenchFile, Variant, Variants};
use trace2e_benches::{full_run, selected};

/// The daemon's stages nested inside `daemon_service`, in flow order.
const DAEMON_STAGES: [&str; 5] = ["daemon_codec", "reservation", "compliance", "provenance_update", "audit_append"];

/// Time per stage: name → ns per read.
type Stages = BTreeMap<String, f64>;

/// Cumulative time and count per stage: name → (total ns, count; NaN when not reported).
type Cumulative = BTreeMap<String, (f64, f64)>;

/// One transport's result.
#[derive(Debug)]
struct Row {
    variant: Variant,
    /// Median ns per mediated read.
    total_ns: f64,
    /// ns per read per stage, if any source exposes them.
    stages: Option<Stages>,
}

fn main() {
    if !selected("breakdown") {
        return;
    }
    let full = full_run();
    let (batches, batch_time) = if full { (31, Duration::from_millis(60)) } else { (3, Duration::from_millis(5)) };
    // SAFETY: single-threaded here: no trace2e client nor other thread exists yet.
    unsafe { std::env::set_var("TRACE2E_BREAKDOWN", "1") };
    let options = DaemonOptions { env: vec![("TRACE2E_BREAKDOWN".into(), "1".into())], ..DaemonOptions::default() };
    let daemon = Daemon::start(&options).expect("start trace2ed");
    let dir = daemon.workdir("breakdown").unwrap();
    let path = dir.join("read.dat");
    std::fs::write(&path, vec![b'b'; 4096]).unwrap();
    let variants = Variants::probe(&daemon, &dir);

    let mut std_ns = f64::NAN;
    let mut rows = Vec::new();
    for &variant in &variants.all {
        variant.activate(&daemon);
        let file = variant.open(&path).unwrap();
        let per_batch = calibrate(&file, batch_time);
        let before = stages(&daemon, variant);
        let (median_ns, reads) = measure(&file, per_batch, batches);
        let after = stages(&daemon, variant);
        if variant == Variant::Std {
            std_ns = median_ns;
            continue;
        }
        let per_read: Option<Stages> = before.zip(after).map(|(b, a)| {
            // A stage whose count did not move is not timed on this transport's path.
            a.iter()
                .filter(|(name, (_, count))| b.get(*name).is_none_or(|(_, c0)| count != c0))
                .map(|(name, (total, _))| (name.clone(), (total - b.get(name).map_or(0.0, |x| x.0)) / reads as f64))
                .collect()
        });
        rows.push(Row { variant, total_ns: median_ns, stages: per_read });
    }

    print_table(std_ns, &rows);
    let available = rows.iter().any(|r| r.stages.is_some());
    let summary = json!({
        "operation": "file_read 64B (pread)",
        "std_ns": std_ns,
        "breakdown_available": available,
        "variants": rows.iter().map(|row| {
            let overhead = row.total_ns - std_ns;
            let listed = |parts: Vec<(String, f64)>| {
                parts.into_iter().map(|(n, ns)| json!({"name": n, "ns": ns})).collect::<Vec<_>>()
            };
            json!({
                "variant": row.variant.id(),
                "total_ns": row.total_ns,
                "overhead_ns": overhead,
                "stages": listed(critical_path(row.stages.as_ref(), overhead)),
                "daemon_work": listed(daemon_work(row.stages.as_ref())),
                "raw_stages": row.stages,
            })
        }).collect::<Vec<_>>(),
    });
    if full {
        let path = write_summary("breakdown", &summary).expect("write the breakdown summary");
        println!("wrote {}", path.display());
    }
}

/// Reads per batch so that a batch lasts about `batch_time` (after a short warm-up).
fn calibrate(file: &BenchFile, batch_time: Duration) -> u64 {
    let mut n = 16u64;
    loop {
        let start = Instant::now();
        read_n(file, n);
        let took = start.elapsed();
        if took >= batch_time / 4 {
            return (n as f64 * batch_time.as_secs_f64() / took.as_secs_f64()).ceil().max(1.0) as u64;
        }
        n *= 2;
    }
}

/// The median over `batches` batches of the mean ns per read, and the reads performed.
fn measure(file: &BenchFile, per_batch: u64, batches: usize) -> (f64, u64) {
    let mut means: Vec<f64> = (0..batches)
        .map(|_| {
            let start = Instant::now();
            read_n(file, per_batch);
            start.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    (means[means.len() / 2], per_batch * batches as u64)
}

fn read_n(file: &BenchFile, n: u64) {
    let mut buf = [0u8; 64];
    for _ in 0..n {
        assert_eq!(file.read_at(&mut buf, 0).unwrap(), 64);
        black_box(&buf);
    }
}

/// The cumulative stage times of the daemon and the client, or `None` if neither exposes them.
fn stages(daemon: &Daemon, variant: Variant) -> Option<Cumulative> {
    if variant == Variant::Std {
        return None;
    }
    let mut all = Cumulative::new();
    let mut any = false;
    for source in [daemon_stages(daemon), client_stages()].into_iter().flatten() {
        any = true;
        all.extend(source);
    }
    any.then_some(all)
}

/// The daemon's stage times, from the `breakdown` field of its status.
fn daemon_stages(daemon: &Daemon) -> Option<Cumulative> {
    let status = daemon.cli_json(&["status"]).ok()?;
    parse_stages(status.get("breakdown")?)
}

/// The client's stage times (this process), if trace2e-io measures them.
fn client_stages() -> Option<Cumulative> {
    let snapshot = trace2e_io::breakdown_snapshot();
    (!snapshot.is_empty())
        .then(|| snapshot.into_iter().map(|(name, ns, count)| (name.to_owned(), (ns as f64, count as f64))).collect())
}

fn parse_stages(value: &Value) -> Option<Cumulative> {
    let ns = |v: &Value| v.as_f64().or_else(|| v.get("total_ns")?.as_f64());
    let count = |v: &Value| v.get("count").and_then(Value::as_f64).unwrap_or(f64::NAN);
    if let Some(list) = value.get("stages").and_then(Value::as_array) {
        return Some(
            list.iter().filter_map(|s| Some((s.get("name")?.as_str()?.to_owned(), (ns(s)?, count(s))))).collect(),
        );
    }
    let map = value.as_object()?;
    Some(map.iter().filter_map(|(name, v)| Some((name.clone(), (ns(v)?, count(v))))).collect())
}

/// The overhead of one read along the client's critical path: disjoint parts in flow
/// order, the last one (`client_rest`) being the overhead minus the others, so that they
/// add up to the overhead. Without the client's round trip, the whole overhead is
/// `unattributed`; without `daemon_to_answer`, the round trip stays one part.
fn critical_path(stages: Option<&Stages>, overhead: f64) -> Vec<(String, f64)> {
    let get = |name: &str| stages.and_then(|s| s.get(name).copied());
    let Some(round_trip) = get("client_round_trip") else {
        return vec![("unattributed".into(), overhead)];
    };
    // Over gRPC the encoding is inside the round trip (tonic's), not a stage of its own.
    let encode = get("client_encode").unwrap_or(0.0);
    let mut out: Vec<(String, f64)> = get("client_encode").map(|ns| ("client_encode".into(), ns)).into_iter().collect();
    match get("daemon_to_answer") {
        Some(to_answer) => {
            out.push(("handoff_wait".into(), round_trip - to_answer));
            out.push(("daemon_to_answer".into(), to_answer));
        }
        None => out.push(("client_round_trip".into(), round_trip)),
    }
    out.push(("client_rest".into(), overhead - encode - round_trip));
    out
}

/// The daemon's work per read by stage, in flow order, then `daemon_other` (service time
/// no stage accounts for) and the `daemon_service` total. Empty if the daemon times none.
fn daemon_work(stages: Option<&Stages>) -> Vec<(String, f64)> {
    let Some(stages) = stages else { return Vec::new() };
    let mut out: Vec<(String, f64)> =
        DAEMON_STAGES.iter().filter_map(|&n| Some((n.to_owned(), *stages.get(n)?))).collect();
    if let Some(&service) = stages.get("daemon_service") {
        let inside: f64 = out.iter().map(|(_, ns)| ns).sum();
        out.push(("daemon_other".into(), service - inside));
        out.push(("daemon_service".into(), service));
    }
    out
}

fn print_table(std_ns: f64, rows: &[Row]) {
    let paths: Vec<_> = rows.iter().map(|r| critical_path(r.stages.as_ref(), r.total_ns - std_ns)).collect();
    let works: Vec<_> = rows.iter().map(|r| daemon_work(r.stages.as_ref())).collect();
    let cell = |v: Option<f64>| format!("{:>14}", v.map_or_else(|| "-".to_owned(), human_ns));
    let line = |label: &str, values: &mut dyn Iterator<Item = Option<f64>>| {
        println!("{label:<30}{}", values.map(cell).collect::<String>());
    };
    let section = |title: &str, split: &[Vec<(String, f64)>]| {
        let mut names: Vec<&str> = Vec::new();
        for (name, _) in split.iter().flatten() {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        if names.is_empty() {
            return;
        }
        println!("{title}");
        for name in names {
            let mut values = split.iter().map(|p| p.iter().find(|(n, _)| n == name).map(|(_, ns)| *ns));
            line(&format!("  {name}"), &mut values);
        }
    };
    println!();
    println!("Breakdown of one mediated 64 B file read (median of batch means; stages per read)");
    println!("{:<30}{}", "", rows.iter().map(|r| format!("{:>14}", r.variant.id())).collect::<String>());
    line("std read", &mut rows.iter().map(|_| Some(std_ns)));
    line("mediated read", &mut rows.iter().map(|r| Some(r.total_ns)));
    line("overhead (mediated − std)", &mut rows.iter().map(|r| Some(r.total_ns - std_ns)));
    section("the client's critical path (adds up to the overhead):", &paths);
    section("the daemon's work (partly beside the client's own):", &works);
    if rows.iter().all(|r| r.stages.is_none()) {
        println!("(no stage timings: neither the daemon's status nor trace2e-io exposes a breakdown)");
    }
    println!();
}
