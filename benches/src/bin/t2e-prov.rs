//! `t2e-prov SOURCES_DIR DEST`: gives DEST a provenance of every file in SOURCES_DIR, by
//! real mediated flows: reads 64 B of each file (in name order), then writes DEST
//! (4 KiB), so DEST's provenance holds every source plus this process.
//!
//! Used by the provenance bench to build its large-provenance source; the transport and
//! the daemon come from `TRACE2E_TRANSPORT` and `TRACE2E_SOCKET`. Prints the number of
//! files read.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(n) => {
            println!("{n}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("t2e-prov: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> std::io::Result<usize> {
    let mut args = std::env::args_os().skip(1);
    let (Some(sources), Some(dest)) = (args.next(), args.next()) else {
        return Err(std::io::Error::other("usage: t2e-prov SOURCES_DIR DEST"));
    };
    let mut paths: Vec<_> = std::fs::read_dir(&sources)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    paths.sort();
    let mut buf = [0u8; 64];
    for path in &paths {
        let n = trace2e_io::fs::File::open(path)?.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other(format!("{} is empty", path.display())));
        }
    }
    trace2e_io::fs::write(dest, vec![b'p'; 4096])?;
    Ok(paths.len())
}
