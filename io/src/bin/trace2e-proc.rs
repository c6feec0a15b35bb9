//! `trace2e-proc`: a scriptable process built on `trace2e-io`, for demos and tests.
//!
//! ```text
//! trace2e-proc cp SRC DST            copy a file
//! trace2e-proc cat FILE              print a file
//! trace2e-proc write FILE TEXT       write TEXT to FILE (created or truncated)
//! trace2e-proc send ADDR FILE        connect to ADDR and send FILE
//! trace2e-proc recv LISTEN_ADDR FILE accept one connection on LISTEN_ADDR, save what it sends
//! ```
//!
//! Every read and write is mediated by the local trace2e daemon (`TRACE2E_SOCKET`).
//! Exit status: 0 on success, 13 when a step is denied (the reason is printed on
//! stderr), 2 on usage errors, 1 on any other error.

use std::io::{self, Read, Write};
use std::process::ExitCode;

use trace2e_io::fs::{File, OpenOptions};
use trace2e_io::net::{TcpListener, TcpStream};

const USAGE: &str =
    "usage: trace2e-proc cp SRC DST | cat FILE | write FILE TEXT | send ADDR FILE | recv LISTEN_ADDR FILE";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match refs.as_slice() {
        ["cp", src, dst] => cp(src, dst),
        ["cat", file] => cat(file),
        ["write", file, text] => write(file, text),
        ["send", addr, file] => send(addr, file),
        ["recv", addr, file] => recv(addr, file),
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((step, e)) => {
            if let Some(denied) = e.get_ref().and_then(|inner| inner.downcast_ref::<trace2e_io::Denied>()) {
                eprintln!("trace2e-proc: {step}: {denied}");
                ExitCode::from(13)
            } else {
                eprintln!("trace2e-proc: {step}: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

type StepResult = Result<(), (String, io::Error)>;

fn at<T>(step: impl Into<String>, r: io::Result<T>) -> Result<T, (String, io::Error)> {
    r.map_err(|e| (step.into(), e))
}

fn cp(src: &str, dst: &str) -> StepResult {
    let mut input = at(format!("open {src}"), File::open(src))?;
    // Read everything before creating the destination, so that a denied read leaves an
    // existing destination untouched (creating truncates it). Every read is a flow.
    let mut data = Vec::new();
    at(format!("read {src}"), input.read_to_end(&mut data))?;
    let mut output = at(format!("create {dst}"), File::create(dst))?;
    at(format!("write {dst}"), output.write_all(&data))?;
    eprintln!("copied {} bytes from {src} to {dst}", data.len());
    Ok(())
}

fn cat(file: &str) -> StepResult {
    let mut input = at(format!("open {file}"), File::open(file))?;
    let mut stdout = io::stdout().lock();
    at(format!("read {file}"), io::copy(&mut input, &mut stdout))?;
    at("flush stdout", stdout.flush())
}

fn write(file: &str, text: &str) -> StepResult {
    let mut output =
        at(format!("create {file}"), OpenOptions::new().write(true).create(true).truncate(true).open(file))?;
    at(format!("write {file}"), output.write_all(text.as_bytes()))
}

fn send(addr: &str, file: &str) -> StepResult {
    let mut input = at(format!("open {file}"), File::open(file))?;
    let mut stream = at(format!("connect {addr}"), TcpStream::connect(addr))?;
    let n = at(format!("send {file} to {addr}"), io::copy(&mut input, &mut stream))?;
    at("shutdown", stream.shutdown(std::net::Shutdown::Write))?;
    eprintln!("sent {n} bytes of {file} to {addr}");
    Ok(())
}

fn recv(addr: &str, file: &str) -> StepResult {
    let listener = at(format!("listen {addr}"), TcpListener::bind(addr))?;
    let local = at("local address", listener.local_addr())?;
    println!("listening on {local}");
    at("flush stdout", io::stdout().flush())?;
    let (mut stream, peer) = at("accept", listener.accept())?;
    let mut output = at(format!("create {file}"), File::create(file))?;
    let n = at(format!("receive from {peer} into {file}"), io::copy(&mut stream, &mut output))?;
    eprintln!("received {n} bytes from {peer} into {file}");
    Ok(())
}
