//! Where results go: criterion's own output directory, and the `summary.json` files the
//! benches that are not plain timings (throughput, idle CPU, breakdown) write beside it
//! for `perf/report.py`.

use std::io;
use std::path::{Path, PathBuf};

/// Criterion's output directory, found the way criterion finds it: `$CRITERION_HOME`,
/// else `$CARGO_TARGET_DIR/criterion`, else `<target>/criterion` where `<target>` holds
/// the running bench (`<target>/<profile>/deps/<bench>`).
pub fn criterion_dir() -> io::Result<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Ok(PathBuf::from(home));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(target).join("criterion"));
    }
    let profile = crate::daemon::profile_dir()?;
    let target = profile.parent().ok_or_else(|| io::Error::other("no target directory"))?;
    Ok(target.join("criterion"))
}

/// Writes `value` to `<criterion>/<name>/summary.json` and returns the path.
pub fn write_summary(name: &str, value: &serde_json::Value) -> io::Result<PathBuf> {
    let dir = criterion_dir()?.join(name);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("summary.json");
    let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    std::fs::write(&path, text + "\n")?;
    Ok(path)
}

/// The median (ns per iteration) criterion just estimated for `<group>/<function>[/<value>]`,
/// if it saved one (it does not in test mode).
pub fn criterion_median_ns(group: &str, function: &str, value: Option<&str>) -> Option<f64> {
    let mut dir = criterion_dir().ok()?.join(safe(group)).join(safe(function));
    if let Some(value) = value {
        dir = dir.join(safe(value));
    }
    median_in(&dir.join("new").join("estimates.json"))
}

fn median_in(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("median")?.get("point_estimate")?.as_f64()
}

/// Criterion's directory-name escaping of ids.
fn safe(id: &str) -> String {
    id.chars()
        .map(|c| if matches!(c, '?' | '"' | '/' | '\\' | '*' | '<' | '>' | ':' | '|' | '^') { '_' } else { c })
        .collect()
}

/// Formats nanoseconds for humans: `850 ns`, `1.23 µs`, `4.5 ms`.
pub fn human_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}
