//! `trace2e-duplex`: one TCP stream used in both directions by a `trace2e-io` process, for
//! federation tests and demos (the one-shot `trace2e-proc` only sends or receives).
//!
//! ```text
//! trace2e-duplex (connect ADDR | listen ADDR) STEP...
//!   send=FILE            read FILE, write it to the stream as one frame
//!   load=FILE            read FILE (kept for `put`)
//!   put                  write what `load` read to the stream as one frame
//!   wait=PATH            wait (up to 60 s) until PATH exists
//!   touch=PATH           create PATH (not mediated: a signal to the test driving it)
//!   recv=FILE            read one frame from the stream, append it to FILE
//!   rounds=N:IN:OUT      N times: send=IN, then recv=OUT
//! ```
//!
//! A frame is a 4-byte big-endian length and the bytes. `listen` prints
//! `listening on ADDR` first and accepts one connection. A denied step is reported on
//! stderr (`denied STEP: reason`) and the script goes on; the exit status is then 13.
//! Any other error stops it with status 1.

use std::io::{self, Read, Write};
use std::process::ExitCode;

use trace2e_io::fs::{File, OpenOptions};
use trace2e_io::net::{TcpListener, TcpStream};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut stream = match args.first().map(String::as_str) {
        Some("connect") if args.len() >= 2 => TcpStream::connect(&args[1]),
        Some("listen") if args.len() >= 2 => TcpListener::bind(&args[1]).and_then(|l| {
            println!("listening on {}", l.local_addr()?);
            io::stdout().flush()?;
            l.accept().map(|(s, _)| s)
        }),
        _ => {
            eprintln!(
                "usage: trace2e-duplex (connect ADDR | listen ADDR) [send=FILE | recv=FILE | rounds=N:IN:OUT]..."
            );
            return ExitCode::from(2);
        }
    };
    let stream = match stream.as_mut() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("trace2e-duplex: {}: {e}", args[0]);
            return ExitCode::FAILURE;
        }
    };
    let mut denied = false;
    let mut loaded = Vec::new();
    for step in &args[2..] {
        let result = match step.split_once('=') {
            Some(("load", file)) => load(file).map(|data| loaded = data),
            None if step == "put" => put(stream, &loaded),
            Some(("wait", path)) => wait(path),
            Some(("touch", path)) => std::fs::write(path, b""),
            Some(("send", file)) => send(stream, file),
            Some(("recv", file)) => recv(stream, file),
            Some(("rounds", spec)) => rounds(stream, spec),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "unknown step")),
        };
        match result {
            Ok(()) => {}
            Err(e) if trace2e_io::Denied::of(&e).is_some() => {
                eprintln!("denied {step}: {e}");
                denied = true;
            }
            Err(e) => {
                eprintln!("trace2e-duplex: {step}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if denied { ExitCode::from(13) } else { ExitCode::SUCCESS }
}

fn load(file: &str) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    File::open(file)?.read_to_end(&mut data)?;
    Ok(data)
}

fn put(stream: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    let mut frame = (data.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(data);
    // One write: one flow, denied or granted as a whole.
    stream.write_all(&frame)
}

fn send(stream: &mut TcpStream, file: &str) -> io::Result<()> {
    put(stream, &load(file)?)
}

fn wait(path: &str) -> io::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::path::Path::new(path).exists() {
        if std::time::Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("{path} never appeared")));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}

fn recv(stream: &mut TcpStream, file: &str) -> io::Result<()> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut data)?;
    OpenOptions::new().create(true).append(true).open(file)?.write_all(&data)
}

fn rounds(stream: &mut TcpStream, spec: &str) -> io::Result<()> {
    let mut parts = spec.splitn(3, ':');
    let (Some(n), Some(input), Some(output)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "rounds=N:IN:OUT"));
    };
    let n: u32 = n.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "rounds=N:IN:OUT"))?;
    for _ in 0..n {
        send(stream, input)?;
        recv(stream, output)?;
    }
    Ok(())
}
