//! `t2e-load FILE [--std]`: a client process for the multi-process benches.
//!
//! Opens FILE through trace2e-io (through std with `--std`: the baseline), performs one
//! 64 B read, prints `ready`; then for each line `N` on stdin performs N 64 B reads (pread
//! at offset 0) and prints `done <elapsed ns>`. Exits when stdin closes. The transport
//! and the daemon come from `TRACE2E_TRANSPORT` and `TRACE2E_SOCKET`. See
//! `trace2e_benches::workers`.

use std::io::{BufRead, Write};
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("t2e-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> std::io::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let path = args.next().ok_or_else(|| std::io::Error::other("usage: t2e-load FILE [--std]"))?;
    if args.next().is_some_and(|a| a == "--std") {
        serve(&std::fs::File::open(&path)?)
    } else {
        serve(&trace2e_io::fs::File::open(&path)?)
    }
}

fn serve(file: &impl FileExt) -> std::io::Result<()> {
    let mut buf = [0u8; trace2e_benches::workers::READ_SIZE];
    read(file, &mut buf)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let reads: u64 = line.trim().parse().map_err(|_| std::io::Error::other(format!("not a count: {line:?}")))?;
        let start = Instant::now();
        for _ in 0..reads {
            read(file, &mut buf)?;
        }
        let elapsed = start.elapsed();
        writeln!(out, "done {}", elapsed.as_nanos())?;
        out.flush()?;
    }
    Ok(())
}

#[inline]
fn read(file: &impl FileExt, buf: &mut [u8]) -> std::io::Result<()> {
    let n = file.read_at(buf, 0)?;
    if n != buf.len() {
        return Err(std::io::Error::other(format!("short read: {n} bytes")));
    }
    Ok(())
}
